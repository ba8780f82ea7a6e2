"""Landing JSONL files -> ``bronze/interactions`` (valid, deduplicated) and ``quarantine/interactions``.

The transform ``parse_events`` is pure: it turns raw lines into typed columns plus the list
of every contract-v1 rule a line breaks. It runs in the JVM: one JSON parse into the contract's
types serves the common line; a line that parse cannot vouch for is parsed again into a Variant,
whose per-field type (``schema_of_variant``) tells a JSON string from a number, so "wrong type"
is exact, not a guess from a lenient cast.

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
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DoubleType, IntegerType, MapType, StringType, StructField, StructType

from feedback.checkpoints import checkpointed
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
from feedback.tables import app_id_for, append_once, ensure_table, run_together
from feedback.validation import SUITE_NAME, VALIDATION_RESULTS_SCHEMA, BatchValidator, ValidationOutcome

LOG = logging.getLogger("feedback.ingest")

BRONZE_QUERY_NAME = "bronze_interactions"

_INT_TYPES = r"^(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,0\))$"
_NUMBER_TYPES = r"^(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,\d+\)|FLOAT|DOUBLE)$"
_BLANK = r"(?U)^\s*$"


def _exact_field(raw: Column, kind: Column, rule: FieldRule) -> tuple[Column, Column, Column]:
    """(present, type_ok, value) of a field from its Variant and ``schema_of_variant`` kind (exact path)."""
    present = raw.isNotNull() & (kind != F.lit("VOID"))
    if rule.kind == "string":
        type_ok = kind == F.lit("STRING")
        value = F.variant_get(raw, "$", "string")
    elif rule.kind == "int":
        type_ok = kind.rlike(_INT_TYPES)
        value = F.try_variant_get(raw, "$", "bigint")
    elif rule.kind == "double":
        type_ok = kind.rlike(_NUMBER_TYPES)
        value = F.try_variant_get(raw, "$", "double")
    else:
        members = F.try_variant_get(raw, "$", "map<string,variant>")
        type_ok = kind.startswith("OBJECT<") & F.forall(
            F.map_values(members), lambda member: F.schema_of_variant(member) == F.lit("STRING")
        )
        value = F.try_variant_get(raw, "$", "map<string,string>")
    return present, type_ok, value


def _field_columns(present: Column, type_ok: Column, value: Column, rule: FieldRule) -> tuple[Column, list[Column]]:
    """The typed value of one field and the reason codes it can raise (null where it passes)."""
    reasons: list[Column] = []
    if rule.required:
        reasons.append(F.when(~present, F.lit(f"{REASON_MISSING_FIELD}:{rule.name}")))
    reasons.append(F.when(present & ~type_ok, F.lit(f"{REASON_WRONG_TYPE}:{rule.name}")))
    checked = present & type_ok
    value = F.when(checked, value)
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
        value = value.try_cast("int")
    return value, reasons


_FIELDS_AS_VARIANTS = "struct<" + ", ".join(f"{rule.name}: variant" for rule in EVENT_FIELDS) + ">"
_CORRUPT = "_corrupt_record"
_FAST_TYPES = {"string": StringType(), "int": IntegerType(), "double": DoubleType(), "map": MapType(StringType(), StringType())}
# Every field in its contract type. A JSON token the type cannot take (a string or a fraction
# for an int, an array for a map, ...) fails the line's parse, which fills _corrupt_record; a
# string field (and a map's member) takes any token, rendered as its JSON text.
_AS_FIELDS = StructType(
    [StructField(rule.name, _FAST_TYPES[rule.kind]) for rule in EVENT_FIELDS] + [StructField(_CORRUPT, StringType())]
)
# NaN and Infinity are not JSON: Spark's parser takes them by default, and a string field would
# then read an unquoted NaN as the text "NaN" in quotes.
_FAST_OPTIONS = {"columnNameOfCorruptRecord": _CORRUPT, "allowNonNumericNumbers": "false"}
# How a non-string JSON token renders as text: a number, true/false, or an array/object.
_NON_STRING_TOKEN = r"(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|true|false|[\[{].*)"
_NON_STRING_TEXT = rf"^{_NON_STRING_TOKEN}$"
# A map's values joined by \x01 (a null member as \x00): one of them is not a JSON string.
_MEMBER_SEPARATOR = "\u0001"
_NULL_MEMBER = "\u0000"
_NON_STRING_MEMBER = r"(^|\x01)(" + _NON_STRING_TOKEN.replace(".*", r"[^\x01]*") + r"|\x00)(\x01|$)"


def _suspicious(fields: Column) -> Column:
    """True where the fast parse cannot be trusted: the exact Variant path decides those lines.

    False alarms (a string that looks like a number) only cost speed; a wrong JSON type cannot
    pass unseen: a non-string token in a string field (or map member) renders as a number,
    true/false or [/{ text, and any other wrong token fails the parse (``_corrupt_record``),
    including "NaN" or "Infinity" in quotes for a number (``allowNonNumericNumbers`` is off).
    """
    conditions = [fields.isNull(), fields[_CORRUPT].isNotNull()]
    for rule in EVENT_FIELDS:
        value = fields[rule.name]
        if rule.kind == "string":
            conditions.append(value.rlike(_NON_STRING_TEXT))
        elif rule.kind == "map":
            members = F.array_join(F.map_values(value), _MEMBER_SEPARATOR, _NULL_MEMBER)
            conditions.append(members.rlike(_NON_STRING_MEMBER))
    suspicious = F.coalesce(conditions[0], F.lit(False))
    for condition in conditions[1:]:
        suspicious = suspicious | F.coalesce(condition, F.lit(False))
    return suspicious


def _without_bom(line: Column) -> Column:
    """The line without a leading byte-order mark (a prefix test, not a regex: it runs on every line)."""
    return F.when(line.startswith("\uFEFF"), F.substring(line, 2, 1 << 30)).otherwise(line)


def parse_events(lines: DataFrame, barrier: bool = True) -> DataFrame:
    """Parse and check raw JSONL lines against event contract v1.

    One JSON parse into the contract's types serves the common, well-formed line. A line that
    might hold a JSON token of the wrong type (``_suspicious``: about 5% of simulated traffic,
    mostly slot values that are numbers in quotes), or is not a JSON object, goes through the
    exact path instead: parsed into a Variant, whose per-field ``schema_of_variant`` tells a JSON
    string from a number. That path is computed in its own projections, for those lines only.

    Args:
        lines: one row per line, with a string column ``value`` (the line) and ``source_file``.
        barrier: cut the plan (a lazy local checkpoint) between the parse and the checks. Keep
            it unless the result is materialised right away (``localCheckpoint``) before
            anything is filtered or joined: the optimizer pushes such filters through the wide
            plan, inlining every field's expression into every check, and planning takes
            minutes. The writer materialises the result once instead of twice, without it
            (the barrier's blocks are only freed by Spark's ContextCleaner: see
            ``feedback.checkpoints``).

    Returns:
        The bronze columns (without the ingest bookkeeping) plus ``raw``, ``source_file`` and
        ``reasons``: every rule the line breaks, an empty array when it is a valid event.
        A line that is not a JSON object gets the single reason ``not_json``,
        ``truncated_json`` or ``not_object``.
    """
    missing = {"value", "source_file"} - set(lines.columns)
    if missing:
        raise ValueError(f"lines is missing column(s) {sorted(missing)}")
    fast = lines.select(
        F.col("value").alias("raw"),
        "source_file",
        F.from_json(_without_bom(F.col("value")), _AS_FIELDS, _FAST_OPTIONS).alias("_fast"),
    )
    text = _without_bom(F.col("raw"))
    flagged = fast.withColumn("_suspicious", _suspicious(F.col("_fast")))
    with_payload = flagged.withColumn("_payload", F.when(F.col("_suspicious"), F.try_parse_json(text)))
    is_object = F.coalesce(F.schema_of_variant("_payload").startswith("OBJECT<"), F.lit(False))
    structural = (
        F.when(~F.col("_suspicious"), F.lit(None).cast("string"))
        .when(F.col("_payload").isNull() & F.ltrim(text).startswith("{"), F.lit(REASON_TRUNCATED_JSON))
        .when(F.col("_payload").isNull(), F.lit(REASON_NOT_JSON))
        .when(~is_object, F.lit(REASON_NOT_OBJECT))
    )
    split = with_payload.select(
        "raw",
        "source_file",
        "_fast",
        "_suspicious",
        structural.alias("_structural"),
        F.when(is_object, F.try_variant_get("_payload", "$", _FIELDS_AS_VARIANTS)).alias("_fields"),
    )
    typed = split.select(
        "raw",
        "source_file",
        "_fast",
        "_suspicious",
        "_structural",
        *[F.col(f"_fields.{rule.name}").alias(f"_raw_{rule.name}") for rule in EVENT_FIELDS],
        *[F.schema_of_variant(F.col(f"_fields.{rule.name}")).alias(f"_kind_{rule.name}") for rule in EVENT_FIELDS],
    )
    exact = F.col("_suspicious")
    resolved_columns: list[Column] = []
    for rule in EVENT_FIELDS:
        exact_present, exact_type_ok, exact_value = _exact_field(
            F.col(f"_raw_{rule.name}"), F.col(f"_kind_{rule.name}"), rule
        )
        fast_value = F.col(f"_fast.{rule.name}")
        resolved_columns += [
            F.when(exact, exact_present).otherwise(fast_value.isNotNull()).alias(f"_present_{rule.name}"),
            F.when(exact, exact_type_ok).otherwise(F.lit(True)).alias(f"_type_ok_{rule.name}"),
            F.when(exact, exact_value).otherwise(fast_value).alias(f"_value_{rule.name}"),
        ]
    resolved = typed.select("raw", "source_file", "_structural", *resolved_columns)
    if barrier:
        # Computed once, when first used (see ``barrier`` above).
        resolved = resolved.localCheckpoint(eager=False)
    values: list[Column] = []
    field_reasons: list[Column] = []
    for rule in EVENT_FIELDS:
        value, reasons = _field_columns(
            F.col(f"_present_{rule.name}"), F.col(f"_type_ok_{rule.name}"), F.col(f"_value_{rule.name}"), rule
        )
        values.append(value.alias(rule.name))
        field_reasons.extend(reasons)
    reasons = F.when(
        F.col("_structural").isNotNull(), F.array(F.col("_structural"))
    ).otherwise(F.array_except(F.array(*field_reasons), F.array(F.lit(None).cast("string"))))
    checked = resolved.select(*values, F.col("raw"), F.col("source_file"), reasons.alias("reasons"))
    return checked.withColumn("event_date", F.to_date("ts"))


def split_valid(parsed: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(valid events, rejected lines) of a ``parse_events`` output."""
    valid = parsed.filter(F.size("reasons") == 0).drop("reasons")
    rejected = parsed.filter(F.size("reasons") > 0)
    return valid, rejected


def deduplicate_batch(valid: DataFrame, repeated: DataFrame | None = None) -> DataFrame:
    """Keep one row per ``event_id``, chosen deterministically so a replayed batch picks the same one.

    Duplicates are rare, so only the rows of repeated ids are ranked (a sort); the rest pass
    through a broadcast anti-join, keeping their partitioning. ``repeated`` (a column
    ``event_id``: the ids that occur more than once in ``valid``) is counted here when not given.
    """
    if repeated is None:
        repeated = valid.groupBy("event_id").count().filter(F.col("count") > 1).select("event_id")
    singles = valid.join(F.broadcast(repeated), "event_id", "left_anti")
    order = Window.partitionBy("event_id").orderBy(F.col("source_file"), F.col("raw"))
    chosen = (
        valid.join(F.broadcast(repeated), "event_id", "left_semi")
        .withColumn("_rank", F.row_number().over(order))
        .filter(F.col("_rank") == 1)
        .drop("_rank")
    )
    return singles.unionByName(chosen)


def match_event_ids(valid: DataFrame, bronze_ids: DataFrame) -> DataFrame:
    """The batch's event ids that need a decision: those repeated in the batch or already in bronze.

    One shuffle of ids (the batch's and bronze's together) answers both questions, instead of a
    count per id and then a join. Columns: ``event_id``, ``copies`` (rows in the batch) and
    ``existing_batch`` (the ``ingest_batch`` that wrote it to bronze, null if none). Few rows,
    except when a batch is replayed, where every id is already in bronze.

    Args:
        valid: the batch's valid events (column ``event_id``).
        bronze_ids: ids already in bronze (columns ``event_id``, ``ingest_batch``).
    """
    batch_side = valid.select("event_id", F.lit(1).alias("_copies"), F.lit(None).cast("string").alias("_batch"))
    bronze_side = bronze_ids.select("event_id", F.lit(0).alias("_copies"), F.col("ingest_batch").alias("_batch"))
    copies = F.col("copies")
    return (
        batch_side.unionByName(bronze_side)
        .groupBy("event_id")
        .agg(F.sum("_copies").alias("copies"), F.max("_batch").alias("existing_batch"))
        .filter((copies > 1) | ((copies > 0) & F.col("existing_batch").isNotNull()))
    )


# Data-skipping statistics only on the columns readers filter by, not on the long raw payload.
BRONZE_PROPERTIES = {"delta.dataSkippingStatsColumns": "event_id,ts,user_id,device_id,status,domain,intent,ingest_batch"}


def ensure_bronze_tables(spark: SparkSession, lake: LakePaths) -> None:
    """Create bronze, quarantine, the ingest-batch log and the validation results if absent.

    The four creations are independent commits, so they run at once (each is mostly driver time).
    """
    run_together(
        [
            lambda: ensure_table(spark, lake.bronze, BRONZE_SCHEMA, BRONZE_PARTITION_COLUMNS, BRONZE_PROPERTIES),
            lambda: ensure_table(
                spark, lake.quarantine, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_COLUMNS,
                {"delta.dataSkippingStatsColumns": "event_id,source_file,ingest_batch"},
            ),
            lambda: ensure_table(spark, lake.ingest_batches, INGEST_BATCHES_SCHEMA, ()),
            lambda: ensure_table(spark, lake.validation_results, VALIDATION_RESULTS_SCHEMA, ()),
        ]
    )


@dataclass(frozen=True)
class BatchCounts:
    """The accounting of one micro-batch: lines = inserted + quarantined + duplicates."""

    files: int
    lines_read: int
    bronze_inserted: int
    quarantined: int
    duplicates_in_batch: int
    duplicates_existing: int


class PhaseTimer:
    """Wall time of the named phases of one micro-batch, logged at DEBUG to find where a batch goes."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.phases: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.phases.append((name, now - self._last))
        self._last = now

    def render(self) -> str:
        return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.phases)


def in_event_time_order(rows: DataFrame, target_files: int = 1) -> DataFrame:
    """Bronze rows laid out so that the table's files follow event time.

    Why: silver reads bronze a bounded number of files per micro-batch
    (``sessionize.max_rows_per_batch``) and drops what is older than its watermark, so the files
    must reach it in event-time order. A new silver query reads the table's snapshot ordered by
    file modification time, later commits in the order of their files. One writer task that
    writes the batch sorted by (date, time), split into files of ``ingest.max_rows_per_file`` rows,
    gives both orders. ``target_files`` > 1 writes each date's time range with that many tasks in
    parallel: faster on very large batches, but a new silver query then sees a commit's files in
    the order the tasks finished them.
    """
    if target_files < 1:
        raise ValueError(f"target_files must be >= 1, got {target_files}")
    if target_files == 1:
        ranged = rows.repartition(1)
    else:
        dates = rows.select("event_date").distinct().count()
        ranged = rows.repartitionByRange(max(1, dates) * target_files, "event_date", "ts")
    return ranged.sortWithinPartitions("event_date", "ts", "event_id")


class BronzeBatchWriter:
    """The ``foreachBatch`` function of the bronze stream (idempotent under batch replay)."""

    def __init__(
        self,
        lake: LakePaths,
        app_id: str,
        validator: BatchValidator | None,
        target_files: int = 1,
        max_rows_per_file: int = 25_000,
    ) -> None:
        if not app_id:
            raise ValueError("app_id must be non-empty")
        if target_files < 1:
            raise ValueError(f"target_files must be >= 1, got {target_files}")
        if max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file must be >= 1, got {max_rows_per_file}")
        self.lake = lake
        self.app_id = app_id
        self.validator = validator
        self.target_files = target_files
        self.max_rows_per_file = max_rows_per_file

    def _append(self, frame: DataFrame, path: str, writer: str, batch_id: int, partition_by: tuple[str, ...]) -> None:
        append_once(frame, path, f"{self.app_id}/{writer}", batch_id, partition_by)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        spark = batch.sparkSession
        batch_tag = f"{self.app_id}:{batch_id}"
        ingest_time = F.current_timestamp()

        # Parsed once with its lineage cut, so the writes and GX below do not re-plan or re-parse it.
        timer = PhaseTimer()
        with checkpointed(parse_events(batch, barrier=False)) as parsed:
            timer.mark("parse")
            counts, outcome = self._write(spark, parsed, batch_id, batch_tag, ingest_time, timer)
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
        self._append(metrics.select(*INGEST_BATCHES_SCHEMA.fieldNames()), self.lake.ingest_batches, "ops", batch_id, ())
        timer.mark("bookkeeping")
        LOG.debug("bronze batch %d phases: %s", batch_id, timer.render())
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
        self,
        spark: SparkSession,
        parsed: DataFrame,
        batch_id: int,
        batch_tag: str,
        ingest_time: Column,
        timer: PhaseTimer,
    ) -> tuple[BatchCounts, ValidationOutcome | None]:
        valid_row = F.size("reasons") == 0
        totals = parsed.agg(
            F.count(F.lit(1)).alias("lines"),
            F.sum(F.when(valid_row, 0).otherwise(1)).alias("rejected"),
            F.count_distinct("source_file").alias("files"),
            F.collect_set(F.when(valid_row, F.col("event_date"))).alias("dates"),
        ).first()
        lines_read = int(totals["lines"]) if totals else 0
        quarantined = int(totals["rejected"] or 0) if totals else 0
        files = int(totals["files"]) if totals else 0
        dates = list(totals["dates"]) if totals else []
        timer.mark("count")

        valid, rejected = split_valid(parsed)
        valid_count = lines_read - quarantined
        # The ids repeated in the batch or already in bronze (on the batch's event dates only),
        # found by one shuffle of ids and kept (few rows; a replayed batch has them all). The
        # later steps join them by broadcast, so full rows are not shuffled to deduplicate.
        bronze_ids = (
            spark.read.format("delta")
            .load(self.lake.bronze)
            .filter(F.col("event_date").isin(dates))
            .select("event_id", "ingest_batch")
        )
        with checkpointed(match_event_ids(valid, bronze_ids)) as flags:
            existing_batch = F.col("existing_batch")
            stats = flags.agg(
                F.sum(F.col("copies") - 1).alias("extra_copies"),
                F.sum(F.when(existing_batch == F.lit(batch_tag), 1).otherwise(0)).alias("own"),
                F.sum(F.when(existing_batch.isNotNull() & (existing_batch != F.lit(batch_tag)), 1).otherwise(0)).alias("others"),
            ).first()
            unique_count = valid_count - int(stats["extra_copies"] or 0) if stats else valid_count
            own = int(stats["own"] or 0) if stats else 0
            duplicates_existing = int(stats["others"] or 0) if stats else 0
            inserted = unique_count - duplicates_existing
            timer.mark("deduplicate")
            repeated = flags.filter(F.col("copies") > 1).select("event_id")
            in_bronze = F.broadcast(flags.filter(existing_batch.isNotNull()).select("event_id"))
            # The batch's events, one row each, read by both the bronze write and GX: computed
            # once, by whichever of the two gets there first.
            with checkpointed(deduplicate_batch(valid, repeated), eager=False) as unique:
                actions: list[Callable[[], None]] = []
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
                    actions.append(
                        lambda: self._append(
                            quarantine_rows, self.lake.quarantine, "quarantine", batch_id, QUARANTINE_PARTITION_COLUMNS
                        )
                    )
                if inserted - own > 0:
                    bronze_rows = unique.join(in_bronze, "event_id", "left_anti").select(
                        *[F.col(name) for name in BRONZE_SCHEMA.fieldNames() if name not in {"ingest_time", "ingest_batch"}],
                        ingest_time.alias("ingest_time"),
                        F.lit(batch_tag).alias("ingest_batch"),
                    ).select(*BRONZE_SCHEMA.fieldNames())
                    bronze_rows = in_event_time_order(bronze_rows, self.target_files)
                    actions.append(
                        lambda: append_once(
                            bronze_rows,
                            self.lake.bronze,
                            f"{self.app_id}/bronze",
                            batch_id,
                            BRONZE_PARTITION_COLUMNS,
                            max_rows_per_file=self.max_rows_per_file,
                        )
                    )
                outcomes: list[ValidationOutcome | None] = [None]
                validator = self.validator
                if validator is not None and unique_count:

                    def validate() -> None:
                        outcome = validator.validate(unique, batch_id)
                        outcomes[0] = outcome
                        if outcome is not None:
                            # Recorded on this thread, so its commit overlaps the bronze write.
                            self._record_validation(spark, outcome, ingest_time)

                    actions.append(validate)
                run_together(actions)
                timer.mark("write and validate")
        counts = BatchCounts(
            files=files,
            lines_read=lines_read,
            bronze_inserted=inserted,
            quarantined=quarantined,
            duplicates_in_batch=valid_count - unique_count,
            duplicates_existing=duplicates_existing,
        )
        return counts, outcomes[0]


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
        lake,
        app_id_for(lake.checkpoint(BRONZE_QUERY_NAME)),
        validator,
        config.ingest.target_files_per_partition,
        config.ingest.max_rows_per_file,
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
