"""What Delta says of a table (its described columns, detail, history), for the tests of table descriptions."""

from __future__ import annotations

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql.types import StructField, StructType

from feedback.core.schema import (
    BRONZE_CONSTRAINTS,
    BRONZE_SCHEMA,
    DEFECT_METRICS_SCHEMA,
    FAILURE_POINTS_SCHEMA,
    INGEST_BATCHES_SCHEMA,
    LANDING_SKIPPED_SCHEMA,
    NLU_ANNOTATIONS_SCHEMA,
    QUARANTINE_SCHEMA,
    REPHRASE_PAIRS_SCHEMA,
    REWRITE_VETOES_SCHEMA,
    REWRITES_SCHEMA,
    SILVER_BATCHES_SCHEMA,
    SILVER_PROGRESS_SCHEMA,
    SILVER_TURNS_SCHEMA,
    UTTERANCE_DEFECTS_SCHEMA,
    VALIDATION_RESULTS_SCHEMA,
)

from support.bronze_rows import bronze_frame

# What every table of a lake is declared with: its schema and its properties.
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
    "failure_points": FAILURE_POINTS_SCHEMA,
    "rewrites": REWRITES_SCHEMA,
    "rewrite_vetoes": REWRITE_VETOES_SCHEMA,
    "nlu_annotations": NLU_ANNOTATIONS_SCHEMA,
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
    "failure_points": CDF,
    "rewrites": CDF,
    "rewrite_vetoes": CDF,
    "nlu_annotations": CDF,
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


def without_comments(schema: StructType) -> StructType:
    return StructType([StructField(f.name, f.dataType, f.nullable) for f in schema.fields])


def append(spark: SparkSession, path: str, rows: list[dict[str, object]]) -> None:
    bronze_frame(spark, rows).write.format("delta").mode("append").save(path)
