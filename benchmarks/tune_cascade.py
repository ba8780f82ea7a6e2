"""Choose the cascade's threshold on the training simulation; report what it costs on the held-out evaluation.

The cascade's first stage is the heuristic's score: the model scores only the candidate pairs whose
heuristic score reaches ``rephrase_model.cascade_min_score``, the rest are settled as no rephrase.
Reads the training and evaluation simulations that ``feedback train-rephrase`` left in
``LAKE/_training`` and the lake's ``rephrase-detector@champion``:

1. Training simulation (training vocabulary): per threshold, the share of candidate pairs settled and
   the share of true rephrase pairs passed on. Chosen: the highest threshold that passes at least
   ``--keep`` of the true pairs. No model is involved, so nothing is tuned on the evaluation set.
2. Evaluation simulation (held-out intents and slot values): the champion's link F1 without and with
   the cascade at that threshold (pair scope, and request scope: ``rephrase_model.cascade_scope``), the
   pairs and sequences the model scores, and the time it takes,
   one after the other in this process on ``--threads`` threads (fp32, then bf16 autocast).

    .venv/bin/python benchmarks/tune_cascade.py --model-lake train --json bench/cascade.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from model_lake import LOCAL_SPARK, champion_or_exit

from feedback.config import AppConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.spark import build_spark
from feedback.rephrase.model import SpanRephraseDetector
from feedback.rephrase.train import LabelledSet, link_score, score_set, simulated_sets, with_cascade


def threshold_table(pairs: pd.DataFrame, thresholds: np.ndarray) -> pd.DataFrame:
    """Per threshold: the share of pairs settled (heuristic score below it) and of true pairs passed on."""
    true = (pairs["true_source"] == pairs["source_event_id"]).to_numpy()
    scores = pairs["heuristic_score"].to_numpy()
    passed = scores[None, :] >= thresholds[:, None]
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "settled_share": 1.0 - passed.mean(axis=1),
            "true_pairs_passed": passed[:, true].mean(axis=1) if true.any() else np.ones(len(thresholds)),
        }
    )


def scored_run(
    detector: SpanRephraseDetector, data: LabelledSet, threshold: float, bf16: bool, batch_size: int, scope: str = "pair"
) -> dict[str, Any]:
    """Link score of ``data`` scored by ``detector`` behind the cascade at ``threshold`` (``score_set``:
    settled pairs score 0, words ranked by the whole set), what the model saw and the time it took."""
    import torch

    served = with_cascade(data, threshold, scope)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    started = time.perf_counter()
    with context:
        scored, _ = score_set(detector, data, batch_size, threshold, scope)
    seconds = time.perf_counter() - started
    score = link_score(scored, "model_score", data.truth_links, AppConfig().detect.rephrase_threshold)
    return {
        "sequences": len(served.groups),
        "model_pairs": int(served.groups["candidates"].map(len).sum()),
        "seconds": seconds,
        "pairs_per_s": len(data.pairs) / seconds,
        "precision": score.precision,
        "recall": score.recall,
        "f1": score.f1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-lake", type=Path, required=True, help="lake where `feedback train-rephrase` ran")
    parser.add_argument("--keep", type=float, default=0.995, help="share of true rephrase pairs the cascade must pass on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    version, detector_dir = champion_or_exit(args.model_lake, args.threads)
    config = replace_section(AppConfig(), spark=LOCAL_SPARK)
    spark = build_spark(config.spark)
    sets = simulated_sets(spark, config, LakePaths.at(args.model_lake))
    spark.stop()

    thresholds = np.round(np.arange(0.0, 0.61, 0.01), 2)
    table = threshold_table(sets["training"].pairs, thresholds)
    eligible = table[table["true_pairs_passed"] >= args.keep]
    chosen = float(eligible["threshold"].max())
    evaluation = sets["evaluation"]
    eval_table = threshold_table(evaluation.pairs, np.array([chosen]))

    detector = SpanRephraseDetector.load(detector_dir)
    runs = {}
    scored_run(detector, replace(evaluation, groups=evaluation.groups.head(64)), 0.0, False, args.batch_size)  # warm-up
    for name, threshold, bf16, scope in (
        ("fp32", 0.0, False, "pair"),
        ("fp32+cascade", chosen, False, "pair"),
        ("fp32+cascade, request scope", chosen, False, "request"),
        ("bf16", 0.0, True, "pair"),
        ("bf16+cascade", chosen, True, "pair"),
    ):
        runs[name] = scored_run(detector, evaluation, threshold, bf16, args.batch_size, scope)
        print(name, json.dumps(runs[name]))
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch threads {args.threads}",
        "model": f"rephrase-detector v{version}",
        "training_pairs": len(sets["training"].pairs),
        "evaluation_pairs": len(evaluation.pairs),
        "evaluation_groups": len(evaluation.groups),
        "keep": args.keep,
        "chosen_threshold": chosen,
        "training_table": table.to_dict(orient="records"),
        "evaluation_at_chosen": eval_table.to_dict(orient="records")[0],
        "runs": runs,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "training_table"}, indent=2))


if __name__ == "__main__":
    main()
