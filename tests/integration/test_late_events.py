"""Late events: what the silver stream drops behind its watermark is counted, dated and rebuilt."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig, SessionizeConfig
from feedback.core.lake import LakePaths
from feedback.gold.late_events import LateDate, date_ranges, late_dates, late_event_counts
from feedback.pipeline import backfill_late_events, run_pipeline

from support.landing_data import event, write_lines


def timed(spark: SparkSession, rows: list[tuple[str, str]]) -> "DataFrame":  # noqa: F821
    return spark.createDataFrame(rows, "event_id string, ts string").select(
        "event_id", F.to_timestamp("ts").alias("ts"), F.to_date(F.to_timestamp("ts")).alias("event_date")
    )


def test_late_event_counts_compare_only_closed_sessions(spark: SparkSession) -> None:
    # Latest silver turn 15:00 on the 5th: sessions before 12:55 (15:00 - 2 h - 5 min) have closed.
    bronze = timed(
        spark,
        [
            ("a", "2026-11-04 09:00:00"), ("b", "2026-11-04 09:01:00"), ("c", "2026-11-04 23:59:00"),
            ("d", "2026-11-05 10:00:00"), ("e", "2026-11-05 12:54:59"), ("f", "2026-11-05 13:00:00"),
            ("g", "2026-11-05 15:00:00"),
        ],
    )
    silver = timed(spark, [("a", "2026-11-04 09:00:00"), ("d", "2026-11-05 10:00:00"), ("g", "2026-11-05 15:00:00")])
    expected = spark.createDataFrame([(dt.date(2026, 11, 4), 2), (dt.date(2026, 11, 5), 1)], "event_date date, late_events long")
    assertDataFrameEqual(late_event_counts(bronze, silver, SessionizeConfig()), expected)
    # Nothing in silver yet: nothing can be judged late.
    assert late_event_counts(bronze, silver.limit(0), SessionizeConfig()).count() == 0


def test_date_ranges_join_consecutive_days() -> None:
    days = [dt.date(2026, 11, d) for d in (7, 3, 4, 5, 9, 4)]
    assert date_ranges(days) == [
        (dt.date(2026, 11, 3), dt.date(2026, 11, 5)),
        (dt.date(2026, 11, 7), dt.date(2026, 11, 7)),
        (dt.date(2026, 11, 9), dt.date(2026, 11, 9)),
    ]
    assert date_ranges([]) == []


def test_dropped_events_are_recorded_and_backfill_late_rebuilds_their_dates(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path
) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    paths = LakePaths.at(lake)
    # A session at 10:00 on the 5th, closed by the watermark once an event at 12:00 arrives.
    write_lines(
        landing / "events-1.jsonl",
        [
            event("a1", "2026-11-05T10:00:00Z"),
            event("a2", "2026-11-05T10:00:20Z", utterance="play some jazz music"),
            event("b1", "2026-11-05T12:00:00Z"),
        ],
    )
    run_pipeline(spark, app_config, landing, paths)
    # Two days late: far behind the watermark (11:50 on the 5th).
    write_lines(
        landing / "events-2.jsonl",
        [event("late1", "2026-11-03T08:00:00Z", user_id="u2"), event("late2", "2026-11-03T08:00:30Z", user_id="u2")],
    )
    run_pipeline(spark, app_config, landing, paths)

    progress = spark.read.format("delta").load(paths.silver_progress)
    dropped = progress.filter("rows_dropped_by_watermark > 0").select("rows_dropped_by_watermark", "late_dates")
    assertDataFrameEqual(
        dropped, spark.createDataFrame([(2, [dt.date(2026, 11, 3)])], "rows_dropped_by_watermark long, late_dates array<date>")
    )
    assert late_dates(spark, paths, app_config.sessionize) == [LateDate(dt.date(2026, 11, 3), 2)]
    silver_ids = lambda: sorted(r["event_id"] for r in spark.read.format("delta").load(paths.silver_turns).collect())  # noqa: E731
    assert silver_ids() == ["a1", "a2"]

    result = backfill_late_events(spark, app_config, paths)
    assert (result.dates, result.turns) == ((LateDate(dt.date(2026, 11, 3), 2),), 2)
    assert silver_ids() == ["a1", "a2", "late1", "late2"]
    assert late_dates(spark, paths, app_config.sessionize) == []
    assert backfill_late_events(spark, app_config, paths).render() == "backfill --late: no late events; nothing rebuilt"
    # Recording again adds no row for a batch already recorded.
    before = progress.count()
    run_pipeline(spark, app_config, landing, paths)
    assert spark.read.format("delta").load(paths.silver_progress).filter("rows_dropped_by_watermark > 0").count() == 1
    assert spark.read.format("delta").load(paths.silver_progress).count() >= before
