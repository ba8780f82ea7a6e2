"""The Great Expectations gate of bronze: a real GX validation of a batch profile built by Spark."""

from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.validation import BatchValidator, batch_profile
from feedback.config import ValidationConfig

COLUMNS = (
    "event_id string, schema_version int, ts timestamp, event_date date, user_id string, device_id string, "
    "utterance string, status string, response_type string, explicit_feedback string, asr_confidence double, "
    "nlu_confidence double, response_latency_ms int, response_duration_ms int"
)


PARSED_EXTRA = ", device_type string, locale string, domain string, intent string, reasons array<string>, landed_at timestamp"
LANDED = dt.datetime(2026, 11, 2, 12, 0, 0)


def parsed_lines(spark: SparkSession, status: str, confidence: float) -> DataFrame:
    """``parse_events``-shaped lines: the two events above, valid, plus one rejected line."""
    ts = dt.datetime(2026, 11, 2, 10, 0, 0)
    rows = [
        ("e1", 1, ts, ts.date(), "u1", "d1", "play jazz", "success", "media", None, 0.9, 0.8, 300, None,
         "speaker", "en-GB", "music", "PlayMusic", [], LANDED),
        ("e2", 1, ts, ts.date(), "u1", "d1", "stop", status, "none", "negative", confidence, None, 100, 0,
         "speaker", None, None, None, [], LANDED),
        (None, None, None, None, None, None, None, None, None, None, None, None, None, None,
         None, None, None, None, ["not_json"], LANDED),
    ]
    return spark.createDataFrame(rows, COLUMNS + PARSED_EXTRA)


def profile(spark: SparkSession, status: str, confidence: float, config: ValidationConfig) -> DataFrame:
    return batch_profile(parsed_lines(spark, status, confidence), config)


def test_batch_profile_marks_each_line(spark: SparkSession) -> None:
    config = ValidationConfig(null_checked_fields=("locale", "intent"), stale_after_hours=1.0)
    got = profile(spark, "success", 0.5, config).select("is_quarantined", "is_stale", "is_null_locale", "is_null_intent", "user_id")
    expected = spark.createDataFrame(
        [(0, 1, 0, 0, "u1"), (0, 1, 1, 1, "u1"), (1, None, None, None, None)],
        "is_quarantined int, is_stale int, is_null_locale int, is_null_intent int, user_id string",
    )
    assertDataFrameEqual(got, expected)


def test_gx_passes_a_clean_batch_and_names_what_fails(spark: SparkSession) -> None:
    config = ValidationConfig()
    validator = BatchValidator(config)
    clean = validator.validate(profile(spark, "success", 0.5, config), batch_id=0)
    assert clean is not None
    assert (clean.success, clean.evaluated, clean.successful, clean.failed_expectations) == (True, 20, 20, ())

    dirty = validator.validate(profile(spark, "ok", 1.5, config), batch_id=1)
    assert dirty is not None
    assert (dirty.success, dirty.successful) == (False, 18)
    assert dirty.failed_expectations == (
        "expect_column_values_to_be_between(asr_confidence)",
        "expect_column_values_to_be_in_set(status)",
    )


def test_gx_gate_fails_a_batch_on_its_shares_and_users(spark: SparkSession) -> None:
    # One line in three quarantined, both events stale (2 h old at landing), intent null in one
    # of two events, a single user.
    config = ValidationConfig(
        max_quarantine_share=0.3,
        stale_after_hours=1.0,
        max_stale_share=0.5,
        null_checked_fields=("intent",),
        max_null_share=0.4,
        min_distinct_users=2,
    )
    outcome = BatchValidator(config, data_source_name="gate").validate(profile(spark, "success", 0.5, config), batch_id=0)
    assert outcome is not None
    assert outcome.failed_expectations == (
        "expect_column_mean_to_be_between(is_null_intent)",
        "expect_column_mean_to_be_between(is_quarantined)",
        "expect_column_mean_to_be_between(is_stale)",
        "expect_column_unique_value_count_to_be_between(user_id)",
    )
    lenient = ValidationConfig(max_quarantine_share=0.34, null_checked_fields=("intent",), max_null_share=0.5)
    passed = BatchValidator(lenient, data_source_name="lenient").validate(profile(spark, "success", 0.5, lenient), batch_id=0)
    assert passed is not None
    assert (passed.success, passed.failed_expectations) == (True, ())


def test_gx_samples_every_nth_batch(spark: SparkSession) -> None:
    config = ValidationConfig(every_n_batches=3)
    validator = BatchValidator(config, data_source_name="sampled")
    outcomes = [validator.validate(profile(spark, "success", 0.5, config), batch_id=b) is not None for b in range(4)]
    assert outcomes == [True, False, False, True]


def _results(result_json: str) -> dict[str, dict[str, object]]:
    """Per expectation ("type(column)"), the ``result`` block GX kept."""
    return {
        f"{r['expectation_config']['type']}({r['expectation_config']['kwargs'].get('column')})": r["result"]
        for r in json.loads(result_json)["results"]
    }


def test_gx_keeps_details_only_for_a_failing_batch(spark: SparkSession) -> None:
    config = ValidationConfig(boolean_first=True, result_format="SUMMARY")
    validator = BatchValidator(config, data_source_name="details")
    clean = validator.validate(profile(spark, "success", 0.5, config), batch_id=0)
    dirty = validator.validate(profile(spark, "ok", 1.5, config), batch_id=1)
    assert clean is not None and dirty is not None
    assert [result for result in _results(clean.result_json).values() if result] == []  # BOOLEAN_ONLY: no details
    details = _results(dirty.result_json)
    assert (details["expect_column_values_to_be_in_set(status)"]["unexpected_count"],
            details["expect_column_values_to_be_in_set(status)"]["partial_unexpected_list"]) == (1, ["ok"])
    assert details["expect_column_values_to_be_between(asr_confidence)"]["unexpected_count"] == 1
