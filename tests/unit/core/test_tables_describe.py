"""Delta tables that describe themselves: comments, CHECK constraints on bronze, the change data feed of silver and gold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.stream import ensure_bronze_tables
from feedback.core.checkpoints import persistent_rdd_ids
from feedback.core.lake import LakePaths
from feedback.core.schema import (
    BRONZE_SCHEMA,
    INGEST_BATCHES_SCHEMA,
    TABLE_COMMENTS,
)
from feedback.gold.annotations import ensure_annotations_table
from feedback.gold.late_events import ensure_progress_table
from feedback.rewrites.mine import ensure_rewrite_tables
from feedback.silver.stream import ensure_silver_tables

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
)


def ensure_lake(spark: SparkSession, lake: LakePaths) -> None:
    """Every table of a lake, created the way the stages create them."""
    ensure_bronze_tables(spark, lake)
    ensure_silver_tables(spark, lake)
    ensure_progress_table(spark, lake)
    ensure_rewrite_tables(spark, lake)
    ensure_annotations_table(spark, lake)


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


# ----- CHECK constraints on bronze ----------------------------------------------------------------


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


