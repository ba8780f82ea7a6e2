"""Grid-search the heuristic rephrase scorer's weights and threshold on one simulation (the tuning seed).

Reports are made on a different seed with `feedback evaluate`, so the figure in
docs/quality.md is not the tuned one.

    .venv/bin/python benchmarks/tune_heuristic.py --users 300 --days 3 --seed 101 --workdir bench/tune
    .venv/bin/python benchmarks/tune_heuristic.py ... --corpus sgd --profile b   # the other side of the cross split
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from feedback.bronze.contract import parse_events, split_valid
from feedback.config import AppConfig, SparkConfig, load_config
from feedback.core.spark import build_spark
from feedback.silver.detect import heuristic_features, rephrase_candidates
from feedback.silver.sessionize import TURN_FIELDS, aggregate_sessions, explode_sessions, mark_turns
from feedback.simulate import run as simulate

FEATURES = ("lexical", "phonetic", "characters", "visible_failure", "containment")


def candidate_matrix(pairs: pd.DataFrame, max_back: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and presence as (targets x max_back) arrays, column k = k+1 requests back."""
    targets = {t: i for i, t in enumerate(sorted(pairs.target_event_id.unique()))}
    rows = pairs.target_event_id.map(targets).to_numpy()
    cols = pairs.steps_back.to_numpy() - 1
    shape = (len(targets), max_back)
    features = np.zeros((*shape, len(FEATURES)))
    labels = np.zeros(shape, dtype=bool)
    present = np.zeros(shape, dtype=bool)
    features[rows, cols] = pairs[list(FEATURES)].to_numpy()
    labels[rows, cols] = pairs.label.to_numpy()
    present[rows, cols] = True
    return features, labels, present, np.arange(max_back)


def best_link_f1(
    features: np.ndarray, labels: np.ndarray, present: np.ndarray, steps: np.ndarray,
    weights: np.ndarray, penalty: float, thresholds: np.ndarray, truth_links: int,
) -> tuple[float, float]:
    """Best F1 over thresholds when each target links to its best candidate (ties: nearest)."""
    scores = np.where(present, features @ weights - penalty * steps, -np.inf)
    best = scores.argmax(axis=1)
    best_score = scores[np.arange(len(best)), best]
    best_label = labels[np.arange(len(best)), best]
    linked = best_score[None, :] >= thresholds[:, None]
    true_positives = (linked & best_label[None, :]).sum(axis=1)
    predicted = linked.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros(len(thresholds)), where=predicted > 0)
    recall = true_positives / truth_links
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(thresholds)), where=precision + recall > 0)
    index = int(f1.argmax())
    return float(f1[index]), float(thresholds[index])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--corpus", choices=("snips", "sgd"), default="snips")
    parser.add_argument("--profile", default="a", help="behaviour profile (conf/behaviour-PROFILE.yaml)")
    parser.add_argument("--workdir", type=Path, default=Path("bench/tune"))
    args = parser.parse_args()
    traffic = args.workdir / f"traffic-{args.corpus}-{args.profile}-{args.seed}"
    if traffic.exists():
        shutil.rmtree(traffic)
    behaviour = load_config(Path(__file__).resolve().parents[1] / "conf" / f"behaviour-{args.profile}.yaml").simulation
    simulate(replace(behaviour, users=args.users, days=args.days, seed=args.seed, corpus=args.corpus), traffic, progress=False)
    config = AppConfig()
    spark = build_spark(SparkConfig(master="local[2]", shuffle_partitions=2))
    lines = spark.read.text(str((traffic / "events").resolve())).withColumn("source_file", spark_lit("f"))
    valid, _ = split_valid(parse_events(lines))
    events = valid.dropDuplicates(["event_id"]).select("user_id", "device_id", *TURN_FIELDS)
    turns = mark_turns(explode_sessions(aggregate_sessions(events, config.sessionize)), config.sessionize)
    pairs = heuristic_features(rephrase_candidates(turns, config.detect)).toPandas()
    spark.stop()

    truth = pd.DataFrame([json.loads(line) for line in (traffic / "ground_truth.jsonl").read_text().splitlines()])
    links = dict(zip(truth.event_id, truth.rephrase_of))
    pairs["label"] = [links.get(t) == s for s, t in zip(pairs.source_event_id, pairs.target_event_id)]
    truth_links = int(truth.rephrase_of.notna().sum())
    features, labels, present, steps = candidate_matrix(pairs, config.detect.rephrase_max_back)
    grid = np.round(np.arange(0.0, 0.55, 0.1), 2)
    thresholds = np.round(np.arange(0.2, 0.95, 0.01), 3)
    best: tuple[float, tuple[float, ...] | None] = (0.0, None)
    combos = list(itertools.product(*[grid] * len(FEATURES)))
    for combo in tqdm(combos, desc="weights", unit="combo", mininterval=5.0):
        for penalty in (0.0, 0.05, 0.1, 0.2):
            weights = np.array(combo)
            f1, threshold = best_link_f1(features, labels, present, steps, weights, penalty, thresholds, truth_links)
            if f1 > best[0]:
                best = (f1, (*(float(w) for w in combo), penalty, threshold))
    print(f"candidate pairs {len(pairs)}, true links {truth_links}, reachable {int(pairs.label.sum())}")
    names = ", ".join((*FEATURES, "step_penalty", "threshold"))
    print(f"best link F1 on {args.corpus}/{args.profile} seed {args.seed}: {best[0]:.4f} with ({names}) = {best[1]}")


def spark_lit(value: str):  # type: ignore[no-untyped-def]
    from pyspark.sql import functions as F

    return F.lit(value)


if __name__ == "__main__":
    main()
