"""Benchmark: the cost of failure-point isolation inside the silver batch, rules against the registered classifier.

1. Simulates a week of traffic with every failure point (``conf/failure-points.yaml`` rates; once,
   reused by later runs) and runs the pipeline into a fresh lake with the rules (``failure_model.use_champion: false``), timing it.
2. Takes ``silver/turns`` with the events' confidences (materialised once) and times, into the
   ``noop`` sink, each classifier over the same turns: the rules, and the champion of
   ``--model-lake`` (``mapInPandas`` on the defective requests; a warm-up loads it in the workers
   first). The figures are turns per second of the stage and its share of the pipeline's time.
3. Scores both against the simulator's truth on the defects silver and the truth share.

    .venv/bin/python benchmarks/bench_failure_points.py --model-lake lake --users 1000 --days 7 --workdir bench/failure-points
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feedback.config import FailureModelConfig, load_config, replace_section
from feedback.core.lake import LakePaths
from feedback.core.spark import build_spark
from feedback.core.truth import read_truth
from feedback.isolation.inputs import with_confidences
from feedback.isolation.spark import ClassifierHandle, ModelClassifier, champion_classifier_dir
from feedback.pipeline import run_pipeline
from feedback.silver.evaluate import evaluate_failure_points
from feedback.silver.failure_points import FailurePointClassifier, failure_points_by_rules
from feedback.simulate import run as simulate

REPO = Path(__file__).resolve().parents[1]


def timed(turns: DataFrame, classify: FailurePointClassifier, config: object) -> tuple[float, DataFrame]:
    """Seconds to classify ``turns`` into the noop sink, and the classified frame."""
    result = classify(turns, config)
    started = time.perf_counter()
    result.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-lake", type=Path, required=True, help="lake whose registry holds failure-point-classifier@champion")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=909)
    parser.add_argument("--corpus", default="snips")
    parser.add_argument("--workdir", type=Path, default=Path("bench/failure-points"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    found = champion_classifier_dir(LakePaths.at(args.model_lake))
    if found is None:
        raise SystemExit(f"{args.model_lake}: no failure-point-classifier@champion; run `make train-failure-points LAKE={args.model_lake}`")
    version, folder = found
    base = load_config(REPO / "conf" / "failure-points.yaml")
    config = replace_section(
        base,
        simulation=replace(base.simulation, users=args.users, days=args.days, seed=args.seed, corpus=args.corpus),
        failure_model=FailureModelConfig(use_champion=False),
    )
    traffic = args.workdir / "traffic"
    if not (traffic / "manifest.json").is_file():
        simulate(config.simulation, traffic)
    events = sum(1 for path in (traffic / "events").rglob("*.jsonl") for _ in path.open())
    lake_dir = args.workdir / "lake"
    shutil.rmtree(lake_dir, ignore_errors=True)  # the pipeline is timed from scratch every run
    lake = LakePaths.at(lake_dir)
    spark = build_spark(config.spark)
    started = time.perf_counter()
    run_pipeline(spark, config, traffic / "events", lake)
    pipeline_seconds = time.perf_counter() - started

    turns = with_confidences(spark.read.format("delta").load(lake.silver_turns), spark.read.format("delta").load(lake.bronze))
    turns = turns.drop("failure_point", "failure_point_score", "failure_point_classifier").localCheckpoint(eager=True)
    rows = turns.count()
    defects = turns.filter(F.col("defect") & ~F.col("is_system_command")).count()
    model = ModelClassifier(ClassifierHandle(str(folder), f"failure-point-classifier/{version}"))
    model(turns.limit(200), config.detect.failure_points).write.format("noop").mode("overwrite").save()  # load the model in the workers
    rules_seconds, ruled = timed(turns, failure_points_by_rules, config.detect.failure_points)
    model_seconds, classified = timed(turns, model, config.detect.failure_points)
    truth = read_truth(spark, traffic / "ground_truth.jsonl")
    scores = {"rules": evaluate_failure_points(ruled, truth), "model": evaluate_failure_points(classified, truth)}
    result = {
        "events": events,
        "turns": rows,
        "defective_requests": defects,
        "pipeline_seconds_with_rules": round(pipeline_seconds, 1),
        "rules_seconds": round(rules_seconds, 2),
        "model_seconds": round(model_seconds, 2),
        "rules_turns_per_s": round(rows / rules_seconds, 1),
        "model_turns_per_s": round(rows / model_seconds, 1),
        "model_defects_per_s": round(defects / model_seconds, 1),
        "model_over_rules": round(model_seconds / rules_seconds, 2),
        "model_share_of_pipeline": round(model_seconds / pipeline_seconds, 3),
        "classifier": f"failure-point-classifier/{version}",
        "quality": {name: s.as_dict() if s is not None else None for name, s in scores.items()},
        "machine": f"{platform.machine()}, {spark.sparkContext.defaultParallelism} Spark cores ({spark.sparkContext.master})",
    }
    print(json.dumps({k: v for k, v in result.items() if k != "quality"}, indent=2))
    for name, score in scores.items():
        if score is not None:
            print(f"{name}:\n{score.render()}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    spark.stop()


if __name__ == "__main__":
    main()
