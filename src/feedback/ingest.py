"""Landing JSONL files -> ``bronze/interactions`` (valid, deduplicated) and ``quarantine/interactions``.

The transform ``parse_events`` is pure: it turns raw lines into typed columns plus the list
of every contract-v1 rule a line breaks. It runs in the JVM: each line is parsed once into a
Variant, whose per-field type (``schema_of_variant``) tells a JSON string from a number, so
"wrong type" is exact, not a guess from a lenient cast.

``BronzeBatchWriter`` is the ``foreachBatch`` sink. Every write it makes is idempotent under
replay of a micro-batch (Spark replays the same offsets with the same ``batch_id`` after a
crash): Delta appends carry ``txnAppId``/``txnVersion``, and rows already in bronze are told
apart from real duplicates by the ``ingest_batch`` they were written by. Deduplication is by
``event_id`` against the whole table (restricted to the event dates present in the batch), not
under an event-time watermark, so files that land days late are still ingested exactly once.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from feedback.config import AppConfig
from feedback.schema import (
    BRONZE_PARTITION_COLUMNS,
    BRONZE_SCHEMA,
    EVENT_FIELDS,
    INGEST_BATCHES_SCHEMA,
    ISO_TIMESTAMP_WITH_OFFSET,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    REASON_BAD_TIMESTAMP,
    REASON_BAD_VALUE,
    REASON_BLANK_UTTERANCE,
    REASON_EMPTY_FIELD,
    REASON_MISSING_FIELD,
    REASON_NOT_JSON,
    REASON_NOT_OBJECT,
    REASON_OUT_OF_RANGE,
    REASON_TOO_LONG,
    REASON_TRUNCATED_JSON,
    REASON_UNKNOWN_SCHEMA_VERSION,
    REASON_WRONG_TYPE,
    SCHEMA_VERSION,
    FieldRule,
    LakePaths,
)
from feedback.validation import SUITE_NAME, VALIDATION_RESULTS_SCHEMA, BatchValidator, ValidationOutcome

LOG = logging.getLogger("feedback.ingest")

BRONZE_QUERY_NAME = "bronze_interactions"
APP_ID_FILE = "_feedback_app_id"

_INT_TYPES = r"^(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,0\))$"
_NUMBER_TYPES = r"^(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,\d+\)|FLOAT|DOUBLE)$"
_BLANK = r"(?U)^\s*$"


def _field_columns(payload: Column, rule: FieldRule) -> tuple[Column, list[Column]]:
    """The typed value of one field and the reason codes it can raise (null where it passes)."""
    raw = F.variant_get(payload, f"$.{rule.name}", "variant")
    kind = F.schema_of_variant(raw)
    present = raw.isNotNull() & (kind != F.lit("VOID"))
    reasons: list[Column] = []
    if rule.required:
        reasons.append(F.when(~present, F.lit(f"{REASON_MISSING_FIELD}:{rule.name}")))

    if rule.kind == "string":
        type_ok = kind == F.lit("STRING")
        value = F.when(present & type_ok, F.variant_get(raw, "$", "string"))
    elif rule.kind == "int":
        type_ok = kind.rlike(_INT_TYPES)
        value = F.when(present & type_ok, F.try_variant_get(raw, "$", "bigint"))
    elif rule.kind == "double":
        type_ok = kind.rlike(_NUMBER_TYPES)
        value = F.when(present & type_ok, F.try_variant_get(raw, "$", "double"))
    else:
        members = F.try_variant_get(raw, "$", "map<string,variant>")
        type_ok = kind.startswith("OBJECT<") & F.forall(
            F.map_values(members), lambda member: F.schema_of_variant(member) == F.lit("STRING")
        )
        value = F.when(present & type_ok, F.try_variant_get(raw, "$", "map<string,string>"))
    reasons.append(F.when(present & ~type_ok, F.lit(f"{REASON_WRONG_TYPE}:{rule.name}")))

    checked = present & type_ok
    if rule.name == "utterance":
        reasons.append(F.when(checked & value.rlike(_BLANK), F.lit(REASON_BLANK_UTTERANCE)))
    elif rule.non_empty:
        reasons.append(F.when(checked & value.rlike(_BLANK), F.lit(f"{REASON_EMPTY_FIELD}:{rule.name}")))
    if rule.max_length is not None:
        reasons.append(F.when(checked & (F.length(value) > rule.max_length), F.lit(f"{REASON_TOO_LONG}:{rule.name}")))
    if rule.allowed is not None:
        reasons.append(
            F.when(checked & ~value.isin(*rule.allowed), F.lit(f"{REASON_BAD_VALUE}:{rule.name}"))
        )
    if rule.kind in ("int", "double"):
        out_of_range = value.isNull()  # an integer too large for 64 bits
        if rule.minimum is not None:
            out_of_range = out_of_range | (value < F.lit(rule.minimum))
        if rule.maximum is not None:
            out_of_range = out_of_range | (value > F.lit(rule.maximum))
        reasons.append(F.when(checked & out_of_range, F.lit(f"{REASON_OUT_OF_RANGE}:{rule.name}")))
    if rule.name == "schema_version":
        reasons.append(F.when(checked & (value != F.lit(SCHEMA_VERSION)), F.lit(REASON_UNKNOWN_SCHEMA_VERSION)))
    if rule.name == "ts":
        parsed = F.try_to_timestamp(value)
        bad = ~value.rlike(ISO_TIMESTAMP_WITH_OFFSET) | parsed.isNull()
        reasons.append(F.when(checked & bad, F.lit(REASON_BAD_TIMESTAMP)))
        value = parsed
    if rule.kind == "int":
        value = value.cast("int")
    return value, reasons


def parse_events(lines: DataFrame) -> DataFrame:
    """Parse and check raw JSONL lines against event contract v1.

    Args:
        lines: one row per line, with a string column ``value`` (the line) and ``source_file``.

    Returns:
        The bronze columns (without the ingest bookkeeping) plus ``raw``, ``source_file`` and
        ``reasons``: every rule the line breaks, an empty array when it is a valid event.
        A line that is not a JSON object gets the single reason ``not_json``,
        ``truncated_json`` or ``not_object``.
    """
    missing = {"value", "source_file"} - set(lines.columns)
    if missing:
        raise ValueError(f"lines is missing column(s) {sorted(missing)}")
    text = F.regexp_replace(F.col("value"), r"^\uFEFF", "")
    payload = F.try_parse_json(text)
    is_object = F.coalesce(F.schema_of_variant(payload).startswith("OBJECT<"), F.lit(False))
    structural = (
        F.when(payload.isNull() & F.ltrim(text).startswith("{"), F.lit(REASON_TRUNCATED_JSON))
        .when(payload.isNull(), F.lit(REASON_NOT_JSON))
        .when(~is_object, F.lit(REASON_NOT_OBJECT))
    )
    staged = lines.select(
        F.col("value").alias("raw"),
        F.col("source_file"),
        F.when(is_object, payload).alias("_payload"),
        structural.alias("_structural"),
    )
    values: list[Column] = []
    field_reasons: list[Column] = []
    for rule in EVENT_FIELDS:
        value, reasons = _field_columns(F.col("_payload"), rule)
        values.append(value.alias(rule.name))
        field_reasons.extend(reasons)
    reasons = F.when(
        F.col("_structural").isNotNull(), F.array(F.col("_structural"))
    ).otherwise(F.array_compact(F.array(*field_reasons)))
    parsed = staged.select(*values, F.col("raw"), F.col("source_file"), reasons.alias("reasons"))
    return parsed.withColumn("event_date", F.to_date("ts"))


def split_valid(parsed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid events, rejected lines) of a ``parse_events`` output."""
    valid = parsed.filter(F.size("reasons") == 0).drop("reasons")
    rejected = parsed.filter(F.size("reasons") > 0)
    return valid, rejected


def deduplicate_batch(valid: DataFrame) -> DataFrame:
    """Keep one row per ``event_id``, chosen deterministically so a replayed batch picks the same one."""
    order = Window.partitionBy("event_id").orderBy(F.col("source_file"), F.col("raw"))
    return valid.withColumn("_rank", F.row_number().over(order)).filter(F.col("_rank") == 1).drop("_rank")


def ensure_table(spark: SparkSession, path: str, schema: StructType, partition_by: tuple[str, ...]) -> DeltaTable:
    """Create the Delta table at ``path`` if absent, so readers see its schema before any data lands."""
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    return builder.execute()


def ensure_bronze_tables(spark: SparkSession, lake: LakePaths) -> None:
    """Create bronze, quarantine and the ingest-batch log if absent."""
    ensure_table(spark, lake.bronze, BRONZE_SCHEMA, BRONZE_PARTITION_COLUMNS)
    ensure_table(spark, lake.quarantine, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_COLUMNS)
    ensure_table(spark, lake.ingest_batches, INGEST_BATCHES_SCHEMA, ())
    ensure_table(spark, lake.validation_results, VALIDATION_RESULTS_SCHEMA, ())


@dataclass(frozen=True)
class BatchCounts:
    """The accounting of one micro-batch: lines = inserted + quarantined + duplicates."""

    files: int
    lines_read: int
    bronze_inserted: int
    quarantined: int
    duplicates_in_batch: int
    duplicates_existing: int


def app_id_for(checkpoint: str) -> str:
    """A stable id for the query writing through ``checkpoint``, kept next to its offsets.

    Delta skips an idempotent write whose ``txnVersion`` is not above the last one seen for
    its ``txnAppId``. A deleted checkpoint restarts ``batch_id`` at 0, so the app id must die
    with the checkpoint, or every later write would be silently skipped.
    """
    if "://" in checkpoint and not checkpoint.startswith("file:"):
        raise ValueError(f"checkpoint must be a local path for the app id file, got {checkpoint!r}")
    directory = Path(checkpoint.removeprefix("file:"))
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / APP_ID_FILE
    if not marker.exists():
        candidate = directory / f".{APP_ID_FILE}.{uuid.uuid4().hex}"
        candidate.write_text(f"feedback-{uuid.uuid4()}")
        candidate.replace(marker)
    return marker.read_text().strip()


class BronzeBatchWriter:
    """The ``foreachBatch`` function of the bronze stream (idempotent under batch replay)."""

    def __init__(self, lake: LakePaths, app_id: str, validator: BatchValidator | None, target_files: int = 1) -> None:
        if not app_id:
            raise ValueError("app_id must be non-empty")
        if target_files < 1:
            raise ValueError(f"target_files must be >= 1, got {target_files}")
        self.lake = lake
        self.app_id = app_id
        self.validator = validator
        self.target_files = target_files

    def _append(self, frame: DataFrame, path: str, writer: str, batch_id: int, partition_by: tuple[str, ...]) -> None:
        write = (
            frame.write.format("delta")
            .mode("append")
            .option("txnAppId", f"{self.app_id}/{writer}")
            .option("txnVersion", batch_id)
        )
        if partition_by:
            write = write.partitionBy(*partition_by)
        write.save(path)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        spark = batch.sparkSession
        batch_tag = f"{self.app_id}:{batch_id}"
        ingest_time = F.current_timestamp()

        # Parsed once with its lineage cut, so the writes and GX below do not re-plan or re-parse it.
        parsed = parse_events(batch).localCheckpoint(eager=True)
        try:
            counts, outcome = self._write(spark, parsed, batch_id, batch_tag, ingest_time)
        finally:
            parsed.unpersist()
        elapsed = time.perf_counter() - started
        metrics = spark.createDataFrame(
            [
                (
                    self.app_id,
                    int(batch_id),
                    counts.files,
                    counts.lines_read,
                    counts.bronze_inserted,
                    counts.quarantined,
                    counts.duplicates_in_batch,
                    counts.duplicates_existing,
                    outcome is not None,
                    outcome.success if outcome else None,
                    list(outcome.failed_expectations) if outcome else [],
                    outcome.seconds if outcome else 0.0,
                    elapsed,
                )
            ],
            schema="app_id string, batch_id long, files long, lines_read long, bronze_inserted long, "
            "quarantined long, duplicates_in_batch long, duplicates_existing long, validation_run boolean, "
            "validation_success boolean, validation_failed_expectations array<string>, "
            "validation_seconds double, batch_seconds double",
        ).withColumn("ingest_time", ingest_time)
        if outcome is not None:
            self._record_validation(spark, outcome, ingest_time)
        self._append(metrics.select(*INGEST_BATCHES_SCHEMA.fieldNames()), self.lake.ingest_batches, "ops", batch_id, ())
        LOG.info(
            "bronze batch %d: %d lines from %d files -> %d inserted, %d quarantined, %d duplicates "
            "(%d in batch, %d already in bronze); validation %s in %.2fs; batch %.2fs",
            batch_id,
            counts.lines_read,
            counts.files,
            counts.bronze_inserted,
            counts.quarantined,
            counts.duplicates_in_batch + counts.duplicates_existing,
            counts.duplicates_in_batch,
            counts.duplicates_existing,
            "skipped" if outcome is None else ("passed" if outcome.success else f"FAILED {list(outcome.failed_expectations)}"),
            outcome.seconds if outcome else 0.0,
            elapsed,
        )
        if outcome is not None and not outcome.success and self.validator is not None and self.validator.fail_on_error:
            raise RuntimeError(
                f"bronze batch {batch_id}: Great Expectations failed {list(outcome.failed_expectations)}; "
                f"see {self.lake.validation_results}"
            )

    def _record_validation(self, spark: SparkSession, outcome: ValidationOutcome, validated_at: Column) -> None:
        row = spark.createDataFrame(
            [
                (
                    self.app_id,
                    outcome.batch_id,
                    SUITE_NAME,
                    outcome.success,
                    outcome.evaluated,
                    outcome.successful,
                    json.dumps(list(outcome.failed_expectations)),
                    outcome.result_json,
                )
            ],
            schema="app_id string, batch_id long, suite string, success boolean, evaluated_expectations long, "
            "successful_expectations long, failed_expectations string, result_json string",
        ).withColumn("validated_at", validated_at)
        self._append(
            row.select(*VALIDATION_RESULTS_SCHEMA.fieldNames()), self.lake.validation_results, "validation", outcome.batch_id, ()
        )

    def _write(
        self, spark: SparkSession, parsed: DataFrame, batch_id: int, batch_tag: str, ingest_time: Column
    ) -> tuple[BatchCounts, ValidationOutcome | None]:
        totals = parsed.agg(
            F.count(F.lit(1)).alias("lines"),
            F.sum(F.when(F.size("reasons") > 0, 1).otherwise(0)).alias("rejected"),
            F.count_distinct("source_file").alias("files"),
        ).first()
        lines_read = int(totals["lines"]) if totals else 0
        quarantined = int(totals["rejected"] or 0) if totals else 0
        files = int(totals["files"]) if totals else 0

        valid, rejected = split_valid(parsed)
        if quarantined:
            quarantine_rows = rejected.select(
                "raw",
                "reasons",
                "event_id",
                "source_file",
                ingest_time.alias("ingest_time"),
                F.to_date(ingest_time).alias("ingest_date"),
                F.lit(batch_tag).alias("ingest_batch"),
            )
            self._append(quarantine_rows, self.lake.quarantine, "quarantine", batch_id, QUARANTINE_PARTITION_COLUMNS)

        valid_count = lines_read - quarantined
        unique = deduplicate_batch(valid).localCheckpoint(eager=True)
        try:
            unique_count = unique.count()
            dates = [row["event_date"] for row in unique.select("event_date").distinct().collect()]
            existing = (
                spark.read.format("delta")
                .load(self.lake.bronze)
                .filter(F.col("event_date").isin(dates))
                .select("event_id", F.col("ingest_batch").alias("_existing_batch"))
            )
            classified = unique.join(existing, on="event_id", how="left")
            new_rows = classified.filter(F.col("_existing_batch").isNull()).drop("_existing_batch")
            already = classified.agg(
                F.sum(F.when(F.col("_existing_batch") == F.lit(batch_tag), 1).otherwise(0)).alias("own"),
                F.sum(
                    F.when(F.col("_existing_batch").isNotNull() & (F.col("_existing_batch") != F.lit(batch_tag)), 1).otherwise(0)
                ).alias("others"),
            ).first()
            own = int(already["own"] or 0) if already else 0
            duplicates_existing = int(already["others"] or 0) if already else 0
            inserted = unique_count - duplicates_existing
            if inserted - own > 0:
                bronze_rows = new_rows.select(
                    *[F.col(name) for name in BRONZE_SCHEMA.fieldNames() if name not in {"ingest_time", "ingest_batch"}],
                    ingest_time.alias("ingest_time"),
                    F.lit(batch_tag).alias("ingest_batch"),
                ).select(*BRONZE_SCHEMA.fieldNames())
                bronze_rows = bronze_rows.repartition(self.target_files, "event_date")
                self._append(bronze_rows, self.lake.bronze, "bronze", batch_id, BRONZE_PARTITION_COLUMNS)
            outcome = self.validator.validate(unique, batch_id) if self.validator and unique_count else None
        finally:
            unique.unpersist()
        counts = BatchCounts(
            files=files,
            lines_read=lines_read,
            bronze_inserted=inserted,
            quarantined=quarantined,
            duplicates_in_batch=valid_count - unique_count,
            duplicates_existing=duplicates_existing,
        )
        return counts, outcome


def read_landing(spark: SparkSession, events_dir: str, config: AppConfig) -> DataFrame:
    """The streaming source: every line of every ``*.jsonl`` file landing in ``events_dir``."""
    return (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", config.ingest.max_files_per_trigger)
        .option("pathGlobFilter", config.ingest.file_glob)
        .load(events_dir)
        .select(F.col("value"), F.col("_metadata.file_path").alias("source_file"))
    )


def bronze_writer(config: AppConfig, lake: LakePaths) -> BronzeBatchWriter:
    """The sink of the bronze query, bound to the app id of its checkpoint."""
    validator = BatchValidator(config.ingest.validation) if config.ingest.validation.enabled else None
    return BronzeBatchWriter(
        lake, app_id_for(lake.checkpoint(BRONZE_QUERY_NAME)), validator, config.ingest.target_files_per_partition
    )


def start_bronze_stream(
    spark: SparkSession,
    config: AppConfig,
    events_dir: str,
    lake: LakePaths,
    available_now: bool,
    writer: BronzeBatchWriter | None = None,
) -> StreamingQuery:
    """Start the landing -> bronze query (availableNow for batch runs, processing time for streams).

    ``writer`` defaults to ``bronze_writer(config, lake)``; tests pass one that fails on purpose.
    """
    ensure_bronze_tables(spark, lake)
    stream = (
        read_landing(spark, events_dir, config)
        .writeStream.queryName(BRONZE_QUERY_NAME)
        .foreachBatch(writer or bronze_writer(config, lake))
        .option("checkpointLocation", lake.checkpoint(BRONZE_QUERY_NAME))
    )
    if available_now:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=config.ingest.trigger_interval)
    return stream.start()


def summarize_ingest(spark: SparkSession, lake: LakePaths) -> dict[str, int]:
    """Totals over every batch ever ingested into this lake, and the row counts of the tables."""
    totals = spark.read.format("delta").load(lake.ingest_batches).agg(
        F.count(F.lit(1)).alias("batches"),
        F.coalesce(F.sum("files"), F.lit(0)).alias("files"),
        F.coalesce(F.sum("lines_read"), F.lit(0)).alias("lines_read"),
        F.coalesce(F.sum("bronze_inserted"), F.lit(0)).alias("bronze_inserted"),
        F.coalesce(F.sum("quarantined"), F.lit(0)).alias("quarantined"),
        F.coalesce(F.sum(F.col("duplicates_in_batch") + F.col("duplicates_existing")), F.lit(0)).alias("duplicates"),
        F.coalesce(F.sum(F.col("validation_run").cast("int")), F.lit(0)).alias("validated_batches"),
        F.coalesce(F.sum((~F.col("validation_success")).cast("int")), F.lit(0)).alias("failed_validations"),
    ).first()
    summary = {key: int(totals[key]) for key in totals.asDict()} if totals else {}
    summary["bronze_rows"] = spark.read.format("delta").load(lake.bronze).count()
    summary["quarantine_rows"] = spark.read.format("delta").load(lake.quarantine).count()
    return summary


def format_summary(summary: dict[str, int]) -> str:
    """A stable, human-readable rendering of ``summarize_ingest`` (printed by the CLI)."""
    return json.dumps(summary, indent=2, sort_keys=True)
