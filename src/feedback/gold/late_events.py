"""Events the silver stream dropped behind its watermark: counted per batch, found by date, rebuilt.

Spark's session windows drop an input row whose event time is behind the watermark and only
count it (``numRowsDroppedByWatermark`` in the query's progress). The events are safe in
bronze; what a user needs is which event dates lack them. ``late_event_counts`` finds those by
reconciliation: an event whose session must have closed by now is either in silver or was
dropped, so a date with more such events in bronze than turns in silver has late events.
``record_silver_progress`` keeps each batch's drop count (and, when it dropped any, the dates
found late at that point) in ``_ops/silver_progress``; ``backfill_late`` rebuilds exactly the
late dates.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from feedback.config import AppConfig, SessionizeConfig, interval_seconds
from feedback.core.lake import LakePaths
from feedback.core.schema import SILVER_PROGRESS_SCHEMA, TABLE_COMMENTS
from feedback.core.tables import app_id_for, ensure_table
from feedback.gold.aggregate import rebuild_gold
from feedback.silver.detect import PairScorer
from feedback.silver.failure_points import FailurePointClassifier, failure_points_by_rules
from feedback.silver.stream import SILVER_QUERY_NAME, backfill

LOG = logging.getLogger("feedback.gold.late_events")



def closed_before(latest_turn: Column, sessionize: SessionizeConfig) -> Column:
    """Event time before which every session has closed, given the latest turn silver holds.

    Silver holds a turn only once the watermark passed its session's end, so the watermark is past
    ``latest_turn``; a session ends at most ``max_session_duration`` plus the gap after any of
    its events. Anything earlier than ``latest_turn`` minus both was emitted, or dropped.
    """
    slack = interval_seconds(sessionize.max_session_duration) + interval_seconds(sessionize.session_gap)
    return latest_turn - F.make_dt_interval(secs=F.lit(float(slack)))


def late_event_counts(bronze: DataFrame, silver: DataFrame, sessionize: SessionizeConfig) -> DataFrame:
    """(``event_date``, ``late_events``) for each date with bronze events that silver lacks although their
    sessions have closed; empty when silver has no turns yet (nothing can be judged)."""
    latest = silver.agg(F.max("ts").alias("latest"))
    horizon = latest.select(closed_before(F.col("latest"), sessionize).alias("horizon"))

    def closed_per_date(frame: DataFrame, name: str) -> DataFrame:
        return (
            frame.select("event_date", "ts")
            .crossJoin(horizon)
            .filter(F.col("ts") < F.col("horizon"))
            .groupBy("event_date")
            .agg(F.count(F.lit(1)).alias(name))
        )

    counts = closed_per_date(bronze, "bronze_events").join(closed_per_date(silver, "silver_turns"), "event_date", "left")
    return counts.select(
        "event_date", (F.col("bronze_events") - F.coalesce(F.col("silver_turns"), F.lit(0))).alias("late_events")
    ).filter(F.col("late_events") > 0)


@dataclass(frozen=True)
class LateDate:
    """An event date with ``late_events`` events in bronze that silver does not hold."""

    event_date: dt.date
    late_events: int


def late_dates(spark: SparkSession, lake: LakePaths, sessionize: SessionizeConfig) -> list[LateDate]:
    """The event dates that have late events now, oldest first."""
    bronze = spark.read.format("delta").load(lake.bronze)
    silver = spark.read.format("delta").load(lake.silver_turns)
    rows = late_event_counts(bronze, silver, sessionize).orderBy("event_date").collect()
    return [LateDate(r["event_date"], int(r["late_events"])) for r in rows]


def _timestamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    # Aware, so that PySpark converts it as UTC whatever the driver's local time zone.
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def ensure_progress_table(spark: SparkSession, lake: LakePaths) -> None:
    """Create ``_ops/silver_progress`` if absent (an older one gets its comments)."""
    ensure_table(spark, lake.silver_progress, SILVER_PROGRESS_SCHEMA, (), comment=TABLE_COMMENTS["silver_progress"])


def record_silver_progress(spark: SparkSession, lake: LakePaths, query: StreamingQuery, sessionize: SessionizeConfig) -> int:
    """Append the silver query's progress not yet in ``_ops/silver_progress``; returns the rows added.

    Called by the driver after a run and while a stream runs (progress exists only there). Each
    batch appears once (an insert-only MERGE on app id and batch id), so calling it again adds
    nothing. A batch that dropped rows gets the dates found late at that point.
    """
    ensure_progress_table(spark, lake)
    app_id = app_id_for(lake.checkpoint(SILVER_QUERY_NAME))
    recorded = {
        r["batch_id"]
        for r in spark.read.format("delta").load(lake.silver_progress).filter(F.col("app_id") == app_id).select("batch_id").collect()
    }
    rows: list[tuple[object, ...]] = []
    found: list[dt.date] | None = None
    for progress in query.recentProgress:
        batch_id = int(progress.batchId)
        if batch_id in recorded:
            continue
        dropped = sum(int(op.numRowsDroppedByWatermark) for op in progress.stateOperators)
        if dropped and found is None:
            # One reconciliation serves every batch recorded now: they all see today's silver.
            found = [d.event_date for d in late_dates(spark, lake, sessionize)]
        late = found if dropped and found is not None else []
        if dropped:
            LOG.warning(
                "silver batch %d dropped %d events behind the watermark; late event dates: %s (feedback backfill --late)",
                batch_id,
                dropped,
                ", ".join(d.isoformat() for d in late) or "none closed yet",
            )
        rows.append(
            (
                app_id,
                batch_id,
                _timestamp(progress.timestamp),
                _timestamp((progress.eventTime or {}).get("watermark")),
                int(progress.numInputRows),
                dropped,
                late,
            )
        )
        recorded.add(batch_id)
    if not rows:
        return 0
    frame = spark.createDataFrame(
        rows,
        "app_id string, batch_id long, batch_timestamp timestamp, watermark timestamp, input_rows long, "
        "rows_dropped_by_watermark long, late_dates array<date>",
    ).withColumn("recorded_at", F.current_timestamp())
    (
        DeltaTable.forPath(spark, lake.silver_progress)
        .alias("t")
        .merge(frame.select(*SILVER_PROGRESS_SCHEMA.fieldNames()).alias("s"), "t.app_id = s.app_id AND t.batch_id = s.batch_id")
        .whenNotMatchedInsertAll()
        .execute()
    )
    return len(rows)


def date_ranges(dates: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive dates joined into (first, last) ranges, in order."""
    ranges: list[tuple[dt.date, dt.date]] = []
    for day in sorted(set(dates)):
        if ranges and day - ranges[-1][1] == dt.timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


@dataclass(frozen=True)
class LateBackfill:
    """What ``backfill_late`` rebuilt."""

    dates: tuple[LateDate, ...]
    turns: int

    def render(self) -> str:
        if not self.dates:
            return "backfill --late: no late events; nothing rebuilt"
        listed = ", ".join(f"{d.event_date.isoformat()} ({d.late_events} late)" for d in self.dates)
        return f"backfill --late: {self.turns} turns rewritten in silver/turns for {listed}; gold rebuilt"


def backfill_late(
    spark: SparkSession,
    config: AppConfig,
    lake: LakePaths,
    scorer: PairScorer,
    classify: FailurePointClassifier = failure_points_by_rules,
) -> LateBackfill:
    """Rebuild silver for exactly the dates with late events (pairs scored by ``scorer``, failure
    points by ``classify``), then gold once."""
    found = late_dates(spark, lake, config.sessionize)
    turns = 0
    for first_day, last_day in date_ranges(d.event_date for d in found):
        LOG.info("backfill --late: rebuilding %s..%s", first_day, last_day)
        turns += backfill(spark, config, lake, first_day, last_day, scorer, classify=classify)
    if found:
        rebuild_gold(spark, lake)
    return LateBackfill(tuple(found), turns)
