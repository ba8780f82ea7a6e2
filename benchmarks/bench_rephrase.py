"""Benchmark: the rephrase detector inside Spark versus the same model called directly, and the pipeline with it.

1. Simulates traffic, runs the pipeline once (heuristic) and takes its candidate pairs (written to
   Parquet, so both sides score exactly the same pairs).
2. Direct: one Python process, ``SpanRephraseDetector.score`` over all request groups, torch on
   as many threads as Spark has cores. Spark: ``score_pairs_with_detector`` on local[N] (N tasks,
   one thread each), written to the ``noop`` sink, after a warm-up that loads the model in the
   workers. Both fp32 and int8. Ratio = Spark pairs/s over direct pairs/s, in the same run.
3. End to end: the whole pipeline (bronze -> silver -> gold) on the same traffic with the
   champion on and with the heuristic, events/s, and candidate pairs per event.

    .venv/bin/python benchmarks/bench_rephrase.py --model-lake lake --users 150 --days 2 --workdir bench/rephrase
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from feedback.config import AppConfig, SimulationConfig, SparkConfig, replace_section
from feedback.detect import rephrase_candidates
from feedback.pipeline import run_pipeline, summarize
from feedback.registry import tracking_uri_for
from feedback.rephrase_model import SpanRephraseDetector, queries_from_pandas
from feedback.rephrase_spark import DetectorHandle, champion_detector_dir, request_groups, score_pairs_with_detector
from feedback.schema import LakePaths
from feedback.simulate import run as simulate
from feedback.spark import build_spark


def direct_rate(detector_dir: Path, pairs: DataFrame, threads: int, quantize: bool, batch_size: int) -> float:
    """Pairs per second of the detector in this process (best of two passes)."""
    import torch

    torch.set_num_threads(threads)
    detector = SpanRephraseDetector.load(detector_dir, quantize=quantize)
    queries = queries_from_pandas(request_groups(pairs).toPandas())
    total = sum(len(q.candidates) for q in queries)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        detector.score(queries, batch_size)
        best = min(best, time.perf_counter() - started)
    return total / best


def spark_rate(detector_dir: Path, pairs: DataFrame, quantize: bool, batch_size: int, label: str) -> float:
    """Pairs per second of the Spark stage (noop sink, after a warm-up; best of two passes)."""
    handle = DetectorHandle(str(detector_dir), label, quantize=quantize, batch_size=batch_size, threads=0)
    score_pairs_with_detector(pairs.limit(50), handle).write.format("noop").mode("overwrite").save()
    total = pairs.count()
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        score_pairs_with_detector(pairs, handle).write.format("noop").mode("overwrite").save()
        best = min(best, time.perf_counter() - started)
    return total / best


def pipeline_rate(spark: SparkSession, config: AppConfig, events: Path, lake: Path) -> tuple[float, dict[str, int]]:
    if lake.exists():
        shutil.rmtree(lake)
    started = time.perf_counter()
    run_pipeline(spark, config, events, lake)
    elapsed = time.perf_counter() - started
    summary = summarize(spark, lake)
    return summary.ingest["bronze_rows"] / elapsed if "bronze_rows" in summary.ingest else 0.0, {**summary.ingest, **summary.silver}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-lake", type=Path, default=Path("lake"), help="lake whose registry holds rephrase-detector@champion")
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=303)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workdir", type=Path, default=Path("bench/rephrase"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    found = champion_detector_dir(LakePaths.at(args.model_lake))
    if found is None:
        raise SystemExit(f"no rephrase-detector@champion in {args.model_lake}/mlflow: run `make train-rephrase` first")
    version, detector_dir = found
    # Later pipeline runs write to their own lakes: point them at the model lake's registry.
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri_for(args.model_lake)

    config = replace_section(
        AppConfig(),
        spark=SparkConfig(master=f"local[{args.cores}]", shuffle_partitions=args.cores, extra={"spark.ui.enabled": "false"}),
    )
    spark = build_spark(config.spark)
    workdir = args.workdir.resolve()
    traffic = workdir / f"traffic-u{args.users}-d{args.days}-s{args.seed}"
    if not (traffic / "manifest.json").is_file():
        simulate(SimulationConfig(users=args.users, days=args.days, seed=args.seed, vocabulary="heldout"), traffic, progress=False)
    manifest = json.loads((traffic / "manifest.json").read_text())

    heuristic = replace_section(config, rephrase_model=replace(config.rephrase_model, use_champion=False))
    heuristic_rate, heuristic_totals = pipeline_rate(spark, heuristic, traffic / "events", workdir / "lake-heuristic")
    model_rate, model_totals = pipeline_rate(spark, config, traffic / "events", workdir / "lake-model")

    turns = spark.read.format("delta").load(LakePaths.at(workdir / "lake-heuristic").silver_turns)
    pairs_path = workdir / "pairs.parquet"
    rephrase_candidates(turns, config.detect).write.mode("overwrite").parquet(str(pairs_path))
    pairs = spark.read.parquet(str(pairs_path)).repartition(args.cores).cache()
    pair_count = pairs.count()

    rates = {}
    for quantize in (False, True):
        name = "int8" if quantize else "fp32"
        spark_pairs_s = spark_rate(detector_dir, pairs, quantize, args.batch_size, f"rephrase-detector/{version}")
        direct_pairs_s = direct_rate(detector_dir, pairs, args.cores, quantize, args.batch_size)
        rates[name] = {"spark_pairs_per_s": spark_pairs_s, "direct_pairs_per_s": direct_pairs_s, "ratio": spark_pairs_s / direct_pairs_s}
    groups = request_groups(pairs).count()
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, local[{args.cores}]",
        "model": f"rephrase-detector v{version}",
        "events": manifest["events"],
        "candidate_pairs": pair_count,
        "request_groups": groups,
        "pairs_per_event": pair_count / manifest["events"],
        "rates": rates,
        "pipeline_events_per_s_heuristic": heuristic_rate,
        "pipeline_events_per_s_model": model_rate,
        "pipeline_totals_model": model_totals,
        "pipeline_totals_heuristic": heuristic_totals,
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
