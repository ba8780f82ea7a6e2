"""Choose which layers int8 quantization keeps in fp32 on the training simulation; report its cost on the held-out evaluation.

Int8 dynamic quantization (weights per output channel) of every linear layer of the encoder cost
the detector link F1, mostly in precision. The feed-forward output projections are the suspects:
their inputs carry a few large outlier dimensions. For each ``k`` from 0 to the number of layers,
the projections of the first ``k`` layers stay fp32 (``rephrase_model.fp32_ffn_output_layers``):

1. Training simulation (training vocabulary), groups as the stage serves them (the cascade): the share
   of the pairs the model scores whose decision (score >= ``detect.rephrase_threshold``) differs from
   the fp32 model's. Chosen: the smallest ``k`` whose changed decisions are within ``--flip-margin``
   (10%) of the fewest of any ``k``: past it, keeping more layers in fp32 no longer brings the
   decisions closer to fp32's (what is left comes from the other int8 layers). The evaluation set
   plays no part in the choice; ``--conf`` names a larger training-vocabulary simulation
   (``rephrase_model.train_seed``/``train_users``) than the one the model was trained on, which
   it fits too well to show int8's changes.
2. Evaluation simulation (held-out intents and slot values): link precision, recall and F1 of each
   ``k`` and of fp32, and the seconds each took on ``--threads`` threads in this process.

    .venv/bin/python benchmarks/tune_int8.py --model-lake train --conf conf/tune-int8.yaml --json bench/int8.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from model_lake import LOCAL_SPARK, champion_or_exit

from feedback.config import AppConfig, load_config, replace_section
from feedback.core.lake import LakePaths
from feedback.core.spark import build_spark
from feedback.rephrase.model import SpanRephraseDetector
from feedback.rephrase.train import (
    LabelledSet,
    link_score,
    prepare_simulation,
    score_set,
    simulated_sets,
    simulation_of,
    training_folder,
    with_cascade,
)


def decisions(detector: SpanRephraseDetector, data: LabelledSet, config: AppConfig, batch_size: int) -> np.ndarray:
    """Each pair's model decision on ``data`` as the stage serves it (pairs in a fixed order)."""
    settings = config.rephrase_model
    scored, _ = score_set(detector, data, batch_size, settings.cascade_min_score, settings.cascade_scope)
    ordered = scored.sort_values(["source_event_id", "target_event_id"], kind="stable")
    return (ordered["model_score"] >= config.detect.rephrase_threshold).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-lake", type=Path, required=True, help="lake where `feedback train-rephrase` ran")
    parser.add_argument(
        "--conf", type=Path, default=None, help="YAML whose rephrase_model.train_* name the training simulation to choose on (default: conf/default.yaml)"
    )
    parser.add_argument("--flip-margin", type=float, default=0.1, help="changed decisions allowed above the fewest of any k, relative")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    version, detector_dir = champion_or_exit(args.model_lake, args.threads)
    config = replace_section(load_config(args.conf), spark=LOCAL_SPARK)
    spark = build_spark(config.spark)
    settings = config.rephrase_model
    model_lake = LakePaths.at(args.model_lake)
    corpus = settings.train_corpora[0]
    prepare_simulation(  # the choice's simulation: made (once) when --conf names one train-rephrase did not
        spark, config, model_lake, training_folder(corpus, settings.train_seed), "train",
        settings.train_users, settings.train_days, settings.train_seed, simulation_of(config.simulation, corpus),
    )
    sets = simulated_sets(spark, config, model_lake)
    spark.stop()
    training, evaluation = sets["training"], sets["evaluation"]

    fp32 = SpanRephraseDetector.load(detector_dir)
    layers = int(fp32.model.config.num_hidden_layers)
    decisions(fp32, evaluation, config, args.batch_size)  # warm-up
    reference = decisions(fp32, training, config, args.batch_size)
    served = with_cascade(training, settings.cascade_min_score, settings.cascade_scope)
    model_pairs = int(served.groups["candidates"].map(len).sum())
    rows: list[dict[str, Any]] = []
    for k in [None, *range(layers + 1)]:
        detector = fp32
        if k is not None:
            detector = copy.deepcopy(fp32)
            detector.quantize(k)
        train_decisions = reference if k is None else decisions(detector, training, config, args.batch_size)
        started = time.perf_counter()
        scored, _ = score_set(detector, evaluation, args.batch_size, settings.cascade_min_score, settings.cascade_scope)
        seconds = time.perf_counter() - started
        score = link_score(scored, "model_score", evaluation.truth_links, config.detect.rephrase_threshold)
        row = {
            "variant": "fp32" if k is None else f"int8, fp32 FFN outputs in layers < {k}",
            "fp32_ffn_output_layers": k,
            "training_flips": int((train_decisions != reference).sum()),
            "training_flip_share": float((train_decisions != reference).sum() / max(model_pairs, 1)),
            "evaluation_seconds": seconds,
            "evaluation_pairs_per_s": len(evaluation.pairs) / seconds,
            "precision": score.precision,
            "recall": score.recall,
            "f1": score.f1,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    int8_rows = [r for r in rows if r["fp32_ffn_output_layers"] is not None]
    fewest = min(r["training_flips"] for r in int8_rows)
    eligible = [r["fp32_ffn_output_layers"] for r in int8_rows if r["training_flips"] <= (1 + args.flip_margin) * fewest]
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch threads {args.threads}",
        "model": f"rephrase-detector v{version}",
        "cascade": f"{settings.cascade_scope} >= {settings.cascade_min_score}",
        "training_model_pairs": model_pairs,
        "evaluation_pairs": len(evaluation.pairs),
        "flip_margin": args.flip_margin,
        "chosen_fp32_ffn_output_layers": min(eligible),
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    print("| variant | training decisions changed | evaluation precision | recall | F1 | evaluation pairs/s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['training_flips']} ({r['training_flip_share']:.2%}) | {r['precision']:.4f} | {r['recall']:.4f} | "
            f"{r['f1']:.4f} | {r['evaluation_pairs_per_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
