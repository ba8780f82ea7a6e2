"""Detection quality across corpora and behaviour profiles, with the naive baseline beside ours.

For each (corpus, profile) asked for, simulate traffic on a seed that no tuning used, run the
pipeline over it and score silver with ``feedback evaluate`` (ours and the naive baseline on the
same rows). The heuristic was tuned on SNIPS with profile a (seed 101), so SGD and profile b are
traffic it has never seen. Prints one markdown table and writes every figure to JSON.

    .venv/bin/python benchmarks/cross_quality.py --users 500 --days 3 --seed 303 --workdir bench/cross
    .venv/bin/python benchmarks/cross_quality.py ... --model-lake /path/to/lake-of-train-rephrase

With ``--rewrites-split-day K`` (and at least K + 1 days) it also mines rewrites out of time on
each traffic: from the silver turns of days 1..K, judged on the ground truth of the days after
(``rewrite_holdout.out_of_time``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from feedback.config import load_config
from feedback.core.lake import LakePaths
from feedback.core.registry import tracking_uri_for
from feedback.core.spark import build_spark
from feedback.pipeline import run_pipeline
from feedback.rewrites.evaluate import RewriteEvaluation
from feedback.silver.evaluate import SIGNALS, Evaluation
from feedback.silver.evaluate import run as evaluate
from feedback.simulate import run as simulate

from rewrite_holdout import out_of_time

REPO = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("cross_quality")


def table(results: dict[str, Evaluation]) -> str:
    """One row per traffic and signal: ours (P, R, F1) and the baseline's F1, and our margin."""
    lines = [
        "| traffic | signal | precision | recall | F1 | baseline F1 | ours − baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, evaluation in results.items():
        base = evaluation.baseline
        for signal in SIGNALS:
            ours = evaluation.scores()[signal]
            reference = base.scores()[signal].f1 if base is not None else float("nan")
            lines.append(
                f"| {name} | {signal} | {ours.precision:.4f} | {ours.recall:.4f} | **{ours.f1:.4f}** | "
                f"{reference:.4f} | {ours.f1 - reference:+.4f} |"
            )
        found = evaluation.detectable
        if found is not None:
            reference = base.detectable.recall if base is not None and base.detectable is not None else float("nan")
            lines.append(
                f"| {name} | detectable defects found (silent share {found.silent_share:.4f}) | | {found.recall:.4f} | | "
                f"{reference:.4f} (recall) | {found.recall - reference:+.4f} |"
            )
    return "\n".join(lines)


def rewrites_table(results: dict[str, tuple[int, RewriteEvaluation]]) -> str:
    """One row per traffic: rewrites mined before the split, and their out-of-time figures."""
    lines = [
        "| traffic | rewrites mined | wins / losses by traffic | win/loss by traffic | defective requests judged | fixed share | wins / losses by rewrite |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (mined, judged) in results.items():
        ratio = "∞ (no losses)" if math.isinf(judged.win_loss_by_traffic) else f"{judged.win_loss_by_traffic:.1f}"
        lines.append(
            f"| {name} | {mined} | {judged.wins:,} / {judged.losses:,} | **{ratio}** | {judged.defective_requests:,} | "
            f"**{judged.fixed_share:.4f}** | {judged.rewrites_won} / {judged.rewrites_lost} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=303)
    parser.add_argument("--traffic", nargs="+", default=["snips/a", "snips/b", "sgd/a", "sgd/b"],
                        help="corpus/profile pairs (profile x reads conf/behaviour-x.yaml)")
    parser.add_argument("--conf", type=Path, default=None, help="configuration of the pipeline (default: the built-in)")
    parser.add_argument("--workdir", type=Path, default=Path("bench/cross"))
    parser.add_argument("--model-lake", type=Path, default=None,
                        help="score rephrases with this lake's rephrase-detector@champion (default: the heuristic)")
    parser.add_argument("--rewrites-split-day", type=int, default=None,
                        help="also mine rewrites on days 1..K and judge them on the days after")
    args = parser.parse_args()
    if args.rewrites_split_day is not None and not 1 <= args.rewrites_split_day < args.days:
        parser.error(f"--rewrites-split-day must be in [1, --days - 1], got {args.rewrites_split_day}")
    if args.model_lake is not None:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri_for(LakePaths.at(args.model_lake.resolve()))
    else:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    config = load_config(args.conf)
    if args.conf is None:
        config = replace(config, spark=replace(config.spark, master="local[2]", shuffle_partitions=2))
    spark = build_spark(config.spark)
    results: dict[str, Evaluation] = {}
    rewrites: dict[str, tuple[int, RewriteEvaluation]] = {}
    try:
        for pair in args.traffic:
            corpus, profile = pair.split("/")
            sim = load_config(REPO / "conf" / f"behaviour-{profile}.yaml").simulation
            sim = replace(sim, corpus=corpus, users=args.users, days=args.days, seed=args.seed)
            base = args.workdir / f"{corpus}-{profile}"
            if base.exists():
                shutil.rmtree(base)
            started = time.monotonic()
            LOG.info("%s: simulating %d households x %d days, seed %d", pair, args.users, args.days, args.seed)
            summary = simulate(sim, base / "traffic", progress=True)
            LOG.info("%s: %d events; running the pipeline", pair, summary.events)
            lake = LakePaths.at(base / "lake")
            run_pipeline(spark, config, base / "traffic" / "events", lake)
            LOG.info("%s: evaluating", pair)
            name = f"{corpus} / profile {profile} ({summary.events:,} events)"
            results[name] = evaluate(spark, lake, base / "traffic" / "ground_truth.jsonl", base / "evaluation.json")
            if args.rewrites_split_day is not None:
                split = dt.date.fromisoformat(sim.start_date) + dt.timedelta(days=args.rewrites_split_day)
                LOG.info("%s: mining rewrites before %s, judging from it", pair, split)
                rewrites[name] = out_of_time(spark, config, lake, base / "traffic" / "ground_truth.jsonl", split)
            LOG.info("%s: done in %.0f s", pair, time.monotonic() - started)
    finally:
        spark.stop()
    rendered = table(results)
    if rewrites:
        rendered += "\n\nRewrites out of time (mined on days 1-{0}, judged on days {1}-{2}):\n\n{3}".format(
            args.rewrites_split_day, args.rewrites_split_day + 1, args.days, rewrites_table(rewrites)
        )
    (args.workdir / "cross_quality.md").write_text(rendered + "\n")
    (args.workdir / "cross_quality.json").write_text(
        json.dumps(
            {
                name: evaluation.as_dict() | ({"rewrites_out_of_time": rewrites[name][1].as_dict()} if name in rewrites else {})
                for name, evaluation in results.items()
            },
            indent=2,
        )
        + "\n"
    )
    print(rendered)


if __name__ == "__main__":
    main()
