"""The bronze stream on a landing folder that is not tidy: compressed and nested files, files it
must not read, events from the future, and whole batches that fail the Great Expectations gate."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.errors import StreamingQueryException
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig, IngestConfig, ValidationConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.pipeline import run_pipeline

from support.landing_data import event, write_lines


def bronze_ids(spark: SparkSession, lake: Path) -> list[str]:
    return sorted(r["event_id"] for r in spark.read.format("delta").load(LakePaths.at(lake).bronze).collect())


def quarantine_reasons(spark: SparkSession, lake: Path) -> dict[str | None, list[str]]:
    rows = spark.read.format("delta").load(LakePaths.at(lake).quarantine).collect()
    return {r["event_id"]: sorted(r["reasons"]) for r in rows}


def test_compressed_and_nested_files_are_read_and_the_rest_recorded(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    write_lines(landing / "events-1.jsonl", [event("plain", "2026-11-05T10:00:00Z")])
    write_lines(landing / "events-2.jsonl.gz", [event("zipped", "2026-11-05T10:01:00Z")])
    write_lines(landing / "2026" / "11" / "05" / "events-3.jsonl", [event("nested", "2026-11-05T10:02:00Z")])
    write_lines(landing / "events-4.jsonl", [event("future", "2999-01-01T00:00:00Z"), event("now", "2026-11-05T10:03:00Z")])
    write_lines(landing / "notes.txt", [event("not-read-1", "2026-11-05T10:00:00Z")])
    write_lines(landing / ".events-5.jsonl.tmp", [event("not-read-2", "2026-11-05T10:00:00Z")])
    write_lines(landing / "_staging" / "events-6.jsonl", [event("not-read-3", "2026-11-05T10:00:00Z")])

    summary = run_pipeline(spark, app_config, landing, LakePaths.at(lake)).ingest

    assert bronze_ids(spark, lake) == ["nested", "now", "plain", "zipped"]
    assert quarantine_reasons(spark, lake) == {"future": ["out_of_range:ts"]}
    skipped = spark.read.format("delta").load(LakePaths.at(lake).landing_skipped).select(
        F.regexp_extract("path", r"landing/(.*)$", 1).alias("file"), "reason", "size_bytes"
    )
    expected_sizes = {
        name: (landing / name).stat().st_size for name in ("notes.txt", ".events-5.jsonl.tmp", "_staging/events-6.jsonl")
    }
    assertDataFrameEqual(
        skipped,
        spark.createDataFrame(
            [
                ("notes.txt", "not_matching_glob", expected_sizes["notes.txt"]),
                (".events-5.jsonl.tmp", "hidden", expected_sizes[".events-5.jsonl.tmp"]),
                ("_staging/events-6.jsonl", "hidden", expected_sizes["_staging/events-6.jsonl"]),
            ],
            "file string, reason string, size_bytes long",
        ),
    )
    assert (summary["files"], summary["lines_read"], summary["bronze_inserted"], summary["quarantined"]) == (4, 5, 4, 1)
    assert summary["landing_files_skipped"] == 3

    # A second run records nothing twice.
    write_lines(landing / "events-7.jsonl", [event("later", "2026-11-05T11:00:00Z")])
    again = run_pipeline(spark, app_config, landing, LakePaths.at(lake)).ingest
    assert (again["bronze_rows"], again["landing_files_skipped"]) == (5, 3)


def test_a_batch_failing_the_gate_is_quarantined_whole_and_the_stream_goes_on(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    # 3 of 4 lines broken: over max_quarantine_share (0.5), so the one valid event is held back too.
    write_lines(landing / "events-1.jsonl", ["{", "[]", '{"event_id": "x"}', event("valid", "2026-11-05T10:00:00Z")])
    first = run_pipeline(spark, app_config, landing, LakePaths.at(lake)).ingest
    assert bronze_ids(spark, lake) == []
    assert quarantine_reasons(spark, lake)["valid"] == ["failed_expectation:expect_column_mean_to_be_between(is_quarantined)"]
    assert (first["lines_read"], first["bronze_inserted"], first["quarantined"], first["failed_validations"]) == (4, 0, 4, 1)

    write_lines(landing / "events-2.jsonl", [event("next", "2026-11-05T10:05:00Z")])
    second = run_pipeline(spark, app_config, landing, LakePaths.at(lake)).ingest
    assert bronze_ids(spark, lake) == ["next"]
    assert (second["batches"], second["quarantine_rows"], second["failed_validations"]) == (2, 4, 1)


def test_on_failure_stop_rejects_the_batch_before_any_write(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    stop = ValidationConfig(on_failure="stop", min_distinct_users=2)
    config = replace_section(app_config, ingest=IngestConfig(validation=stop))
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    write_lines(landing / "events-1.jsonl", [event("a", "2026-11-05T10:00:00Z"), event("b", "2026-11-05T10:01:00Z")])

    with pytest.raises(StreamingQueryException, match="BatchRejected|nothing was written"):
        run_pipeline(spark, config, landing, LakePaths.at(lake))

    paths = LakePaths.at(lake)
    counts = [spark.read.format("delta").load(table).count() for table in (paths.bronze, paths.quarantine, paths.ingest_batches)]
    assert counts == [0, 0, 0]
    results = spark.read.format("delta").load(paths.validation_results).select("batch_id", "success", "failed_expectations")
    assertDataFrameEqual(
        results,
        spark.createDataFrame(
            [(0, False, '["expect_column_unique_value_count_to_be_between(user_id)"]')],
            "batch_id long, success boolean, failed_expectations string",
        ),
    )

    # Once the gate is set right, the restart replays the same batch from its offsets and it lands.
    run_pipeline(spark, app_config, landing, LakePaths.at(lake))
    assert bronze_ids(spark, lake) == ["a", "b"]
