"""Contract v1 rules, line by line, on hand-written input."""

from __future__ import annotations

import base64
import datetime as dt

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.contract import parse_events, split_valid
from feedback.bronze.stream import deduplicate_batch, match_event_ids

GOOD = (
    '{"event_id":"e1","schema_version":1,"ts":"2026-11-02T10:00:00.250+01:00","user_id":"u1","device_id":"d1",'
    '"device_type":"speaker","utterance":"play jazz","asr_confidence":0.91,"nlu_confidence":1,'
    '"slots":{"genre":"jazz"},"response_type":"media","status":"success","response_latency_ms":420,'
    '"response_duration_ms":null,"app_version":"7.1"}'
)
MINIMAL = '{"event_id":"e2","schema_version":1,"ts":"2026-11-03T23:59:59Z","user_id":"u2","device_id":"d2","utterance":"stop","status":"unhandled"}'

CASES: list[tuple[str, list[str]]] = [
    (GOOD, []),
    (MINIMAL, []),
    ("this is not json", ["not_json"]),
    ("", ["not_json"]),
    ('{"event_id":"e3","schema_version":1,"ts":"2026-11-0', ["truncated_json"]),
    ("[1, 2]", ["not_object"]),
    ('"just a string"', ["not_object"]),
    ("{}", [f"missing_field:{f}" for f in ("event_id", "schema_version", "ts", "user_id", "device_id", "utterance", "status")]),
    (MINIMAL.replace('"user_id":"u2",', ""), ["missing_field:user_id"]),
    (MINIMAL.replace('"u2"', "null"), ["missing_field:user_id"]),
    (MINIMAL.replace('"u2"', '""'), ["empty_field:user_id"]),
    (MINIMAL.replace('"d2"', '"  "'), ["empty_field:device_id"]),
    (MINIMAL.replace('"e2"', '"' + "x" * 129 + '"'), ["too_long:event_id"]),
    (MINIMAL.replace('"stop"', '" \\t "'), ["blank_utterance"]),
    (MINIMAL.replace('"stop"', '"' + "a" * 1001 + '"'), ["too_long:utterance"]),
    (MINIMAL.replace('"schema_version":1', '"schema_version":2'), ["unknown_schema_version"]),
    (MINIMAL.replace('"schema_version":1', '"schema_version":"1"'), ["wrong_type:schema_version"]),
    (MINIMAL.replace("2026-11-03T23:59:59Z", "2026-11-03 23:59:59"), ["bad_timestamp"]),
    (MINIMAL.replace("2026-11-03T23:59:59Z", "2026-13-03T23:59:59Z"), ["bad_timestamp"]),
    (MINIMAL.replace("2026-11-03T23:59:59Z", "yesterday"), ["bad_timestamp"]),
    (MINIMAL.replace('"ts":"2026-11-03T23:59:59Z"', '"ts":1762214399'), ["wrong_type:ts"]),
    (MINIMAL.replace('"stop"', "42"), ["wrong_type:utterance"]),
    (MINIMAL.replace('"status":"unhandled"', '"status":"ok"'), ["bad_value:status"]),
    (MINIMAL[:-1] + ',"response_type":"video"}', ["bad_value:response_type"]),
    (MINIMAL[:-1] + ',"explicit_feedback":"meh"}', ["bad_value:explicit_feedback"]),
    (MINIMAL[:-1] + ',"asr_confidence":1.7}', ["out_of_range:asr_confidence"]),
    (MINIMAL[:-1] + ',"asr_confidence":"high"}', ["wrong_type:asr_confidence"]),
    (MINIMAL[:-1] + ',"response_latency_ms":-5}', ["out_of_range:response_latency_ms"]),
    (MINIMAL[:-1] + ',"response_latency_ms":12.5}', ["wrong_type:response_latency_ms"]),
    (MINIMAL[:-1] + ',"response_duration_ms":99999999999}', ["out_of_range:response_duration_ms"]),
    (MINIMAL[:-1] + ',"slots":["a"]}', ["wrong_type:slots"]),
    (MINIMAL[:-1] + ',"slots":{"a":1}}', ["wrong_type:slots"]),
    # The fast parse reads string fields and map members as any token's text; an empty string
    # or a quoted "NaN" for a number fails it (the latter only while allowNonNumericNumbers is
    # off), and the exact path must still tell each by its JSON type.
    (MINIMAL[:-1] + ',"asr_confidence":"0.5"}', ["wrong_type:asr_confidence"]),
    (MINIMAL[:-1] + ',"response_latency_ms":"12"}', ["wrong_type:response_latency_ms"]),
    (MINIMAL[:-1] + ',"response_latency_ms":""}', ["wrong_type:response_latency_ms"]),
    (MINIMAL[:-1] + ',"nlu_confidence":""}', ["wrong_type:nlu_confidence"]),
    (MINIMAL[:-1] + ',"asr_confidence":"NaN"}', ["wrong_type:asr_confidence"]),
    (MINIMAL[:-1] + ',"asr_confidence":"-Infinity"}', ["wrong_type:asr_confidence"]),
    (MINIMAL[:-1] + ',"slots":{"a":"x","b":null}}', ["wrong_type:slots"]),
    (MINIMAL[:-1] + ',"slots":{"a":"x","b":false}}', ["wrong_type:slots"]),
    (MINIMAL[:-1] + ',"slots":{"a":{"c":"d"},"b":"x"}}', ["wrong_type:slots"]),
    (MINIMAL[:-1] + ',"slots":{"a":"x","b":[]}}', ["wrong_type:slots"]),
    (MINIMAL[:-1] + ',"slots":"genre=jazz"}', ["wrong_type:slots"]),
    # NaN and Infinity are not JSON, wherever they stand.
    (MINIMAL.replace('"stop"', "NaN"), ["truncated_json"]),
    (MINIMAL[:-1] + ',"device_type":-Infinity}', ["truncated_json"]),
    (MINIMAL[:-1] + ',"slots":{"a":NaN}}', ["truncated_json"]),
    (MINIMAL[:-1] + ',"asr_confidence":NaN}', ["truncated_json"]),
    (MINIMAL.replace('"schema_version":1', '"schema_version":5000000000'), ["unknown_schema_version"]),
    (MINIMAL.replace('"stop"', "true"), ["wrong_type:utterance"]),
    (MINIMAL[:-1] + ',"intent":{"name":"Stop"}}', ["wrong_type:intent"]),
    (MINIMAL[:-1] + ',"int\\u0065nt":5}', ["wrong_type:intent"]),
    # Valid lines the fast path must not lose: a contract key nested in an extra field, escaped
    # quotes and a colon inside a string, a number in exponent form, a byte-order mark.
    (MINIMAL[:-1] + ',"extra":{"intent":5,"status":[1]}}', []),
    (MINIMAL.replace('"stop"', '"say \\"stop\\": now"'), []),
    (MINIMAL[:-1] + ',"asr_confidence":1e-1}', []),
    (MINIMAL[:-1] + ',"slots":{"a":"12","b":"[x","c":"true"},"response_duration_ms":null}', []),
    (MINIMAL[:-1] + ',"slots":{}}', []),
    (MINIMAL.replace('"schema_version":1', '"schema_version":1.0'), []),  # integral: JSON has one number type
    # Per-field length limits (docs/events.md).
    (MINIMAL.replace('"u2"', '"' + "u" * 129 + '"'), ["too_long:user_id"]),
    (MINIMAL.replace('"u2"', '"' + "u" * 128 + '"'), []),
    (MINIMAL.replace('"d2"', '"' + "d" * 129 + '"'), ["too_long:device_id"]),
    (MINIMAL[:-1] + ',"locale":"' + "x" * 36 + '"}', ["too_long:locale"]),
    (MINIMAL[:-1] + ',"intent":"' + "I" * 129 + '"}', ["too_long:intent"]),
    (MINIMAL[:-1] + ',"response_text":"' + "r" * 4001 + '"}', ["too_long:response_text"]),
    (MINIMAL[:-1] + ',"slots":{' + ",".join(f'"s{i}":"v"' for i in range(51)) + "}}", ["too_long:slots"]),
    (MINIMAL[:-1] + ',"slots":{' + ",".join(f'"s{i}":"v"' for i in range(50)) + "}}", []),
    (MINIMAL[:-1] + ',"slots":{"a":"' + "v" * 257 + '"}}', ["too_long:slots"]),
    (MINIMAL[:-1] + ',"slots":{"' + "k" * 65 + '":"v"}}', ["too_long:slots"]),
    # Clock skew: far ahead of the landing time is out of range; far behind is valid (late data).
    (MINIMAL.replace("2026-11-03T23:59:59Z", "2999-01-01T00:00:00Z"), ["out_of_range:ts"]),
    (MINIMAL.replace("2026-11-03T23:59:59Z", "1999-01-01T00:00:00Z"), []),
    ("\ufeff" + MINIMAL, []),
    (
        '{"event_id":"","schema_version":"1","ts":"2026-11-02 10:00:00","user_id":"u","utterance":" ",'
        '"status":"ok","asr_confidence":1.7}',
        [
            "empty_field:event_id",
            "wrong_type:schema_version",
            "bad_timestamp",
            "missing_field:device_id",
            "blank_utterance",
            "out_of_range:asr_confidence",
            "bad_value:status",
        ],
    ),
]


def _lines(spark: SparkSession, values: list[str]):  # type: ignore[no-untyped-def]
    return spark.createDataFrame([(v, "file:/landing/f.jsonl") for v in values], "value string, source_file string")


def test_every_rule_yields_exactly_its_reasons(spark: SparkSession) -> None:
    parsed = parse_events(_lines(spark, [line for line, _ in CASES]))
    expected = spark.createDataFrame(CASES, "raw string, reasons array<string>")
    assertDataFrameEqual(parsed.select("raw", "reasons"), expected)


LANDED = dt.datetime(2026, 11, 3, 12, 0, 0)


def test_a_timestamp_more_than_the_skew_ahead_of_the_landing_time_is_out_of_range(spark: SparkSession) -> None:
    stamps = {"14m59s ahead": "2026-11-03T12:14:59Z", "15m ahead": "2026-11-03T12:15:00Z", "15m01s ahead": "2026-11-03T12:15:01Z",
              "in +01:00, 14m ahead": "2026-11-03T13:14:00+01:00", "in +01:00, 16m ahead": "2026-11-03T13:16:00+01:00"}
    lines = [MINIMAL.replace("2026-11-03T23:59:59Z", stamp) for stamp in stamps.values()]
    parsed = parse_events(_lines(spark, lines), max_future_skew_s=900.0, landed_at=F.lit(LANDED).cast("timestamp"))
    expected = spark.createDataFrame(
        [(lines[0], []), (lines[1], []), (lines[2], ["out_of_range:ts"]), (lines[3], []), (lines[4], ["out_of_range:ts"])],
        "raw string, reasons array<string>",
    )
    assertDataFrameEqual(parsed.select("raw", "reasons"), expected)


def test_a_line_over_the_byte_limit_is_quarantined_unparsed_and_cut(spark: SparkSession) -> None:
    wide = MINIMAL.replace('"stop"', '"' + "é" * 600 + '"')  # 600 characters, 1,200 bytes
    lines = _lines(spark, [wide, MINIMAL])
    parsed = parse_events(lines, max_line_bytes=1024).select("raw", "reasons", "line_bytes", "raw_base64")
    wide_bytes = len(wide.encode("utf-8"))
    expected = spark.createDataFrame(
        [(wide[:1024], ["too_long:line"], wide_bytes, None), (MINIMAL, [], len(MINIMAL), None)],
        "raw string, reasons array<string>, line_bytes long, raw_base64 string",
    )
    assertDataFrameEqual(parsed, expected)


def test_bytes_that_are_not_utf8_are_quarantined_with_the_bytes_kept(spark: SparkSession) -> None:
    latin1 = MINIMAL.replace('"stop"', '"café"').encode("latin-1")
    lines = spark.createDataFrame(
        [(bytearray(latin1), "file:/landing/f.jsonl"), (bytearray(MINIMAL.encode("utf-8")), "file:/landing/f.jsonl")],
        "value binary, source_file string",
    ).withColumn("value", F.col("value").cast("string"))
    parsed = parse_events(lines).select("raw", "reasons", "raw_base64", "line_bytes")
    expected = spark.createDataFrame(
        [
            (MINIMAL.replace('"stop"', '"caf\ufffd"'), ["invalid_utf8"], base64.b64encode(latin1).decode("ascii"), len(latin1)),
            (MINIMAL, [], None, len(MINIMAL)),
        ],
        "raw string, reasons array<string>, raw_base64 string, line_bytes long",
    )
    assertDataFrameEqual(parsed, expected)


def test_valid_lines_are_typed_and_keep_the_raw_payload(spark: SparkSession) -> None:
    valid, rejected = split_valid(parse_events(_lines(spark, [GOOD, MINIMAL, "junk"])))
    assert rejected.count() == 1
    columns = [
        "event_id", "schema_version", "ts", "event_date", "user_id", "device_type", "asr_confidence",
        "nlu_confidence", "slots", "response_type", "status", "response_latency_ms", "response_duration_ms", "raw",
    ]
    expected = spark.createDataFrame(
        [
            ("e1", 1, dt.datetime(2026, 11, 2, 9, 0, 0, 250000), dt.date(2026, 11, 2), "u1", "speaker", 0.91, 1.0,
             {"genre": "jazz"}, "media", "success", 420, None, GOOD),
            ("e2", 1, dt.datetime(2026, 11, 3, 23, 59, 59), dt.date(2026, 11, 3), "u2", None, None, None,
             None, None, "unhandled", None, None, MINIMAL),
        ],
        "event_id string, schema_version int, ts timestamp, event_date date, user_id string, device_type string, "
        "asr_confidence double, nlu_confidence double, slots map<string,string>, response_type string, "
        "status string, response_latency_ms int, response_duration_ms int, raw string",
    )
    assertDataFrameEqual(valid.select(*columns), expected)


def test_deduplication_keeps_one_row_per_event_id_deterministically(spark: SparkSession) -> None:
    redelivered = MINIMAL[:-1] + ',"app_version":"2"}'
    lines = spark.createDataFrame(
        [(MINIMAL, "file:/b.jsonl"), (redelivered, "file:/a.jsonl"), (MINIMAL, "file:/c.jsonl"), (GOOD, "file:/a.jsonl")],
        "value string, source_file string",
    )
    valid, _ = split_valid(parse_events(lines))
    unique = deduplicate_batch(valid).select("event_id", "source_file", "raw")
    expected = spark.createDataFrame(
        [("e1", "file:/a.jsonl", GOOD), ("e2", "file:/a.jsonl", redelivered)], "event_id string, source_file string, raw string"
    )
    assertDataFrameEqual(unique, expected)


def test_match_event_ids_keeps_the_repeated_and_the_already_ingested(spark: SparkSession) -> None:
    valid = spark.createDataFrame([("e1",), ("e2",), ("e2",), ("e3",), ("e4",), ("e4",)], "event_id string")
    bronze_ids = spark.createDataFrame(
        [("e1", "app:0"), ("e4", "app:1"), ("e9", "app:0")], "event_id string, ingest_batch string"
    )
    expected = spark.createDataFrame(
        [("e1", 1, "app:0"), ("e2", 2, None), ("e4", 2, "app:1")], "event_id string, copies long, existing_batch string"
    )
    assertDataFrameEqual(match_event_ids(valid, bronze_ids), expected)


def test_deduplication_with_given_repeated_ids_equals_counting_them(spark: SparkSession) -> None:
    lines = spark.createDataFrame(
        [(MINIMAL, "file:/b.jsonl"), (MINIMAL, "file:/a.jsonl"), (MINIMAL, "file:/a.jsonl"), (GOOD, "file:/a.jsonl")],
        "value string, source_file string",
    )
    valid, _ = split_valid(parse_events(lines))
    repeated = spark.createDataFrame([("e2",)], "event_id string")
    given = deduplicate_batch(valid, repeated).select("event_id", "source_file", "raw")
    expected = spark.createDataFrame(
        [("e1", "file:/a.jsonl", GOOD), ("e2", "file:/a.jsonl", MINIMAL)], "event_id string, source_file string, raw string"
    )
    assertDataFrameEqual(given, expected)
    assertDataFrameEqual(deduplicate_batch(valid).select("event_id", "source_file", "raw"), expected)
