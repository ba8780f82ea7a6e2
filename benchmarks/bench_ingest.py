"""Benchmark: events per second through bronze ingestion (landing -> bronze/quarantine) on local[2], with and without GX.

Simulates the traffic once (reused when the same size and seed are on disk), then runs the
availableNow bronze query over it into fresh lakes, alternating validation off and on
(``--repeats`` pairs, after one warm-up pair) so both see the same machine state, and prints a
Markdown table.
Figures are ratios within one run: the machines are shared and noisy.

    .venv/bin/python benchmarks/bench_ingest.py --users 2500 --days 7 --workdir bench/ingest
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.bronze.stream import start_bronze_stream, summarize_ingest
from feedback.config import AppConfig, IngestConfig, SimulationConfig, SparkConfig, ValidationConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.spark import build_spark
from feedback.simulate import run as simulate


@dataclass(frozen=True)
class RunResult:
    validation: bool
    lines: int
    wall_seconds: float
    batches: int
    batch_seconds: float
    validation_seconds: float

    @property
    def events_per_second(self) -> float:
        return self.lines / self.wall_seconds


def ensure_traffic(workdir: Path, users: int, days: int, seed: int) -> Path:
    traffic = workdir / f"traffic-u{users}-d{days}-s{seed}"
    if not (traffic / "manifest.json").is_file():
        if traffic.exists():
            shutil.rmtree(traffic)
        simulate(SimulationConfig(users=users, days=days, seed=seed), traffic)
    return traffic


def run_once(spark: SparkSession, config: AppConfig, events: Path, lake: Path, validation: bool) -> RunResult:
    if lake.exists():
        shutil.rmtree(lake)
    run_config = replace_section(
        config,
        ingest=IngestConfig(
            max_files_per_trigger=config.ingest.max_files_per_trigger,
            validation=ValidationConfig(enabled=validation),
        ),
    )
    started = time.perf_counter()
    query = start_bronze_stream(spark, run_config, str(events.resolve()), LakePaths.at(lake), available_now=True)
    query.awaitTermination()
    wall = time.perf_counter() - started
    paths = LakePaths.at(lake)
    totals = (
        spark.read.format("delta")
        .load(paths.ingest_batches)
        .agg(F.count(F.lit(1)).alias("batches"), F.sum("batch_seconds").alias("batch"), F.sum("validation_seconds").alias("gx"))
        .first()
    )
    summary = summarize_ingest(spark, paths)
    return RunResult(
        validation=validation,
        lines=summary["lines_read"],
        wall_seconds=wall,
        batches=int(totals["batches"]),
        batch_seconds=float(totals["batch"]),
        validation_seconds=float(totals["gx"] or 0.0),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=2700)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--files-per-batch", type=int, default=AppConfig().ingest.max_files_per_trigger,
                        help="landing files per micro-batch (default: the shipped ingest.max_files_per_trigger)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="pairs of runs (off, on); the median is reported, so one slow run (the first at full size is) does not move it")
    parser.add_argument("--skip-off", action="store_true", help="only the validation-on runs")
    parser.add_argument("--workdir", type=Path, default=Path("bench/ingest"))
    parser.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra Spark setting for a variant run (repeatable)")
    args = parser.parse_args()
    extra = {"spark.ui.enabled": "false"}
    for setting in args.spark_conf:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            parser.error(f"--spark-conf must be KEY=VALUE, got {setting!r}")
        extra[key] = value
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("feedback.bronze.stream").setLevel(logging.DEBUG)

    traffic = ensure_traffic(args.workdir, args.users, args.days, args.seed)
    manifest = json.loads((traffic / "manifest.json").read_text())
    config = replace_section(
        AppConfig(),
        spark=SparkConfig(master="local[2]", shuffle_partitions=2, extra=extra),
        ingest=IngestConfig(max_files_per_trigger=args.files_per_batch),
    )
    spark = build_spark(config.spark)
    # Warm-up, both ways, at full size: the JVM compiles the parse, write and GX paths while it
    # runs them on this much data (a 20-file warm-up left the first measured run 20-40% slower
    # than the later ones). The warm-up runs are printed, as the cold figure, not counted.
    for validation in (False, True):
        result = run_once(spark, config, traffic / "events", args.workdir / "lake-warmup", validation=validation)
        print(f"warm-up, validation={validation}: {result.events_per_second:,.0f} events/s "
              f"({result.wall_seconds:.1f}s)", flush=True)

    modes = (True,) if args.skip_off else (False, True)
    results: list[RunResult] = []
    for _ in range(args.repeats):
        for validation in modes:
            result = run_once(spark, config, traffic / "events", args.workdir / f"lake-{validation}", validation)
            results.append(result)
            print(
                f"validation={validation}: {result.lines} lines in {result.wall_seconds:.1f}s "
                f"= {result.events_per_second:,.0f} events/s ({result.batches} batches, "
                f"GX {result.validation_seconds:.1f}s of {result.batch_seconds:.1f}s batch time)",
                flush=True,
            )
    spark.stop()

    on = [r for r in results if r.validation]
    on_rate = statistics.median(r.events_per_second for r in on)
    on_batch = statistics.median(r.batch_seconds / r.batches for r in on)
    gx_wall = statistics.median(r.validation_seconds / r.batches for r in on)
    print()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, local[2]; traffic: {manifest['lines']} lines "
          f"({manifest['events']} events, {manifest['files']} files), {args.files_per_batch} files per batch; "
          f"extra Spark settings: {args.spark_conf or 'none'}")
    print("| validation | events/s (median of %d) | mean batch time |" % args.repeats)
    print("|---|---|---|")
    if args.skip_off:
        print(f"| on  | {on_rate:,.0f} | {on_batch:.2f} s |")
        return
    off = [r for r in results if not r.validation]
    off_rate = statistics.median(r.events_per_second for r in off)
    off_batch = statistics.median(r.batch_seconds / r.batches for r in off)
    print(f"| off | {off_rate:,.0f} | {off_batch:.2f} s |")
    print(f"| on  | {on_rate:,.0f} | {on_batch:.2f} s |")
    # GX runs beside the bronze and quarantine writes, so its own wall time is not what it adds.
    print(f"validation adds {on_batch / off_batch - 1:+.1%} to batch time (GX's own wall time {gx_wall:.2f} s per batch, "
          f"overlapping the writes); throughput on/off: {on_rate / off_rate:.3f}")


if __name__ == "__main__":
    main()
