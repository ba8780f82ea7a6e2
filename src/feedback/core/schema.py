"""The contracts: event contract v1 and the schemas of the Delta tables this project writes.

Other tools read these tables, so column names and types here are a public API: add
columns, never rename or retype them. ``docs/events.md`` documents the same rules. Each column
carries its comment (StructField metadata) and each table its comment (``TABLE_COMMENTS``):
``feedback.core.tables.ensure_table`` puts them on the tables, where ``DESCRIBE TABLE`` shows them
(``docs/tables.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

SCHEMA_VERSION = 1
MAX_EVENT_ID_LENGTH = 128
MAX_UTTERANCE_LENGTH = 1000
MAX_ID_LENGTH = 128
MAX_LABEL_LENGTH = 128
MAX_LOCALE_LENGTH = 35  # the longest well-formed BCP 47 tag in practice
MAX_RESPONSE_TEXT_LENGTH = 4000
MAX_SLOTS = 50
MAX_SLOT_NAME_LENGTH = 64
MAX_SLOT_VALUE_LENGTH = 256

STATUSES = ("success", "unhandled", "error")
RESPONSE_TYPES = ("speech", "media", "action", "none")
EXPLICIT_FEEDBACK = ("positive", "negative")

FieldKind = Literal["string", "int", "double", "map"]


@dataclass(frozen=True)
class FieldRule:
    """One top-level field of contract v1 and the checks it gets."""

    name: str
    kind: FieldKind
    required: bool = False
    non_empty: bool = False
    max_length: int | None = None
    allowed: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_member_length: int | None = None  # a map's keys and values (``max_length``: its entries)


EVENT_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("event_id", "string", required=True, non_empty=True, max_length=MAX_EVENT_ID_LENGTH),
    FieldRule("schema_version", "int", required=True),
    FieldRule("ts", "string", required=True),
    FieldRule("user_id", "string", required=True, non_empty=True, max_length=MAX_ID_LENGTH),
    FieldRule("device_id", "string", required=True, non_empty=True, max_length=MAX_ID_LENGTH),
    FieldRule("device_type", "string", max_length=MAX_LABEL_LENGTH),
    FieldRule("locale", "string", max_length=MAX_LOCALE_LENGTH),
    FieldRule("utterance", "string", required=True, non_empty=True, max_length=MAX_UTTERANCE_LENGTH),
    FieldRule("asr_confidence", "double", minimum=0.0, maximum=1.0),
    FieldRule("nlu_confidence", "double", minimum=0.0, maximum=1.0),
    FieldRule("domain", "string", max_length=MAX_LABEL_LENGTH),
    FieldRule("intent", "string", max_length=MAX_LABEL_LENGTH),
    FieldRule("slots", "map", max_length=MAX_SLOTS, max_member_length=MAX_SLOT_VALUE_LENGTH),
    FieldRule("response_type", "string", allowed=RESPONSE_TYPES),
    FieldRule("response_text", "string", max_length=MAX_RESPONSE_TEXT_LENGTH),
    FieldRule("status", "string", required=True, allowed=STATUSES),
    FieldRule("response_latency_ms", "int", minimum=0, maximum=2**31 - 1),
    FieldRule("response_duration_ms", "int", minimum=0, maximum=2**31 - 1),
    FieldRule("explicit_feedback", "string", allowed=EXPLICIT_FEEDBACK),
)
EVENT_FIELD_NAMES = tuple(rule.name for rule in EVENT_FIELDS)

# Reason codes written to quarantine/interactions.reasons. Field-specific codes are
# "<code>:<field>", e.g. "missing_field:user_id".
REASON_NOT_JSON = "not_json"
REASON_TRUNCATED_JSON = "truncated_json"
REASON_NOT_OBJECT = "not_object"
REASON_MISSING_FIELD = "missing_field"
REASON_WRONG_TYPE = "wrong_type"
REASON_EMPTY_FIELD = "empty_field"
REASON_TOO_LONG = "too_long"
REASON_OUT_OF_RANGE = "out_of_range"
REASON_BAD_VALUE = "bad_value"
REASON_BAD_TIMESTAMP = "bad_timestamp"
REASON_BLANK_UTTERANCE = "blank_utterance"
REASON_UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
REASON_INVALID_UTF8 = "invalid_utf8"
REASON_LINE_TOO_LONG = "too_long:line"
REASON_NULL_VALUE = "null_value"  # a Kafka message without a value (a tombstone)
REASON_FAILED_EXPECTATION = "failed_expectation"  # "failed_expectation:<expectation>": the batch failed the gate

# ISO-8601 date-time that must carry an offset or Z (a bare local time is ambiguous).
ISO_TIMESTAMP_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"

# A text that is empty or only whitespace (Unicode whitespace included): "empty_field" / "blank_utterance".
BLANK_TEXT = r"(?U)^\s*$"

_SPARK_TYPES = {
    "string": StringType(),
    "int": IntegerType(),
    "double": DoubleType(),
    "map": MapType(StringType(), StringType()),
}


def _column(name: str, data_type: DataType, nullable: bool, comment: str) -> StructField:
    """A table column with its comment, which Delta keeps and ``DESCRIBE TABLE`` shows."""
    return StructField(name, data_type, nullable, {"comment": comment})


# ----- bronze/interactions and its operational tables ---------------------------------------------

_BRONZE_COMMENTS = {
    "event_id": "Producer's unique id of the request (1 to 128 characters); bronze holds each id once.",
    "schema_version": "Event contract version the producer wrote; always 1 (contract v1).",
    "ts": "When the request started, in UTC, converted from the event's ISO-8601 ts and its offset.",
    "event_date": "UTC date of ts; the partition column.",
    "user_id": "Producer's id of the user (1 to 128 characters, not blank).",
    "device_id": "Producer's id of the device that heard the request (1 to 128 characters, not blank).",
    "device_type": "Kind of device, such as speaker (at most 128 characters); null when the event has none.",
    "locale": "BCP 47 language tag of the request, such as en-GB (at most 35 characters); null when absent.",
    "utterance": "The speech recognizer's 1-best text of the request (not blank, at most 1,000 characters).",
    "asr_confidence": "The speech recognizer's confidence in the utterance, in [0, 1]; null when absent.",
    "nlu_confidence": "The NLU's confidence in its domain and intent, in [0, 1]; null when absent.",
    "domain": "NLU domain the request was routed to, such as music (at most 128 characters); null when absent.",
    "intent": "NLU intent, such as PlayMusic (at most 128 characters); null when absent.",
    "slots": "NLU slot names to values (at most 50 entries; names up to 64, values up to 256 characters); null when absent.",
    "response_type": "Kind of response: speech, media, action or none; null when absent.",
    "response_text": "What the assistant answered (at most 4,000 characters); null when absent.",
    "status": "Outcome the assistant reported: success, unhandled or error.",
    "response_latency_ms": "Milliseconds from ts to the start of the response (>= 0); null when absent.",
    "response_duration_ms": "Milliseconds the response played (>= 0); null for media that keeps playing, or when absent.",
    "explicit_feedback": "Feedback the user gave explicitly: positive or negative; null when none.",
    "raw": "The whole landing line as read, unknown fields included, so nothing the producer sent is lost.",
    "source_file": "Path of the landing file the line came from, or kafka://<topic>/<partition> for a Kafka message.",
    "source_offset": "Offset of the Kafka message in its partition; null for a line of a landing file.",
    "ingest_time": "When the bronze micro-batch that wrote the row ran (UTC).",
    "ingest_batch": "The micro-batch that wrote the row, as '<app id>:<batch id>': tells a replayed batch from a duplicate.",
}

BRONZE_SCHEMA = StructType(
    [
        _column("event_id", StringType(), False, _BRONZE_COMMENTS["event_id"]),
        _column("schema_version", IntegerType(), False, _BRONZE_COMMENTS["schema_version"]),
        _column("ts", TimestampType(), False, _BRONZE_COMMENTS["ts"]),
        _column("event_date", DateType(), False, _BRONZE_COMMENTS["event_date"]),
        *[
            _column(rule.name, _SPARK_TYPES[rule.kind], not rule.required, _BRONZE_COMMENTS[rule.name])
            for rule in EVENT_FIELDS
            if rule.name not in {"event_id", "schema_version", "ts"}
        ],
        _column("raw", StringType(), False, _BRONZE_COMMENTS["raw"]),
        _column("source_file", StringType(), False, _BRONZE_COMMENTS["source_file"]),
        _column("ingest_time", TimestampType(), False, _BRONZE_COMMENTS["ingest_time"]),
        _column("ingest_batch", StringType(), False, _BRONZE_COMMENTS["ingest_batch"]),
        _column("source_offset", LongType(), True, _BRONZE_COMMENTS["source_offset"]),
    ]
)
BRONZE_PARTITION_COLUMNS = ("event_date",)


def sql_text(text: str) -> str:
    """``text`` as a Spark SQL string literal (quotes and backslashes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_INT_MAX = 2**31 - 1


def _sql_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def contract_constraints(fields: tuple[FieldRule, ...] = EVENT_FIELDS) -> dict[str, str]:
    """The rules of ``fields`` that a Delta CHECK constraint can state: name -> SQL expression.

    Why: ``parse_events`` quarantines every line that breaks one of these rules, so each bronze
    row satisfies them; as constraints they also hold for anything else that writes to bronze, and
    ``DESCRIBE DETAIL`` states them. Required fields are NOT NULL columns already. Left out: ``ts``
    (parsed from text, and its bound depends on the landing time), the lengths of a map's names
    and values (a constraint cannot hold a lambda) and ``event_date`` (the UTC date of ``ts``:
    a time-zone-dependent expression).
    """
    constraints: dict[str, str] = {}
    for rule in fields:
        checks: list[str] = []
        if rule.non_empty:
            checks.append(f"NOT ({rule.name} RLIKE {sql_text(BLANK_TEXT)})")
        if rule.max_length is not None:
            function = "size" if rule.kind == "map" else "length"
            checks.append(f"{function}({rule.name}) <= {rule.max_length}")
        if rule.allowed is not None:
            checks.append(f"{rule.name} IN ({', '.join(sql_text(value) for value in rule.allowed)})")
        if rule.minimum is not None:
            checks.append(f"{rule.name} >= {_sql_number(rule.minimum)}")
        if rule.maximum is not None and not (rule.kind == "int" and rule.maximum >= _INT_MAX):  # an int holds no more
            checks.append(f"{rule.name} <= {_sql_number(rule.maximum)}")
        if rule.name == "schema_version":
            checks.append(f"schema_version = {SCHEMA_VERSION}")
        if not checks:
            continue
        expression = " AND ".join(checks)
        if not rule.required:
            expression = f"{rule.name} IS NULL OR ({expression})"
        constraints[f"{rule.name}_valid"] = expression
    return constraints


BRONZE_CONSTRAINTS = contract_constraints()
"""CHECK constraints of ``bronze/interactions``, one per contract field with a rule Delta can state."""

QUARANTINE_SCHEMA = StructType(
    [
        _column(
            "raw", StringType(), True,
            "The rejected line as text: its first ingest.max_line_bytes characters for too_long:line, U+FFFD for bytes that are not UTF-8.",
        ),
        _column(
            "reasons", ArrayType(StringType(), False), False,
            "Every contract rule the line breaks, as reason codes (docs/events.md); failed_expectation:<name> for a valid line of a batch that failed the gate.",
        ),
        _column("event_id", StringType(), True, "The line's event_id when one could be read; else null."),
        _column("source_file", StringType(), False, _BRONZE_COMMENTS["source_file"]),
        _column("ingest_time", TimestampType(), False, "When the bronze micro-batch that rejected the line ran (UTC)."),
        _column("ingest_date", DateType(), False, "UTC date of ingest_time; the partition column."),
        _column("ingest_batch", StringType(), False, "The micro-batch that rejected the line, as '<app id>:<batch id>'."),
        _column("raw_base64", StringType(), True, "The line's exact bytes in base64 for an invalid_utf8 line; else null."),
        _column("line_bytes", LongType(), True, "Length of the line in bytes, as it arrived."),
        _column("source_offset", LongType(), True, _BRONZE_COMMENTS["source_offset"]),
    ]
)
QUARANTINE_PARTITION_COLUMNS = ("ingest_date",)

# Files in the landing folder that the bronze stream lists but does not read, once each.
LANDING_SKIPPED_SCHEMA = StructType(
    [
        _column("path", StringType(), False, "Path of a landing file the bronze stream listed but did not read."),
        _column(
            "reason", StringType(), False,
            "Why it was not read: not_matching_glob, hidden, in_sub_folder or older_than_max_file_age.",
        ),
        _column("size_bytes", LongType(), False, "Size of the file in bytes when it was listed."),
        _column("modified", TimestampType(), False, "Modification time of the file when it was listed (UTC)."),
        _column("app_id", StringType(), False, "App id of the bronze query that listed the file (kept with its checkpoint)."),
        _column("batch_id", LongType(), False, "The bronze micro-batch that listed the file."),
        _column("recorded_at", TimestampType(), False, "When the file was recorded here (UTC)."),
    ]
)
SKIP_NOT_MATCHING_GLOB = "not_matching_glob"
SKIP_HIDDEN = "hidden"
SKIP_IN_SUB_FOLDER = "in_sub_folder"
SKIP_TOO_OLD = "older_than_max_file_age"

INGEST_BATCHES_SCHEMA = StructType(
    [
        _column("app_id", StringType(), False, "App id of the bronze query (kept with its checkpoint)."),
        _column("batch_id", LongType(), False, "Micro-batch id of the bronze query."),
        _column("ingest_time", TimestampType(), False, "When the micro-batch ran (UTC)."),
        _column("files", LongType(), False, "Landing files the micro-batch read."),
        _column(
            "lines_read", LongType(), False,
            "Lines the micro-batch read: bronze_inserted + quarantined + duplicates_in_batch + duplicates_existing.",
        ),
        _column("bronze_inserted", LongType(), False, "Valid events the micro-batch added to bronze."),
        _column("quarantined", LongType(), False, "Lines the micro-batch wrote to quarantine."),
        _column("duplicates_in_batch", LongType(), False, "Extra copies of an event_id inside the micro-batch, dropped."),
        _column(
            "duplicates_existing", LongType(), False, "Valid events dropped because an earlier batch had put their event_id in bronze."
        ),
        _column("validation_run", BooleanType(), False, "Whether the Great Expectations gate ran on the micro-batch."),
        _column("validation_success", BooleanType(), True, "Whether the gate passed; null when it did not run."),
        _column(
            "validation_failed_expectations", ArrayType(StringType(), False), False,
            "Names of the expectations the micro-batch failed; empty when it passed or was not validated.",
        ),
        _column("validation_seconds", DoubleType(), False, "Seconds the gate took; 0 when it did not run."),
        _column("batch_seconds", DoubleType(), False, "Wall-clock seconds of the whole micro-batch."),
        _column(
            "source_offsets", StringType(), True,
            'Kafka offsets the micro-batch read, as JSON {"kafka://<topic>/<partition>": [first, last]}; null for landing files.',
        ),
    ]
)

VALIDATION_RESULTS_SCHEMA = StructType(
    [
        _column("app_id", StringType(), False, "App id of the bronze query (kept with its checkpoint)."),
        _column("batch_id", LongType(), False, "The validated bronze micro-batch."),
        _column("validated_at", TimestampType(), False, "When the micro-batch ran (UTC)."),
        _column("suite", StringType(), False, "Name of the Great Expectations suite, bronze_interactions_v1."),
        _column("success", BooleanType(), False, "Whether every expectation of the suite passed."),
        _column("evaluated_expectations", LongType(), False, "Expectations evaluated."),
        _column("successful_expectations", LongType(), False, "Expectations that passed."),
        _column("failed_expectations", StringType(), False, "JSON array of the names of the expectations that failed."),
        _column("result_json", StringType(), False, "The whole Great Expectations validation result, as JSON."),
    ]
)


# ----- silver/turns and its operational tables ----------------------------------------------------

SILVER_TURNS_SCHEMA = StructType(
    [
        _column("event_id", StringType(), False, "The bronze event of the turn: one row per request."),
        _column("user_id", StringType(), False, "The user, from bronze."),
        _column("device_id", StringType(), False, "The device, from bronze."),
        _column("device_type", StringType(), True, "Kind of device, from bronze; null when absent."),
        _column(
            "session_id", StringType(), False,
            "Session of the turn: 32 hex characters of SHA-256 over user, device and session start, stable across reruns.",
        ),
        _column(
            "session_start", TimestampType(), False,
            "ts of the session's first turn (UTC); a session ends after sessionize.session_gap without a request.",
        ),
        _column("turn_index", IntegerType(), False, "Position of the turn in its session from 0, by ts then event_id."),
        _column("ts", TimestampType(), False, "When the request started (UTC), from bronze."),
        _column("event_date", DateType(), False, "UTC date of ts; the partition column."),
        _column("utterance", StringType(), False, "The recognized text of the request, from bronze."),
        _column(
            "normalized_utterance", StringType(), False,
            "utterance in lower case, punctuation as spaces (apostrophes kept), whitespace collapsed: the key gold pools users by.",
        ),
        _column("domain", StringType(), True, "NLU domain, from bronze; null when absent."),
        _column("intent", StringType(), True, "NLU intent, from bronze; null when absent."),
        _column("slots", MapType(StringType(), StringType()), True, "NLU slots, from bronze; null when absent."),
        _column("status", StringType(), False, "Outcome the assistant reported (success, unhandled, error), from bronze."),
        _column("response_type", StringType(), True, "Kind of response (speech, media, action, none), from bronze."),
        _column("response_text", StringType(), True, "What the assistant answered, from bronze."),
        _column(
            "response_end_ts", TimestampType(), True,
            "When the response stopped playing: ts + response_latency_ms + response_duration_ms (UTC); null without a duration.",
        ),
        _column("explicit_feedback", StringType(), True, "positive or negative when the user said so, from bronze; else null."),
        _column(
            "is_system_command", BooleanType(), False,
            "A request that controls the assistant (stop-like, or domain system): never a defect, never a rephrase.",
        ),
        _column(
            "stop_like", BooleanType(), False,
            "The request ends or skips what plays (sessionize.stop_phrases or sessionize.stop_intents).",
        ),
        _column(
            "next_turn_gap_s", DoubleType(), True, "Seconds from this turn's ts to the next turn's in the session; null for the last."
        ),
        _column(
            "barge_in", BooleanType(), False,
            "The next request came while the response played (for endless media: within sessionize.media_barge_in_window_s).",
        ),
        _column(
            "terminated", BooleanType(), False,
            "The next request was a stop or cancel while the response played or within sessionize.termination_window_s of its end.",
        ),
        _column(
            "rephrase_of", StringType(), True,
            "event_id of the earlier request this one rephrases (score at or above detect.rephrase_threshold); else null.",
        ),
        _column(
            "rephrase_score", DoubleType(), True,
            "Score in [0, 1] of the best earlier candidate, linked or not; null when the turn had no candidate.",
        ),
        _column(
            "rephrase_detector", StringType(), True,
            "What scored that candidate: heuristic-v2 or rephrase-detector/<version>; null without a candidate.",
        ),
        _column("rephrased", BooleanType(), False, "A later turn of the session rephrases this one."),
        _column(
            "chain_id", StringType(), True,
            "event_id of the first request of the rephrase chain the turn belongs to; null outside a chain.",
        ),
        _column("chain_success", BooleanType(), True, "The chain's last turn was no defect; null outside a chain."),
        _column(
            "abandoned", BooleanType(), False,
            "The request failed visibly (unhandled, error, barge-in, terminated), was not rephrased, and no request followed.",
        ),
        _column("defect", BooleanType(), False, "The request has at least one defect reason."),
        _column(
            "defect_reasons", ArrayType(StringType(), False), False,
            "Why it is a defect: barge_in, terminated, rephrased, unhandled, error, negative_feedback, abandoned; empty for none.",
        ),
        _column("processed_at", TimestampType(), False, "When the silver batch or backfill wrote the turn (UTC)."),
        _column(
            "goal_id", StringType(), True,
            "What the user was trying to get done: event_id of the goal's first request (its chain, or the request alone); "
            "a system command serves the latest request before it in the session; null before any request.",
        ),
        _column("goal_success", BooleanType(), True, "The goal's last request was no defect; null with goal_id."),
        _column(
            "failure_point", StringType(), True,
            "Where a defect failed first: false_wake, asr, nlu, entity, result; none for no defect or a system command.",
        ),
        _column(
            "failure_point_score", DoubleType(), True,
            "Confidence in failure_point, in [0, 1]: the classifier's probability, or for rules-v1 the prior of the "
            "rule that fired; null without a defect.",
        ),
        _column(
            "failure_point_classifier", StringType(), True,
            "What set failure_point: failure-point-classifier/<version> or rules-v1; null without a defect.",
        ),
    ]
)
SILVER_PARTITION_COLUMNS = ("event_date",)

SILVER_BATCH_COUNTS = (
    "sessions",
    "turns",
    "candidate_pairs",
    "rephrase_links",
    "defects",
    "model_pairs",
    "cascade_pairs",
    "fallback_pairs",
    "fallback_groups",
)
"""The counts each silver batch records: ``model_pairs`` were scored by the model,
``cascade_pairs`` settled by its first stage, ``fallback_pairs`` (of ``fallback_groups`` requests)
scored by the heuristic because the model failed on them; all 0 with the heuristic detector."""

_SILVER_BATCH_COUNT_COMMENTS = {
    "sessions": "Complete sessions the micro-batch received.",
    "turns": "Turns it wrote to silver.",
    "candidate_pairs": "(request, later request) pairs it scored as possible rephrases.",
    "rephrase_links": "Turns it linked to an earlier request as its rephrase.",
    "defects": "Turns it labelled as defects.",
    "model_pairs": "Candidate pairs the rephrase model scored; 0 with the heuristic detector; null in rows older than the column.",
    "cascade_pairs": "Candidate pairs the cascade's first stage settled as no rephrase; null in rows older than the column.",
    "fallback_pairs": "Candidate pairs scored by the heuristic because the model failed on them; null in rows older than the column.",
    "fallback_groups": "Requests whose candidates fell back to the heuristic; null in rows older than the column.",
}

SILVER_BATCHES_SCHEMA = StructType(
    [
        _column("app_id", StringType(), False, "App id of the silver query (kept with its checkpoint)."),
        _column("batch_id", LongType(), False, "Micro-batch id of the silver query."),
        _column("processed_at", TimestampType(), False, "When the micro-batch finished writing (UTC)."),
        *[_column(name, LongType(), False, _SILVER_BATCH_COUNT_COMMENTS[name]) for name in SILVER_BATCH_COUNTS[:5]],
        _column("batch_seconds", DoubleType(), False, "Wall-clock seconds of the micro-batch."),
        *[_column(name, LongType(), True, _SILVER_BATCH_COUNT_COMMENTS[name]) for name in SILVER_BATCH_COUNTS[5:]],
    ]
)

SILVER_PROGRESS_SCHEMA = StructType(
    [
        _column("app_id", StringType(), False, "App id of the silver query (kept with its checkpoint)."),
        _column("batch_id", LongType(), False, "Micro-batch id of the silver query."),
        _column("batch_timestamp", TimestampType(), True, "Trigger time of the micro-batch, from the query's progress (UTC)."),
        _column("watermark", TimestampType(), True, "The event-time watermark the micro-batch ran under (UTC); null before the first."),
        _column("input_rows", LongType(), False, "Bronze rows the micro-batch read (numInputRows)."),
        _column(
            "rows_dropped_by_watermark", LongType(), False,
            "Events the session windows dropped as behind the watermark (numRowsDroppedByWatermark).",
        ),
        _column(
            "late_dates", ArrayType(DateType(), True), False,
            "Event dates found to have late events when the micro-batch dropped some; empty otherwise.",
        ),
        _column("recorded_at", TimestampType(), False, "When the row was recorded (UTC)."),
    ]
)


# ----- gold ---------------------------------------------------------------------------------------

_USERS_SKETCH = "HyperLogLog sketch of HMAC-keyed user ids (never raw ids), to merge users across rows."

DEFECT_METRICS_SCHEMA = StructType(
    [
        _column("hour", TimestampType(), False, "Hour of the turns' ts, truncated (UTC)."),
        _column("domain", StringType(), False, "NLU domain of the turns; unknown when missing."),
        _column("intent", StringType(), False, "NLU intent of the turns; unknown when missing."),
        _column("device_type", StringType(), False, "Kind of device of the turns; unknown when missing."),
        _column("turns", LongType(), False, "Turns in the hour and group."),
        _column("defects", LongType(), False, "Of them, turns labelled as defects."),
        _column("barge_ins", LongType(), False, "Of them, turns the user barged into."),
        _column("rephrases", LongType(), False, "Of them, turns the user had to rephrase."),
        _column("terminations", LongType(), False, "Of them, turns the user stopped or cancelled."),
        _column("defect_rate", DoubleType(), False, "defects / turns."),
    ]
)

FAILURE_POINTS_SCHEMA = StructType(
    [
        _column("day", DateType(), False, "UTC date of the defects (silver's event_date)."),
        _column("domain", StringType(), False, "NLU domain of the defective turns; unknown when missing."),
        _column("intent", StringType(), False, "NLU intent of the defective turns; unknown when missing."),
        _column("device_type", StringType(), False, "Kind of device; unknown when missing."),
        _column("failure_point", StringType(), False, "Where the defects failed first (silver's failure_point): false_wake, asr, nlu, entity, result."),
        _column("defects", LongType(), False, "Defective requests of the day and group that failed there."),
        _column("mean_score", DoubleType(), True, "Mean failure_point_score of those defects."),
    ]
)

UTTERANCE_DEFECTS_SCHEMA = StructType(
    [
        _column("normalized_utterance", StringType(), False, "A request text as silver normalizes it (system commands left out)."),
        _column("traffic", LongType(), False, "Requests with this text."),
        _column("defects", LongType(), False, "Of them, requests labelled as defects."),
        _column("defect_rate", DoubleType(), False, "defects / traffic."),
        _column("users", LongType(), False, "Distinct users who made such a request, estimated from users_sketch."),
        _column("users_sketch", BinaryType(), False, _USERS_SKETCH),
        _column("first_seen", TimestampType(), False, "ts of the earliest such request (UTC)."),
        _column("last_seen", TimestampType(), False, "ts of the latest such request (UTC)."),
        _column(
            "top_rephrase", StringType(), True,
            "The text users most often rephrased it as (gold/rephrase_pairs; ties alphabetical); null when none.",
        ),
        _column("top_rephrase_count", LongType(), True, "Links to top_rephrase; null when none."),
    ]
)

REPHRASE_PAIRS_SCHEMA = StructType(
    [
        _column("utterance", StringType(), False, "Normalized text of a request that was rephrased."),
        _column("rephrase", StringType(), False, "Normalized text of the later request that rephrased it."),
        _column("chains", LongType(), False, "Links seen from utterance to rephrase."),
        _column("successful_chains", LongType(), False, "Of them, links whose rephrase chain ended in a turn that was no defect."),
        _column("success_share", DoubleType(), False, "successful_chains / chains."),
        _column("target_successes", LongType(), False, "Of them, links whose rephrasing request itself was no defect."),
        _column("users", LongType(), False, "Distinct users behind the links, estimated from users_sketch."),
        _column("users_sketch", BinaryType(), False, _USERS_SKETCH),
        _column("first_seen", TimestampType(), False, "ts of the earliest rephrasing request (UTC)."),
        _column("last_seen", TimestampType(), False, "ts of the latest rephrasing request (UTC)."),
    ]
)

# gold/rewrites: one row per source utterance the query rewriter rewrites (``feedback mine-rewrites``).
REWRITES_SCHEMA = StructType(
    [
        _column("source_utterance", StringType(), False, "Normalized request text that is rewritten."),
        _column("rewrite_utterance", StringType(), False, "Normalized text it is rewritten to."),
        _column(
            "probability", DoubleType(), False,
            "Absorption probability B[source, S(rewrite)]: the chance that a user who starts with the source succeeds through the rewrite.",
        ),
        _column("support_users", LongType(), False, "Distinct users whose rephrase chains went from the source to a success at the rewrite."),
        _column("support_chains", LongType(), False, "Rephrase chains that went from the source to a success at the rewrite."),
        _column("source_success_rate", DoubleType(), False, "Share of the source's own requests that were no defect."),
        _column("target_success_rate", DoubleType(), False, "Share of the rewrite's own requests that were no defect."),
        _column("mined_at", TimestampType(), False, "When the mining run that last changed the row ran (UTC)."),
        _column("run_id", StringType(), False, "MLflow run id of that mining run."),
    ]
)

REWRITE_VALUE_COLUMNS = (  # what a MERGE compares to tell a changed rewrite; what a reviewer reads
    "rewrite_utterance",
    "probability",
    "support_users",
    "support_chains",
    "source_success_rate",
    "target_success_rate",
)

# gold/rewrite_vetoes: pairs an analyst has ruled out; a null rewrite_utterance vetoes every rewrite of the source.
REWRITE_VETOES_SCHEMA = StructType(
    [
        _column("source_utterance", StringType(), False, "Normalized source text the veto applies to."),
        _column("rewrite_utterance", StringType(), True, "Normalized rewrite ruled out; null rules out every rewrite of the source."),
        _column("reason", StringType(), True, "Why the rewrite was ruled out; null when not given."),
        _column("vetoed_at", TimestampType(), False, "When the veto was added (UTC)."),
    ]
)

# gold/nlu_annotations: labels for failed wordings, taken from the rephrases that fixed them.
NLU_ANNOTATIONS_SCHEMA = StructType(
    [
        _column("utterance", StringType(), False, "Normalized wording of requests that failed and that their users rephrased into a success."),
        _column("intent", StringType(), False, "Intent the successful rephrases were understood as: the label of the wording."),
        _column("domain", StringType(), True, "Domain of that intent; null when the assistant gave none."),
        _column(
            "slots", MapType(StringType(), StringType()), False,
            "Slot values of the successful rephrases that the wording says too (aligned by spelling or sound), as the rephrases resolved them.",
        ),
        _column("slot_spans", MapType(StringType(), StringType()), False, "For each slot, the words of utterance that say its value."),
        _column("alignment_score", DoubleType(), False, "Lowest spelling-or-sound similarity of a slot value to its words, in [0, 1]; 1 without slots."),
        _column("support_users", LongType(), False, "Distinct users whose rephrase chains gave the wording this label (at least privacy.min_users)."),
        _column("support_chains", LongType(), False, "Rephrase chains that gave the wording this label."),
        _column("wording_chains", LongType(), False, "Rephrase chains in which the wording failed and a rephrase succeeded, whatever their label."),
        _column("confidence", DoubleType(), False, "support_chains / wording_chains: how much the users agree on the label."),
        _column("built_at", TimestampType(), False, "When feedback annotate built the table (UTC)."),
        _column("silver_version", LongType(), False, "The silver/turns Delta version the table was built from."),
    ]
)

CHANGE_DATA_FEED = {"delta.enableChangeDataFeed": "true"}
"""Table property of silver and gold: Delta records row-level changes (``readChangeFeed``), so a consumer
reads what a MERGE or a rebuild changed instead of the whole table."""

TABLE_COMMENTS = {
    "bronze": "Valid contract-v1 events, each event_id once, as they arrived from the landing files (feedback.bronze.stream).",
    "quarantine": "Landing lines that broke contract v1, or whose batch failed the Great Expectations gate, with every reason.",
    "ingest_batches": "One row per bronze micro-batch: lines read, inserted, quarantined, duplicates, gate result, timings.",
    "landing_skipped": "Landing files the bronze stream listed but did not read, once each, with the reason.",
    "validation_results": "Great Expectations results of each validated bronze micro-batch, checked before the batch is written.",
    "silver_turns": "One row per request: sessionized turns with barge-in, termination, rephrase links and defect labels.",
    "silver_batches": "One row per silver micro-batch: sessions, turns, rephrase candidates and links, defects, scoring, time.",
    "silver_progress": "One row per silver micro-batch from the query's progress: events dropped behind the watermark and late dates.",
    "defect_metrics": "Turns, defects, barge-ins, rephrases and terminations per hour, domain, intent and device type (from silver).",
    "utterance_defects": "Traffic, defects, users and the most frequent rephrase per normalized request text (from silver).",
    "rephrase_pairs": "Counts of each (utterance, rephrase) link and how its chains ended (from silver): the input of rewrite mining.",
    "failure_points": "Defective requests per day, domain, intent, device type and the component that failed first (from silver).",
    "rewrites": "Query rewrites mined from pooled rephrase chains with absorbing Markov chains, MERGEd by source per run.",
    "rewrite_vetoes": "Rewrites an analyst ruled out (a null rewrite_utterance: every rewrite of the source); mining respects them.",
    "nlu_annotations": "NLU labels for failed wordings, from the rephrases that fixed them, pooled over users (feedback annotate).",
}
"""The comment of each table of a lake, keyed by its ``LakePaths`` attribute; the column comments are in the schemas."""
