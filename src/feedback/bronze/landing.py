"""The landing folder: the streaming source over it, and a record of every file the source will not read.

A file the source skips (a name the glob refuses, a hidden name, a sub-folder when not recursive,
older than ``ingest.max_file_age``) would otherwise vanish without a trace; ``record_unread_files``
writes each one, once, to ``_ops/landing_skipped`` with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig, IngestConfig, interval_seconds
from feedback.core.lake import LakePaths
from feedback.core.schema import SKIP_HIDDEN, SKIP_IN_SUB_FOLDER, SKIP_NOT_MATCHING_GLOB, SKIP_TOO_OLD

LOG = logging.getLogger("feedback.bronze.landing")


def read_landing(spark: SparkSession, events_dir: str, config: AppConfig) -> DataFrame:
    """The streaming source: every line of every landing file whose name matches ``ingest.file_glob``.

    Sub-folders are read when ``ingest.recursive``; gzip files are decompressed by the text
    source. ``maxFileAge`` is set from ``ingest.max_file_age`` (Spark's default of 7 days would
    silently skip a late file whose modification time is older than that); what is listed but
    not read is recorded by ``record_unread_files``.
    """
    return (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", config.ingest.max_files_per_trigger)
        .option("pathGlobFilter", config.ingest.file_glob)
        .option("recursiveFileLookup", str(config.ingest.recursive).lower())
        .option("maxFileAge", f"{interval_seconds(config.ingest.max_file_age)}s")
        .load(events_dir)
        .select(
            F.col("value"),
            F.col("_metadata.file_path").alias("source_file"),
            F.col("_metadata.file_modification_time").alias("source_modified"),
        )
    )


@dataclass(frozen=True)
class LandingFile:
    """One file under the landing folder, as the file system lists it."""

    path: str
    size_bytes: int
    modified_ms: int
    relative_parts: tuple[str, ...]


def list_landing(spark: SparkSession, events_dir: str) -> list[LandingFile]:
    """Every file under ``events_dir`` (any depth), through Hadoop's file system like the source."""
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    root = jvm.org.apache.hadoop.fs.Path(events_dir)
    fs = root.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
    if not fs.exists(root):
        return []
    root_text = fs.makeQualified(root).toString().rstrip("/")
    found: list[LandingFile] = []
    files = fs.listFiles(root, True)
    while files.hasNext():
        status = files.next()
        path = status.getPath().toString()
        relative = path[len(root_text) :].strip("/") if path.startswith(root_text) else status.getPath().getName()
        found.append(LandingFile(path, int(status.getLen()), int(status.getModificationTime()), tuple(relative.split("/"))))
    return found


def unread_reasons(
    spark: SparkSession, files: list[LandingFile], ingest: IngestConfig
) -> list[tuple[LandingFile, str]]:
    """Why each listed file that the bronze source will not read is skipped (by the source's own rules).

    The glob is Hadoop's ``GlobFilter`` on the file name, as Spark applies ``pathGlobFilter``;
    names starting with ``.`` or ``_`` (at any level) are hidden; a file older than the newest
    by more than ``max_file_age`` is ignored by ``maxFileAge`` (except in a query's first batch).
    """
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    glob = jvm.org.apache.hadoop.fs.GlobFilter(ingest.file_glob)
    newest = max((f.modified_ms for f in files), default=0)
    oldest_read = newest - interval_seconds(ingest.max_file_age) * 1000
    skipped: list[tuple[LandingFile, str]] = []
    for item in files:
        if any(part.startswith((".", "_")) for part in item.relative_parts):
            skipped.append((item, SKIP_HIDDEN))
        elif len(item.relative_parts) > 1 and not ingest.recursive:
            skipped.append((item, SKIP_IN_SUB_FOLDER))
        elif not glob.accept(jvm.org.apache.hadoop.fs.Path(item.path)):
            skipped.append((item, SKIP_NOT_MATCHING_GLOB))
        elif item.modified_ms < oldest_read:
            skipped.append((item, SKIP_TOO_OLD))
    return skipped


def record_unread_files(
    spark: SparkSession, lake: LakePaths, events_dir: str, ingest: IngestConfig, app_id: str, batch_id: int
) -> int:
    """Record in ``_ops/landing_skipped`` every landing file the source lists but does not read (once per path).

    Returns how many files are new in the record. A MERGE that only inserts, so a replay adds nothing.
    """
    skipped = unread_reasons(spark, list_landing(spark, events_dir), ingest)
    too_old = [item.path for item, reason in skipped if reason == SKIP_TOO_OLD]
    if too_old:
        # maxFileAge does not apply to a query's first batch: an old file read then is not skipped.
        read = {
            row["source_file"]
            for table in (lake.bronze, lake.quarantine)
            for row in spark.read.format("delta").load(table).filter(F.col("source_file").isin(too_old))
            .select("source_file").distinct().collect()
        }
        skipped = [(item, reason) for item, reason in skipped if item.path not in read]
    if not skipped:
        return 0
    rows = spark.createDataFrame(
        [(item.path, reason, item.size_bytes, item.modified_ms, app_id, int(batch_id)) for item, reason in skipped],
        "path string, reason string, size_bytes long, modified_ms long, app_id string, batch_id long",
    ).select(
        "path",
        "reason",
        "size_bytes",
        F.timestamp_millis("modified_ms").alias("modified"),
        "app_id",
        "batch_id",
        F.current_timestamp().alias("recorded_at"),
    )
    known = spark.read.format("delta").load(lake.landing_skipped).select("path")
    new = rows.join(known, "path", "left_anti").cache()
    try:
        added = new.count()
        if added:
            (
                DeltaTable.forPath(spark, lake.landing_skipped)
                .alias("t")
                .merge(new.alias("s"), "t.path = s.path")
                .whenNotMatchedInsertAll()
                .execute()
            )
            for path, reason in new.select("path", "reason").collect():
                LOG.warning("landing file not read (%s): %s", reason, path)
    finally:
        new.unpersist()
    return added

