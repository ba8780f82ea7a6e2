"""Delta table helpers every stage shares: creation, the app id of a checkpoint, writes that replay safely."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from delta.tables import DeltaTable
from pyspark import InheritableThread
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructField, StructType

from feedback.core.schema import sql_text

LOG = logging.getLogger("feedback.core.tables")

APP_ID_FILE = "_feedback_app_id"
CONSTRAINT_PREFIX = "delta.constraints."
_CONSTRAINT_NAME = re.compile(r"[a-z][a-z0-9_]*")


def ensure_table(
    spark: SparkSession,
    path: str,
    schema: StructType,
    partition_by: tuple[str, ...],
    properties: Mapping[str, str] | None = None,
    *,
    comment: str,
    constraints: Mapping[str, str] | None = None,
) -> DeltaTable:
    """Create the Delta table at ``path`` if absent, or bring an existing one up to this description.

    Why: readers see the schema before any data lands, and the table describes itself:
    ``comment`` and each column's comment (the ``comment`` of its StructField metadata, which
    every column of ``schema`` must carry) show in ``DESCRIBE TABLE``; ``properties`` and the
    CHECK ``constraints`` (name -> SQL expression) in ``DESCRIBE DETAIL``. A new table gets all
    of it in its one creating commit. A table made by an older version gets what it lacks, in
    metadata-only commits (``upgrade_table``); one that matches gets no commit at all.
    """
    if not isinstance(comment, str) or not comment.strip():
        raise ValueError(f"comment must be a non-empty string, got {comment!r}")
    uncommented = [f.name for f in schema.fields if not str(f.metadata.get("comment", "")).strip()]
    if uncommented:
        raise ValueError(f"schema: every column needs a comment in its metadata, missing for {uncommented}")
    for name in constraints or {}:
        if not _CONSTRAINT_NAME.fullmatch(name):
            raise ValueError(f"constraints: a name must be lower-case letters, digits and _, got {name!r}")
    existed = DeltaTable.isDeltaTable(spark, path)
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema).comment(comment)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    for key, value in (properties or {}).items():
        builder = builder.property(key, value)
    # A new table is empty, so its constraints can be declared with it instead of one ADD CONSTRAINT
    # (a commit and a scan) each.
    for name, expression in (constraints or {}).items():
        builder = builder.property(CONSTRAINT_PREFIX + name, expression)
    table = builder.execute()
    if existed:
        upgrade_table(spark, path, schema, properties or {}, comment=comment, constraints=constraints or {})
    return table


def _delta_path(path: str) -> str:
    return "delta.`" + path.replace("`", "``") + "`"


def _identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _column_comment(field: StructField) -> str:
    return str(field.metadata.get("comment", ""))


def _table_comment(spark: SparkSession, target: str) -> str | None:
    """The table comment that ``DESCRIBE TABLE EXTENDED`` shows for ``target``; None when it has none."""
    detailed = False
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {target}").collect():
        if row["col_name"] == "# Detailed Table Information":
            detailed = True
        elif detailed and row["col_name"] == "Comment":
            return str(row["data_type"])
    return None


def upgrade_table(
    spark: SparkSession,
    path: str,
    schema: StructType,
    properties: Mapping[str, str],
    *,
    comment: str,
    constraints: Mapping[str, str],
) -> list[str]:
    """Give the existing Delta table at ``path`` what ``ensure_table`` would have created it with; returns the SQL run.

    In order, each only when needed: the nullable columns of ``schema`` it lacks (a NOT NULL column
    cannot be added to a table with rows), the column comments (one commit for all), the table
    comment and ``properties`` (one commit), then each missing CHECK constraint: ``ADD CONSTRAINT``
    first checks the rows already there and fails, naming the constraint, on one that breaks it. A
    constraint is matched by name, so one already present is left as it is. Partitioning is never
    changed. Each statement is a metadata commit, which can conflict with a concurrent writer's
    commit; the failing side is retried by its job.
    """
    target = _delta_path(path)
    # Read from the table's metadata only: DESCRIBE DETAIL would compute (and cache) the state of
    # every file, which a stream's start should not pay for, nor leave behind.
    present = {field.name: field for field in spark.read.format("delta").load(path).schema.fields}
    current_properties = {row["key"]: row["value"] for row in spark.sql(f"SHOW TBLPROPERTIES {target}").collect()}
    description = _table_comment(spark, target)
    statements: list[str] = []
    missing = [field for field in schema.fields if field.name not in present and field.nullable]
    if missing:
        columns = ", ".join(
            f"{_identifier(f.name)} {f.dataType.simpleString()} COMMENT {sql_text(_column_comment(f))}" for f in missing
        )
        statements.append(f"ALTER TABLE {target} ADD COLUMNS ({columns})")
    stale = [
        field
        for field in schema.fields
        if field.name in present and present[field.name].metadata.get("comment") != _column_comment(field)
    ]
    if stale:
        changes = ", ".join(f"{_identifier(f.name)} COMMENT {sql_text(_column_comment(f))}" for f in stale)
        statements.append(f"ALTER TABLE {target} ALTER COLUMN {changes}")
    wanted = {key: value for key, value in properties.items() if current_properties.get(key) != value}
    if description != comment:
        wanted = {"comment": comment, **wanted}
    if wanted:
        pairs = ", ".join(f"{sql_text(key)} = {sql_text(value)}" for key, value in wanted.items())
        statements.append(f"ALTER TABLE {target} SET TBLPROPERTIES ({pairs})")
    for name, expression in constraints.items():
        if CONSTRAINT_PREFIX + name not in current_properties:
            statements.append(f"ALTER TABLE {target} ADD CONSTRAINT {name} CHECK ({expression})")
    for statement in statements:
        LOG.info("bringing %s up to date: %s", path, statement)
        spark.sql(statement)
    return statements


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


def table_version(spark: SparkSession, path: str) -> int:
    """The latest Delta version of the table at ``path``."""
    row = DeltaTable.forPath(spark, path).history(1).select("version").first()
    if row is None:
        raise ValueError(f"path: {path} has no Delta history")
    return int(row["version"])
