"""The contracts: event contract v1 and the schemas of the Delta tables this project writes.

Other tools read these tables, so column names and types here are a public API: add
columns, never rename or retype them. ``docs/events.md`` documents the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
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
    FieldRule("utterance", "string", required=True, max_length=MAX_UTTERANCE_LENGTH),
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
REASON_FAILED_EXPECTATION = "failed_expectation"  # "failed_expectation:<expectation>": the batch failed the gate

# ISO-8601 date-time that must carry an offset or Z (a bare local time is ambiguous).
ISO_TIMESTAMP_WITH_OFFSET = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"

_SPARK_TYPES = {
    "string": StringType(),
    "int": IntegerType(),
    "double": DoubleType(),
    "map": MapType(StringType(), StringType()),
}

BRONZE_SCHEMA = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("schema_version", IntegerType(), False),
        StructField("ts", TimestampType(), False),
        StructField("event_date", DateType(), False),
        *[
            StructField(rule.name, _SPARK_TYPES[rule.kind], not rule.required)
            for rule in EVENT_FIELDS
            if rule.name not in {"event_id", "schema_version", "ts"}
        ],
        StructField("raw", StringType(), False),
        StructField("source_file", StringType(), False),
        StructField("ingest_time", TimestampType(), False),
        StructField("ingest_batch", StringType(), False),
    ]
)
BRONZE_PARTITION_COLUMNS = ("event_date",)

QUARANTINE_SCHEMA = StructType(
    [
        StructField("raw", StringType(), True),
        StructField("reasons", ArrayType(StringType(), False), False),
        StructField("event_id", StringType(), True),
        StructField("source_file", StringType(), False),
        StructField("ingest_time", TimestampType(), False),
        StructField("ingest_date", DateType(), False),
        StructField("ingest_batch", StringType(), False),
        StructField("raw_base64", StringType(), True),
        StructField("line_bytes", LongType(), True),
    ]
)
QUARANTINE_PARTITION_COLUMNS = ("ingest_date",)

# Files in the landing folder that the bronze stream lists but does not read, once each.
LANDING_SKIPPED_SCHEMA = StructType(
    [
        StructField("path", StringType(), False),
        StructField("reason", StringType(), False),
        StructField("size_bytes", LongType(), False),
        StructField("modified", TimestampType(), False),
        StructField("app_id", StringType(), False),
        StructField("batch_id", LongType(), False),
        StructField("recorded_at", TimestampType(), False),
    ]
)
SKIP_NOT_MATCHING_GLOB = "not_matching_glob"
SKIP_HIDDEN = "hidden"
SKIP_IN_SUB_FOLDER = "in_sub_folder"
SKIP_TOO_OLD = "older_than_max_file_age"

INGEST_BATCHES_SCHEMA = StructType(
    [
        StructField("app_id", StringType(), False),
        StructField("batch_id", LongType(), False),
        StructField("ingest_time", TimestampType(), False),
        StructField("files", LongType(), False),
        StructField("lines_read", LongType(), False),
        StructField("bronze_inserted", LongType(), False),
        StructField("quarantined", LongType(), False),
        StructField("duplicates_in_batch", LongType(), False),
        StructField("duplicates_existing", LongType(), False),
        StructField("validation_run", BooleanType(), False),
        StructField("validation_success", BooleanType(), True),
        StructField("validation_failed_expectations", ArrayType(StringType(), False), False),
        StructField("validation_seconds", DoubleType(), False),
        StructField("batch_seconds", DoubleType(), False),
    ]
)


SILVER_TURNS_SCHEMA = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("device_id", StringType(), False),
        StructField("device_type", StringType(), True),
        StructField("session_id", StringType(), False),
        StructField("session_start", TimestampType(), False),
        StructField("turn_index", IntegerType(), False),
        StructField("ts", TimestampType(), False),
        StructField("event_date", DateType(), False),
        StructField("utterance", StringType(), False),
        StructField("normalized_utterance", StringType(), False),
        StructField("domain", StringType(), True),
        StructField("intent", StringType(), True),
        StructField("slots", MapType(StringType(), StringType()), True),
        StructField("status", StringType(), False),
        StructField("response_type", StringType(), True),
        StructField("response_text", StringType(), True),
        StructField("response_end_ts", TimestampType(), True),
        StructField("explicit_feedback", StringType(), True),
        StructField("is_system_command", BooleanType(), False),
        StructField("stop_like", BooleanType(), False),
        StructField("next_turn_gap_s", DoubleType(), True),
        StructField("barge_in", BooleanType(), False),
        StructField("terminated", BooleanType(), False),
        StructField("rephrase_of", StringType(), True),
        StructField("rephrase_score", DoubleType(), True),
        StructField("rephrase_detector", StringType(), True),
        StructField("rephrased", BooleanType(), False),
        StructField("chain_id", StringType(), True),
        StructField("chain_success", BooleanType(), True),
        StructField("abandoned", BooleanType(), False),
        StructField("defect", BooleanType(), False),
        StructField("defect_reasons", ArrayType(StringType(), False), False),
        StructField("processed_at", TimestampType(), False),
    ]
)
SILVER_PARTITION_COLUMNS = ("event_date",)

DEFECT_METRICS_SCHEMA = StructType(
    [
        StructField("hour", TimestampType(), False),
        StructField("domain", StringType(), False),
        StructField("intent", StringType(), False),
        StructField("device_type", StringType(), False),
        StructField("turns", LongType(), False),
        StructField("defects", LongType(), False),
        StructField("barge_ins", LongType(), False),
        StructField("rephrases", LongType(), False),
        StructField("terminations", LongType(), False),
        StructField("defect_rate", DoubleType(), False),
    ]
)

UTTERANCE_DEFECTS_SCHEMA = StructType(
    [
        StructField("normalized_utterance", StringType(), False),
        StructField("traffic", LongType(), False),
        StructField("defects", LongType(), False),
        StructField("defect_rate", DoubleType(), False),
        StructField("users", LongType(), False),
        StructField("users_sketch", BinaryType(), False),
        StructField("first_seen", TimestampType(), False),
        StructField("last_seen", TimestampType(), False),
        StructField("top_rephrase", StringType(), True),
        StructField("top_rephrase_count", LongType(), True),
    ]
)

REPHRASE_PAIRS_SCHEMA = StructType(
    [
        StructField("utterance", StringType(), False),
        StructField("rephrase", StringType(), False),
        StructField("chains", LongType(), False),
        StructField("successful_chains", LongType(), False),
        StructField("success_share", DoubleType(), False),
        StructField("target_successes", LongType(), False),
        StructField("users", LongType(), False),
        StructField("users_sketch", BinaryType(), False),
        StructField("first_seen", TimestampType(), False),
        StructField("last_seen", TimestampType(), False),
    ]
)


@dataclass(frozen=True)
class LakePaths:
    """Where every table of a lake lives; ``root`` is the ``--lake`` directory."""

    root: str

    def __post_init__(self) -> None:
        if not isinstance(self.root, str) or not self.root.strip():
            raise ValueError(f"root must be a non-empty path string, got {self.root!r}")

    @classmethod
    def at(cls, root: str | Path) -> "LakePaths":
        """Lake paths under ``root``, made absolute for local paths (Spark resolves relative paths oddly)."""
        text = str(root)
        if "://" not in text:
            text = str(Path(text).resolve())
        return cls(text)

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def bronze(self) -> str:
        return self._join("bronze", "interactions")

    @property
    def quarantine(self) -> str:
        return self._join("quarantine", "interactions")

    @property
    def ingest_batches(self) -> str:
        return self._join("_ops", "ingest_batches")

    @property
    def landing_skipped(self) -> str:
        return self._join("_ops", "landing_skipped")

    @property
    def validation_results(self) -> str:
        return self._join("_ops", "validation", "bronze_interactions")

    @property
    def silver_turns(self) -> str:
        return self._join("silver", "turns")

    @property
    def defect_metrics(self) -> str:
        return self._join("gold", "defect_metrics")

    @property
    def utterance_defects(self) -> str:
        return self._join("gold", "utterance_defects")

    @property
    def rephrase_pairs(self) -> str:
        return self._join("gold", "rephrase_pairs")

    @property
    def silver_batches(self) -> str:
        return self._join("_ops", "silver_batches")

    @property
    def silver_progress(self) -> str:
        return self._join("_ops", "silver_progress")

    @property
    def rewrites(self) -> str:
        return self._join("gold", "rewrites")

    @property
    def rewrite_vetoes(self) -> str:
        return self._join("gold", "rewrite_vetoes")

    @property
    def mlflow_db(self) -> str:
        return self._join("mlflow", "mlflow.db")

    @property
    def mlflow_artifacts(self) -> str:
        return self._join("mlflow", "artifacts")

    @property
    def training(self) -> str:
        """Simulations and their lakes made by ``feedback train-rephrase`` when no data is given."""
        return self._join("_training")

    def checkpoint(self, query_name: str) -> str:
        return self._join("_checkpoints", query_name)


# gold/rewrites: one row per source utterance the query rewriter rewrites (``feedback mine-rewrites``).
REWRITES_SCHEMA = StructType(
    [
        StructField("source_utterance", StringType(), False),
        StructField("rewrite_utterance", StringType(), False),
        StructField("probability", DoubleType(), False),
        StructField("support_users", LongType(), False),
        StructField("support_chains", LongType(), False),
        StructField("source_success_rate", DoubleType(), False),
        StructField("target_success_rate", DoubleType(), False),
        StructField("mined_at", TimestampType(), False),
        StructField("run_id", StringType(), False),
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
        StructField("source_utterance", StringType(), False),
        StructField("rewrite_utterance", StringType(), True),
        StructField("reason", StringType(), True),
        StructField("vetoed_at", TimestampType(), False),
    ]
)
