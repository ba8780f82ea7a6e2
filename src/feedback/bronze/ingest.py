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

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DoubleType, IntegerType, MapType, StringType, StructField, StructType

from feedback.bronze.validation import SUITE_NAME, BatchValidator, ValidationOutcome, batch_profile
from feedback.config import AppConfig, IngestConfig, interval_seconds
from feedback.core.checkpoints import checkpointed
from feedback.core.schema import (
    BLANK_TEXT,
    BRONZE_CONSTRAINTS,
    BRONZE_PARTITION_COLUMNS,
    BRONZE_SCHEMA,
    EVENT_FIELDS,
    INGEST_BATCHES_SCHEMA,
    ISO_TIMESTAMP_WITH_OFFSET,
    LANDING_SKIPPED_SCHEMA,
    MAX_SLOT_NAME_LENGTH,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    REASON_BAD_TIMESTAMP,
    REASON_BAD_VALUE,
    REASON_BLANK_UTTERANCE,
    REASON_EMPTY_FIELD,
    REASON_FAILED_EXPECTATION,
    REASON_INVALID_UTF8,
    REASON_LINE_TOO_LONG,
    REASON_MISSING_FIELD,
    REASON_NOT_JSON,
    REASON_NOT_OBJECT,
    REASON_OUT_OF_RANGE,
    REASON_TOO_LONG,
    REASON_TRUNCATED_JSON,
    REASON_UNKNOWN_SCHEMA_VERSION,
    REASON_WRONG_TYPE,
    SCHEMA_VERSION,
    SKIP_HIDDEN,
    SKIP_IN_SUB_FOLDER,
    SKIP_NOT_MATCHING_GLOB,
    SKIP_TOO_OLD,
    TABLE_COMMENTS,
    VALIDATION_RESULTS_SCHEMA,
    FieldRule,
    LakePaths,
)
from feedback.core.tables import app_id_for, append_once, ensure_table, run_together

LOG = logging.getLogger("feedback.bronze.ingest")

BRONZE_QUERY_NAME = "bronze_interactions"

_INT_TYPES = r"^(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,0\))$"
_NUMBER_TYPES = r"^(TINYINT|SMALLINT|INT|BIGINT|DECIMAL\(\d+,\d+\)|FLOAT|DOUBLE)$"


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


def _field_columns(
    present: Column, type_ok: Column, value: Column, rule: FieldRule, latest_ts: Column
) -> tuple[Column, list[Column]]:
    """The typed value of one field and the reason codes it can raise (null where it passes).

    ``latest_ts``: the latest event time believable for the line (its file's landing time plus
    the allowed clock skew); a later ``ts`` would move silver's watermark past every real event.
    """
    reasons: list[Column] = []
    if rule.required:
        reasons.append(F.when(~present, F.lit(f"{REASON_MISSING_FIELD}:{rule.name}")))
    reasons.append(F.when(present & ~type_ok, F.lit(f"{REASON_WRONG_TYPE}:{rule.name}")))
    checked = present & type_ok
    value = F.when(checked, value)
    if rule.name == "utterance":
        reasons.append(F.when(checked & value.rlike(BLANK_TEXT), F.lit(REASON_BLANK_UTTERANCE)))
    elif rule.non_empty:
        reasons.append(F.when(checked & value.rlike(BLANK_TEXT), F.lit(f"{REASON_EMPTY_FIELD}:{rule.name}")))
    if rule.max_length is not None and rule.kind == "map":
        too_long = (F.size(value) > rule.max_length) | F.exists(
            F.map_keys(value), lambda key: F.length(key) > MAX_SLOT_NAME_LENGTH
        )
        if rule.max_member_length is not None:
            too_long = too_long | F.exists(
                F.map_values(value), lambda member: F.length(member) > rule.max_member_length
            )
        reasons.append(F.when(checked & too_long, F.lit(f"{REASON_TOO_LONG}:{rule.name}")))
    elif rule.max_length is not None:
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
        reasons.append(F.when(checked & ~bad & (parsed > latest_ts), F.lit(f"{REASON_OUT_OF_RANGE}:{rule.name}")))
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


DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_MAX_FUTURE_SKEW_S = 15 * 60.0


def parse_events(
    lines: DataFrame,
    barrier: bool = True,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
    landed_at: Column | None = None,
) -> DataFrame:
    """Parse and check raw JSONL lines against event contract v1.

    One JSON parse into the contract's types serves the common, well-formed line. A line that
    might hold a JSON token of the wrong type (``_suspicious``: about 5% of simulated traffic,
    mostly slot values that are numbers in quotes), or is not a JSON object, goes through the
    exact path instead: parsed into a Variant, whose per-field ``schema_of_variant`` tells a JSON
    string from a number. That path is computed in its own projections, for those lines only.

    Two checks come before any parse: a line over ``max_line_bytes`` bytes is ``too_long:line``
    (its ``raw`` kept to that many characters), and a line that is not valid UTF-8 is
    ``invalid_utf8`` (the text source keeps a line's bytes as they are; ``raw_base64`` keeps
    them exactly, ``raw`` shows them with U+FFFD). Either would otherwise be read wrongly: a
    Latin-1 "é" would silently become U+FFFD inside the utterance and its normalized key.

    Args:
        lines: one row per line, with a string column ``value`` (the line) and ``source_file``.
        barrier: cut the plan (a lazy local checkpoint) between the parse and the checks. Keep
            it unless the result is materialised right away (``localCheckpoint``) before
            anything is filtered or joined: the optimizer pushes such filters through the wide
            plan, inlining every field's expression into every check, and planning takes
            minutes. The writer materialises the result once instead of twice, without it
            (the barrier's blocks are only freed by Spark's ContextCleaner: see
            ``feedback.core.checkpoints``).
        max_line_bytes: the longest line (in UTF-8 bytes) that is parsed at all.
        max_future_skew_s: how far ``ts`` may lie ahead of ``landed_at`` (producers' clocks
            drift); a later one is ``out_of_range:ts``.
        landed_at: when the line landed; default the time of the query. The bronze stream
            passes its file's modification time, so a replayed batch decides the same way.

    Returns:
        The bronze columns (without the ingest bookkeeping) plus ``raw``, ``source_file`` and
        ``reasons``: every rule the line breaks, an empty array when it is a valid event;
        ``raw_base64`` (for ``invalid_utf8`` lines), ``line_bytes`` and ``landed_at``. A line that is not
        read as a JSON object gets a single reason: ``too_long:line``, ``invalid_utf8``,
        ``not_json``, ``truncated_json`` or ``not_object``.
    """
    missing = {"value", "source_file"} - set(lines.columns)
    if missing:
        raise ValueError(f"lines is missing column(s) {sorted(missing)}")
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be >= 1, got {max_line_bytes}")
    if not max_future_skew_s >= 0:
        raise ValueError(f"max_future_skew_s must be >= 0, got {max_future_skew_s}")
    line = F.col("value")
    line_bytes = F.octet_length(line).cast("long")
    line_state = (
        F.when(line_bytes > max_line_bytes, F.lit(REASON_LINE_TOO_LONG))
        .when(~F.is_valid_utf8(line), F.lit(REASON_INVALID_UTF8))
    )
    landed = landed_at if landed_at is not None else F.current_timestamp()
    latest_ts = F.col("landed_at") + F.make_dt_interval(secs=F.lit(float(max_future_skew_s)))
    framed = lines.select(
        "value", "source_file", line_bytes.alias("line_bytes"), line_state.alias("_line_state"), landed.alias("landed_at")
    ).withColumn("_latest_ts", latest_ts)
    readable = F.col("_line_state").isNull()
    fast = framed.select(
        F.when(F.col("_line_state") == REASON_LINE_TOO_LONG, F.substring(line, 1, max_line_bytes))
        .when(F.col("_line_state") == REASON_INVALID_UTF8, F.make_valid_utf8(line))
        .otherwise(line)
        .alias("raw"),
        "source_file",
        "line_bytes",
        # One unbroken base64 string (Spark's base64 may wrap MIME lines every 76 characters).
        F.when(
            F.col("_line_state") == REASON_INVALID_UTF8, F.regexp_replace(F.base64(line.cast("binary")), r"[\r\n]", "")
        ).alias("raw_base64"),
        "_line_state",
        "landed_at",
        "_latest_ts",
        F.when(readable, F.from_json(_without_bom(line), _AS_FIELDS, _FAST_OPTIONS)).alias("_fast"),
    )
    text = _without_bom(F.col("raw"))
    flagged = fast.withColumn("_suspicious", _suspicious(F.col("_fast")))
    with_payload = flagged.withColumn(
        "_payload", F.when(F.col("_suspicious") & F.col("_line_state").isNull(), F.try_parse_json(text))
    )
    is_object = F.coalesce(F.schema_of_variant("_payload").startswith("OBJECT<"), F.lit(False))
    structural = (
        F.when(F.col("_line_state").isNotNull(), F.col("_line_state"))
        .when(~F.col("_suspicious"), F.lit(None).cast("string"))
        .when(F.col("_payload").isNull() & F.ltrim(text).startswith("{"), F.lit(REASON_TRUNCATED_JSON))
        .when(F.col("_payload").isNull(), F.lit(REASON_NOT_JSON))
        .when(~is_object, F.lit(REASON_NOT_OBJECT))
    )
    kept = ("raw", "source_file", "line_bytes", "raw_base64", "landed_at", "_latest_ts")
    split = with_payload.select(
        *kept,
        "_fast",
        "_suspicious",
        structural.alias("_structural"),
        F.when(is_object, F.try_variant_get("_payload", "$", _FIELDS_AS_VARIANTS)).alias("_fields"),
    )
    typed = split.select(
        *kept,
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
    resolved = typed.select(*kept, "_structural", *resolved_columns)
    if barrier:
        # Computed once, when first used (see ``barrier`` above).
        resolved = resolved.localCheckpoint(eager=False)
    values: list[Column] = []
    field_reasons: list[Column] = []
    for rule in EVENT_FIELDS:
        value, reasons = _field_columns(
            F.col(f"_present_{rule.name}"),
            F.col(f"_type_ok_{rule.name}"),
            F.col(f"_value_{rule.name}"),
            rule,
            F.col("_latest_ts"),
        )
        values.append(value.alias(rule.name))
        field_reasons.extend(reasons)
    reasons = F.when(
        F.col("_structural").isNotNull(), F.array(F.col("_structural"))
    ).otherwise(F.array_except(F.array(*field_reasons), F.array(F.lit(None).cast("string"))))
    checked = resolved.select(
        *values,
        F.col("raw"),
        F.col("source_file"),
        reasons.alias("reasons"),
        F.col("raw_base64"),
        F.col("line_bytes"),
        F.col("landed_at"),
    )
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

    Bronze carries the contract's rules as CHECK constraints (``BRONZE_CONSTRAINTS``). The
    creations are independent commits, so they run at once (each is mostly driver time).
    """
    run_together(
        [
            lambda: ensure_table(
                spark, lake.bronze, BRONZE_SCHEMA, BRONZE_PARTITION_COLUMNS, BRONZE_PROPERTIES,
                comment=TABLE_COMMENTS["bronze"], constraints=BRONZE_CONSTRAINTS,
            ),
            lambda: ensure_table(
                spark, lake.quarantine, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_COLUMNS,
                {"delta.dataSkippingStatsColumns": "event_id,source_file,ingest_batch"}, comment=TABLE_COMMENTS["quarantine"],
            ),
            lambda: ensure_table(spark, lake.ingest_batches, INGEST_BATCHES_SCHEMA, (), comment=TABLE_COMMENTS["ingest_batches"]),
            lambda: ensure_table(
                spark, lake.validation_results, VALIDATION_RESULTS_SCHEMA, (), comment=TABLE_COMMENTS["validation_results"]
            ),
            lambda: ensure_table(spark, lake.landing_skipped, LANDING_SKIPPED_SCHEMA, (), comment=TABLE_COMMENTS["landing_skipped"]),
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


def quarantine_rows(lines: DataFrame, ingest_time: Column, batch_tag: str) -> DataFrame:
    """``parse_events`` lines (with their ``reasons``) as rows of ``quarantine/interactions``."""
    return lines.select(
        "raw",
        "reasons",
        "event_id",
        "source_file",
        ingest_time.alias("ingest_time"),
        F.to_date(ingest_time).alias("ingest_date"),
        F.lit(batch_tag).alias("ingest_batch"),
        "raw_base64",
        "line_bytes",
    )


class BatchRejected(RuntimeError):
    """A bronze batch failed the Great Expectations gate and ``on_failure`` is ``stop``: nothing was written."""


class BronzeBatchWriter:
    """The ``foreachBatch`` function of the bronze stream (idempotent under batch replay)."""

    def __init__(
        self,
        lake: LakePaths,
        app_id: str,
        validator: BatchValidator | None,
        target_files: int = 1,
        max_rows_per_file: int = 25_000,
        ingest: IngestConfig | None = None,
        landing_dir: str | None = None,
    ) -> None:
        """``ingest`` sets the line limits (defaults when None); ``landing_dir``, when given, is
        listed each batch so that files the source skips are recorded (``record_unread_files``)."""
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
        self.ingest = ingest or IngestConfig()
        self.landing_dir = landing_dir

    def _append(self, frame: DataFrame, path: str, writer: str, batch_id: int, partition_by: tuple[str, ...]) -> None:
        append_once(frame, path, f"{self.app_id}/{writer}", batch_id, partition_by)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        spark = batch.sparkSession
        batch_tag = f"{self.app_id}:{batch_id}"
        ingest_time = F.current_timestamp()

        # Parsed once with its lineage cut, so the writes and GX below do not re-plan or re-parse it.
        timer = PhaseTimer()
        landed_at = F.col("source_modified") if "source_modified" in batch.columns else None
        parsed_lines = parse_events(
            batch,
            barrier=False,
            max_line_bytes=self.ingest.max_line_bytes,
            max_future_skew_s=float(interval_seconds(self.ingest.max_future_skew)),
            landed_at=landed_at,
        )
        with checkpointed(parsed_lines) as parsed:
            timer.mark("parse")
            outcome = self._gate(spark, parsed, batch_id, ingest_time)
            timer.mark("validate")
            if outcome is not None and not outcome.success and self.validator is not None and self.validator.stops_the_stream:
                # Before any write: the batch is replayed from the same offsets once the cause is fixed.
                raise BatchRejected(
                    f"bronze batch {batch_id}: the Great Expectations gate failed {list(outcome.failed_expectations)}; "
                    f"nothing was written (ingest.validation.on_failure: stop); see {self.lake.validation_results}"
                )
            if outcome is not None and not outcome.success:
                counts = self._quarantine_whole(parsed, batch_id, batch_tag, ingest_time, outcome)
            else:
                counts = self._write(spark, parsed, batch_id, batch_tag, ingest_time, timer)
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
        if self.landing_dir is not None:
            record_unread_files(spark, self.lake, self.landing_dir, self.ingest, self.app_id, batch_id)
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

    def _gate(self, spark: SparkSession, parsed: DataFrame, batch_id: int, ingest_time: Column) -> ValidationOutcome | None:
        """Run the GX gate on the batch's profile and record its result (None: not validated)."""
        validator = self.validator
        if validator is None or not validator.should_validate(batch_id) or parsed.isEmpty():
            return None
        outcome = validator.validate(batch_profile(parsed, validator.config), batch_id)
        if outcome is not None:
            self._record_validation(spark, outcome, ingest_time)
        return outcome

    def _quarantine_whole(
        self, parsed: DataFrame, batch_id: int, batch_tag: str, ingest_time: Column, outcome: ValidationOutcome
    ) -> BatchCounts:
        """A batch that failed the gate: every line to quarantine, a valid one with the failed expectations as reasons."""
        failed = F.array(*[F.lit(f"{REASON_FAILED_EXPECTATION}:{name}") for name in outcome.failed_expectations])
        reasons = F.when(F.size("reasons") > 0, F.col("reasons")).otherwise(failed)
        rows = quarantine_rows(parsed.withColumn("reasons", reasons), ingest_time, batch_tag)
        totals = parsed.agg(F.count(F.lit(1)).alias("lines"), F.count_distinct("source_file").alias("files")).first()
        lines = int(totals["lines"]) if totals else 0
        append_once(
            rows, self.lake.quarantine, f"{self.app_id}/quarantine", batch_id, QUARANTINE_PARTITION_COLUMNS, merge_schema=True
        )
        LOG.warning(
            "bronze batch %d failed the Great Expectations gate %s: all %d lines quarantined",
            batch_id,
            list(outcome.failed_expectations),
            lines,
        )
        return BatchCounts(
            files=int(totals["files"]) if totals else 0,
            lines_read=lines,
            bronze_inserted=0,
            quarantined=lines,
            duplicates_in_batch=0,
            duplicates_existing=0,
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
    ) -> BatchCounts:
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
            # The batch's events, one row each.
            with checkpointed(deduplicate_batch(valid, repeated), eager=False) as unique:
                actions: list[Callable[[], None]] = []
                if quarantined:
                    rejected_rows = quarantine_rows(rejected, ingest_time, batch_tag)
                    actions.append(
                        lambda: append_once(
                            rejected_rows,
                            self.lake.quarantine,
                            f"{self.app_id}/quarantine",
                            batch_id,
                            QUARANTINE_PARTITION_COLUMNS,
                            merge_schema=True,
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
                run_together(actions)
                timer.mark("write")
        counts = BatchCounts(
            files=files,
            lines_read=lines_read,
            bronze_inserted=inserted,
            quarantined=quarantined,
            duplicates_in_batch=valid_count - unique_count,
            duplicates_existing=duplicates_existing,
        )
        return counts


def read_landing(spark: SparkSession, events_dir: str, config: AppConfig) -> DataFrame:
    """The streaming source: every line of every landing file whose name matches ``ingest.file_glob``.

    Sub-folders are read when ``ingest.recursive``; gzip files are decompressed by the text
    source. ``maxFileAge`` is set from ``ingest.max_file_age`` (Spark's default of 7 days would
    silently skip a late file whose modification time is older than that); what is listed but
    not read is recorded by ``record_unread_files``.
    """
    return (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", config.ingest.max_files_per_trigger)
        .option("pathGlobFilter", config.ingest.file_glob)
        .option("recursiveFileLookup", str(config.ingest.recursive).lower())
        .option("maxFileAge", f"{interval_seconds(config.ingest.max_file_age)}s")
        .load(events_dir)
        .select(
            F.col("value"),
            F.col("_metadata.file_path").alias("source_file"),
            F.col("_metadata.file_modification_time").alias("source_modified"),
        )
    )


@dataclass(frozen=True)
class LandingFile:
    """One file under the landing folder, as the file system lists it."""

    path: str
    size_bytes: int
    modified_ms: int
    relative_parts: tuple[str, ...]


def list_landing(spark: SparkSession, events_dir: str) -> list[LandingFile]:
    """Every file under ``events_dir`` (any depth), through Hadoop's file system like the source."""
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    root = jvm.org.apache.hadoop.fs.Path(events_dir)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    if not fs.exists(root):
        return []
    root_text = fs.makeQualified(root).toString().rstrip("/")
    found: list[LandingFile] = []
    files = fs.listFiles(root, True)
    while files.hasNext():
        status = files.next()
        path = status.getPath().toString()
        relative = path[len(root_text) :].strip("/") if path.startswith(root_text) else status.getPath().getName()
        found.append(LandingFile(path, int(status.getLen()), int(status.getModificationTime()), tuple(relative.split("/"))))
    return found


def unread_reasons(
    spark: SparkSession, files: list[LandingFile], ingest: IngestConfig
) -> list[tuple[LandingFile, str]]:
    """Why each listed file that the bronze source will not read is skipped (by the source's own rules).

    The glob is Hadoop's ``GlobFilter`` on the file name, as Spark applies ``pathGlobFilter``;
    names starting with ``.`` or ``_`` (at any level) are hidden; a file older than the newest
    by more than ``max_file_age`` is ignored by ``maxFileAge`` (except in a query's first batch).
    """
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    glob = jvm.org.apache.hadoop.fs.GlobFilter(ingest.file_glob)
    newest = max((f.modified_ms for f in files), default=0)
    oldest_read = newest - interval_seconds(ingest.max_file_age) * 1000
    skipped: list[tuple[LandingFile, str]] = []
    for item in files:
        if any(part.startswith((".", "_")) for part in item.relative_parts):
            skipped.append((item, SKIP_HIDDEN))
        elif len(item.relative_parts) > 1 and not ingest.recursive:
            skipped.append((item, SKIP_IN_SUB_FOLDER))
        elif not glob.accept(jvm.org.apache.hadoop.fs.Path(item.path)):
            skipped.append((item, SKIP_NOT_MATCHING_GLOB))
        elif item.modified_ms < oldest_read:
            skipped.append((item, SKIP_TOO_OLD))
    return skipped


def record_unread_files(
    spark: SparkSession, lake: LakePaths, events_dir: str, ingest: IngestConfig, app_id: str, batch_id: int
) -> int:
    """Record in ``_ops/landing_skipped`` every landing file the source lists but does not read (once per path).

    Returns how many files are new in the record. A MERGE that only inserts, so a replay adds nothing.
    """
    skipped = unread_reasons(spark, list_landing(spark, events_dir), ingest)
    too_old = [item.path for item, reason in skipped if reason == SKIP_TOO_OLD]
    if too_old:
        # maxFileAge does not apply to a query's first batch: an old file read then is not skipped.
        read = {
            row["source_file"]
            for table in (lake.bronze, lake.quarantine)
            for row in spark.read.format("delta").load(table).filter(F.col("source_file").isin(too_old))
            .select("source_file").distinct().collect()
        }
        skipped = [(item, reason) for item, reason in skipped if item.path not in read]
    if not skipped:
        return 0
    rows = spark.createDataFrame(
        [(item.path, reason, item.size_bytes, item.modified_ms, app_id, int(batch_id)) for item, reason in skipped],
        "path string, reason string, size_bytes long, modified_ms long, app_id string, batch_id long",
    ).select(
        "path",
        "reason",
        "size_bytes",
        F.timestamp_millis("modified_ms").alias("modified"),
        "app_id",
        "batch_id",
        F.current_timestamp().alias("recorded_at"),
    )
    known = spark.read.format("delta").load(lake.landing_skipped).select("path")
    new = rows.join(known, "path", "left_anti").cache()
    try:
        added = new.count()
        if added:
            (
                DeltaTable.forPath(spark, lake.landing_skipped)
                .alias("t")
                .merge(new.alias("s"), "t.path = s.path")
                .whenNotMatchedInsertAll()
                .execute()
            )
            for path, reason in new.select("path", "reason").collect():
                LOG.warning("landing file not read (%s): %s", reason, path)
    finally:
        new.unpersist()
    return added


def bronze_writer(config: AppConfig, lake: LakePaths, landing_dir: str | None = None) -> BronzeBatchWriter:
    """The sink of the bronze query, bound to the app id of its checkpoint."""
    validator = BatchValidator(config.ingest.validation) if config.ingest.validation.enabled else None
    return BronzeBatchWriter(
        lake,
        app_id_for(lake.checkpoint(BRONZE_QUERY_NAME)),
        validator,
        config.ingest.target_files_per_partition,
        config.ingest.max_rows_per_file,
        ingest=config.ingest,
        landing_dir=landing_dir,
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
    # Recorded now as well: a folder where nothing matches never runs a batch.
    record_unread_files(spark, lake, events_dir, config.ingest, app_id_for(lake.checkpoint(BRONZE_QUERY_NAME)), -1)
    stream = (
        read_landing(spark, events_dir, config)
        .writeStream.queryName(BRONZE_QUERY_NAME)
        .foreachBatch(writer or bronze_writer(config, lake, events_dir))
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
    summary["landing_files_skipped"] = spark.read.format("delta").load(lake.landing_skipped).count()
    return summary


def format_summary(summary: dict[str, int]) -> str:
    """A stable, human-readable rendering of ``summarize_ingest`` (printed by the CLI)."""
    return json.dumps(summary, indent=2, sort_keys=True)
