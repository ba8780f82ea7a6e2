"""The one reader of the simulator's ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.core.truth import read_truth


def test_read_truth_keeps_every_field_the_evaluations_use(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "ground_truth.jsonl"
    records = [
        {
            "event_id": "e1", "user_id": "u1", "device_id": "d1", "ts": "2026-11-02T08:00:00Z", "utterance": "play the beetles",
            "intended_intent": "PlayMusic", "intended_slots": {"artist": "the beatles"}, "is_system_command": False,
            "defective": True, "defect_causes": ["asr"], "barge_in": True, "terminated": False, "rephrase_of": None,
            "abandoned": False, "extra": "ignored",
        },
        {"event_id": "e2", "user_id": "u1", "rephrase_of": "e1"},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    truth = read_truth(spark, path)
    assert truth.columns == [
        "event_id", "user_id", "device_id", "ts", "utterance", "intended_intent", "intended_slots", "is_system_command",
        "defective", "defect_causes", "failure_point", "barge_in", "terminated", "rephrase_of", "abandoned", "explicit_feedback",
    ]  # fmt: skip
    expected = spark.createDataFrame(
        [("e1", "PlayMusic", {"artist": "the beatles"}, True, ["asr"], True, None), ("e2", None, None, None, None, None, "e1")],
        "event_id string, intended_intent string, intended_slots map<string,string>, defective boolean, "
        "defect_causes array<string>, barge_in boolean, rephrase_of string",
    )
    assertDataFrameEqual(
        truth.select("event_id", "intended_intent", "intended_slots", "defective", "defect_causes", "barge_in", "rephrase_of"), expected
    )
    with pytest.raises(ValueError, match="truth: no such file .*missing.jsonl"):
        read_truth(spark, tmp_path / "missing.jsonl")
