"""The main job, and the one place that wires the stages together.

Landing files -> bronze/quarantine (``feedback.bronze``) -> silver (``feedback.silver``: sessions,
turns, rephrase links scored by the champion of ``feedback.rephrase`` or the heuristic, failure
points by the champion of ``feedback.isolation`` or the rules) -> gold (``feedback.gold``), as one
batch run (availableNow) or a running stream. The stages do not import each other forward: this
module resolves the pair scorer, the failure-point classifier and the gold fold and passes them in.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from feedback.bronze.stream import format_summary, start_bronze_stream, summarize_ingest
from feedback.config import AppConfig
from feedback.core.lake import LakePaths, require_lake
from feedback.core.privacy import DEFAULT_MIN_USERS, published, user_key
from feedback.gold.aggregate import fold_into_gold, rebuild_gold
from feedback.gold.late_events import LateBackfill, backfill_late, record_silver_progress
from feedback.isolation.spark import resolve_classifier
from feedback.rephrase.spark import resolve_scorer
from feedback.silver.stream import backfill, silver_writer, start_silver_stream, summarize_silver

LOG = logging.getLogger("feedback.pipeline")


class ProgressLogger(StreamingQueryListener):
    """Logs one line per micro-batch of every streaming query of the session."""

    def onQueryStarted(self, event: StreamingQueryListener.QueryStartedEvent) -> None:  # noqa: N802 (Spark API)
        LOG.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)

    def onQueryProgress(self, event: StreamingQueryListener.QueryProgressEvent) -> None:  # noqa: N802
        progress = event.progress
        LOG.info(
            "query %s batch %d: %d rows, %.0f rows/s processed, %s ms",
            progress.name,
            progress.batchId,
            progress.numInputRows,
            progress.processedRowsPerSecond or 0.0,
            progress.durationMs.get("triggerExecution", 0),
        )

    def onQueryIdle(self, event: StreamingQueryListener.QueryIdleEvent) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: StreamingQueryListener.QueryTerminatedEvent) -> None:  # noqa: N802
        if event.exception:
            LOG.error("query %s terminated with %s", event.id, event.exception)
        else:
            LOG.info("query %s terminated", event.id)


_LISTENERS: dict[int, ProgressLogger] = {}


def _attach_progress_logger(spark: SparkSession) -> None:
    key = id(spark)
    if key not in _LISTENERS:
        listener = ProgressLogger()
        spark.streams.addListener(listener)
        _LISTENERS[key] = listener


def _check_events_dir(config: AppConfig, events_dir: str | Path | None) -> str | None:
    """The landing folder as an absolute path; None when bronze reads Kafka (``ingest.source``)."""
    if config.ingest.source == "kafka":
        if events_dir is not None:
            raise ValueError(f"events_dir: ingest.source is kafka, so {events_dir} would not be read; leave it out")
        return None
    if events_dir is None:
        raise ValueError("events_dir: ingest.source is files: give the landing folder (--events)")
    events = Path(events_dir)
    if not events.is_dir():
        raise ValueError(f"events_dir: {events} is not a directory")
    return str(events.resolve())


def start_queries(
    spark: SparkSession, config: AppConfig, events_dir: str | Path | None, lake: LakePaths, available_now: bool
) -> list[StreamingQuery]:
    """Start every stage's streaming query, upstream first (``events_dir`` None: bronze reads Kafka)."""
    events = _check_events_dir(config, events_dir)
    require_lake(lake)
    user_key(lake)  # fail before any query starts when the lake has no usable key for gold's user sketches
    _attach_progress_logger(spark)
    bronze = start_bronze_stream(spark, config, events, lake, available_now=available_now)
    if available_now:
        # The silver query reads bronze as a Delta source: let bronze finish first so one run sees it all.
        _await(bronze)
    writer = silver_writer(
        lake, config, fold_into_gold, resolve_scorer(spark, config, lake), resolve_classifier(spark, config, lake)
    )
    return [bronze, start_silver_stream(spark, config, lake, available_now=available_now, writer=writer)]


def backfill_days(spark: SparkSession, config: AppConfig, lake: LakePaths, first_day: dt.date, last_day: dt.date) -> int:
    """Recompute silver for ``first_day``..``last_day`` from bronze with this run's scorer, then rebuild gold."""
    require_lake(lake)
    return backfill(
        spark, config, lake, first_day, last_day, resolve_scorer(spark, config, lake), rebuild_gold,
        classify=resolve_classifier(spark, config, lake),
    )  # fmt: skip


def backfill_late_events(spark: SparkSession, config: AppConfig, lake: LakePaths) -> LateBackfill:
    """Recompute silver for exactly the dates with late events, then gold once."""
    require_lake(lake)
    return backfill_late(spark, config, lake, resolve_scorer(spark, config, lake), resolve_classifier(spark, config, lake))


def _await(query: StreamingQuery) -> None:
    query.awaitTermination()
    if query.exception() is not None:
        raise RuntimeError(f"query {query.name} failed: {query.exception()}")


@dataclass(frozen=True)
class PipelineSummary:
    """Totals over the lake after a run (the CLI prints them)."""

    ingest: dict[str, int]
    silver: dict[str, int]

    def render(self) -> str:
        return (
            "bronze ingestion (all batches so far):\n"
            + format_summary(self.ingest)
            + "\nsilver and gold (all batches so far):\n"
            + format_summary(self.silver)
        )


def summarize(spark: SparkSession, lake: LakePaths) -> PipelineSummary:
    return PipelineSummary(ingest=summarize_ingest(spark, lake), silver=summarize_silver(spark, lake))


def run_pipeline(spark: SparkSession, config: AppConfig, events_dir: str | Path | None, lake: LakePaths) -> PipelineSummary:
    """Process everything now in ``events_dir`` through every stage (Trigger.AvailableNow), then return."""
    queries = start_queries(spark, config, events_dir, lake, available_now=True)
    for query in queries:
        _await(query)
    record_silver_progress(spark, lake, queries[-1], config.sessionize)
    return summarize(spark, lake)


def run_stream(
    spark: SparkSession,
    config: AppConfig,
    events_dir: str | Path | None,
    lake: LakePaths,
    stop_event: threading.Event | None = None,
) -> PipelineSummary:
    """Keep processing new files as they land until SIGINT/SIGTERM (or ``stop_event``), then stop cleanly."""
    stop = stop_event or threading.Event()

    def _request_stop(signum: int, _frame: FrameType | None) -> None:
        LOG.info("signal %d: stopping the streams after the current batch", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _request_stop)
        signal.signal(signal.SIGTERM, _request_stop)
    queries = start_queries(spark, config, events_dir, lake, available_now=False)
    silver = queries[-1]
    recorded_batch = -1
    try:
        while not stop.wait(1.0):
            failed = [q for q in queries if not q.isActive and q.exception() is not None]
            if failed:
                raise RuntimeError(f"query {failed[0].name} failed: {failed[0].exception()}")
            progress = silver.lastProgress
            if progress is not None and progress.batchId != recorded_batch:
                record_silver_progress(spark, lake, silver, config.sessionize)
                recorded_batch = progress.batchId
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
        record_silver_progress(spark, lake, silver, config.sessionize)
    return summarize(spark, lake)


def describe_lake(spark: SparkSession, lake: LakePaths, min_users: int = DEFAULT_MIN_USERS) -> str:
    """One paragraph per Delta table of the lake: version, rows and a breakdown an analyst checks first.

    Gold rows of fewer than ``min_users`` users (``privacy.min_users``) are not shown.
    """
    lines: list[str] = []

    def header(name: str, path: str) -> None:
        table = DeltaTable.forPath(spark, path)
        version = table.history(1).select("version").first()
        count = table.toDF().count()
        lines.append(f"{name}: {count} rows, Delta version {version['version'] if version else 0} ({path})")

    header("bronze/interactions", lake.bronze)
    bronze = spark.read.format("delta").load(lake.bronze)
    for row in bronze.groupBy("event_date").count().orderBy("event_date").collect():
        lines.append(f"  {row['event_date']}: {row['count']} events")
    for row in bronze.groupBy("status").count().orderBy(F.desc("count")).collect():
        lines.append(f"  status {row['status']}: {row['count']}")
    header("quarantine/interactions", lake.quarantine)
    quarantine = spark.read.format("delta").load(lake.quarantine)
    for row in (
        quarantine.select(F.explode("reasons").alias("reason")).groupBy("reason").count().orderBy(F.desc("count"), "reason").collect()
    ):
        lines.append(f"  {row['reason']}: {row['count']}")
    header("silver/turns", lake.silver_turns)
    silver = spark.read.format("delta").load(lake.silver_turns)
    totals = silver.agg(
        F.count_distinct("session_id").alias("sessions"),
        F.sum(F.col("barge_in").cast("long")).alias("barge_ins"),
        F.sum(F.col("terminated").cast("long")).alias("terminations"),
        F.count("rephrase_of").alias("rephrases"),
        F.sum(F.col("defect").cast("long")).alias("defects"),
    ).first()
    if totals:
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in totals.asDict().items()))
    for row in (
        silver.select(F.explode("defect_reasons").alias("reason")).groupBy("reason").count().orderBy(F.desc("count")).collect()
    ):
        lines.append(f"  defect reason {row['reason']}: {row['count']}")
    header("gold/defect_metrics", lake.defect_metrics)
    for row in (
        spark.read.format("delta").load(lake.defect_metrics).groupBy("domain")
        .agg(F.sum("turns").alias("turns"), F.sum("defects").alias("defects"))
        .withColumn("rate", F.round(F.col("defects") / F.col("turns"), 3)).orderBy(F.desc("rate")).collect()
    ):
        lines.append(f"  {row['domain']}: {row['turns']} turns, defect rate {row['rate']}")
    header("gold/failure_points", lake.failure_points)
    for row in (
        spark.read.format("delta").load(lake.failure_points).groupBy("failure_point")
        .agg(F.sum("defects").alias("defects")).orderBy(F.desc("defects"), "failure_point").collect()
    ):
        lines.append(f"  failed first at {row['failure_point']}: {row['defects']} defects")
    header("gold/utterance_defects", lake.utterance_defects)
    for row in (
        published(spark.read.format("delta").load(lake.utterance_defects), min_users).filter("traffic >= 5")
        .orderBy(F.desc("defect_rate"), F.desc("traffic")).limit(5).collect()
    ):
        lines.append(
            f"  '{row['normalized_utterance']}': {row['traffic']} requests, defect rate {row['defect_rate']:.2f}, "
            f"most often rephrased as '{row['top_rephrase']}'"
        )
    header("gold/rephrase_pairs", lake.rephrase_pairs)
    for row in (
        published(spark.read.format("delta").load(lake.rephrase_pairs), min_users)
        .orderBy(F.desc("chains"), "utterance").limit(5).collect()
    ):
        lines.append(
            f"  '{row['utterance']}' -> '{row['rephrase']}': {row['chains']} chains, {row['users']} users, "
            f"success share {row['success_share']:.2f}"
        )
    header("_ops/ingest_batches", lake.ingest_batches)
    header("_ops/validation/bronze_interactions", lake.validation_results)
    return "\n".join(lines)
