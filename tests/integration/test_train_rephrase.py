"""``feedback train-rephrase`` end to end on a tiny BERT: simulate, train, register, champion rule, stream.

Real simulator, real pipeline, real MLflow (SQLite under tmp_path); only the encoder is a tiny random
BERT so the test stays fast (its F1 is meaningless; the real checkpoint's is in docs/quality.md).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig, RephraseModelConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import REPHRASE_DETECTOR, champion_uri
from feedback.pipeline import run_pipeline
from feedback.rephrase.model import SpanRephraseDetector, queries_from_pandas, scores_frame
from feedback.rephrase.spark import champion_detector_dir, request_groups
from feedback.rephrase.train import run as train_rephrase
from feedback.silver.detect import rephrase_candidates
from feedback.silver.evaluate import run as evaluate_silver

from support.paths import REPO
from support.tiny_bert import tiny_encoder


@pytest.mark.slow
def test_train_register_champion_rule_and_streaming_inference(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model_config = RephraseModelConfig(
        base_model=str(tiny_encoder(tmp_path / "encoder")),
        must_beat_heuristic=False,  # a tiny random model never would; the gate is tested in test_registry
        max_length=96,
        epochs=1,
        train_users=12,
        train_days=1,
        eval_users=8,
        eval_days=1,
        train_corpora=("snips",),  # trained on SNIPS with profile a, judged on SGD with profiles a and b
        eval_corpora=("sgd",),
        cross_profile=str(REPO / "conf" / "behaviour-b.yaml"),
    )
    config = replace_section(app_config, rephrase_model=model_config)
    lake = tmp_path / "lake"
    paths = LakePaths.at(lake)

    first = train_rephrase(spark, config, paths, progress=False)
    assert (first.version, first.promoted, first.champion_f1) == ("1", True, None)
    assert first.every_set.pairs > 0 and first.train_groups > 0
    assert [(scores.name, scores.cross_profile) for scores in first.sets] == [("sgd / profile a", False), ("sgd / profile b", True)]
    manifests = {
        name: json.loads((Path(paths.training) / name / "traffic" / "manifest.json").read_text())
        for name in ("train-snips-1001", "eval-sgd-a-2002", "eval-sgd-b-2002")
    }
    assert {name: (m["corpus"], m["profile"], m["vocabulary"]) for name, m in manifests.items()} == {
        "train-snips-1001": ("snips", "a", "train"),
        "eval-sgd-a-2002": ("sgd", "a", "heldout"),
        "eval-sgd-b-2002": ("sgd", "b", "heldout"),
    }
    # The naive baseline beside the model is `feedback evaluate`'s, on the same silver turns.
    for scores, folder in zip(first.sets, ("eval-sgd-a-2002", "eval-sgd-b-2002"), strict=True):
        base = Path(paths.training) / folder
        reference = evaluate_silver(spark, LakePaths.at(base / "lake"), base / "traffic" / "ground_truth.jsonl")
        assert reference.baseline is not None
        assert scores.baseline == reference.baseline.rephrase_link
    rendered = first.render()
    assert "| sgd / profile b (cross profile) |" in rendered and "| **cross-profile sets, pooled** |" in rendered

    # Same data, same seed: the same F1, which does not *beat* the champion, so the alias stays.
    # The rule compares the models as the pipeline serves them: int8 by default.
    second = train_rephrase(spark, config, paths, progress=False)
    assert (second.version, second.promoted, second.served) == ("2", False, "int8")
    assert second.champion_f1 == first.quantized.f1 == second.quantized.f1
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(REPHRASE_DETECTOR, "champion").version) == "1"
    tags = client.get_model_version(REPHRASE_DETECTOR, "2").tags
    assert (tags["champion_decision"], tags["compared_with_version"]) == ("rejected", "1")
    run = client.get_run(second.run_id)
    assert run.data.metrics["promoted"] == 0.0
    assert {(i.dataset.name, i.tags[0].value) for i in run.inputs.dataset_inputs} == {
        ("silver_turns_training_train-snips-1001", "training"),
        ("silver_turns_eval-sgd-a-2002", "evaluation"),
        ("silver_turns_eval-sgd-b-2002", "evaluation"),
    }
    assert run.data.params["rephrase_model.epochs"] == "1"
    assert (run.data.params["train_corpora"], run.data.params["profile"]) == ("snips", "a")
    cross = second.sets[1]
    assert (run.data.metrics["eval_cross_f1"], run.data.metrics["eval_cross_baseline_f1"]) == (cross.fp32.f1, cross.baseline.f1)
    assert run.data.metrics["eval_sgd_b_int8_recall"] == cross.int8.recall

    # A registry consumer: the pyfunc scores request groups like the detector itself.
    eval_lake = LakePaths.at(Path(paths.training) / "eval-sgd-a-2002" / "lake")
    turns = spark.read.format("delta").load(eval_lake.silver_turns)
    groups = request_groups(rephrase_candidates(turns, config.detect)).toPandas().head(20)
    predicted = mlflow.pyfunc.load_model(champion_uri(REPHRASE_DETECTOR)).predict(groups)
    found = champion_detector_dir(paths)
    assert found is not None and found[0] == "1"
    queries = queries_from_pandas(groups)
    expected = scores_frame(queries, SpanRephraseDetector.load(found[1]).score(queries))
    pd.testing.assert_frame_equal(predicted.reset_index(drop=True), expected, atol=1e-5)

    # The pipeline scores with the champion and records its version on every scored turn.
    train_events = Path(paths.training) / "train-snips-1001" / "traffic" / "events"
    run_pipeline(spark, replace_section(config, rephrase_model=replace(model_config, quantize=True)), train_events, paths)
    detectors = (
        spark.read.format("delta").load(paths.silver_turns).filter(F.col("rephrase_score").isNotNull())
        .groupBy("rephrase_detector").count().collect()
    )
    assert [row["rephrase_detector"] for row in detectors] == ["rephrase-detector/1+int8"]
    assert detectors[0]["count"] > 0
