"""The champion's wrong rephrase links on one evaluation set of ``feedback train-rephrase``, to read.

Scores the set as the stage serves it (the cascade, int8 unless ``--fp32``), links each follow-up
to its best source as ``link_score`` does, and prints how many links are false and a seeded
sample of them: the source and follow-up texts with their intended intent, whether the source
was defective, and the follow-up's true origin and rephrase style from the ground truth.

    .venv/bin/python benchmarks/link_errors.py --model-lake /work/train-both --set eval-sgd-a-2002 --sample 30
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from model_lake import LOCAL_SPARK, champion_or_exit

from feedback.config import load_config, replace_section
from feedback.core.lake import LakePaths
from feedback.core.spark import build_spark
from feedback.rephrase.model import SpanRephraseDetector
from feedback.rephrase.train import labelled_set, score_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-lake", type=Path, required=True)
    parser.add_argument("--set", required=True, help="a folder under LAKE/_training, such as eval-sgd-a-2002")
    parser.add_argument("--sample", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fp32", action="store_true", help="score in fp32 instead of int8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    _, detector_dir = champion_or_exit(args.model_lake, args.threads)
    config = replace_section(load_config(None), spark=LOCAL_SPARK)
    settings = config.rephrase_model
    lake = LakePaths.at(args.model_lake)
    truth_path = Path(lake.training) / args.set / "traffic" / "ground_truth.jsonl"
    spark = build_spark(config.spark)
    data = labelled_set(spark, config, lake.training_lake(args.set), truth_path)
    spark.stop()
    detector = SpanRephraseDetector.load(
        detector_dir, quantize=not args.fp32, fp32_ffn_output_layers=settings.fp32_ffn_output_layers
    )
    scored, _ = score_set(detector, data, settings.batch_size, settings.cascade_min_score, settings.cascade_scope)
    ranked = scored.sort_values(["target_event_id", "model_score", "steps_back"], ascending=[True, False, True], kind="stable")
    best = ranked.drop_duplicates("target_event_id")
    linked = best[best["model_score"] >= config.detect.rephrase_threshold]
    false = [row for row in linked.itertuples(index=False) if (row.target_event_id, row.source_event_id) not in data.truth_links]
    print(f"{args.set}: {len(linked)} links, {len(false)} false, {len(data.truth_links)} true links in the ground truth")
    with truth_path.open() as lines:
        truth = {record["event_id"]: record for record in map(json.loads, lines)}
    for row in random.Random(args.seed).sample(false, min(args.sample, len(false))):
        source, target = truth[row.source_event_id], truth[row.target_event_id]
        origin = "this source" if target["rephrase_of"] == row.source_event_id else target["rephrase_of"]
        print(
            f"{row.model_score:.2f} (heuristic {row.heuristic_score:.2f}) | {source['utterance']!r} "
            f"[{source['intended_intent']}, defective {source['defective']}] -> {target['utterance']!r} "
            f"[{target['intended_intent']}, rephrase of {origin}, style {target['rephrase_style']}]"
        )


if __name__ == "__main__":
    main()
