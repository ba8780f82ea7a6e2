"""Delta table helpers every stage shares: creation, the app id of a checkpoint, writes that replay safely."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from delta.tables import DeltaTable
from pyspark import InheritableThread
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

APP_ID_FILE = "_feedback_app_id"


def ensure_table(
    spark: SparkSession,
    path: str,
    schema: StructType,
    partition_by: tuple[str, ...],
    properties: dict[str, str] | None = None,
) -> DeltaTable:
    """Create the Delta table at ``path`` if absent, so readers see its schema before any data lands."""
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    for key, value in (properties or {}).items():
        builder = builder.property(key, value)
    return builder.execute()


def app_id_for(checkpoint: str) -> str:
    """A stable id for the query writing through ``checkpoint``, kept next to its offsets.

    Delta skips an idempotent write whose ``txnVersion`` is not above the last one seen for
    its ``txnAppId``. A deleted checkpoint restarts ``batch_id`` at 0, so the app id must die
    with the checkpoint, or every later write would be silently skipped.
    """
    if "://" in checkpoint and not checkpoint.startswith("file:"):
        raise ValueError(f"checkpoint must be a local path for the app id file, got {checkpoint!r}")
    directory = Path(checkpoint.removeprefix("file:"))
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / APP_ID_FILE
    if not marker.exists():
        candidate = directory / f".{APP_ID_FILE}.{uuid.uuid4().hex}"
        candidate.write_text(f"feedback-{uuid.uuid4()}")
        candidate.replace(marker)
    return marker.read_text().strip()


def append_once(
    frame: DataFrame,
    path: str,
    app_id: str,
    version: int,
    partition_by: tuple[str, ...] = (),
    max_rows_per_file: int | None = None,
    merge_schema: bool = False,
) -> None:
    """Append ``frame`` to the Delta table at ``path`` unless (``app_id``, ``version``) already committed there.

    ``max_rows_per_file`` splits a task's output into files of at most that many rows, in the
    frame's order; ``merge_schema`` adds columns the table does not have yet (operational tables
    that gained columns since they were created).
    """
    write = frame.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", version)
    if partition_by:
        write = write.partitionBy(*partition_by)
    if max_rows_per_file is not None:
        if max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file must be >= 1, got {max_rows_per_file}")
        write = write.option("maxRecordsPerFile", max_rows_per_file)
    if merge_schema:
        write = write.option("mergeSchema", "true")
    write.save(path)


@contextmanager
def idempotent_writes(spark: SparkSession, app_id: str, version: int) -> Iterator[None]:
    """Make the Delta commands inside skip themselves if ``(app_id, version)`` already committed.

    MERGE takes no writer options, so Delta reads these (internal) session confs instead.
    """
    spark.conf.set("spark.databricks.delta.write.txnAppId", app_id)
    spark.conf.set("spark.databricks.delta.write.txnVersion", str(version))
    try:
        yield
    finally:
        spark.conf.unset("spark.databricks.delta.write.txnAppId")
        spark.conf.unset("spark.databricks.delta.write.txnVersion")


def run_together(actions: Sequence[Callable[[], None]]) -> None:
    """Run ``actions`` (writes to different tables) on threads at once and wait for all of them.

    Why: each Delta commit spends most of a second on the driver (log write, snapshot update)
    while the cores idle; writes to different tables do not depend on each other, so their
    jobs and commits can overlap. Threads inherit the caller's Spark local properties. Every
    action runs to its end; the first error is then raised.
    """
    if len(actions) <= 1:
        for action in actions:
            action()
        return
    errors: list[BaseException] = []

    def guarded(action: Callable[[], None]) -> None:
        try:
            action()
        except BaseException as error:  # re-raised on the caller's thread below
            errors.append(error)

    threads = [InheritableThread(target=guarded, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
