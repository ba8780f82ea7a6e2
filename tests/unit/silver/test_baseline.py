"""The naive baseline on hand-worked device streams: each rule, with ratios counted by hand.

``difflib``'s ratio is 2M/T (M matched characters, T both lengths). When the shorter text is a
prefix of the longer one, M is its length: "play jazz" (9) in "play jazz on my phone" (21) gives
18/30 = 0.6 exactly, in "play jazz on the radio" (22) 18/31 = 0.581.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.silver.baseline import (
    BASELINE_SCHEMA,
    BaselinePrediction,
    BaselineTurn,
    baseline_predictions,
    is_stop,
    normalize,
    predict_device,
    predict_frame,
    silver_traffic,
)

from support.turn_data import DAY, Event, events_frame, stop

T0 = DAY + dt.timedelta(hours=10)


def turn(
    event_id: str,
    at_s: float,
    utterance: str,
    *,
    status: str = "success",
    response_type: str = "speech",
    latency_ms: int | None = 500,
    duration_ms: int | None = 3000,
) -> BaselineTurn:
    """A request ``at_s`` seconds after 10:00; by default its response ends 3.5 s after it."""
    return BaselineTurn(event_id, T0 + dt.timedelta(seconds=at_s), utterance, status, response_type, latency_ms, duration_ms)


def media(event_id: str, at_s: float, utterance: str, duration_ms: int | None = None) -> BaselineTurn:
    return turn(event_id, at_s, utterance, response_type="media", duration_ms=duration_ms)


def flags(turns: list[BaselineTurn]) -> list[tuple[str, bool, bool, bool, str | None]]:
    return [(p.event_id, p.barge_in, p.terminated, p.defect, p.rephrase_of) for p in predict_device(turns)]


def test_normalization_and_the_stop_set() -> None:
    assert normalize("  What's   the Weather?! ") == "whats the weather"
    assert normalize(None) == ""
    assert [is_stop(u) for u in ("Stop!", "Never-mind", "never mind.", "SHUT   UP", "stop the music", "next song")] == [
        True, True, True, True, False, False,
    ]


def test_barge_in_before_the_response_ends_and_a_null_latency_counts_as_zero() -> None:
    # a1 ends at 3.5 s, a2 at 3.4 s cuts in; a2 ends at 6.9 s, a3 at 6.9 s does not (strictly before)
    assert flags([turn("a1", 0, "one"), turn("a2", 3.4, "two"), turn("a3", 6.9, "three")]) == [
        ("a1", True, False, True, None),
        ("a2", False, False, False, None),
        ("a3", False, False, False, None),
    ]
    # null latency: the response ends at 3.0 s, so 3.2 s is after it; with a null duration there is no end
    assert flags([turn("b1", 0, "one", latency_ms=None), turn("b2", 3.2, "two", duration_ms=None), turn("b3", 3.3, "three")]) == [
        ("b1", False, False, False, None),
        ("b2", False, False, False, None),
        ("b3", False, False, False, None),
    ]


def test_media_is_barged_into_within_ten_seconds_of_its_request() -> None:
    turns = [
        media("m1", 0, "play jazz"),
        turn("m2", 10, "whats on my calendar"),  # exactly 10 s: within
        media("m3", 100, "play rock"),
        turn("m4", 110.5, "turn on the lights"),  # 10.5 s: no
        media("m5", 200, "play the news", duration_ms=60_000),
        turn("m6", 230, "set an alarm"),  # 30 s after, but the news play until 260.5 s
    ]
    assert flags(turns) == [
        ("m1", True, False, True, None),
        ("m2", False, False, False, None),
        ("m3", False, False, False, None),
        ("m4", False, False, False, None),
        ("m5", True, False, True, None),
        ("m6", False, False, False, None),
    ]


def test_terminated_only_by_a_stop_that_cuts_in() -> None:
    turns = [
        turn("t1", 0, "tell me a joke"),
        turn("t2", 2, "Stop!", duration_ms=0),  # cuts t1 (ends 3.5 s): terminated
        media("t3", 20, "play jazz"),
        turn("t4", 29, "skip", duration_ms=0),  # 9 s into the media: terminated
        media("t5", 40, "play rock"),
        turn("t6", 52, "stop", duration_ms=0),  # 12 s: neither
        turn("t7", 60, "whats the weather"),
        turn("t8", 70, "cancel", duration_ms=0),  # after t7 ended (63.5 s): neither
    ]
    assert flags(turns) == [
        ("t1", True, True, True, None),
        ("t2", False, False, False, None),
        ("t3", True, True, True, None),
        ("t4", False, False, False, None),
        ("t5", False, False, False, None),
        ("t6", False, False, False, None),
        ("t7", False, False, False, None),
        ("t8", False, False, False, None),
    ]


def test_a_stop_between_a_request_and_its_rephrase_is_skipped() -> None:
    # "beetles"/"beatles": 24 of 25 characters match each way, 48/50 = 0.96
    turns = [
        turn("r1", 0, "play songs by the beetles", status="unhandled"),
        turn("r2", 1.5, "stop", duration_ms=0),
        turn("r3", 4, "play songs by the beatles"),
    ]
    assert flags(turns) == [
        ("r1", True, True, True, None),
        ("r2", False, False, False, None),
        ("r3", False, False, False, "r1"),
    ]


def test_only_the_next_two_requests_are_considered() -> None:
    # "yes" and "no" share at most 2 characters with anything here: far below 0.6
    turns = [
        turn("q1", 0, "set an alarm for seven"),
        turn("q2", 5, "yes"),
        turn("q3", 10, "no"),
        turn("q4", 15, "set an alarm for seven please"),
    ]
    assert [p.rephrase_of for p in predict_device(turns)] == [None, None, None, None]


def test_the_thirty_second_limit() -> None:
    # "play jazz" / "play some jazz": "play " and "jazz" match, 18/23 = 0.78
    inside = [turn("w1", 0, "play jazz"), turn("w2", 30, "play some jazz")]
    outside = [turn("x1", 0, "play jazz"), turn("x2", 30.5, "play some jazz")]
    assert flags(inside) == [("w1", False, False, True, None), ("w2", False, False, False, "w1")]
    assert flags(outside) == [("x1", False, False, False, None), ("x2", False, False, False, None)]


def test_a_ratio_of_exactly_0_6_links_and_one_just_under_does_not() -> None:
    at = [turn("y1", 0, "play jazz"), turn("y2", 20, "play jazz on my phone")]  # 18/30 = 0.6
    under = [turn("z1", 0, "play jazz"), turn("z2", 20, "play jazz on the radio")]  # 18/31 = 0.581
    assert [p.rephrase_of for p in predict_device(at)] == [None, "y1"]
    assert [p.rephrase_of for p in predict_device(under)] == [None, None]


def test_unhandled_and_error_are_defects() -> None:
    turns = [
        turn("u1", 0, "book a table", status="unhandled"),
        turn("u2", 60, "order a pizza", status="error"),
        turn("u3", 120, "whats the time"),
    ]
    assert [(p.event_id, p.defect) for p in predict_device(turns)] == [("u1", True), ("u2", True), ("u3", False)]


def test_a_follow_up_claimed_twice_rephrases_the_nearest_earlier_request() -> None:
    # v1 -> v2: only "play " matches, 10/28 = 0.36. v1 -> v3: prefix, 18/27 = 0.67.
    # v2 -> v3: " by queen" (9) and "play " (5), 28/37 = 0.76. Both claim v3; v2 is nearer and wins,
    # and v1 does not fall back to another follow-up.
    turns = [
        turn("v1", 0, "play jazz"),
        turn("v2", 5, "play songs by queen"),
        turn("v3", 10, "play jazz by queen"),
    ]
    assert flags(turns) == [
        ("v1", False, False, False, None),
        ("v2", False, False, True, None),
        ("v3", False, False, False, "v2"),
    ]


def test_stops_neither_rephrase_nor_are_rephrased_and_order_is_ts_then_event_id() -> None:
    turns = [
        turn("s3", 20, "stop", duration_ms=0),
        turn("s2", 10, "stop", duration_ms=0),
        turn("s1", 0, "stop", duration_ms=0),
        turn("b", 40, "hello"),
        turn("a", 40, "hello"),  # same ts: a before b, and b rephrases a (ratio 1.0)
    ]
    assert flags(turns) == [
        ("s1", False, False, False, None),
        ("s2", False, False, False, None),
        ("s3", False, False, False, None),
        ("a", True, False, True, None),
        ("b", False, False, False, "a"),
    ]


def test_turn_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="event_id must be a non-empty string"):
        BaselineTurn("", T0, "hi")
    with pytest.raises(TypeError, match="ts must be a datetime"):
        BaselineTurn("e", "10:00", "hi")  # type: ignore[arg-type]


def test_the_pandas_form_reads_nullable_columns() -> None:
    rows = pd.DataFrame(
        {
            "user_id": ["u", "u"],
            "device_id": ["d", "d"],
            "ts": [pd.Timestamp(T0 + dt.timedelta(seconds=3)), pd.Timestamp(T0)],
            "event_id": ["e2", "e1"],
            "utterance": ["play some jazz", "play jazz"],
            "status": ["success", "success"],
            "response_type": ["speech", "media"],
            "response_latency_ms": [float("nan"), 500.0],
            "response_duration_ms": [3000.0, float("nan")],
        }
    )
    result = predict_frame(rows)
    assert result.to_dict("records") == [
        {"event_id": "e1", "barge_in": True, "terminated": False, "defect": True, "rephrase_of": None},
        {"event_id": "e2", "barge_in": False, "terminated": False, "defect": False, "rephrase_of": "e1"},
    ]
    with pytest.raises(ValueError, match=r"rows is missing column\(s\) \['status'\]"):
        predict_frame(rows.drop(columns=["status"]))
    assert predict_device([]) == []
    assert BaselinePrediction("e", False, False, False, None).rephrase_of is None


def test_spark_runs_the_baseline_per_device_on_silver_rows(spark: SparkSession) -> None:
    """Two devices of one user; pooled, d2's b2 (14 s) would cut into d1's a4 (ends at 15 s)."""
    events = [
        Event("a1", 0, "play songs by the beetles", status="unhandled"),  # ends at 3.5 s
        stop("a2", 1.5),
        Event("a3", 4, "play songs by the beatles", response_type="media", duration_ms=None),
        Event("a4", 12, "whats the weather", latency_ms=None),  # 8 s into a3's media; ends at 15.0 s
        Event("a5", 15.2, "thanks"),
        Event("b1", 2, "play jazz", response_type="media", duration_ms=None, device_id="d2"),
        Event("b2", 14, "play some jazz", status="error", device_id="d2"),  # 12 s after b1: no barge-in
    ]
    # silver/turns holds response_end_ts = ts + latency (null as 0) + duration instead of the two
    bronze = events_frame(spark, events)
    end_ms = F.unix_millis("ts") + F.coalesce(F.col("response_latency_ms").cast("long"), F.lit(0)) + F.col("response_duration_ms")
    silver_like = bronze.withColumn("response_end_ts", F.timestamp_millis(end_ms)).drop("response_latency_ms", "response_duration_ms")
    expected = spark.createDataFrame(
        [
            ("a1", True, True, True, None),
            ("a2", False, False, False, None),
            ("a3", True, False, True, "a1"),
            ("a4", False, False, False, None),
            ("a5", False, False, False, None),
            ("b1", False, False, True, None),
            ("b2", False, False, True, "b1"),
        ],
        BASELINE_SCHEMA,
    )
    assertDataFrameEqual(baseline_predictions(silver_traffic(silver_like)), expected)
    assertDataFrameEqual(baseline_predictions(bronze), expected)
