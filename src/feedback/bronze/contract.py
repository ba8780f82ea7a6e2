"""Event contract v1 as a pure transform: raw landing lines -> typed columns plus every rule a line breaks.

``parse_events`` runs in the JVM: one JSON parse into the contract's types serves the common line;
a line that parse cannot vouch for is parsed again into a Variant, whose per-field type
(``schema_of_variant``) tells a JSON string from a number, so "wrong type" is exact, not a guess
from a lenient cast. The rules themselves (``EVENT_FIELDS``) live in ``feedback.core.schema``,
next to the bronze CHECK constraints made from them; ``docs/events.md`` lists them.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, MapType, StringType, StructField, StructType

from feedback.core.schema import (
    BLANK_TEXT,
    EVENT_FIELDS,
    ISO_TIMESTAMP_WITH_OFFSET,
    MAX_SLOT_NAME_LENGTH,
    REASON_BAD_TIMESTAMP,
    REASON_BAD_VALUE,
    REASON_BLANK_UTTERANCE,
    REASON_EMPTY_FIELD,
    REASON_INVALID_UTF8,
    REASON_LINE_TOO_LONG,
    REASON_MISSING_FIELD,
    REASON_NOT_JSON,
    REASON_NOT_OBJECT,
    REASON_NULL_VALUE,
    REASON_OUT_OF_RANGE,
    REASON_TOO_LONG,
    REASON_TRUNCATED_JSON,
    REASON_UNKNOWN_SCHEMA_VERSION,
    REASON_WRONG_TYPE,
    SCHEMA_VERSION,
    FieldRule,
)

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
    line = F.coalesce(F.col("value"), F.lit(""))
    line_bytes = F.octet_length(line).cast("long")
    line_state = (
        F.when(F.col("value").isNull(), F.lit(REASON_NULL_VALUE))
        .when(line_bytes > max_line_bytes, F.lit(REASON_LINE_TOO_LONG))
        .when(~F.is_valid_utf8(line), F.lit(REASON_INVALID_UTF8))
    )
    offset = F.col("source_offset") if "source_offset" in lines.columns else F.lit(None).cast("long")
    landed = landed_at if landed_at is not None else F.current_timestamp()
    latest_ts = F.col("landed_at") + F.make_dt_interval(secs=F.lit(float(max_future_skew_s)))
    framed = lines.select(
        line.alias("value"),
        "source_file",
        offset.alias("source_offset"),
        line_bytes.alias("line_bytes"),
        line_state.alias("_line_state"),
        landed.alias("landed_at"),
    ).withColumn("_latest_ts", latest_ts)
    readable = F.col("_line_state").isNull()
    fast = framed.select(
        F.when(F.col("_line_state") == REASON_LINE_TOO_LONG, F.substring(line, 1, max_line_bytes))
        .when(F.col("_line_state") == REASON_INVALID_UTF8, F.make_valid_utf8(line))
        .otherwise(line)
        .alias("raw"),
        "source_file",
        "source_offset",
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
    kept = ("raw", "source_file", "source_offset", "line_bytes", "raw_base64", "landed_at", "_latest_ts")
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
        F.col("source_offset"),
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
