"""Delta tables that describe themselves: comments, CHECK constraints on bronze, the change data feed of silver and gold."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.stream import ensure_bronze_tables
from feedback.config import AppConfig
from feedback.core.checkpoints import persistent_rdd_ids
from feedback.core.lake import LakePaths
from feedback.core.schema import (
    BRONZE_CONSTRAINTS,
    BRONZE_PARTITION_COLUMNS,
    BRONZE_SCHEMA,
    DEFECT_METRICS_SCHEMA,
    INGEST_BATCHES_SCHEMA,
    LANDING_SKIPPED_SCHEMA,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    REPHRASE_PAIRS_SCHEMA,
    REWRITE_VETOES_SCHEMA,
    REWRITES_SCHEMA,
    SILVER_BATCHES_SCHEMA,
    SILVER_PARTITION_COLUMNS,
    SILVER_PROGRESS_SCHEMA,
    SILVER_TURNS_SCHEMA,
    TABLE_COMMENTS,
    UTTERANCE_DEFECTS_SCHEMA,
    VALIDATION_RESULTS_SCHEMA,
)
from feedback.gold.aggregate import fold_into_gold
from feedback.gold.late_events import ensure_progress_table
from feedback.pipeline import backfill_days
from feedback.rewrites.mine import ensure_rewrite_tables
from feedback.silver.sessionize import aggregate_sessions
from feedback.silver.stream import SilverBatchWriter, ensure_silver_tables

from support.bronze_rows import bronze_frame, bronze_row
from support.turn_data import Event, events_frame

SCHEMAS = {
    "bronze": BRONZE_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
    "ingest_batches": INGEST_BATCHES_SCHEMA,
    "landing_skipped": LANDING_SKIPPED_SCHEMA,
    "validation_results": VALIDATION_RESULTS_SCHEMA,
    "silver_turns": SILVER_TURNS_SCHEMA,
    "silver_batches": SILVER_BATCHES_SCHEMA,
    "silver_progress": SILVER_PROGRESS_SCHEMA,
    "defect_metrics": DEFECT_METRICS_SCHEMA,
    "utterance_defects": UTTERANCE_DEFECTS_SCHEMA,
    "rephrase_pairs": REPHRASE_PAIRS_SCHEMA,
    "rewrites": REWRITES_SCHEMA,
    "rewrite_vetoes": REWRITE_VETOES_SCHEMA,
}
CDF = {"delta.enableChangeDataFeed": "true"}
BRONZE_STATS = {"delta.dataSkippingStatsColumns": "event_id,ts,user_id,device_id,status,domain,intent,ingest_batch"}
EXPECTED_PROPERTIES: dict[str, dict[str, str]] = {
    "bronze": BRONZE_STATS | {f"delta.constraints.{name}": expression for name, expression in BRONZE_CONSTRAINTS.items()},
    "quarantine": {"delta.dataSkippingStatsColumns": "event_id,source_file,ingest_batch"},
    "ingest_batches": {},
    "landing_skipped": {},
    "validation_results": {},
    "silver_turns": CDF,
    "silver_batches": {},
    "silver_progress": {},
    "defect_metrics": CDF,
    "utterance_defects": CDF,
    "rephrase_pairs": CDF,
    "rewrites": CDF,
    "rewrite_vetoes": CDF,
}
BRONZE_CONSTRAINT_NAMES = [
    "event_id_valid",
    "schema_version_valid",
    "user_id_valid",
    "device_id_valid",
    "device_type_valid",
    "locale_valid",
    "utterance_valid",
    "asr_confidence_valid",
    "nlu_confidence_valid",
    "domain_valid",
    "intent_valid",
    "slots_valid",
    "response_type_valid",
    "response_text_valid",
    "status_valid",
    "response_latency_ms_valid",
    "response_duration_ms_valid",
    "explicit_feedback_valid",
]


def ensure_lake(spark: SparkSession, lake: LakePaths) -> None:
    """Every table of a lake, created the way the stages create them."""
    ensure_bronze_tables(spark, lake)
    ensure_silver_tables(spark, lake)
    ensure_progress_table(spark, lake)
    ensure_rewrite_tables(spark, lake)


def described_columns(spark: SparkSession, path: str) -> list[tuple[str, str, str | None]]:
    """(name, type, comment) of each column as ``DESCRIBE TABLE`` shows it."""
    columns = []
    for row in spark.sql(f"DESCRIBE TABLE delta.`{path}`").collect():
        if not row["col_name"] or row["col_name"].startswith("#"):
            break
        columns.append((row["col_name"], row["data_type"], row["comment"]))
    return columns


def declared_columns(schema: StructType) -> list[tuple[str, str, str | None]]:
    return [(f.name, f.dataType.simpleString(), f.metadata.get("comment")) for f in schema.fields]


def detail(spark: SparkSession, path: str) -> tuple[str | None, dict[str, str]]:
    """(table comment, properties) from ``DESCRIBE DETAIL``."""
    row = DeltaTable.forPath(spark, path).detail().first()
    assert row is not None
    return row["description"], dict(row["properties"])


def operations(spark: SparkSession, path: str) -> list[str]:
    return [r["operation"] for r in DeltaTable.forPath(spark, path).history().orderBy("version").collect()]


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> LakePaths:
    """A lake with every table created, none written to."""
    paths = LakePaths.at(tmp_path_factory.mktemp("described") / "lake")
    ensure_lake(spark, paths)
    return paths


@pytest.fixture(scope="module")
def constrained_bronze(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty bronze table with its constraints."""
    paths = LakePaths.at(tmp_path_factory.mktemp("constrained") / "lake")
    ensure_bronze_tables(spark, paths)
    yield paths.bronze


# ----- comments and properties --------------------------------------------------------------------


def test_every_table_of_the_lake_has_a_schema_and_a_comment(lake: LakePaths) -> None:
    assert list(lake.tables()) == list(SCHEMAS) == list(TABLE_COMMENTS)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_describe_shows_each_columns_comment_and_the_tables(spark: SparkSession, lake: LakePaths, name: str) -> None:
    path = lake.tables()[name]
    assert described_columns(spark, path) == declared_columns(SCHEMAS[name])
    assert all(comment for _, _, comment in described_columns(spark, path))
    assert detail(spark, path) == (TABLE_COMMENTS[name], EXPECTED_PROPERTIES[name])
    assert operations(spark, path) == ["CREATE TABLE"]  # comments, properties and constraints come with the creation


def test_some_comments_word_for_word(spark: SparkSession, lake: LakePaths) -> None:
    bronze = {name: comment for name, _, comment in described_columns(spark, lake.bronze)}
    assert bronze["status"] == "Outcome the assistant reported: success, unhandled or error."
    assert bronze["event_date"] == "UTC date of ts; the partition column."
    metrics = {name: comment for name, _, comment in described_columns(spark, lake.defect_metrics)}
    assert metrics["defect_rate"] == "defects / turns."
    table = spark.sql(f"DESCRIBE TABLE EXTENDED delta.`{lake.rewrites}`").filter(F.col("col_name") == "Comment").first()
    assert table is not None and table["data_type"] == (
        "Query rewrites mined from pooled rephrase chains with absorbing Markov chains, MERGEd by source per run."
    )


def test_the_contract_rules_as_bronze_constraints(spark: SparkSession, lake: LakePaths) -> None:
    properties = detail(spark, lake.bronze)[1]
    constraints = {k.removeprefix("delta.constraints."): v for k, v in properties.items() if k.startswith("delta.constraints.")}
    assert sorted(constraints) == sorted(BRONZE_CONSTRAINT_NAMES)
    assert constraints["status_valid"] == "status IN ('success', 'unhandled', 'error')"
    assert constraints["response_type_valid"] == "response_type IS NULL OR (response_type IN ('speech', 'media', 'action', 'none'))"
    assert constraints["utterance_valid"] == "NOT (utterance RLIKE '(?U)^\\\\s*$') AND length(utterance) <= 1000"
    assert constraints["asr_confidence_valid"] == "asr_confidence IS NULL OR (asr_confidence >= 0 AND asr_confidence <= 1)"
    assert constraints["response_duration_ms_valid"] == "response_duration_ms IS NULL OR (response_duration_ms >= 0)"
    assert constraints["schema_version_valid"] == "schema_version = 1"
    assert constraints["slots_valid"] == "slots IS NULL OR (size(slots) <= 50)"


def test_ensure_again_commits_nothing_and_caches_nothing(spark: SparkSession, tmp_path: Path) -> None:
    paths = LakePaths.at(tmp_path / "lake")
    ensure_lake(spark, paths)
    held = persistent_rdd_ids(spark)
    ensure_lake(spark, paths)  # what each stream start does: checks the tables' metadata, not their files
    assert persistent_rdd_ids(spark) - held == frozenset()
    assert {name: operations(spark, path) for name, path in paths.tables().items()} == {name: ["CREATE TABLE"] for name in SCHEMAS}


def test_ensure_table_refuses_a_column_without_comment_or_a_table_without_one(spark: SparkSession, tmp_path: Path) -> None:
    from feedback.core.tables import ensure_table

    bare = StructType([StructField("a", BRONZE_SCHEMA["event_id"].dataType, False)])
    with pytest.raises(ValueError, match=r"^schema: every column needs a comment in its metadata, missing for \['a'\]$"):
        ensure_table(spark, str(tmp_path / "t"), bare, (), comment="a table")
    with pytest.raises(ValueError, match=r"^comment must be a non-empty string, got ' '$"):
        ensure_table(spark, str(tmp_path / "t"), INGEST_BATCHES_SCHEMA, (), comment=" ")
    with pytest.raises(ValueError, match=r"^constraints: a name must be lower-case letters, digits and _, got 'Bad-Name'$"):
        ensure_table(spark, str(tmp_path / "t"), INGEST_BATCHES_SCHEMA, (), comment="a table", constraints={"Bad-Name": "true"})
    assert not (tmp_path / "t").exists()


def without_comments(schema: StructType) -> StructType:
    return StructType([StructField(f.name, f.dataType, f.nullable) for f in schema.fields])


def test_a_table_an_older_version_made_gets_its_description_once(spark: SparkSession, tmp_path: Path) -> None:
    paths = LakePaths.at(tmp_path / "lake")
    # As an older version created them: no comments, no properties, no constraints; the batch log
    # without the four columns added since.
    old = {
        paths.bronze: (without_comments(BRONZE_SCHEMA), BRONZE_PARTITION_COLUMNS),
        paths.quarantine: (without_comments(QUARANTINE_SCHEMA), QUARANTINE_PARTITION_COLUMNS),
        paths.silver_turns: (without_comments(SILVER_TURNS_SCHEMA), SILVER_PARTITION_COLUMNS),
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
    assert operations(spark, paths.silver_turns)[before[paths.silver_turns] :] == ["CHANGE COLUMNS", "SET TBLPROPERTIES"]
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


# ----- CHECK constraints on bronze ----------------------------------------------------------------


def append(spark: SparkSession, path: str, rows: list[dict[str, object]]) -> None:
    bronze_frame(spark, rows).write.format("delta").mode("append").save(path)


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"status": "ok"}, "status_valid"),
        ({"response_type": "video"}, "response_type_valid"),
        ({"explicit_feedback": "meh"}, "explicit_feedback_valid"),
        ({"utterance": " \t "}, "utterance_valid"),
        ({"user_id": "\u3000"}, "user_id_valid"),  # an ideographic space is blank too
        ({"event_id": "e" * 129}, "event_id_valid"),
        ({"locale": "x" * 36}, "locale_valid"),
        ({"asr_confidence": 1.5}, "asr_confidence_valid"),
        ({"nlu_confidence": -0.1}, "nlu_confidence_valid"),
        ({"response_latency_ms": -1}, "response_latency_ms_valid"),
        ({"schema_version": 2}, "schema_version_valid"),
        ({"slots": {f"s{i}": "v" for i in range(51)}}, "slots_valid"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_row_breaking_the_contract_is_refused_by_its_constraint(
    spark: SparkSession, constrained_bronze: str, fields: dict[str, object], constraint: str
) -> None:
    with pytest.raises(Py4JJavaError) as caught:
        append(spark, constrained_bronze, [bronze_row(**({"event_id": "bad-1"} | fields))])
    error = caught.value.java_exception
    assert error.getClass().getName() == "org.apache.spark.sql.delta.schema.DeltaInvariantViolationException"
    assert error.getErrorClass() == "DELTA_VIOLATE_CONSTRAINT_WITH_VALUES"
    assert f"CHECK constraint {constraint} " in error.getMessage()
    assert "violated by row with values" in error.getMessage()
    assert spark.read.format("delta").load(constrained_bronze).count() == 0  # every append of this module is refused


def test_rows_at_the_contracts_limits_are_accepted(spark: SparkSession, tmp_path: Path) -> None:
    paths = LakePaths.at(tmp_path / "lake")
    ensure_bronze_tables(spark, paths)
    rows = [
        bronze_row("e" * 128, asr_confidence=1.0, nlu_confidence=0.0, response_latency_ms=0, locale="x" * 35),
        bronze_row(
            "e2", 10, slots={f"s{i}": "v" * 256 for i in range(50)}, response_type=None, response_duration_ms=None,
            explicit_feedback="negative", status="unhandled", utterance=" play  jazz ", asr_confidence=None, device_type=None,
        ),
    ]
    append(spark, paths.bronze, rows)
    assertDataFrameEqual(spark.read.format("delta").load(paths.bronze), bronze_frame(spark, rows))


# ----- the change data feed of silver and gold ----------------------------------------------------


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
