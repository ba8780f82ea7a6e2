"""Benchmark: events per second through bronze -> silver -> gold on local[2], and how state grows.

For each size (same users, more days), simulates the traffic, runs the bronze query
(availableNow, a day of landing files per micro-batch) and then the silver/gold query
(availableNow, a few bronze files per micro-batch, RocksDB state), and reads the silver
query's progress: state rows and memory of the session-window operator, batch durations.
State is bounded by the watermark, so it should track concurrent sessions, not total events.

    .venv/bin/python benchmarks/bench_pipeline.py --users 5000 --days 1 2 4 --workdir bench/pipeline

With ``--model-lake``, the detectors compared end to end instead: one landing drop (the first of
``--days``), run by ``feedback pipeline`` in a fresh process (cold: JVM, Python workers and model
loaded inside the measured time) once with the heuristic and once with the lake's
``rephrase-detector@champion``, with the default configuration otherwise; wall time of each, their
ratio, and how silver scored the pairs.

    .venv/bin/python benchmarks/bench_pipeline.py --model-lake train --users 3100 --days 7 --workdir bench/pipeline-model
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from pyspark.sql import SparkSession

from feedback.bronze.stream import start_bronze_stream
from feedback.config import AppConfig, IngestConfig, SessionizeConfig, SimulationConfig, SparkConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import tracking_uri_for
from feedback.core.spark import build_spark
from feedback.gold.aggregate import fold_into_gold
from feedback.rephrase.spark import resolve_scorer
from feedback.silver.stream import silver_writer, start_silver_stream, summarize_silver
from feedback.simulate import run as simulate


@dataclass(frozen=True)
class SizeResult:
    days: int
    events: int
    bronze_seconds: float
    silver_seconds: float
    silver_batches: int
    max_state_rows: int
    max_state_memory_mb: float
    median_batch_seconds: float
    max_batch_seconds: float
    turns: int
    candidate_pairs: int

    @property
    def events_per_second(self) -> float:
        return self.events / (self.bronze_seconds + self.silver_seconds)


def run_size(spark: SparkSession, config: AppConfig, workdir: Path, users: int, days: int, seed: int) -> SizeResult:
    traffic = workdir / f"traffic-u{users}-d{days}-s{seed}"
    if not (traffic / "manifest.json").is_file():
        simulate(SimulationConfig(users=users, days=days, seed=seed), traffic)
    manifest = json.loads((traffic / "manifest.json").read_text())
    lake_dir = workdir / f"lake-d{days}"
    if lake_dir.exists():
        shutil.rmtree(lake_dir)
    lake = LakePaths.at(lake_dir)

    started = time.perf_counter()
    bronze = start_bronze_stream(spark, config, str((traffic / "events").resolve()), lake, available_now=True)
    bronze.awaitTermination()
    bronze_seconds = time.perf_counter() - started

    started = time.perf_counter()
    writer = silver_writer(lake, config, fold_into_gold, resolve_scorer(spark, config, lake))
    silver = start_silver_stream(spark, config, lake, available_now=True, writer=writer)
    silver.awaitTermination()
    silver_seconds = time.perf_counter() - started

    progress = [p for p in silver.recentProgress if p.numInputRows > 0 or p.stateOperators]
    states = [p.stateOperators[0] for p in progress if p.stateOperators]
    batch_seconds = [p.durationMs.get("triggerExecution", 0) / 1000 for p in progress]
    totals = summarize_silver(spark, lake)
    return SizeResult(
        days=days,
        events=int(manifest["events"]),
        bronze_seconds=bronze_seconds,
        silver_seconds=silver_seconds,
        silver_batches=len(progress),
        max_state_rows=max((s.numRowsTotal for s in states), default=0),
        max_state_memory_mb=max((s.memoryUsedBytes for s in states), default=0) / 2**20,
        median_batch_seconds=statistics.median(batch_seconds) if batch_seconds else 0.0,
        max_batch_seconds=max(batch_seconds, default=0.0),
        turns=totals["turns"],
        candidate_pairs=totals["candidate_pairs"],
    )


def timed_pipeline(events: Path, lake: Path, conf: dict[str, object], model_lake: Path, log: Path) -> float:
    """Wall seconds of ``feedback pipeline`` over ``events`` into a fresh ``lake``, in a new process."""
    if lake.exists():
        shutil.rmtree(lake)
    conf_path = lake.with_suffix(".yaml")
    conf_path.write_text(yaml.safe_dump(conf))
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri_for(LakePaths.at(model_lake))}
    command = [sys.executable, "-m", "feedback.cli", "pipeline", "--events", str(events), "--lake", str(lake), "--conf", str(conf_path)]
    started = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(command, check=True, env=env, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def compare_detectors(args: argparse.Namespace) -> None:
    """The heuristic and the champion detector end to end on one drop, each in a cold process."""
    workdir = args.workdir.resolve()
    days = args.days[0]
    traffic = workdir / f"traffic-u{args.users}-d{days}-s{args.seed}"
    if not (traffic / "manifest.json").is_file():
        simulate(SimulationConfig(users=args.users, days=days, seed=args.seed), traffic)
    manifest = json.loads((traffic / "manifest.json").read_text())
    spark_conf = {"master": "local[2]", "shuffle_partitions": 2, "extra": {"spark.ui.enabled": "false"}}
    variants = {
        name: conf
        for name, conf in (
            ("heuristic", {"spark": spark_conf, "rephrase_model": {"use_champion": False}}),
            ("model", {"spark": spark_conf, "rephrase_model": {"use_champion": True}}),
        )
        if name in args.variants
    }
    seconds = {}
    for name, conf in variants.items():
        seconds[name] = timed_pipeline(traffic / "events", workdir / f"lake-{name}", conf, args.model_lake.resolve(), workdir / f"{name}.log")
        print(f"{name}: {seconds[name]:.0f} s", flush=True)
    spark = build_spark(SparkConfig(master="local[2]", shuffle_partitions=2, extra={"spark.ui.enabled": "false"}))
    totals = {name: summarize_silver(spark, LakePaths.at(workdir / f"lake-{name}")) for name in variants}
    detectors = {
        name: {
            row["rephrase_detector"]: row["count"]
            for row in spark.read.format("delta").load(LakePaths.at(workdir / f"lake-{name}").silver_turns)
            .groupBy("rephrase_detector").count().collect()
        }
        for name in variants
    }
    spark.stop()
    events = int(manifest["events"])
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, local[2]",
        "events": events,
        "landing_files": int(manifest.get("files", 0)),
        "seconds": seconds,
        "events_per_s": {name: events / s for name, s in seconds.items()},
        "model_over_heuristic_wall_time": seconds["model"] / seconds["heuristic"] if len(seconds) == 2 else None,
        "silver": totals,
        "turns_by_detector": detectors,
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result, indent=2, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--days", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", type=Path, default=Path("bench/pipeline"))
    parser.add_argument("--model-lake", type=Path, default=None, help="compare the heuristic and this lake's champion end to end")
    parser.add_argument(
        "--variants", nargs="+", choices=("heuristic", "model"), default=["heuristic", "model"], help="with --model-lake: which runs to time"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.model_lake is not None:
        compare_detectors(args)
        return
    config = replace_section(
        AppConfig(),
        spark=SparkConfig(master="local[2]", shuffle_partitions=2, extra={"spark.ui.enabled": "false"}),
        ingest=IngestConfig(max_files_per_trigger=24),
        sessionize=SessionizeConfig(max_files_per_trigger=4),
    )
    spark = build_spark(config.spark)
    results = []
    for days in args.days:
        result = run_size(spark, config, args.workdir, args.users, days, args.seed)
        results.append(result)
        print(result, flush=True)
    spark.stop()

    print()
    print(f"machine: {platform.machine()}, local[2], RocksDB state store; {args.users} users, seed {args.seed}")
    print("| days | events | bronze s | silver+gold s | events/s end to end | silver batches | median / max batch s | max state rows | max state memory MB | candidate pairs per event |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.days} | {r.events:,} | {r.bronze_seconds:.0f} | {r.silver_seconds:.0f} | {r.events_per_second:,.0f} | "
            f"{r.silver_batches} | {r.median_batch_seconds:.1f} / {r.max_batch_seconds:.1f} | {r.max_state_rows:,} | "
            f"{r.max_state_memory_mb:.1f} | {r.candidate_pairs / r.turns:.2f} |"
        )
    first, last = results[0], results[-1]
    print(
        f"events x{last.events / first.events:.2f} -> max state rows x{last.max_state_rows / max(first.max_state_rows, 1):.2f}, "
        f"median batch time x{last.median_batch_seconds / max(first.median_batch_seconds, 1e-9):.2f}, "
        f"throughput x{last.events_per_second / first.events_per_second:.2f}"
    )


if __name__ == "__main__":
    main()
