"""Out-of-time check of the rewrite win/loss: mine on the days before a split, judge the days after.

``feedback evaluate-rewrites`` replays the same traffic the rewrites were mined from (the offline
"would it have fixed it" figure); a rewrite mined from a user's chain then also gets credit for
that chain. This script removes that credit: rewrites come only from silver turns dated before
``--split`` and are judged only on ground-truth requests at or after it.

    .venv/bin/python benchmarks/rewrite_holdout.py --lake L --truth D/ground_truth.jsonl --split 2026-11-07
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig, SparkConfig, load_config
from feedback.core.lake import LakePaths
from feedback.core.schema import REWRITE_VETOES_SCHEMA
from feedback.core.spark import build_spark
from feedback.core.truth import read_truth
from feedback.rewrites.evaluate import RewriteEvaluation, evaluate_rewrites, truth_traffic
from feedback.rewrites.mine import mine_rewrites


def out_of_time(
    spark: SparkSession, config: AppConfig, lake: LakePaths, truth_path: Path, split: dt.date
) -> tuple[int, RewriteEvaluation]:
    """Mine rewrites from ``lake``'s silver turns dated before ``split`` and judge them on the
    ground-truth requests of ``truth_path`` dated at or after it; the number mined and the figures."""
    turns = spark.read.format("delta").load(lake.silver_turns).filter(F.col("event_date") < F.lit(split))
    outcome = mine_rewrites(
        turns, spark.createDataFrame([], REWRITE_VETOES_SCHEMA), config.mining, "holdout", dt.datetime(2026, 1, 1)
    )
    rewrites = outcome.rewrites.localCheckpoint(eager=True)
    truth = read_truth(spark, truth_path)
    judged = truth.filter(F.to_date(F.to_timestamp("ts")) >= F.lit(split))
    # A target's meaning is what its wording means when served, on any day: a target not said
    # again after the split is not thereby a loss.
    return rewrites.count(), evaluate_rewrites(rewrites, truth_traffic(judged), meanings=truth_traffic(truth))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--truth", type=Path, required=True)
    parser.add_argument("--split", type=dt.date.fromisoformat, required=True, help="first day judged (YYYY-MM-DD)")
    parser.add_argument("--conf", type=Path, default=None)
    args = parser.parse_args()
    config = load_config(args.conf)
    spark = build_spark(SparkConfig(master="local[2]", shuffle_partitions=2, extra={"spark.ui.enabled": "false"}))
    mined, evaluation = out_of_time(spark, config, LakePaths.at(args.lake), args.truth, args.split)
    print(f"mined on silver before {args.split} ({mined} rewrites), judged on ground truth from {args.split}:")
    print(evaluation.render())
    spark.stop()


if __name__ == "__main__":
    main()
