"""Benchmark: `feedback stream` from a Kafka topic under sustained load, and a backlog's catch-up.

Soak: simulated sessions are placed at random start times over ``--minutes`` (each session
keeps its own gaps; copies of the traffic get fresh user and event ids) so that the topic is
offered ``--rate`` events/s on average. `feedback replay --in-event-time` publishes them as they
fall due, stamped with the wall clock, while `feedback stream --source kafka` runs bronze ->
silver -> gold in its own process. Every ``--sample-s`` the consumer lag is sampled:

- bronze lag: messages in the topic that bronze has not read (broker end offsets minus the
  offsets of bronze's last committed batch);
- silver lag: events in bronze that silver has not read (from the stream's batch log lines).

Latency, read from the lake afterwards: event ``ts`` to the commit of its bronze batch and to silver
``processed_at``. A silver turn can only be written once its session has closed (the session
gap, then the watermark), so silver latency is also given past that close.

Catch-up: bronze alone (availableNow) drains the soak's topic, about rate x minutes messages,
from the earliest offset into a fresh lake, right after the soak (a warm JVM).

    .venv/bin/python benchmarks/bench_kafka.py --rate 2000 --minutes 10 --workdir bench/kafka
    .venv/bin/python benchmarks/bench_kafka.py --rate 250 --minutes 5 --model-lake train --skip-catch-up --workdir bench/kafka-model
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import Window
from pyspark.sql import functions as F
from tqdm import tqdm

from feedback.bronze.stream import start_bronze_stream
from feedback.config import AppConfig, IngestConfig, KafkaConfig, SimulationConfig, SparkConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import tracking_uri_for
from feedback.core.spark import build_spark
from feedback.ops.kafka import ensure_topic, start_broker, stop_broker
from feedback.ops.replay import event_time, file_lines, iso_utc, json_object, landing_files, replay
from feedback.simulate import run as simulate

SOAK_START = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
"""Where the soak traffic's ts start; replay shifts them to the wall clock."""
BENCH_SPARK = SparkConfig(master="local[2]", shuffle_partitions=2, extra={"spark.ui.enabled": "false"})
SESSION_GAP_S = 300.0
"""How the base traffic is cut into sessions before they are placed (the default session_gap)."""
BRONZE_LINE = re.compile(r"bronze batch \d+: (\d+) lines from \d+ files -> (\d+) inserted")
SILVER_LINE = re.compile(r"query silver_turns batch \d+: (\d+) rows")


@dataclass(frozen=True)
class LagSample:
    seconds: float
    produced: int
    bronze_read: int
    bronze_inserted: int
    silver_read: int

    @property
    def bronze_lag(self) -> int:
        return self.produced - self.bronze_read

    @property
    def silver_lag(self) -> int:
        return self.bronze_inserted - self.silver_read


def sessions_of(events_dir: Path) -> tuple[list[list[dict[str, object]]], list[bytes]]:
    """The base traffic cut into sessions (per user and device, a gap of 5 minutes), and the lines that are no event."""
    by_device: dict[tuple[str, str], list[tuple[dt.datetime, dict[str, object]]]] = defaultdict(list)
    noise: list[bytes] = []
    for path in landing_files(events_dir):
        for line in file_lines(path):
            record = json_object(line)
            moment = event_time(record)
            if record is None or moment is None or not all(isinstance(record.get(k), str) for k in ("user_id", "device_id", "event_id")):
                noise.append(line)
                continue
            by_device[(str(record["user_id"]), str(record["device_id"]))].append((moment, record))
    sessions: list[list[dict[str, object]]] = []
    for events in by_device.values():
        events.sort(key=lambda pair: pair[0])
        current: list[dict[str, object]] = []
        start = last = events[0][0]
        for moment, record in events:
            if (moment - last).total_seconds() > SESSION_GAP_S:
                sessions.append(current)
                current, start = [], moment
            current.append({**record, "_offset": (moment - start).total_seconds()})
            last = moment
        sessions.append(current)
    return sessions, noise


def place_sessions(
    sessions: list[list[dict[str, object]]], noise: list[bytes], events: int, seconds: float, seed: int
) -> list[tuple[float, bytes]]:
    """``events`` events as (offset in seconds, line): sessions at random starts, cut to the window ``seconds``.

    Each placed session gets a user id of its own; copy ``k`` > 0 of a session also gets ``.k``
    appended to its event ids, so it is new traffic of the same shape; duplicate deliveries stay
    duplicates. Malformed lines are spread
    at random through the window in the same proportion as in the base traffic.
    """
    rng = random.Random(seed)
    placed: list[tuple[float, bytes]] = []
    base_events = sum(len(s) for s in sessions)
    order = list(range(len(sessions)))
    copy = 0
    while len(placed) < events:
        rng.shuffle(order)
        for index in order:
            session = sessions[index]
            # Starts from a span before the window: sessions already under way when it opens, as in a steady state.
            start = rng.uniform(-float(session[-1]["_offset"]), seconds)  # type: ignore[arg-type]
            for record in session:
                offset = start + float(record["_offset"])  # type: ignore[arg-type]
                if offset < 0.0 or offset > seconds:
                    continue
                out = {k: v for k, v in record.items() if k != "_offset"}
                # A user's week squeezed into the window would be one endless session: each placed
                # session is a user of its own (at this rate there are that many users anyway).
                out["user_id"] = f"{out['user_id']}.{copy}.{index}"
                if copy:
                    out["event_id"] = f"{out['event_id']}.{copy}"
                out["ts"] = iso_utc(SOAK_START + dt.timedelta(seconds=offset))
                placed.append((offset, json.dumps(out, separators=(",", ":")).encode("utf-8")))
            if len(placed) >= events:
                break
        copy += 1
    for line in rng.sample(noise, k=min(len(noise), round(len(noise) * events / max(base_events, 1)))) if noise else []:
        offset = rng.uniform(0.0, seconds)
        record = json_object(line)
        if event_time(record) is not None and record is not None:  # keep it in the window: replay paces by ts
            record["ts"] = iso_utc(SOAK_START + dt.timedelta(seconds=offset))
            line = json.dumps(record, separators=(",", ":")).encode("utf-8")
        placed.append((offset, line))
    placed.sort(key=lambda pair: pair[0])
    return placed


def write_soak_traffic(placed: list[tuple[float, bytes]], out: Path) -> None:
    """One landing file per minute of the soak, in send order."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    by_minute: dict[int, list[bytes]] = defaultdict(list)
    for offset, line in placed:
        by_minute[int(offset // 60)].append(line)
    for minute, lines in sorted(by_minute.items()):
        (out / f"soak-{minute:04d}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def committed_kafka_offsets(checkpoint: Path) -> int:
    """Messages read by the query of ``checkpoint``: the end offsets of its last committed batch, summed."""
    commits = [int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")] if (checkpoint / "commits").is_dir() else []
    if not commits:
        return 0
    lines = (checkpoint / "offsets" / str(max(commits))).read_text().splitlines()
    offsets = json.loads(lines[-1])
    return sum(int(v) for partitions in offsets.values() for v in partitions.values())


def log_totals(log: Path) -> tuple[int, int]:
    """(bronze rows inserted, rows silver has read) so far, from the stream's batch log lines."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    inserted = sum(int(m.group(2)) for m in BRONZE_LINE.finditer(text))
    silver = sum(int(m.group(1)) for m in SILVER_LINE.finditer(text))
    return inserted, silver


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        consumer.close()


def sample_lag(bootstrap: str, topic: str, checkpoint: Path, log: Path, started: float) -> LagSample:
    produced = end_offsets(bootstrap, topic)
    inserted, silver = log_totals(log)
    return LagSample(time.monotonic() - started, produced, committed_kafka_offsets(checkpoint), inserted, silver)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p95": math.nan, "max": math.nan, "n": 0}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.50), "p95": pick(0.95), "max": ordered[-1], "n": len(ordered)}


def soak(args: argparse.Namespace, traffic: Path, workdir: Path, bootstrap: str, topic: str) -> dict[str, object]:
    """Run the stream against ``topic`` while ``traffic`` is replayed in event time; lag and latency."""
    lake = LakePaths.at(workdir / "lake-soak")
    if Path(lake.root).exists():
        shutil.rmtree(lake.root)
    conf = {
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "extra": {"spark.ui.enabled": "false"}},
        "ingest": {"source": "kafka", "trigger_interval": args.trigger, "kafka": {"bootstrap_servers": bootstrap, "topic": topic}},
        "sessionize": {"session_gap": args.session_gap, "watermark": args.watermark},
        "rephrase_model": {"use_champion": args.model_lake is not None},
    }
    conf_path = workdir / "soak.yaml"
    conf_path.write_text(yaml.safe_dump(conf))
    env = dict(os.environ)
    if args.model_lake is not None:
        env["MLFLOW_TRACKING_URI"] = tracking_uri_for(LakePaths.at(args.model_lake.resolve()))
    log = workdir / "stream.log"
    checkpoint = Path(lake.root) / "_checkpoints" / "bronze_interactions"
    command = [sys.executable, "-m", "feedback.cli", "stream", "--lake", lake.root, "--conf", str(conf_path)]
    with log.open("w") as out:
        driver = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    samples: list[LagSample] = []
    try:
        time.sleep(args.warm_up_s)  # JVM, Python workers and the first (empty) batches
        if driver.poll() is not None:
            raise SystemExit(f"the stream exited during warm-up: see {log}")
        started = time.monotonic()
        replayed: dict[str, object] = {}
        sender = threading.Thread(
            target=lambda: replayed.update(report=replay(traffic, bootstrap, topic, in_event_time=True)), daemon=True
        )
        sender.start()
        while sender.is_alive():
            samples.append(sample_lag(bootstrap, topic, checkpoint, log, started))
            time.sleep(args.sample_s)
        sender.join()
        report = replayed["report"]
        replay_seconds = time.monotonic() - started
        print(report.render(), flush=True)  # type: ignore[attr-defined]
        # Drain: until bronze has read everything and silver has read what bronze wrote, or the limit.
        deadline = time.monotonic() + args.drain_limit_s
        drained_at = None
        while time.monotonic() < deadline and driver.poll() is None:
            sample = sample_lag(bootstrap, topic, checkpoint, log, started)
            samples.append(sample)
            if sample.bronze_lag == 0 and sample.silver_lag <= 0:
                drained_at = sample.seconds
                time.sleep(3 * duration_seconds(args.trigger))  # the batch that emits what the last watermark closed
                break
            time.sleep(args.sample_s)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGTERM)
        try:
            driver.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    messages = int(report.messages)  # type: ignore[attr-defined]
    latency = lake_latency(lake, args)
    half = [s for s in samples if s.seconds >= replay_seconds / 2 and s.seconds <= replay_seconds]
    return {
        "offered_events_per_s": messages / float(report.seconds),  # type: ignore[attr-defined]
        "messages": messages,
        "replay_seconds": float(report.seconds),  # type: ignore[attr-defined]
        # Events in silver per second, from the start of the replay until silver had read everything.
        "end_to_end_events_per_s": None if drained_at is None else samples[-1].silver_read / drained_at,
        "drained_after_replay_s": None if drained_at is None else drained_at - replay_seconds,
        "max_bronze_lag": max((s.bronze_lag for s in samples), default=0),
        "max_silver_lag": max((s.silver_lag for s in samples), default=0),
        "second_half_max_bronze_lag": max((s.bronze_lag for s in half), default=0),
        "second_half_max_silver_lag": max((s.silver_lag for s in half), default=0),
        "latency_s": latency,
        "samples": [asdict(s) | {"bronze_lag": s.bronze_lag, "silver_lag": s.silver_lag} for s in samples],
        "stream_log": str(log),
    }


def lake_latency(lake: LakePaths, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Latency percentiles from the lake: ts -> bronze, ts -> silver, and silver past its session's close."""
    spark = build_spark(BENCH_SPARK)
    try:
        seconds = lambda end, start: F.col(end).cast("double") - F.col(start).cast("double")  # noqa: E731
        # A bronze row is readable once its micro-batch has committed: ingest_time + batch_seconds.
        batches = spark.read.format("delta").load(lake.ingest_batches).select(
            F.concat_ws(":", "app_id", F.col("batch_id").cast("string")).alias("ingest_batch"),
            (F.col("ingest_time").cast("double") + F.col("batch_seconds")).alias("committed"),
        )
        bronze = [
            r[0]
            for r in spark.read.format("delta").load(lake.bronze).join(batches, "ingest_batch")
            .select(F.col("committed") - F.col("ts").cast("double")).collect()
        ]
        session_end = F.max("ts").over(Window.partitionBy("session_id"))
        gap_s = duration_seconds(args.session_gap)
        watermark_s = duration_seconds(args.watermark)
        turns = spark.read.format("delta").load(lake.silver_turns).withColumn("session_end", session_end)
        silver = turns.select(
            seconds("processed_at", "ts").alias("from_ts"),
            (F.col("processed_at").cast("double") - F.col("session_end").cast("double") - gap_s - watermark_s).alias("past_close"),
        ).collect()
    finally:
        spark.stop()
    return {
        "ts_to_bronze": percentiles(bronze),
        "ts_to_silver": percentiles([r["from_ts"] for r in silver]),
        "session_close_to_silver": percentiles([r["past_close"] for r in silver]),
    }


def duration_seconds(text: str) -> float:
    """'2 minutes' -> 120.0 (the units the configuration accepts for durations)."""
    amount, unit = text.split()
    scale = {"second": 1, "minute": 60, "hour": 3600}[unit.rstrip("s")]
    return float(amount) * scale


def catch_up(workdir: Path, bootstrap: str, topic: str) -> dict[str, float]:
    """Bronze alone, availableNow, over the whole topic from the earliest offset into a fresh lake."""
    lake = LakePaths.at(workdir / "lake-catch-up")
    if Path(lake.root).exists():
        shutil.rmtree(lake.root)
    kafka = KafkaConfig(bootstrap_servers=bootstrap, topic=topic)
    config = replace_section(AppConfig(), spark=BENCH_SPARK, ingest=IngestConfig(source="kafka", kafka=kafka))
    messages = end_offsets(bootstrap, topic)
    spark = build_spark(config.spark)
    try:
        started = time.perf_counter()
        start_bronze_stream(spark, config, None, lake, available_now=True).awaitTermination()
        seconds = time.perf_counter() - started
        read = spark.read.format("delta").load(lake.ingest_batches).agg(F.sum("lines_read")).first()[0]
    finally:
        spark.stop()
    if read != messages:
        raise SystemExit(f"catch-up read {read} of {messages} messages")
    return {"messages": messages, "seconds": seconds, "events_per_s": messages / seconds}


def plot_lag(result: dict[str, object], path: Path, title: str) -> None:
    """Bronze and silver lag over the soak, as an SVG for the docs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]  # type: ignore[assignment]
    minutes = [s["seconds"] / 60 for s in samples]  # type: ignore[index]
    figure, axis = plt.subplots(figsize=(7, 3.2))
    axis.plot(minutes, [s["bronze_lag"] for s in samples], label="bronze lag (messages not yet read)")  # type: ignore[index]
    axis.plot(minutes, [s["silver_lag"] for s in samples], label="silver lag (bronze events not yet read)")  # type: ignore[index]
    axis.axvline(float(result["replay_seconds"]) / 60, color="grey", linestyle=":", label="end of replay")  # type: ignore[arg-type]
    axis.set_xlabel("minutes since replay started")
    axis.set_ylabel("events")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s offered on average")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak")
    parser.add_argument("--users", type=int, default=2700, help="households of the base simulation")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--trigger", default="10 seconds", help="ingest.trigger_interval of the stream")
    parser.add_argument("--session-gap", default="2 minutes", help="sessionize.session_gap of the stream")
    parser.add_argument("--watermark", default="30 seconds", help="sessionize.watermark of the stream")
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--warm-up-s", type=float, default=45.0)
    parser.add_argument("--drain-limit-s", type=float, default=600.0)
    parser.add_argument("--model-lake", type=Path, default=None, help="stream with this lake's rephrase-detector@champion")
    parser.add_argument("--skip-catch-up", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("bench/kafka"))
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    base = workdir.parent / f"traffic-u{args.users}-d{args.days}-s{args.seed}"
    if not (base / "manifest.json").is_file():
        simulate(SimulationConfig(users=args.users, days=args.days, seed=args.seed), base)
    sessions, noise = sessions_of(base / "events")
    seconds = args.minutes * 60
    placed = place_sessions(sessions, noise, round(args.rate * seconds), seconds, args.seed)
    traffic = workdir / "soak-events"
    write_soak_traffic(tqdm(placed, desc="soak traffic", unit="event", mininterval=5), traffic)
    print(f"soak traffic: {len(placed)} lines over {args.minutes:g} min from {len(sessions)} base sessions", flush=True)

    broker_root = workdir / "kafka"
    if broker_root.exists():
        shutil.rmtree(broker_root)
    broker = start_broker(broker_root, heap="512m")
    topic = "soak"
    try:
        ensure_topic(broker.bootstrap_servers, topic)
        result: dict[str, object] = {
            "machine": f"{platform.machine()} {os.cpu_count()} cpus, local[2], broker on the same machine",
            "detector": "champion" if args.model_lake else "heuristic",
            "stream": {"trigger": args.trigger, "session_gap": args.session_gap, "watermark": args.watermark},
            "soak": soak(args, traffic, workdir, broker.bootstrap_servers, topic),
        }
        if not args.skip_catch_up:
            result["catch_up"] = catch_up(workdir, broker.bootstrap_servers, topic)
    finally:
        stop_broker(broker_root)
    (workdir / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    soak_result = result["soak"]
    plot_lag(
        soak_result,  # type: ignore[arg-type]
        workdir / "lag.svg",
        f"{result['detector']} detector, {soak_result['offered_events_per_s']:.0f} events/s offered for {args.minutes:g} min",  # type: ignore[index]
    )
    summary = {k: v for k, v in soak_result.items() if k != "samples"}  # type: ignore[union-attr]
    print(json.dumps({**result, "soak": summary}, indent=2, default=str))
    print(f"lag plot: {workdir / 'lag.svg'}")


if __name__ == "__main__":
    main()
