"""Sessions, barge-in, termination, rephrase links and defect reasons on hand-worked timelines."""

from __future__ import annotations

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig, ConfigError, SessionizeConfig
from feedback.silver.detect import HEURISTIC_DETECTOR, label_defects, link_rephrases, rephrase_candidates, score_pairs_heuristic
from feedback.silver.sessionize import aggregate_sessions, explode_sessions, mark_turns, normalize_utterance
from feedback.silver.stream import build_turns, resolve_chains, resolve_goals

from support.turn_data import Event, events_frame, stop

CONFIG = AppConfig()


def turns_of(spark: SparkSession, events: list[Event]) -> DataFrame:
    sessions = aggregate_sessions(events_frame(spark, events), CONFIG.sessionize)
    return mark_turns(explode_sessions(sessions), CONFIG.sessionize)


def test_normalization_pools_spellings(spark: SparkSession) -> None:
    frame = spark.createDataFrame([("  Play   Spotify!! ",), ("what's the weather, in Köln?",)], "u string")
    result = frame.select(normalize_utterance(F.col("u")).alias("n"))
    assertDataFrameEqual(result, spark.createDataFrame([("play spotify",), ("what's the weather in köln",)], "n string"))


def test_gap_splits_sessions_and_orders_turns(spark: SparkSession) -> None:
    events = [
        Event("b", 20, "second"),
        Event("a", 0, "first"),
        Event("c", 20 + 3 + 300 + 1, "after the gap"),  # more than 5 minutes after b
        Event("x", 5, "other device", device_id="d2"),
    ]
    turns = turns_of(spark, events)
    sessions = turns.groupBy("device_id", "session_id").agg(F.sort_array(F.collect_list(F.struct("turn_index", "event_id"))).alias("t"))
    result = sessions.select("device_id", F.col("t.event_id").alias("events"), F.col("t.turn_index").alias("indexes"))
    expected = spark.createDataFrame(
        [("d1", ["a", "b"], [0, 1]), ("d1", ["c"], [0]), ("d2", ["x"], [0])],
        "device_id string, events array<string>, indexes array<int>",
    )
    assertDataFrameEqual(result, expected)
    assert turns.select("session_id").distinct().count() == 3


def test_a_session_that_never_pauses_is_cut_at_max_session_duration(spark: SparkSession) -> None:
    """Requests every 4 minutes from 11:30 to 14:30 (never a 5-minute gap): cut at 12:00 and 14:00 UTC."""
    events = [Event(f"e{k:02d}", 5400 + 240 * k, f"request {k}") for k in range(46)]
    turns = turns_of(spark, events)
    sessions = turns.groupBy("session_id").agg(
        F.min("event_id").alias("first"), F.max("event_id").alias("last"), F.count(F.lit(1)).alias("turns"),
        F.max("turn_index").alias("last_index"),
    )
    expected = spark.createDataFrame(
        [("e00", "e07", 8, 7), ("e08", "e37", 30, 29), ("e38", "e45", 8, 7)],
        "first string, last string, turns long, last_index int",
    )
    assertDataFrameEqual(sessions.drop("session_id"), expected)


def test_max_session_duration_must_hold_two_gaps() -> None:
    with pytest.raises(ConfigError, match=r"sessionize.max_session_duration: must be like '2 hours' and at least twice session_gap, got '9 minutes'"):
        SessionizeConfig(max_session_duration="9 minutes")


def test_barge_in_and_termination_rules(spark: SparkSession) -> None:
    events = [
        # speech: plays 10.5 s..13.5 s after ts 10 s: the next request at 12 s interrupts it
        Event("s1", 10, "weather in paris"),
        Event("s2", 12, "weather in paris please"),
        # speech heard to the end (13.5+0.5+3 = 16.0 s ends at 15.5 s... next at 30 s): no barge-in
        Event("s3", 30, "what time is it"),
        stop("s4", 38),  # s3 ends at 33.5 s; a stop 4.5 s later terminates it
        # media (no duration) interrupted 12 s after playback starts: barge-in and terminated
        Event("m1", 60, "play jazz", response_type="media", duration_ms=None, domain="music", intent="PlayMusic"),
        stop("m2", 72.5),
        # media that plays on: "next" after 2 minutes is neither
        Event("m3", 100, "play rock", response_type="media", duration_ms=None, domain="music", intent="PlayMusic"),
        Event("m4", 220, "next", domain="system", intent="Next", duration_ms=0),
        # "skip" right after speech ends does not terminate it (only stop/cancel do)
        Event("k1", 240, "tell me a joke", duration_ms=2000),
        Event("k2", 243, "skip", domain="system", intent="Next", duration_ms=0),
    ]
    result = turns_of(spark, events).select("event_id", "barge_in", "terminated", "is_system_command", "stop_like")
    expected = spark.createDataFrame(
        [
            ("s1", True, False, False, False),
            ("s2", False, False, False, False),
            ("s3", False, True, False, False),
            ("s4", False, False, True, True),
            ("m1", True, True, False, False),
            ("m2", False, False, True, True),
            ("m3", False, False, False, False),
            ("m4", False, False, True, True),
            ("k1", False, False, False, False),
            ("k2", False, False, True, True),
        ],
        "event_id string, barge_in boolean, terminated boolean, is_system_command boolean, stop_like boolean",
    )
    assertDataFrameEqual(result, expected)


def linked_turns(spark: SparkSession, events: list[Event]) -> DataFrame:
    turns = turns_of(spark, events)
    pairs = score_pairs_heuristic(rephrase_candidates(turns, CONFIG.detect), CONFIG.detect)
    return label_defects(link_rephrases(turns, pairs, CONFIG.detect.rephrase_threshold))


def test_rephrase_links_across_a_stop_and_not_to_unrelated_follow_ups(spark: SparkSession) -> None:
    events = [
        Event("a1", 0, "play songs by the beetles", status="unhandled", domain="music", intent="PlayMusic"),
        stop("a2", 1.5),  # barges into the "sorry" answer
        Event("a3", 4, "play songs by the beatles", domain="music", intent="PlayMusic", duration_ms=None, response_type="media"),
        # a new need 196 s later (outside the 120 s window: no candidate), then an unrelated follow-up
        Event("b1", 200, "what's the weather in boston"),
        Event("b2", 210, "set a timer for ten minutes", domain="timer", intent="SetTimer"),
    ]
    linked = linked_turns(spark, events)
    result = linked.select("event_id", "rephrase_of", "rephrase_detector", "rephrased", "defect_reasons")
    expected = spark.createDataFrame(
        [
            ("a1", None, None, True, ["barge_in", "terminated", "rephrased", "unhandled"]),
            ("a2", None, None, False, []),
            ("a3", "a1", HEURISTIC_DETECTOR, False, []),
            ("b1", None, None, False, []),
            ("b2", None, HEURISTIC_DETECTOR, False, []),
        ],
        "event_id string, rephrase_of string, rephrase_detector string, rephrased boolean, defect_reasons array<string>",
    )
    assertDataFrameEqual(result, expected)
    scores = {r["event_id"]: r["rephrase_score"] for r in linked.collect()}
    assert scores["a3"] >= CONFIG.detect.rephrase_threshold > scores["b2"]
    assert scores["b1"] is None


def test_defect_reasons_each_have_their_turn(spark: SparkSession) -> None:
    events = [
        Event("e1", 0, "book a table at nobu", status="error", domain="restaurant", intent="BookRestaurant"),
        Event("e2", 60, "what's the weather", feedback="negative"),
        Event("e3", 120, "play the news", status="unhandled", domain="news", intent="PlayNews"),
    ]
    result = linked_turns(spark, events).select("event_id", "abandoned", "defect", "defect_reasons")
    expected = spark.createDataFrame(
        [
            ("e1", False, True, ["error"]),
            ("e2", False, True, ["negative_feedback"]),
            ("e3", True, True, ["unhandled", "abandoned"]),
        ],
        "event_id string, abandoned boolean, defect boolean, defect_reasons array<string>",
    )
    assertDataFrameEqual(result, expected)


def test_chains_resolve_to_their_first_request_and_final_outcome(spark: SparkSession) -> None:
    rows = [
        ("s", "r1", 0, None, True, True),
        ("s", "r2", 1, "r1", True, True),
        ("s", "r3", 2, "r2", False, False),
        ("s", "q1", 3, None, False, False),
        ("t", "f1", 0, None, True, True),
        ("t", "f2", 1, "f1", False, True),
    ]
    turns = spark.createDataFrame(rows, "session_id string, event_id string, turn_index int, rephrase_of string, rephrased boolean, defect boolean")
    result = resolve_chains(turns, max_chain_length=4).select("event_id", "chain_id", "chain_success")
    expected = spark.createDataFrame(
        [("r1", "r1", True), ("r2", "r1", True), ("r3", "r1", True), ("q1", None, None), ("f1", "f1", False), ("f2", "f1", False)],
        "event_id string, chain_id string, chain_success boolean",
    )
    assertDataFrameEqual(result, expected)


def test_goals_span_a_stop_between_a_request_and_its_rephrase(spark: SparkSession) -> None:
    # Session s: a stop before any request, "play the beetles" (failed, stopped), the stop,
    # "play the beatles" (its rephrase, served), a volume command, then an unrelated request that fails.
    # Session t: one request served on its own.
    rows = [
        ("s", "x0", 0, True, None, None, False),
        ("s", "p1", 1, False, "p1", True, True),
        ("s", "x1", 2, True, None, None, False),
        ("s", "p2", 3, False, "p1", True, False),
        ("s", "x2", 4, True, None, None, False),
        ("s", "w1", 5, False, None, None, True),
        ("t", "q1", 0, False, None, None, False),
    ]
    turns = spark.createDataFrame(
        rows,
        "session_id string, event_id string, turn_index int, is_system_command boolean, chain_id string, chain_success boolean, defect boolean",
    )
    result = resolve_goals(turns).select("event_id", "goal_id", "goal_success")
    expected = spark.createDataFrame(
        [
            ("x0", None, None),
            ("p1", "p1", True),
            ("x1", "p1", True),
            ("p2", "p1", True),
            ("x2", "p1", True),
            ("w1", "w1", False),
            ("q1", "q1", True),
        ],
        "event_id string, goal_id string, goal_success boolean",
    )
    assertDataFrameEqual(result, expected)


def test_silver_turns_carry_goals_across_a_stop(spark: SparkSession) -> None:
    events = [
        Event("a1", 0, "play songs by the beetles", status="unhandled", domain="music", intent="PlayMusic"),
        stop("a2", 1.5),
        Event("a3", 4, "play songs by the beatles", domain="music", intent="PlayMusic", duration_ms=None, response_type="media"),
        Event("b1", 200, "what's the weather in boston", status="error"),
    ]
    sessions = aggregate_sessions(events_frame(spark, events), CONFIG.sessionize)
    result = build_turns(sessions, CONFIG.sessionize, CONFIG.detect).select("event_id", "chain_id", "goal_id", "goal_success")
    expected = spark.createDataFrame(
        [("a1", "a1", "a1", True), ("a2", None, "a1", True), ("a3", "a1", "a1", True), ("b1", None, "b1", False)],
        "event_id string, chain_id string, goal_id string, goal_success boolean",
    )
    assertDataFrameEqual(result, expected)


def test_build_turns_writes_exactly_the_silver_columns(spark: SparkSession) -> None:
    from feedback.core.schema import SILVER_TURNS_SCHEMA

    sessions = aggregate_sessions(events_frame(spark, [Event("a", 0, "hello"), Event("b", 9, "hello there")]), CONFIG.sessionize)
    turns = build_turns(sessions, CONFIG.sessionize, CONFIG.detect)
    assert turns.columns == SILVER_TURNS_SCHEMA.fieldNames()
    assert turns.count() == 2
