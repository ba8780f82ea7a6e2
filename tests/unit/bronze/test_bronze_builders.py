"""The pure builders behind the bronze batch writer: its accounting and the rows each table receives."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.stream import (
    BatchCounts,
    DuplicateStats,
    LineTotals,
    batch_counts,
    describe_batch,
    duplicate_stats,
    failed_gate_rows,
    ingest_batch_record,
    validation_record,
    whole_batch_counts,
)
from feedback.bronze.validation import ValidationOutcome

OUTCOME = ValidationOutcome(
    batch_id=4, success=False, evaluated=9, successful=7, failed_expectations=("a(x)", "b"), seconds=0.5, result_json="{}"
)


def test_batch_counts_splits_lines_into_inserted_quarantined_and_duplicates() -> None:
    # 12 lines: 3 rejected, 9 valid; 2 extra copies of repeated ids -> 7 unique; 1 in bronze from an earlier batch -> 6 new.
    counts = batch_counts(LineTotals(12, 3, 2, ()), DuplicateStats(extra_copies=2, replayed=0, existing=1))
    assert counts == BatchCounts(
        files=2, lines_read=12, bronze_inserted=6, quarantined=3, duplicates_in_batch=2, duplicates_existing=1
    )


def test_a_replayed_batch_counts_as_its_first_attempt() -> None:
    # The 5 valid ids were written by this very batch before the crash: still 5 inserted, 0 duplicates.
    counts = batch_counts(LineTotals(5, 0, 1, ()), DuplicateStats(extra_copies=0, replayed=5, existing=0))
    assert counts == BatchCounts(1, 5, 5, 0, 0, 0)


def test_a_failed_gate_quarantines_every_line() -> None:
    assert whole_batch_counts(LineTotals(8, 2, 3, ())) == BatchCounts(3, 8, 0, 8, 0, 0)


def test_ingest_batch_record_with_and_without_validation() -> None:
    counts = BatchCounts(2, 10, 7, 2, 1, 0)
    assert ingest_batch_record("app", 4, counts, OUTCOME, 1.25) == (
        "app", 4, 2, 10, 7, 2, 1, 0, True, False, ["a(x)", "b"], 0.5, 1.25, None
    )
    assert ingest_batch_record("app", 5, counts, None, 2.0) == ("app", 5, 2, 10, 7, 2, 1, 0, False, None, [], 0.0, 2.0, None)
    assert ingest_batch_record("app", 6, counts, None, 2.0, '{"kafka://t/0": [3, 9]}')[-1] == '{"kafka://t/0": [3, 9]}'


def test_validation_record_keeps_the_failed_expectations_as_json() -> None:
    assert validation_record("app", OUTCOME) == ("app", 4, "bronze_interactions_v1", False, 9, 7, '["a(x)", "b"]', "{}")


def test_describe_batch_names_the_gate_result() -> None:
    counts = BatchCounts(2, 10, 7, 2, 1, 0)
    assert describe_batch(3, counts, None, 1.0) == (
        "bronze batch 3: 10 lines from 2 files -> 7 inserted, 2 quarantined, 1 duplicates "
        "(1 in batch, 0 already in bronze); validation skipped in 0.00s; batch 1.00s"
    )
    assert "validation FAILED ['a(x)', 'b'] in 0.50s" in describe_batch(3, counts, OUTCOME, 1.0)


def test_duplicate_stats_tells_replayed_ids_from_earlier_ones(spark: SparkSession) -> None:
    flags = spark.createDataFrame(
        [("e1", 3, None), ("e2", 1, "app:7"), ("e3", 2, "app:7"), ("e4", 1, "app:2")],
        "event_id string, copies long, existing_batch string",
    )
    # extra copies: 2 (e1) + 1 (e3); written by this batch (app:7): e2, e3; by an earlier one: e4.
    assert duplicate_stats(flags, "app:7") == DuplicateStats(extra_copies=3, replayed=2, existing=1)


def test_failed_gate_rows_keep_a_broken_lines_reasons_and_give_valid_lines_the_failed_expectations(spark: SparkSession) -> None:
    parsed = spark.createDataFrame(
        [("good", [], "e1", "f1", None, 4, None), ("bad", ["not_json"], None, "f1", None, 3, None)],
        "raw string, reasons array<string>, event_id string, source_file string, raw_base64 string, line_bytes int, "
        "source_offset long",
    )
    ingest_time = F.to_timestamp(F.lit("2026-11-02 10:00:00"))
    rows = failed_gate_rows(parsed, ("a(x)", "b"), ingest_time, "app:4").select("raw", "reasons", "ingest_date", "ingest_batch")
    expected = spark.createDataFrame(
        [
            ("good", ["failed_expectation:a(x)", "failed_expectation:b"], dt.date(2026, 11, 2), "app:4"),
            ("bad", ["not_json"], dt.date(2026, 11, 2), "app:4"),
        ],
        "raw string, reasons array<string>, ingest_date date, ingest_batch string",
    )
    assertDataFrameEqual(rows, expected)
