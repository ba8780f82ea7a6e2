"""Benchmark: pairs per second of the rephrase detector's stage inside Spark, at the size of a week of traffic.

1. Simulates traffic (held-out vocabulary), runs the pipeline once with the heuristic and takes its
   candidate pairs (written to Parquet, so every variant scores exactly the same pairs).
2. Runs ``score_pairs_with_detector`` on local[N] (N tasks, one torch thread each) into the ``noop``
   sink, after a warm-up that loads the model in the workers, once per variant:
   - the baseline (``--baseline-version``, the first fine-tuned model) scoring every pair: it
     takes minutes per thousand requests on two cores, so it runs on ``--baseline-share`` of the
     requests (all their candidates; the rate is per pair);
   - the baseline behind the cascade (``--cascade``, default ``rephrase_model.cascade_min_score``),
     in fp32 and in int8 (``rephrase_model.fp32_ffn_output_layers`` kept in fp32);
   - any ``--compare`` versions (``N`` or ``N:int8``: a distilled student, say) behind the same cascade.
   Every figure is input pairs per second of the whole stage, the cascade's first stage included.

    .venv/bin/python benchmarks/bench_rephrase.py --model-lake train --users 1000 --days 7 --workdir bench/rephrase
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feedback.config import AppConfig, SimulationConfig, SparkConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.spark import build_spark
from feedback.pipeline import run_pipeline
from feedback.rephrase.spark import (
    DetectorHandle,
    cascade_passes,
    champion_detector_dir,
    request_groups,
    score_pairs_with_detector,
)
from feedback.silver.detect import rephrase_candidates, score_pairs_heuristic
from feedback.simulate import run as simulate


def version_dir(model_lake: Path, version: int, workdir: Path) -> Path:
    """The saved detector of ``rephrase-detector`` version ``version``, downloaded once under ``workdir``."""
    import mlflow

    from feedback.core.registry import REPHRASE_DETECTOR, configure_mlflow
    from feedback.rephrase.pyfunc import DETECTOR_ARTIFACT

    target = workdir / "models" / str(version)
    if not (target / "artifacts" / DETECTOR_ARTIFACT / "config.json").is_file():
        configure_mlflow(LakePaths.at(model_lake))
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{REPHRASE_DETECTOR}/{version}", dst_path=str(target))
    return target / "artifacts" / DETECTOR_ARTIFACT


def stage_rate(pairs: DataFrame, handle: DetectorHandle, config: AppConfig) -> dict[str, float]:
    """Pairs per second of the whole stage over ``pairs`` (noop sink)."""
    total = pairs.count()
    started = time.perf_counter()
    score_pairs_with_detector(pairs, handle, config.detect).write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - started
    return {"pairs": total, "seconds": seconds, "pairs_per_s": total / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-lake", type=Path, default=Path("lake"), help="lake whose registry holds rephrase-detector@champion")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=303)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--cascade", type=float, default=None, help="cascade threshold (default: rephrase_model.cascade_min_score)")
    parser.add_argument("--baseline-version", type=int, default=1, help="rephrase-detector version measured without and with the cascade")
    parser.add_argument(
        "--compare", nargs="*", default=[], help="more versions behind the cascade, e.g. 3 3:int8 (default: none; the champion is the baseline)"
    )
    parser.add_argument("--baseline-share", type=float, default=0.1, help="share of requests the variants without the cascade score")
    parser.add_argument("--workdir", type=Path, default=Path("bench/rephrase"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not 0 < args.baseline_share <= 1:
        raise SystemExit(f"--baseline-share must be in (0, 1], got {args.baseline_share}")

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    found = champion_detector_dir(LakePaths.at(args.model_lake))
    if found is None:
        raise SystemExit(f"no rephrase-detector@champion in {args.model_lake}/mlflow: run `make train-rephrase` first")
    version, detector_dir = found
    config = replace_section(
        AppConfig(),
        spark=SparkConfig(master=f"local[{args.cores}]", shuffle_partitions=args.cores, extra={"spark.ui.enabled": "false"}),
        rephrase_model=replace(AppConfig().rephrase_model, use_champion=False),
    )
    spark = build_spark(config.spark)
    workdir = args.workdir.resolve()
    traffic = workdir / f"traffic-u{args.users}-d{args.days}-s{args.seed}"
    if not (traffic / "manifest.json").is_file():
        simulate(SimulationConfig(users=args.users, days=args.days, seed=args.seed, vocabulary="heldout"), traffic)
    manifest = json.loads((traffic / "manifest.json").read_text())
    lake = LakePaths.at(workdir / "lake-heuristic")
    pairs_path = workdir / "pairs.parquet"
    if not pairs_path.is_dir():
        run_pipeline(spark, config, traffic / "events", lake)
        turns = spark.read.format("delta").load(lake.silver_turns)
        rephrase_candidates(turns, config.detect).write.mode("overwrite").parquet(str(pairs_path))
    pairs = spark.read.parquet(str(pairs_path)).cache()
    sample_buckets = max(1, round(args.baseline_share * 1000))
    sample = pairs.filter(F.pmod(F.xxhash64("source_event_id"), F.lit(1000)) < sample_buckets).cache()
    counts = {"pairs": pairs.count(), "sample_pairs": sample.count(), "request_groups": request_groups(pairs).count()}

    cascade = config.rephrase_model.cascade_min_score if args.cascade is None else args.cascade
    baseline_dir = version_dir(args.model_lake, args.baseline_version, workdir)
    variants = [
        (f"v{args.baseline_version}, every pair", sample, baseline_dir, args.baseline_version, 0.0, False),
        (f"v{args.baseline_version} + cascade {cascade}", pairs, baseline_dir, args.baseline_version, cascade, False),
        (f"v{args.baseline_version} int8 + cascade {cascade}", pairs, baseline_dir, args.baseline_version, cascade, True),
    ]
    for spec in args.compare:
        number, _, suffix = spec.partition(":")
        folder = detector_dir if int(number) == int(version) else version_dir(args.model_lake, int(number), workdir)
        variants.append((f"v{number}{' int8' if suffix == 'int8' else ''} + cascade {cascade}", pairs, folder, int(number), cascade, suffix == "int8"))
    rates = {}
    for name, frame, folder, model_version, threshold, quantize in variants:
        handle = DetectorHandle(
            str(folder),
            f"rephrase-detector/{model_version}",
            quantize=quantize,
            fp32_ffn_output_layers=config.rephrase_model.fp32_ffn_output_layers,
            batch_size=config.rephrase_model.batch_size,
            cascade_min_score=threshold,
        )
        score_pairs_with_detector(frame.limit(200), handle, config.detect).write.format("noop").mode("overwrite").save()  # warm-up
        rates[name] = stage_rate(frame, handle, config)
        print(name, json.dumps(rates[name]), flush=True)
    heuristic = score_pairs_heuristic(pairs, config.detect)
    settled = heuristic.filter(~cascade_passes(F.col("rephrase_score"), cascade)).count()
    baseline_rate = rates[variants[0][0]]["pairs_per_s"]
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, local[{args.cores}]",
        "champion": f"rephrase-detector/{version}",
        "events": manifest["events"],
        **counts,
        "pairs_per_event": counts["pairs"] / manifest["events"],
        "cascade_threshold": cascade,
        "cascade_settled_share": settled / counts["pairs"],
        "rates": rates,
        "speedup_over_baseline": {name: rate["pairs_per_s"] / baseline_rate for name, rate in rates.items()},
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
