"""The notebooks' queries (``feedback.ops.notebook_queries``) on hand-made frames with known answers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.ops.notebook_queries import (
    NO_CANDIDATE,
    chains_behind,
    current_rewrites,
    detector_share,
    diff_rewrites,
    failure_point_shares,
    rates_by,
    rates_over_time,
    read_version,
    table_history,
    top_defective_utterances,
    vetoed_rewrites,
)

T = dt.datetime
METRICS_SCHEMA = (
    "hour timestamp, domain string, intent string, device_type string, turns long, defects long, "
    "barge_ins long, rephrases long, terminations long, defect_rate double"
)


@pytest.fixture(scope="module")
def metrics(spark: SparkSession) -> DataFrame:
    rows = [
        (T(2026, 11, 2, 10), "music", "PlayMusic", "speaker", 10, 2, 1, 1, 0, 0.2),
        (T(2026, 11, 2, 15), "music", "PlayMusic", "phone", 30, 3, 3, 0, 3, 0.1),
        (T(2026, 11, 2, 15), "weather", "GetWeather", "speaker", 20, 5, 0, 2, 1, 0.25),
        (T(2026, 11, 3, 1), "weather", "GetWeather", "speaker", 40, 0, 0, 0, 0, 0.0),
    ]
    return spark.createDataFrame(rows, METRICS_SCHEMA)


RATES = "turns long, defects long, barge_ins long, rephrases long, terminations long, defect_rate double, barge_in_rate double, rephrase_rate double, termination_rate double"


def test_rates_over_time_sum_counts_before_dividing(spark: SparkSession, metrics: DataFrame) -> None:
    expected = spark.createDataFrame(
        [
            (T(2026, 11, 2), 60, 10, 4, 3, 4, 10 / 60, 4 / 60, 3 / 60, 4 / 60),
            (T(2026, 11, 3), 40, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0),
        ],
        f"period timestamp, {RATES}",
    )
    assertDataFrameEqual(rates_over_time(metrics), expected, checkRowOrder=True)

    by_domain = rates_over_time(metrics, by="domain").select("period", "domain", "turns", "defect_rate")
    assert [tuple(r) for r in by_domain.collect()] == [
        (T(2026, 11, 2), "music", 40, 5 / 40),
        (T(2026, 11, 2), "weather", 20, 5 / 20),
        (T(2026, 11, 3), "weather", 40, 0.0),
    ]
    hours = [r["period"] for r in rates_over_time(metrics, grain="hour").collect()]
    assert hours == [T(2026, 11, 2, 10), T(2026, 11, 2, 15), T(2026, 11, 3, 1)]
    weeks = rates_over_time(metrics, grain="week").collect()
    assert [(r["period"], r["turns"], r["defects"]) for r in weeks] == [(T(2026, 11, 2), 100, 10)]


def test_rates_reject_unknown_grain_and_dimension(metrics: DataFrame) -> None:
    with pytest.raises(ValueError, match="grain must be one of hour, day, week, got 'month'"):
        rates_over_time(metrics, grain="month")
    with pytest.raises(ValueError, match="by must be None or one of domain, intent, device_type, got 'user_id'"):
        rates_over_time(metrics, by="user_id")
    with pytest.raises(ValueError, match="top must be a positive integer, got 0"):
        rates_by(metrics, "intent", top=0)


def test_rates_by_keeps_the_busiest_values(metrics: DataFrame) -> None:
    assert [(r["intent"], r["turns"], r["defect_rate"]) for r in rates_by(metrics, "intent").collect()] == [
        ("GetWeather", 60, 5 / 60),
        ("PlayMusic", 40, 5 / 40),
    ]
    top = rates_by(metrics, "device_type", top=1).collect()
    assert [(r["device_type"], r["turns"], r["barge_in_rate"], r["termination_rate"]) for r in top] == [("speaker", 70, 1 / 70, 1 / 70)]


def test_top_defective_utterances_with_their_top_rephrases(spark: SparkSession) -> None:
    utterances = spark.createDataFrame(
        [
            ("play the beetles", 10, 8, 0.8, 6),
            ("wether london", 5, 4, 0.8, 3),
            ("weather paris", 4, 4, 1.0, 2),
            ("stop", 50, 0, 0.0, 20),
            ("rare", 1, 1, 1.0, 1),
        ],
        "normalized_utterance string, traffic long, defects long, defect_rate double, users long",
    )
    pairs = spark.createDataFrame(
        [
            ("play the beetles", "play the beatles", 5, 0.8, 4),
            ("play the beetles", "play beatles", 2, 0.5, 2),
            ("play the beetles", "play the beetles please", 2, 0.0, 2),
            ("play the beetles", "play the bugs", 1, 0.0, 1),
            ("weather paris", "forecast paris", 1, 1.0, 2),
        ],
        "utterance string, rephrase string, chains long, success_share double, users long",
    )
    result = top_defective_utterances(utterances, pairs, n=3, rephrases_per_utterance=2, min_traffic=2, min_users=2).collect()
    assert [(r["normalized_utterance"], r["defects"], [tuple(x) for x in r["rephrases"]]) for r in result] == [
        ("play the beetles", 8, [("play the beatles", 5, 0.8), ("play beatles", 2, 0.5)]),
        ("weather paris", 4, [("forecast paris", 1, 1.0)]),  # same defects as "wether london", higher rate
        ("wether london", 4, []),
    ]
    with pytest.raises(ValueError, match="n must be a positive integer, got -1"):
        top_defective_utterances(utterances, pairs, n=-1)


REWRITES = "source_utterance string, rewrite_utterance string, probability double, support_users long, support_chains long"


def test_diff_rewrites_lists_added_removed_and_changed(spark: SparkSession) -> None:
    old = spark.createDataFrame(
        [("a", "b", 0.5, 2, 3), ("c", "d", 0.4, 2, 2), ("e", "f", 0.9, 5, 5), ("g", "h", 0.3, 2, 2)], REWRITES
    )
    new = spark.createDataFrame(
        [("a", "b", 0.5, 2, 3), ("c", "x", 0.4, 2, 2), ("e", "f", 0.9, 6, 6), ("k", "l", 0.2, 3, 3)], REWRITES
    )
    expected = spark.createDataFrame(
        [
            ("k", "added", None, "l", None, 0.2, None, 3, None, 3),
            ("c", "changed", "d", "x", 0.4, 0.4, 2, 2, 2, 2),
            ("e", "changed", "f", "f", 0.9, 0.9, 5, 6, 5, 6),
            ("g", "removed", "h", None, 0.3, None, 2, None, 2, None),
        ],
        "source_utterance string, change string, old_rewrite string, new_rewrite string, old_probability double, "
        "new_probability double, old_support_users long, new_support_users long, old_support_chains long, new_support_chains long",
    )
    assertDataFrameEqual(diff_rewrites(old, new), expected, checkRowOrder=True)
    assert diff_rewrites(old, old).count() == 0


def test_history_and_time_travel_of_a_merged_table(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "rewrites")
    spark.createDataFrame([("a", "b", 0.5, 2, 3), ("c", "d", 0.4, 2, 2)], REWRITES).write.format("delta").save(path)
    update = spark.createDataFrame([("a", "z", 0.6, 3, 3), ("e", "f", 0.9, 5, 5)], REWRITES)
    (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(update.alias("s"), "t.source_utterance = s.source_utterance")
        .whenMatchedUpdateAll().whenNotMatchedInsertAll().whenNotMatchedBySourceDelete()
        .execute()
    )  # fmt: skip
    history = [
        (r["version"], r["operation"], r["inserted"], r["updated"], r["deleted"], r["written"])
        for r in table_history(spark, path).collect()
    ]
    assert history == [(0, "WRITE", 0, 0, 0, 2), (1, "MERGE", 1, 1, 1, 2)]
    changes = diff_rewrites(read_version(spark, path, 0), read_version(spark, path, 1))
    assert [(r["source_utterance"], r["change"]) for r in changes.collect()] == [("e", "added"), ("a", "changed"), ("c", "removed")]
    with pytest.raises(ValueError, match="version must be a non-negative integer, got -1"):
        read_version(spark, path, -1)
    with pytest.raises(ValueError, match="path: no Delta table at"):
        table_history(spark, str(tmp_path / "nothing"))


TURNS = (
    "event_id string, chain_id string, user_id string, turn_index int, ts timestamp, utterance string, "
    "normalized_utterance string, status string, defect boolean, rephrase_score double, rephrase_detector string, "
    "is_system_command boolean"
)


def turn(event: str, chain: str | None, user: str, index: int, minute: int, text: str, defect: bool, system: bool = False) -> tuple[object, ...]:
    return (event, chain, user, index, T(2026, 11, 2, 10, minute), text.title(), text, "ok", defect, None, None, system)


def test_chains_behind_a_rewrite_are_those_mining_counts(spark: SparkSession) -> None:
    turns = spark.createDataFrame(
        [
            # c1 (u1): a -> stop -> b, succeeded at b: supports a -> b.
            turn("e1", "e1", "u1", 0, 0, "a", True),
            turn("e2", None, "u1", 1, 1, "stop", False, system=True),
            turn("e3", "e1", "u1", 2, 2, "b", False),
            # c2 (u2): x -> a -> b: supports it too, starts later.
            turn("e4", "e4", "u2", 0, 5, "x", True),
            turn("e5", "e4", "u2", 1, 6, "a", True),
            turn("e6", "e4", "u2", 2, 7, "b", False),
            # c3 (u3): a -> b but b failed: no support.
            turn("e7", "e7", "u3", 0, 3, "a", True),
            turn("e8", "e7", "u3", 1, 4, "b", True),
            # c4 (u4): b -> a: the wrong direction.
            turn("e9", "e9", "u4", 0, 1, "b", True),
            turn("e10", "e9", "u4", 1, 2, "a", False),
        ],
        TURNS,
    )
    assert "user_id" not in chains_behind(turns, "a", "b").columns
    shown = [(r["chain_id"], r["turn_index"], r["normalized_utterance"]) for r in chains_behind(turns, "a", "b").collect()]
    assert shown == [("e1", 0, "a"), ("e1", 2, "b"), ("e4", 0, "x"), ("e4", 1, "a"), ("e4", 2, "b")]
    assert [r["chain_id"] for r in chains_behind(turns, "a", "b", max_chains=1).collect()] == ["e1", "e1"]
    with pytest.raises(ValueError, match="rewrite must be a non-empty normalized utterance, got ''"):
        chains_behind(turns, "a", "")


def test_vetoed_rewrites_match_pairs_and_whole_sources(spark: SparkSession) -> None:
    mined = T(2026, 11, 3)
    rewrites = spark.createDataFrame(
        [("a", "b", 0.5, 2, 3, 0.1, 0.9, mined), ("c", "d", 0.4, 2, 2, 0.2, 0.8, mined), ("e", "f", 0.9, 5, 5, 0.0, 1.0, mined)],
        f"{REWRITES}, source_success_rate double, target_success_rate double, mined_at timestamp",
    )
    vetoes = spark.createDataFrame(
        [("a", "b", "wrong band", T(2026, 11, 4)), ("c", "z", "other target", T(2026, 11, 4)), ("e", None, "all of e", T(2026, 11, 5))],
        "source_utterance string, rewrite_utterance string, reason string, vetoed_at timestamp",
    )
    result = [(r["source_utterance"], r["rewrite_utterance"], r["reason"]) for r in vetoed_rewrites(rewrites, vetoes).collect()]
    assert result == [("a", "b", "wrong band"), ("e", "f", "all of e")]
    assert [r["source_utterance"] for r in current_rewrites(rewrites).collect()] == ["e", "a", "c"]


def test_detector_share_adds_up_to_one_per_day(spark: SparkSession) -> None:
    rows = [
        Row(event_date=dt.date(2026, 11, 2), rephrase_detector="heuristic-v1"),
        Row(event_date=dt.date(2026, 11, 2), rephrase_detector="heuristic-v1"),
        Row(event_date=dt.date(2026, 11, 2), rephrase_detector=None),
        Row(event_date=dt.date(2026, 11, 3), rephrase_detector="rephrase-detector/2"),
        Row(event_date=dt.date(2026, 11, 3), rephrase_detector="rephrase-detector/2+int8"),
        Row(event_date=dt.date(2026, 11, 3), rephrase_detector="rephrase-detector/2"),
        Row(event_date=dt.date(2026, 11, 3), rephrase_detector=None),
    ]
    turns = spark.createDataFrame(rows, "event_date date, rephrase_detector string")
    assert [tuple(r) for r in detector_share(turns).collect()] == [
        (dt.date(2026, 11, 2), NO_CANDIDATE, 1, 1 / 3),
        (dt.date(2026, 11, 2), "heuristic-v1", 2, 2 / 3),
        (dt.date(2026, 11, 3), NO_CANDIDATE, 1, 0.25),
        (dt.date(2026, 11, 3), "rephrase-detector/2", 2, 0.5),
        (dt.date(2026, 11, 3), "rephrase-detector/2+int8", 1, 0.25),
    ]


def test_failure_point_shares_sum_days_and_intents_per_domain(spark: SparkSession) -> None:
    rows = [
        (dt.date(2026, 11, 2), "music", "PlayMusic", "speaker", "asr", 3, 0.8),
        (dt.date(2026, 11, 3), "music", "PlayMusic", "phone", "asr", 1, 0.8),
        (dt.date(2026, 11, 3), "music", "AddToPlaylist", "speaker", "nlu", 4, 0.6),
        (dt.date(2026, 11, 2), "weather", "GetWeather", "speaker", "result", 2, 0.9),
    ]
    points = spark.createDataFrame(
        rows, "day date, domain string, intent string, device_type string, failure_point string, defects long, mean_score double"
    )
    expected = spark.createDataFrame(
        [("music", "asr", 4, 0.5), ("music", "nlu", 4, 0.5), ("weather", "result", 2, 1.0)],
        "domain string, failure_point string, defects long, share double",
    )
    assertDataFrameEqual(failure_point_shares(points, "domain"), expected)
    with pytest.raises(ValueError, match="by"):
        failure_point_shares(points, "hour")
