"""The registered failure-point classifier in the silver batch: it answers for defective requests,
the rules answer for the rest and wherever the model fails, and the registry's champion is what runs."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig, FailureModelConfig, FailurePointsConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import FAILURE_POINT_CLASSIFIER, apply_champion_rule, configure_mlflow, ensure_experiment
from feedback.isolation.inputs import classification_inputs
from feedback.isolation.model import FAILURE_CLASSES, ClassifierSettings, FailurePointModel
from feedback.isolation.spark import ClassifierHandle, ModelClassifier, resolve_classifier
from feedback.isolation.train import EXPERIMENT, LABEL, log_classifier
from feedback.silver.failure_points import RULES_CLASSIFIER, failure_points_by_rules

COLUMNS = (
    "event_id string, session_id string, turn_index int, chain_id string, chain_success boolean, defect boolean, "
    "is_system_command boolean, stop_like boolean, status string, intent string, slots map<string,string>, "
    "asr_confidence double, nlu_confidence double, utterance string, response_text string, response_type string, "
    "rephrased boolean, barge_in boolean, terminated boolean, abandoned boolean, explicit_feedback string, next_turn_gap_s double"
)
MUSIC = "PlayMusic"
TURNS = [
    # misheard "beatles", fixed by the rephrase: the rules say asr
    ("a1", "s1", 0, "c1", True, True, False, False, "success", MUSIC, {"artist": "the beetles"}, 0.95, 0.95,
     "play the beatles", "playing the beetles", "media", True, True, False, False, None, 3.0),
    ("a2", "s1", 1, "c1", True, False, False, False, "success", MUSIC, {"artist": "the beatles"}, 0.95, 0.95,
     "play the beatles please", "playing the beatles", "media", False, False, False, False, None, None),
    # another intent, fixed: nlu
    ("b1", "s2", 0, "c2", True, True, False, False, "success", "AddToPlaylist", {"artist": "abba"}, 0.95, 0.95,
     "play abba", "added", "action", True, False, False, False, None, 4.0),
    ("b2", "s2", 1, "c2", True, False, False, False, "success", MUSIC, {"artist": "abba"}, 0.95, 0.95,
     "play some abba", "playing abba", "media", False, False, False, False, None, None),
    # a fragment heard at 0.3, then a stop: false_wake; the stop is a system command
    ("w1", "s3", 0, None, None, True, False, False, "unhandled", None, None, 0.3, 0.2,
     "play the", None, "none", False, False, True, False, None, 1.0),
    ("w2", "s3", 1, None, None, False, True, True, "success", "Stop", None, 0.95, 0.95,
     "stop", None, "none", False, False, False, False, None, None),
    # an error: result; a success: no defect
    ("x1", "s4", 0, None, None, True, False, False, "error", MUSIC, {"artist": "abba"}, 0.95, 0.95,
     "play abba", "something went wrong", "speech", False, False, False, True, None, None),
    ("ok", "s5", 0, None, None, False, False, False, "success", MUSIC, None, 0.9, 0.9,
     "play jazz", "playing jazz", "media", False, False, False, False, None, None),
]  # fmt: skip
RULES = {"a1": "asr", "b1": "nlu", "w1": "false_wake", "x1": "result"}
SHIFTED = dict(zip(FAILURE_CLASSES, FAILURE_CLASSES[1:] + FAILURE_CLASSES[:1], strict=True))
"""What the test model learned: each rules answer moved one place on (false_wake -> asr, ..., result -> false_wake),
so an answer of the model can never be mistaken for the rules'."""


def shifted_model(spark: SparkSession) -> tuple[FailurePointModel, pd.DataFrame]:
    """A metadata-only classifier fitted to answer ``SHIFTED[rules]``, and its training inputs with labels."""
    turns = spark.createDataFrame(TURNS, COLUMNS)
    inputs = classification_inputs(failure_points_by_rules(turns, FailurePointsConfig())).toPandas()
    template = inputs.iloc[[0]]
    rows = pd.concat([template.assign(rules_failure_point=point) for point in FAILURE_CLASSES for _ in range(25)], ignore_index=True)
    labels = [SHIFTED[point] for point in rows["rules_failure_point"]]
    model = FailurePointModel(ClassifierSettings(text_components=0, max_iter=20), None).fit(rows, labels)
    return model, rows.assign(**{LABEL: labels})


def classified(frame: DataFrame) -> DataFrame:
    return frame.select("event_id", "failure_point", "failure_point_classifier")


def test_the_model_answers_for_defective_requests_and_the_rules_for_the_rest(spark: SparkSession, tmp_path: Path) -> None:
    model, _ = shifted_model(spark)
    folder = model.save(tmp_path / "classifier")
    classify = ModelClassifier(ClassifierHandle(str(folder), f"{FAILURE_POINT_CLASSIFIER}/7"))
    result = classify(spark.createDataFrame(TURNS, COLUMNS), FailurePointsConfig())
    label = f"{FAILURE_POINT_CLASSIFIER}/7"
    expected = [(event, SHIFTED[point], label) for event, point in RULES.items()]
    expected += [(event, "none", None) for event in ("a2", "b2", "w2", "ok")]
    assertDataFrameEqual(classified(result), spark.createDataFrame(expected, "event_id string, failure_point string, failure_point_classifier string"))
    scores = {r["event_id"]: r["failure_point_score"] for r in result.collect()}
    assert all(0.9 < scores[event] <= 1.0 for event in RULES)
    assert [scores[event] for event in ("a2", "b2", "w2", "ok")] == [None] * 4


def test_a_model_that_fails_leaves_the_rules_answer(spark: SparkSession, tmp_path: Path) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    broken = FailurePointModel(ClassifierSettings(text_components=0), None)
    # fitted on three features: predicting on the real feature vector raises
    broken.estimator = HistGradientBoostingClassifier(max_iter=2).fit(np.eye(3).repeat(10, axis=0), ["asr", "nlu", "result"] * 10)
    folder = broken.save(tmp_path / "broken")
    result = ModelClassifier(ClassifierHandle(str(folder), f"{FAILURE_POINT_CLASSIFIER}/1"))(
        spark.createDataFrame(TURNS, COLUMNS), FailurePointsConfig()
    )
    expected = [(event, point, RULES_CLASSIFIER) for event, point in RULES.items()]
    expected += [(event, "none", None) for event in ("a2", "b2", "w2", "ok")]
    assertDataFrameEqual(classified(result), spark.createDataFrame(expected, "event_id string, failure_point string, failure_point_classifier string"))


def test_the_registry_champion_is_what_runs(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake = LakePaths.at(tmp_path / "lake")
    assert resolve_classifier(spark, app_config, lake) is failure_points_by_rules  # no registry yet
    model, examples = shifted_model(spark)
    configure_mlflow(lake)
    ensure_experiment(lake, EXPERIMENT)
    with mlflow.start_run():
        version = log_classifier(model, examples)
        decision = apply_champion_rule(MlflowClient(), FAILURE_POINT_CLASSIFIER, version, "macro_f1", 0.9, None, allow_equal=False)
    assert (version, decision.promoted) == ("1", True)

    classify = resolve_classifier(spark, app_config, lake)
    assert isinstance(classify, ModelClassifier)
    assert classify.handle.label == f"{FAILURE_POINT_CLASSIFIER}/1"
    result = classify(spark.createDataFrame(TURNS, COLUMNS), FailurePointsConfig())
    assert {r["event_id"]: r["failure_point"] for r in result.collect() if r["event_id"] in RULES} == {
        event: SHIFTED[point] for event, point in RULES.items()
    }
    served = mlflow.pyfunc.load_model(f"models:/{FAILURE_POINT_CLASSIFIER}@champion").predict(examples.drop(columns=[LABEL]).head(5))
    assert list(served.columns) == ["event_id", "failure_point", "failure_point_score"]
    assert list(served["failure_point"]) == [SHIFTED[p] for p in examples["rules_failure_point"].head(5)]

    rules_only = replace_section(app_config, failure_model=FailureModelConfig(use_champion=False))
    assert resolve_classifier(spark, rules_only, lake) is failure_points_by_rules

    # a champion saved with other features than this code computes is not served: the rules answer
    settings = Path(lake.root) / "_models" / FAILURE_POINT_CLASSIFIER / "1" / "artifacts" / "classifier" / "settings.json"
    saved = json.loads(settings.read_text())
    settings.write_text(json.dumps(saved | {"format_version": saved["format_version"] - 1}))
    assert resolve_classifier(spark, app_config, lake) is failure_points_by_rules
