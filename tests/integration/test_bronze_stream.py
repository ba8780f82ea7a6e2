"""The bronze stream on hand-written landing files: late files, redelivery, replay after a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.stream import BronzeBatchWriter, bronze_writer, start_bronze_stream
from feedback.config import AppConfig, IngestConfig, ValidationConfig, replace_section
from feedback.core.checkpoints import persistent_rdd_ids
from feedback.core.lake import LakePaths
from feedback.pipeline import run_pipeline


def event(event_id: str, ts: str, utterance: str = "what's the weather", **extra: object) -> str:
    body: dict[str, object] = {
        "event_id": event_id,
        "schema_version": 1,
        "ts": ts,
        "user_id": "u1",
        "device_id": "d1",
        "utterance": utterance,
        "status": "success",
        **extra,
    }
    return json.dumps(body)


def write_file(directory: Path, name: str, lines: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def bronze_ids(spark: SparkSession, lake: Path) -> DataFrame:
    return spark.read.format("delta").load(LakePaths.at(lake).bronze).groupBy("event_id").count()


def ids_once(spark: SparkSession, ids: list[str]) -> DataFrame:
    return spark.createDataFrame([(i, 1) for i in ids], "event_id string, count long")


def test_late_files_and_redeliveries_land_exactly_once(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    first = write_file(
        landing,
        "events-000001.jsonl",
        [event("a", "2026-11-05T10:00:00Z"), event("b", "2026-11-05T10:00:05Z"), event("a", "2026-11-05T10:00:00Z"), "oops"],
    )
    run_pipeline(spark, app_config, landing, LakePaths.at(lake))
    # Three days later: a file of events from the 2nd arrives, plus a second delivery of the first file.
    write_file(landing, "events-000002.jsonl", [event("old1", "2026-11-02T08:00:00Z"), event("old2", "2026-11-02T08:00:09+01:00")])
    write_file(landing, "events-000003.jsonl", first.read_text().splitlines())
    summary = run_pipeline(spark, app_config, landing, LakePaths.at(lake)).ingest

    assertDataFrameEqual(bronze_ids(spark, lake), ids_once(spark, ["a", "b", "old1", "old2"]))
    assert summary == {
        "batches": 2,
        "files": 3,
        "lines_read": 10,
        "bronze_inserted": 4,
        "quarantined": 2,
        "duplicates": 4,
        "validated_batches": 2,
        "failed_validations": 0,
        "bronze_rows": 4,
        "quarantine_rows": 2,
        "landing_files_skipped": 0,
    }
    dates = spark.read.format("delta").load(LakePaths.at(lake).bronze).groupBy("event_date").count()
    assertDataFrameEqual(
        dates, spark.createDataFrame([("2026-11-02", 2), ("2026-11-05", 2)], "event_date string, count long").select(
            F.to_date("event_date").alias("event_date"), "count"
        )
    )


def test_micro_batches_free_what_they_materialise(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    """The writer's local checkpoints are released per batch, not left for the driver's GC."""
    landing, paths = tmp_path / "landing", LakePaths.at(tmp_path / "lake")
    held = persistent_rdd_ids(spark)
    first = write_file(landing, "events-000001.jsonl", [event("a", "2026-11-05T10:00:00Z"), event("a", "2026-11-05T10:00:00Z"), "{"])
    start_bronze_stream(spark, app_config, str(landing), paths, available_now=True).awaitTermination()
    write_file(landing, "events-000002.jsonl", [*first.read_text().splitlines(), event("b", "2026-11-05T10:01:00Z")])
    start_bronze_stream(spark, app_config, str(landing), paths, available_now=True).awaitTermination()
    assert persistent_rdd_ids(spark) - held == frozenset()  # checked before reading bronze: Delta caches a table's state
    assertDataFrameEqual(bronze_ids(spark, tmp_path / "lake"), ids_once(spark, ["a", "b"]))


class FailsOnceAfterBronze(BronzeBatchWriter):
    """Dies after the bronze append of its first batch, before the bookkeeping: a crash mid-batch."""

    failed = False

    def _append(
        self, frame: DataFrame, path: str, writer: str, batch_id: int, partition_by: tuple[str, ...] = (), **options: Any
    ) -> None:
        if writer == "ops" and not FailsOnceAfterBronze.failed:
            FailsOnceAfterBronze.failed = True
            raise RuntimeError("simulated crash after the bronze commit")
        super()._append(frame, path, writer, batch_id, partition_by, **options)


def test_batch_replayed_after_a_crash_changes_nothing_twice(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    write_file(landing, "events-000001.jsonl", [event("a", "2026-11-05T10:00:00Z"), event("b", "2026-11-05T10:01:00Z"), "{bad"])
    paths = LakePaths.at(lake)
    normal = bronze_writer(app_config, paths)
    crashing = FailsOnceAfterBronze(normal.lake, normal.app_id, normal.validator, normal.target_files)
    query = start_bronze_stream(spark, app_config, str(landing), paths, available_now=True, writer=crashing)
    with pytest.raises(StreamingQueryException, match="simulated crash after the bronze commit"):
        query.awaitTermination()
    # The crash left bronze and quarantine written but no batch record.
    assert spark.read.format("delta").load(paths.ingest_batches).count() == 0
    assert spark.read.format("delta").load(paths.bronze).count() == 2

    # Restart from the same checkpoint: Spark replays batch 0 with the same offsets.
    summary = run_pipeline(spark, app_config, landing, LakePaths.at(lake)).ingest
    assertDataFrameEqual(bronze_ids(spark, lake), ids_once(spark, ["a", "b"]))
    assert (summary["batches"], summary["lines_read"], summary["bronze_inserted"], summary["quarantined"], summary["duplicates"]) == (
        1, 3, 2, 1, 0,
    )
    assert summary["quarantine_rows"] == 1
    assert [r["batch_id"] for r in spark.read.format("delta").load(paths.ingest_batches).collect()] == [0]


def test_a_new_checkpoint_does_not_silence_idempotent_writes(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    """Deleting the checkpoint restarts batch ids at 0; the new app id keeps writes from being skipped."""
    import shutil

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    write_file(landing, "events-000001.jsonl", [event("a", "2026-11-05T10:00:00Z")])
    run_pipeline(spark, app_config, landing, LakePaths.at(lake))
    shutil.rmtree(LakePaths.at(lake).checkpoint("bronze_interactions"))
    write_file(landing, "events-000002.jsonl", [event("b", "2026-11-05T11:00:00Z")])
    summary = run_pipeline(spark, app_config, landing, LakePaths.at(lake)).ingest
    assertDataFrameEqual(bronze_ids(spark, lake), ids_once(spark, ["a", "b"]))
    assert (summary["batches"], summary["lines_read"], summary["bronze_inserted"], summary["duplicates"]) == (2, 3, 2, 1)


def test_validation_results_are_kept_next_to_the_lake(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    write_file(landing, "events-000001.jsonl", [event("a", "2026-11-05T10:00:00Z", asr_confidence=0.5)])
    run_pipeline(spark, app_config, landing, LakePaths.at(lake))
    results = spark.read.format("delta").load(LakePaths.at(lake).validation_results)
    columns = ("batch_id", "suite", "success", "evaluated_expectations", "successful_expectations", "failed_expectations")
    assert results.select(*columns).first().asDict() == {
        "batch_id": 0,
        "suite": "bronze_interactions_v1",
        "success": True,
        "evaluated_expectations": 20,
        "successful_expectations": 20,
        "failed_expectations": "[]",
    }
    detail = json.loads(results.select("result_json").first()["result_json"])
    assert len(detail["results"]) == 20


def test_validation_off_writes_no_results(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    config = replace_section(app_config, ingest=IngestConfig(validation=ValidationConfig(enabled=False)))
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    write_file(landing, "events-000001.jsonl", [event("a", "2026-11-05T10:00:00Z")])
    summary = run_pipeline(spark, config, landing, LakePaths.at(lake)).ingest
    assert (summary["validated_batches"], summary["bronze_rows"]) == (0, 1)
    assert spark.read.format("delta").load(LakePaths.at(lake).validation_results).count() == 0
