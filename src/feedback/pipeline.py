"""The main job: every stage that exists, as one batch run (availableNow) or a running stream.

Stages so far: landing files -> bronze/quarantine. Later stages (sessionize, detect,
aggregate) chain on bronze as Delta streaming sources and are started from here.
"""

from __future__ import annotations

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

from feedback.config import AppConfig
from feedback.ingest import format_summary, start_bronze_stream, summarize_ingest
from feedback.schema import LakePaths

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


def _check_dirs(events_dir: str | Path, lake: str | Path) -> tuple[str, LakePaths]:
    events = Path(events_dir)
    if not events.is_dir():
        raise ValueError(f"events_dir: {events} is not a directory")
    return str(events.resolve()), LakePaths.at(lake)


def start_queries(
    spark: SparkSession, config: AppConfig, events_dir: str | Path, lake: str | Path, available_now: bool
) -> list[StreamingQuery]:
    """Start every stage's streaming query, upstream first."""
    events, paths = _check_dirs(events_dir, lake)
    _attach_progress_logger(spark)
    return [start_bronze_stream(spark, config, events, paths, available_now=available_now)]


@dataclass(frozen=True)
class PipelineSummary:
    """Totals over the lake after a run (the CLI prints them)."""

    ingest: dict[str, int]

    def render(self) -> str:
        return "bronze ingestion (all batches so far):\n" + format_summary(self.ingest)


def run_pipeline(spark: SparkSession, config: AppConfig, events_dir: str | Path, lake: str | Path) -> PipelineSummary:
    """Process everything now in ``events_dir`` through every stage (Trigger.AvailableNow), then return."""
    for query in start_queries(spark, config, events_dir, lake, available_now=True):
        query.awaitTermination()
        if query.exception() is not None:
            raise RuntimeError(f"query {query.name} failed: {query.exception()}")
    return PipelineSummary(ingest=summarize_ingest(spark, LakePaths.at(lake)))


def run_stream(
    spark: SparkSession,
    config: AppConfig,
    events_dir: str | Path,
    lake: str | Path,
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
    try:
        while not stop.wait(1.0):
            failed = [q for q in queries if not q.isActive and q.exception() is not None]
            if failed:
                raise RuntimeError(f"query {failed[0].name} failed: {failed[0].exception()}")
    finally:
        for query in queries:
            if query.isActive:
                query.stop()
    return PipelineSummary(ingest=summarize_ingest(spark, LakePaths.at(lake)))


def describe_lake(spark: SparkSession, lake: str | Path) -> str:
    """One paragraph per Delta table of the lake: version, rows and a breakdown an analyst checks first."""
    paths = LakePaths.at(lake)
    lines: list[str] = []

    def header(name: str, path: str) -> None:
        table = DeltaTable.forPath(spark, path)
        version = table.history(1).select("version").first()
        count = table.toDF().count()
        lines.append(f"{name}: {count} rows, Delta version {version['version'] if version else 0} ({path})")

    header("bronze/interactions", paths.bronze)
    bronze = spark.read.format("delta").load(paths.bronze)
    for row in bronze.groupBy("event_date").count().orderBy("event_date").collect():
        lines.append(f"  {row['event_date']}: {row['count']} events")
    for row in bronze.groupBy("status").count().orderBy(F.desc("count")).collect():
        lines.append(f"  status {row['status']}: {row['count']}")
    header("quarantine/interactions", paths.quarantine)
    quarantine = spark.read.format("delta").load(paths.quarantine)
    for row in (
        quarantine.select(F.explode("reasons").alias("reason")).groupBy("reason").count().orderBy(F.desc("count"), "reason").collect()
    ):
        lines.append(f"  {row['reason']}: {row['count']}")
    header("_ops/ingest_batches", paths.ingest_batches)
    header("_ops/validation/bronze_interactions", paths.validation_results)
    return "\n".join(lines)
