"""``feedback train-failure-points`` end to end on a tiny encoder: simulate, train, register, champion rule, stream.

Real simulator, real pipeline, real MLflow (SQLite under tmp_path); only the sentence encoder is a
tiny random BERT (its scores are meaningless; the real checkpoint's are in docs/quality.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig, FailureModelConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import FAILURE_POINT_CLASSIFIER
from feedback.isolation.train import run as train_failure_points
from feedback.pipeline import run_pipeline

from support.tiny_bert import tiny_encoder


@pytest.mark.slow
def test_train_register_champion_rule_and_streaming_inference(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = FailureModelConfig(
        base_model=str(tiny_encoder(tmp_path / "encoder")), train_corpora=("snips",), users=25, days=1, text_components=2, max_iter=40
    )
    config = replace_section(app_config, failure_model=settings)
    paths = LakePaths.at(tmp_path / "lake")

    first = train_failure_points(spark, config, paths)
    manifests = {
        name: json.loads((Path(paths.training) / name / "traffic" / "manifest.json").read_text())
        for name in ("failure-train-snips-707", "failure-heldout-snips-808")
    }
    assert {name: (m["vocabulary"], m["seed"], m["users"]) for name, m in manifests.items()} == {
        "failure-train-snips-707": ("train", 707, 25),
        "failure-heldout-snips-808": ("heldout", 808, 25),
    }
    assert [item.name for item in first.sets] == ["snips"]
    headline = first.headline
    assert headline.model.turns == headline.rules.turns
    assert headline.model.turns > 0
    # the first version must beat the rules on the held-out set to become champion
    assert (first.version, first.promoted, first.champion_macro_f1) == ("1", headline.model.macro_f1 > headline.rules.macro_f1, None)

    client = MlflowClient()
    tags = client.get_model_version(FAILURE_POINT_CLASSIFIER, "1").tags
    assert tags["champion_decision"] == ("promoted" if first.promoted else "rejected")
    assert tags["compared_with_version"] == "rules-v1"
    run = client.get_run(first.run_id)
    assert sorted(k for k in run.data.params if k.startswith("silver_version.")) == [
        "silver_version.failure-heldout-snips-808",
        "silver_version.failure-train-snips-707",
    ]
    assert run.data.metrics["snips_rules_macro_f1"] == pytest.approx(headline.rules.macro_f1)

    if not first.promoted:
        client.set_registered_model_alias(FAILURE_POINT_CLASSIFIER, "champion", "1")
    second = train_failure_points(spark, config, paths)  # the simulations are reused; the champion is re-scored
    assert (second.version, second.champion_macro_f1) == ("2", pytest.approx(headline.model.macro_f1))
    assert second.promoted is (second.headline.model.macro_f1 > headline.model.macro_f1)

    # the stream classifies defective requests with the champion
    traffic = Path(paths.training) / "failure-heldout-snips-808" / "traffic"
    stream_lake = LakePaths.at(tmp_path / "lake")  # the lake whose registry holds the champion
    run_pipeline(spark, config, traffic / "events", stream_lake)
    turns = spark.read.format("delta").load(stream_lake.silver_turns)
    champion = "2" if second.promoted else "1"
    by_classifier = {
        r["failure_point_classifier"]: r["count"]
        for r in turns.filter(F.col("defect") & ~F.col("is_system_command")).groupBy("failure_point_classifier").count().collect()
    }
    defects = turns.filter(F.col("defect") & ~F.col("is_system_command")).count()
    assert by_classifier == {f"{FAILURE_POINT_CLASSIFIER}/{champion}": defects}
    gold = spark.read.format("delta").load(stream_lake.failure_points).agg(F.sum("defects")).first()[0]
    assert gold == defects
