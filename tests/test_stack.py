"""The pinned stack works together: a real Delta write and a real GX validation of a Spark DataFrame."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.config import ValidationConfig
from feedback.validation import BatchValidator

COLUMNS = (
    "event_id string, schema_version int, ts timestamp, event_date date, user_id string, device_id string, "
    "utterance string, status string, response_type string, explicit_feedback string, asr_confidence double, "
    "nlu_confidence double, response_latency_ms int, response_duration_ms int"
)


def events(spark: SparkSession, status: str, confidence: float) -> DataFrame:
    ts = dt.datetime(2026, 11, 2, 10, 0, 0)
    return spark.createDataFrame(
        [
            ("e1", 1, ts, ts.date(), "u1", "d1", "play jazz", "success", "media", None, 0.9, 0.8, 300, None),
            ("e2", 1, ts, ts.date(), "u1", "d1", "stop", status, "none", "negative", confidence, None, 100, 0),
        ],
        COLUMNS,
    )


def test_delta_round_trip_with_time_travel(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    first = events(spark, "success", 0.5)
    first.write.format("delta").save(path)
    first.limit(1).write.format("delta").mode("append").save(path)
    assert spark.read.format("delta").load(path).count() == 3
    assertDataFrameEqual(spark.read.format("delta").option("versionAsOf", 0).load(path), first)


def test_gx_passes_a_clean_batch_and_names_what_fails(spark: SparkSession) -> None:
    validator = BatchValidator(ValidationConfig())
    clean = validator.validate(events(spark, "success", 0.5), batch_id=0)
    assert clean is not None
    assert (clean.success, clean.evaluated, clean.successful, clean.failed_expectations) == (True, 19, 19, ())

    dirty = validator.validate(events(spark, "ok", 1.5), batch_id=1)
    assert dirty is not None
    assert (dirty.success, dirty.successful) == (False, 17)
    assert dirty.failed_expectations == (
        "expect_column_values_to_be_between(asr_confidence)",
        "expect_column_values_to_be_in_set(status)",
    )


def test_gx_samples_every_nth_batch(spark: SparkSession) -> None:
    validator = BatchValidator(ValidationConfig(every_n_batches=3), data_source_name="sampled")
    outcomes = [validator.validate(events(spark, "success", 0.5), batch_id=b) is not None for b in range(4)]
    assert outcomes == [True, False, False, True]


def _results(result_json: str) -> dict[str, dict[str, object]]:
    """Per expectation ("type(column)"), the ``result`` block GX kept."""
    return {
        f"{r['expectation_config']['type']}({r['expectation_config']['kwargs'].get('column')})": r["result"]
        for r in json.loads(result_json)["results"]
    }


def test_gx_keeps_details_only_for_a_failing_batch(spark: SparkSession) -> None:
    validator = BatchValidator(ValidationConfig(boolean_first=True, result_format="SUMMARY"), data_source_name="details")
    clean = validator.validate(events(spark, "success", 0.5), batch_id=0)
    dirty = validator.validate(events(spark, "ok", 1.5), batch_id=1)
    assert clean is not None and dirty is not None
    assert [result for result in _results(clean.result_json).values() if result] == []  # BOOLEAN_ONLY: no details
    details = _results(dirty.result_json)
    assert (details["expect_column_values_to_be_in_set(status)"]["unexpected_count"],
            details["expect_column_values_to_be_in_set(status)"]["partial_unexpected_list"]) == (1, ["ok"])
    assert details["expect_column_values_to_be_between(asr_confidence)"]["unexpected_count"] == 1
