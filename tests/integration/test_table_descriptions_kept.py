"""Table descriptions through a lake's life: an older lake upgraded once, overwrites and merges, and the change feed of real silver batches."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.stream import ensure_bronze_tables
from feedback.config import AppConfig
from feedback.core.lake import LakePaths
from feedback.core.schema import (
    BRONZE_PARTITION_COLUMNS,
    BRONZE_SCHEMA,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    SILVER_BATCHES_SCHEMA,
    SILVER_PARTITION_COLUMNS,
    SILVER_TURNS_SCHEMA,
    TABLE_COMMENTS,
)
from feedback.gold.aggregate import fold_into_gold
from feedback.pipeline import backfill_days
from feedback.silver.sessionize import aggregate_sessions
from feedback.silver.stream import SilverBatchWriter, ensure_silver_tables

from support.bronze_rows import bronze_frame, bronze_row
from support.delta_describe import (
    BRONZE_CONSTRAINT_NAMES,
    EXPECTED_PROPERTIES,
    SCHEMAS,
    append,
    declared_columns,
    described_columns,
    detail,
    operations,
    without_comments,
)
from support.turn_data import Event, events_frame


def test_a_table_an_older_version_made_gets_its_description_once(spark: SparkSession, tmp_path: Path) -> None:
    paths = LakePaths.at(tmp_path / "lake")
    # As an older version created them: no comments, no properties, no constraints; the batch log
    # without the four columns added since, silver/turns without its goal and failure point columns.
    old = {
        paths.bronze: (without_comments(BRONZE_SCHEMA), BRONZE_PARTITION_COLUMNS),
        paths.quarantine: (without_comments(QUARANTINE_SCHEMA), QUARANTINE_PARTITION_COLUMNS),
        paths.silver_turns: (StructType(without_comments(SILVER_TURNS_SCHEMA).fields[:-5]), SILVER_PARTITION_COLUMNS),
        paths.silver_batches: (StructType(without_comments(SILVER_BATCHES_SCHEMA).fields[:9]), ()),
    }
    for path, (schema, partitions) in old.items():
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
        (builder.partitionedBy(*partitions) if partitions else builder).execute()
    bronze_frame(spark, [bronze_row("old-1")], without_comments(BRONZE_SCHEMA)).write.format("delta").mode("append").save(paths.bronze)
    spark.sql(f"ALTER TABLE delta.`{paths.bronze}` ADD CONSTRAINT status_valid CHECK (status IN ('success', 'unhandled', 'error'))")
    before = {path: len(operations(spark, path)) for path in old}

    ensure_bronze_tables(spark, paths)
    ensure_silver_tables(spark, paths)

    for name, schema in (("bronze", BRONZE_SCHEMA), ("quarantine", QUARANTINE_SCHEMA), ("silver_turns", SILVER_TURNS_SCHEMA)):
        path = paths.tables()[name]
        assert described_columns(spark, path) == declared_columns(schema)
        description, properties = detail(spark, path)
        assert description == TABLE_COMMENTS[name]
        assert {k: v for k, v in properties.items() if not k.startswith("delta.constraints.")} == {
            k: v for k, v in EXPECTED_PROPERTIES[name].items() if not k.startswith("delta.constraints.")
        }
    bronze_properties = detail(spark, paths.bronze)[1]
    assert sorted(k.removeprefix("delta.constraints.") for k in bronze_properties if k.startswith("delta.constraints.")) == sorted(
        BRONZE_CONSTRAINT_NAMES
    )
    # The batch log gained its nullable columns with their comments, in the schema's order.
    assert described_columns(spark, paths.silver_batches) == declared_columns(SILVER_BATCHES_SCHEMA)
    assert detail(spark, paths.silver_batches) == (TABLE_COMMENTS["silver_batches"], {})
    # One commit per kind of change; status_valid was there already, the other 17 constraints are added.
    assert operations(spark, paths.bronze)[before[paths.bronze] :] == ["CHANGE COLUMNS", "SET TBLPROPERTIES"] + ["ADD CONSTRAINT"] * 17
    assert operations(spark, paths.silver_turns)[before[paths.silver_turns] :] == ["ADD COLUMNS", "CHANGE COLUMNS", "SET TBLPROPERTIES"]
    assert operations(spark, paths.silver_batches)[before[paths.silver_batches] :] == [
        "ADD COLUMNS", "CHANGE COLUMNS", "SET TBLPROPERTIES",
    ]
    # The old row is still there, and the constraints added to the old table hold for new rows.
    assert [r["event_id"] for r in spark.read.format("delta").load(paths.bronze).collect()] == ["old-1"]
    with pytest.raises(Py4JJavaError) as caught:
        bronze_frame(spark, [bronze_row("new-1", utterance="\u3000 ")]).write.format("delta").mode("append").save(paths.bronze)
    assert "CHECK constraint utterance_valid " in caught.value.java_exception.getMessage()

    settled = {path: len(operations(spark, path)) for path in old}
    ensure_bronze_tables(spark, paths)
    ensure_silver_tables(spark, paths)
    assert {path: len(operations(spark, path)) for path in old} == settled


def silver_sessions(spark: SparkSession, app_config: AppConfig, events: list[Event]) -> DataFrame:
    return aggregate_sessions(events_frame(spark, events), app_config.sessionize)


def test_the_change_feed_of_silver_and_gold_after_two_batches(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    paths = LakePaths.at(tmp_path / "lake")
    ensure_silver_tables(spark, paths)
    writer = SilverBatchWriter(paths, "test-app", app_config, fold_gold=fold_into_gold)
    # Batch 0: a failed request and its rephrase; batch 1: another user's request in the same hour.
    writer(silver_sessions(spark, app_config, [
        Event("a1", 0, "weather in pariss", status="unhandled"),
        Event("a2", 5, "weather in paris"),
    ]), 0)
    writer(silver_sessions(spark, app_config, [Event("c1", 600, "what's the weather", user_id="u3", device_id="d3")]), 1)

    def changes(path: str, *columns: str) -> DataFrame:
        feed = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 1).load(path)
        return feed.select(*columns, "_change_type", "_commit_version")

    assertDataFrameEqual(
        changes(paths.silver_turns, "event_id"),
        spark.createDataFrame(
            [("a1", "insert", 1), ("a2", "insert", 1), ("c1", "insert", 2)], "event_id string, _change_type string, _commit_version long"
        ),
    )
    assertDataFrameEqual(
        changes(paths.defect_metrics, "domain", "intent", "device_type", "turns", "defects"),
        spark.createDataFrame(
            [
                ("weather", "GetWeather", "speaker", 2, 1, "insert", 1),
                ("weather", "GetWeather", "speaker", 2, 1, "update_preimage", 2),
                ("weather", "GetWeather", "speaker", 3, 1, "update_postimage", 2),
            ],
            "domain string, intent string, device_type string, turns long, defects long, _change_type string, _commit_version long",
        ),
    )


def test_overwrites_merges_and_schema_merges_keep_the_descriptions(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path
) -> None:
    paths = LakePaths.at(tmp_path / "lake")
    ensure_bronze_tables(spark, paths)
    append(spark, paths.bronze, [
        bronze_row("a1", 0, utterance="weather in pariss", status="unhandled"),
        bronze_row("a2", 5, utterance="weather in paris"),
        bronze_row("b1", 60, user_id="u2", device_id="d2"),
    ])
    ensure_silver_tables(spark, paths)
    # A stream batch (MERGE into silver and gold, a schema-merging append to the batch log), then a
    # backfill: silver rewritten with replaceWhere, gold rebuilt with overwrites.
    writer = SilverBatchWriter(paths, "test-app", app_config, fold_gold=fold_into_gold)
    writer(silver_sessions(spark, app_config, [Event("a1", 0, "weather in pariss", status="unhandled")]), 0)
    assert backfill_days(spark, app_config, paths, dt.date(2026, 11, 2), dt.date(2026, 11, 2)) == 3
    for name in ("silver_turns", "silver_batches", "defect_metrics", "utterance_defects", "rephrase_pairs"):
        path = paths.tables()[name]
        assert described_columns(spark, path) == declared_columns(SCHEMAS[name])
        assert detail(spark, path) == (TABLE_COMMENTS[name], EXPECTED_PROPERTIES[name])
    assert operations(spark, paths.defect_metrics) == ["CREATE TABLE", "MERGE", "WRITE"]
    assert sorted(r["event_id"] for r in spark.read.format("delta").load(paths.silver_turns).collect()) == ["a1", "a2", "b1"]
