"""OPTIMIZE and VACUUM of every table of a lake (``feedback maintain``, the nightly bundle job).

Streams and MERGEs leave many small files (a micro-batch writes a few per table), and every
rewrite (MERGE, overwrite, OPTIMIZE) leaves the files it replaced on storage for time travel.
OPTIMIZE bin-packs the small files of each partition into large ones; VACUUM then deletes the
files no version younger than ``maintenance.vacuum_retention_hours`` still uses.

``bronze/interactions`` is vacuumed but never compacted: the silver stream admits whole bronze
files per micro-batch (``sessionize.max_rows_per_batch`` / ``ingest.max_rows_per_file``) and a
new silver query reads them in file order, which the bronze writer keeps in event time.
OPTIMIZE would merge them into files of any size, in size order, so a replayed silver could
take a whole day in one batch and drop events behind its watermark.

Run it when nothing else writes to the lake, or accept that a commit that conflicts with it
(OPTIMIZE and a MERGE replacing the same files) fails on one side and is retried by its job.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from feedback.config import DELTA_SAFE_RETENTION_HOURS, AppConfig, MaintenanceConfig
from feedback.core.lake import LakePaths, require_lake

RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"

NOT_COMPACTED = {
    "bronze": "the silver stream reads its files whole and in event-time order",
}
"""Tables OPTIMIZE leaves alone (``LakePaths`` attribute -> why)."""


@dataclass(frozen=True)
class TableMaintenance:
    """What maintenance did to one table: ``files_removed``/``files_added`` by OPTIMIZE (None when it did
    not run, ``optimize_skipped`` saying why) and ``files_deleted`` from storage by VACUUM."""

    table: str
    files_removed: int | None
    files_added: int | None
    files_deleted: int
    optimize_skipped: str | None = None

    def render(self) -> str:
        if self.files_removed is None or self.files_added is None:
            optimized = f"OPTIMIZE skipped ({self.optimize_skipped})"
        else:
            optimized = f"OPTIMIZE removed {self.files_removed} files, added {self.files_added}"
        return f"{self.table}: {optimized}; VACUUM deleted {self.files_deleted} files"


@dataclass(frozen=True)
class MaintenanceReport:
    """The outcome of ``run``: one entry per table that exists, the absent ones by name."""

    lake: str
    retention_hours: int
    tables: tuple[TableMaintenance, ...]
    absent: tuple[str, ...]

    def render(self) -> str:
        check = ", Delta's retention check off" if self.retention_hours < DELTA_SAFE_RETENTION_HOURS else ""
        lines = [f"maintenance of {self.lake} (VACUUM retention {self.retention_hours} hours{check})"]
        lines += [f"  {entry.render()}" for entry in self.tables]
        if self.absent:
            lines.append(f"  not created yet: {', '.join(self.absent)}")
        return "\n".join(lines)


@contextmanager
def session_confs(spark: SparkSession, values: Mapping[str, str]) -> Iterator[None]:
    """Set Spark session confs for the block, then put back what was there (unset if nothing was)."""
    previous = {key: spark.conf.get(key, None) for key in values}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def optimize_table(spark: SparkSession, path: str) -> tuple[int, int]:
    """Bin-pack the small files of the Delta table at ``path``; returns (files removed, files added)."""
    row = DeltaTable.forPath(spark, path).optimize().executeCompaction().first()
    if row is None:
        raise ValueError(f"path: OPTIMIZE of {path} returned no metrics")
    metrics = row["metrics"]
    return int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"])


def vacuum_table(spark: SparkSession, path: str, retention_hours: int) -> int:
    """VACUUM the Delta table at ``path`` with ``retention_hours``; returns the files it deleted.

    The count is the ``numDeletedFiles`` Delta logs in the ``VACUUM END`` commit, so VACUUM logging
    is turned on for the command. Delta refuses a retention below its safety default
    (``DELTA_SAFE_RETENTION_HOURS``) unless ``spark.databricks.delta.retentionDurationCheck.enabled``
    is false: it is set so only then, and only for this command. Delta lists the table's folders
    in as many tasks as ``spark.sql.sources.parallelPartitionDiscovery.parallelism`` says, 10,000
    unless the session sets it: the command then uses the cluster's default parallelism instead,
    which lists as many folders at once without scheduling thousands of empty tasks (a minute per
    table on two cores).
    """
    if isinstance(retention_hours, bool) or not isinstance(retention_hours, int) or retention_hours < 0:
        raise ValueError(f"retention_hours must be an integer >= 0, got {retention_hours!r}")
    table = DeltaTable.forPath(spark, path)
    before = _latest_version(table)
    confs = {VACUUM_LOGGING: "true"}
    if spark.conf.get(LISTING_PARALLELISM, None) is None:
        confs[LISTING_PARALLELISM] = str(max(1, spark.sparkContext.defaultParallelism))
    if retention_hours < DELTA_SAFE_RETENTION_HOURS:
        confs[RETENTION_CHECK] = "false"
    with session_confs(spark, confs):
        spark.sql(f"VACUUM delta.`{path.replace('`', '``')}` RETAIN {retention_hours} HOURS")
    ended = (
        table.history()
        .filter(f"version > {before} AND operation = 'VACUUM END'")
        .orderBy("version", ascending=False)
        .select("operationMetrics")
        .first()
    )
    if ended is None:
        raise ValueError(f"path: VACUUM of {path} logged no VACUUM END commit")
    return int((ended["operationMetrics"] or {}).get("numDeletedFiles", 0))


def _latest_version(table: DeltaTable) -> int:
    row = table.history(1).select("version").first()
    if row is None:
        raise ValueError("table has no Delta history")
    return int(row["version"])


def maintain_lake(spark: SparkSession, lake: LakePaths, config: MaintenanceConfig) -> MaintenanceReport:
    """OPTIMIZE (when ``config.optimize``, bronze excepted) then VACUUM each table of ``lake`` that exists."""
    done: list[TableMaintenance] = []
    absent: list[str] = []
    for name, path in lake.tables().items():
        label = lake.relative(path)
        if not DeltaTable.isDeltaTable(spark, path):
            absent.append(label)
            continue
        removed: int | None = None
        added: int | None = None
        skipped: str | None = None
        if not config.optimize:
            skipped = "maintenance.optimize is false"
        elif name in NOT_COMPACTED:
            skipped = NOT_COMPACTED[name]
        else:
            removed, added = optimize_table(spark, path)
        deleted = vacuum_table(spark, path, config.vacuum_retention_hours)
        done.append(TableMaintenance(label, removed, added, deleted, skipped))
    return MaintenanceReport(lake.root, config.vacuum_retention_hours, tuple(done), tuple(absent))


def run(spark: SparkSession, config: AppConfig, lake: LakePaths) -> MaintenanceReport:
    """``feedback maintain --lake LAKE``: maintain every table of the lake with ``config.maintenance``."""
    return maintain_lake(spark, require_lake(lake), config.maintenance)
