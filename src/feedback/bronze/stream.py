"""The bronze stream: landing lines -> ``bronze/interactions`` (valid, deduplicated) and ``quarantine/interactions``.

``BronzeBatchWriter`` is the ``foreachBatch`` sink: a short orchestrator over pure builders
(the rows each table receives, the batch's accounting). Every write it makes is idempotent under
replay of a micro-batch (Spark replays the same offsets with the same ``batch_id`` after a
crash): Delta appends carry ``txnAppId``/``txnVersion``, and rows already in bronze are told
apart from real duplicates by the ``ingest_batch`` they were written by. Deduplication is by
``event_id`` against the whole table (restricted to the event dates present in the batch), not
under an event-time watermark, so files that land days late are still ingested exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from feedback.bronze.contract import parse_events, split_valid
from feedback.bronze.kafka_source import read_kafka
from feedback.bronze.landing import read_landing, record_unread_files
from feedback.bronze.validation import SUITE_NAME, BatchValidator, ValidationOutcome, batch_profile
from feedback.config import AppConfig, IngestConfig, interval_seconds
from feedback.core.checkpoints import checkpointed
from feedback.core.lake import LakePaths
from feedback.core.schema import (
    BRONZE_CONSTRAINTS,
    BRONZE_PARTITION_COLUMNS,
    BRONZE_SCHEMA,
    INGEST_BATCHES_SCHEMA,
    LANDING_SKIPPED_SCHEMA,
    QUARANTINE_PARTITION_COLUMNS,
    QUARANTINE_SCHEMA,
    REASON_FAILED_EXPECTATION,
    TABLE_COMMENTS,
    VALIDATION_RESULTS_SCHEMA,
)
from feedback.core.tables import app_id_for, append_once, ensure_table, run_together

LOG = logging.getLogger("feedback.bronze.stream")

BRONZE_QUERY_NAME = "bronze_interactions"


def deduplicate_batch(valid: DataFrame, repeated: DataFrame | None = None) -> DataFrame:
    """Keep one row per ``event_id``, chosen deterministically so a replayed batch picks the same one.

    Duplicates are rare, so only the rows of repeated ids are ranked (a sort); the rest pass
    through a broadcast anti-join, keeping their partitioning. ``repeated`` (a column
    ``event_id``: the ids that occur more than once in ``valid``) is counted here when not given.
    """
    if repeated is None:
        repeated = valid.groupBy("event_id").count().filter(F.col("count") > 1).select("event_id")
    singles = valid.join(F.broadcast(repeated), "event_id", "left_anti")
    order = Window.partitionBy("event_id").orderBy(F.col("source_file"), F.col("raw"))
    chosen = (
        valid.join(F.broadcast(repeated), "event_id", "left_semi")
        .withColumn("_rank", F.row_number().over(order))
        .filter(F.col("_rank") == 1)
        .drop("_rank")
    )
    return singles.unionByName(chosen)


def match_event_ids(valid: DataFrame, bronze_ids: DataFrame) -> DataFrame:
    """The batch's event ids that need a decision: those repeated in the batch or already in bronze.

    One shuffle of ids (the batch's and bronze's together) answers both questions, instead of a
    count per id and then a join. Columns: ``event_id``, ``copies`` (rows in the batch) and
    ``existing_batch`` (the ``ingest_batch`` that wrote it to bronze, null if none). Few rows,
    except when a batch is replayed, where every id is already in bronze.

    Args:
        valid: the batch's valid events (column ``event_id``).
        bronze_ids: ids already in bronze (columns ``event_id``, ``ingest_batch``).
    """
    batch_side = valid.select("event_id", F.lit(1).alias("_copies"), F.lit(None).cast("string").alias("_batch"))
    bronze_side = bronze_ids.select("event_id", F.lit(0).alias("_copies"), F.col("ingest_batch").alias("_batch"))
    copies = F.col("copies")
    return (
        batch_side.unionByName(bronze_side)
        .groupBy("event_id")
        .agg(F.sum("_copies").alias("copies"), F.max("_batch").alias("existing_batch"))
        .filter((copies > 1) | ((copies > 0) & F.col("existing_batch").isNotNull()))
    )


# Data-skipping statistics only on the columns readers filter by, not on the long raw payload.
BRONZE_PROPERTIES = {"delta.dataSkippingStatsColumns": "event_id,ts,user_id,device_id,status,domain,intent,ingest_batch"}


def ensure_bronze_tables(spark: SparkSession, lake: LakePaths) -> None:
    """Create bronze, quarantine, the ingest-batch log and the validation results if absent.

    Bronze carries the contract's rules as CHECK constraints (``BRONZE_CONSTRAINTS``). The
    creations are independent commits, so they run at once (each is mostly driver time).
    """
    run_together(
        [
            lambda: ensure_table(
                spark, lake.bronze, BRONZE_SCHEMA, BRONZE_PARTITION_COLUMNS, BRONZE_PROPERTIES,
                comment=TABLE_COMMENTS["bronze"], constraints=BRONZE_CONSTRAINTS,
            ),
            lambda: ensure_table(
                spark, lake.quarantine, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_COLUMNS,
                {"delta.dataSkippingStatsColumns": "event_id,source_file,ingest_batch"}, comment=TABLE_COMMENTS["quarantine"],
            ),
            lambda: ensure_table(spark, lake.ingest_batches, INGEST_BATCHES_SCHEMA, (), comment=TABLE_COMMENTS["ingest_batches"]),
            lambda: ensure_table(
                spark, lake.validation_results, VALIDATION_RESULTS_SCHEMA, (), comment=TABLE_COMMENTS["validation_results"]
            ),
            lambda: ensure_table(spark, lake.landing_skipped, LANDING_SKIPPED_SCHEMA, (), comment=TABLE_COMMENTS["landing_skipped"]),
        ]
    )


@dataclass(frozen=True)
class LineTotals:
    """What one pass over a parsed batch counts: its lines, the rejected ones, its files and event dates."""

    lines: int
    rejected: int
    files: int
    dates: tuple[dt.date, ...]


@dataclass(frozen=True)
class DuplicateStats:
    """How the batch's valid events relate to each other and to bronze (from ``match_event_ids``).

    ``extra_copies``: rows beyond the first of ids repeated in the batch; ``replayed``: ids this
    very batch already wrote (a replay after a crash); ``existing``: ids an earlier batch wrote.
    """

    extra_copies: int
    replayed: int
    existing: int


@dataclass(frozen=True)
class BatchCounts:
    """The accounting of one micro-batch: lines = inserted + quarantined + duplicates."""

    files: int
    lines_read: int
    bronze_inserted: int
    quarantined: int
    duplicates_in_batch: int
    duplicates_existing: int


def batch_counts(totals: LineTotals, duplicates: DuplicateStats) -> BatchCounts:
    """The batch's accounting from its line totals and duplicate statistics.

    A replayed batch counts its own earlier rows as inserted, so its accounting equals the
    first attempt's. Example: 10 lines, 2 rejected, one id twice and one already in bronze
    from an earlier batch: 8 valid, 7 unique, 6 inserted.

    >>> batch_counts(LineTotals(10, 2, 1, ()), DuplicateStats(extra_copies=1, replayed=0, existing=1))
    BatchCounts(files=1, lines_read=10, bronze_inserted=6, quarantined=2, duplicates_in_batch=1, duplicates_existing=1)
    """
    unique = totals.lines - totals.rejected - duplicates.extra_copies
    return BatchCounts(
        files=totals.files,
        lines_read=totals.lines,
        bronze_inserted=unique - duplicates.existing,
        quarantined=totals.rejected,
        duplicates_in_batch=duplicates.extra_copies,
        duplicates_existing=duplicates.existing,
    )


def whole_batch_counts(totals: LineTotals) -> BatchCounts:
    """The accounting of a batch that failed the gate: every line quarantined."""
    return BatchCounts(totals.files, totals.lines, 0, totals.lines, 0, 0)


def offset_ranges(parsed: DataFrame) -> str | None:
    """The first and last ``source_offset`` per ``source_file`` (Kafka partition) of a batch, as JSON; None without offsets."""
    rows = (
        parsed.filter(F.col("source_offset").isNotNull())
        .groupBy("source_file")
        .agg(F.min("source_offset").alias("first"), F.max("source_offset").alias("last"))
        .collect()
    )
    if not rows:
        return None
    return json.dumps({row["source_file"]: [int(row["first"]), int(row["last"])] for row in sorted(rows, key=lambda r: r["source_file"])})


def line_totals(parsed: DataFrame) -> LineTotals:
    """Count a ``parse_events`` batch in one aggregation (lines, rejected lines, files, valid event dates)."""
    valid_row = F.size("reasons") == 0
    totals = parsed.agg(
        F.count(F.lit(1)).alias("lines"),
        F.sum(F.when(valid_row, 0).otherwise(1)).alias("rejected"),
        F.count_distinct("source_file").alias("files"),
        F.collect_set(F.when(valid_row, F.col("event_date"))).alias("dates"),
    ).first()
    if totals is None:
        return LineTotals(0, 0, 0, ())
    return LineTotals(int(totals["lines"]), int(totals["rejected"] or 0), int(totals["files"]), tuple(sorted(totals["dates"])))


def duplicate_stats(flags: DataFrame, batch_tag: str) -> DuplicateStats:
    """Summarise ``match_event_ids`` rows for the batch tagged ``batch_tag`` (one aggregation)."""
    existing_batch = F.col("existing_batch")
    stats = flags.agg(
        F.sum(F.col("copies") - 1).alias("extra_copies"),
        F.sum(F.when(existing_batch == F.lit(batch_tag), 1).otherwise(0)).alias("replayed"),
        F.sum(F.when(existing_batch.isNotNull() & (existing_batch != F.lit(batch_tag)), 1).otherwise(0)).alias("existing"),
    ).first()
    if stats is None:
        return DuplicateStats(0, 0, 0)
    return DuplicateStats(int(stats["extra_copies"] or 0), int(stats["replayed"] or 0), int(stats["existing"] or 0))


def repeated_ids(flags: DataFrame) -> DataFrame:
    """The ids of ``match_event_ids`` that occur more than once in the batch."""
    return flags.filter(F.col("copies") > 1).select("event_id")


def ids_in_bronze(flags: DataFrame) -> DataFrame:
    """The ids of ``match_event_ids`` that some batch (this one on a replay) already wrote."""
    return flags.filter(F.col("existing_batch").isNotNull()).select("event_id")


def new_bronze_rows(unique: DataFrame, in_bronze: DataFrame, ingest_time: Column, batch_tag: str) -> DataFrame:
    """The batch's deduplicated events that bronze lacks, as ``BRONZE_SCHEMA`` rows stamped with the batch."""
    stamped = {"ingest_time", "ingest_batch"}
    return (
        unique.join(F.broadcast(in_bronze), "event_id", "left_anti")
        .select(
            *[F.col(name) for name in BRONZE_SCHEMA.fieldNames() if name not in stamped],
            ingest_time.alias("ingest_time"),
            F.lit(batch_tag).alias("ingest_batch"),
        )
        .select(*BRONZE_SCHEMA.fieldNames())
    )


class PhaseTimer:
    """Wall time of the named phases of one micro-batch, logged at DEBUG to find where a batch goes."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.phases: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.phases.append((name, now - self._last))
        self._last = now

    def render(self) -> str:
        return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.phases)


def in_event_time_order(rows: DataFrame, target_files: int = 1) -> DataFrame:
    """Bronze rows laid out so that the table's files follow event time.

    Why: silver reads bronze a bounded number of files per micro-batch
    (``sessionize.max_rows_per_batch``) and drops what is older than its watermark, so the files
    must reach it in event-time order. A new silver query reads the table's snapshot ordered by
    file modification time, later commits in the order of their files. One writer task that
    writes the batch sorted by (date, time), split into files of ``ingest.max_rows_per_file`` rows,
    gives both orders. ``target_files`` > 1 writes each date's time range with that many tasks in
    parallel: faster on very large batches, but a new silver query then sees a commit's files in
    the order the tasks finished them.
    """
    if target_files < 1:
        raise ValueError(f"target_files must be >= 1, got {target_files}")
    if target_files == 1:
        ranged = rows.repartition(1)
    else:
        dates = rows.select("event_date").distinct().count()
        ranged = rows.repartitionByRange(max(1, dates) * target_files, "event_date", "ts")
    return ranged.sortWithinPartitions("event_date", "ts", "event_id")


def quarantine_rows(lines: DataFrame, ingest_time: Column, batch_tag: str) -> DataFrame:
    """``parse_events`` lines (with their ``reasons``) as rows of ``quarantine/interactions``."""
    return lines.select(
        "raw",
        "reasons",
        "event_id",
        "source_file",
        ingest_time.alias("ingest_time"),
        F.to_date(ingest_time).alias("ingest_date"),
        F.lit(batch_tag).alias("ingest_batch"),
        "raw_base64",
        "line_bytes",
        "source_offset",
    )


def failed_gate_rows(parsed: DataFrame, failed_expectations: tuple[str, ...], ingest_time: Column, batch_tag: str) -> DataFrame:
    """Every line of a batch that failed the gate as quarantine rows; a valid line's reasons are the failed expectations."""
    failed = F.array(*[F.lit(f"{REASON_FAILED_EXPECTATION}:{name}") for name in failed_expectations])
    reasons = F.when(F.size("reasons") > 0, F.col("reasons")).otherwise(failed)
    return quarantine_rows(parsed.withColumn("reasons", reasons), ingest_time, batch_tag)


INGEST_BATCH_RECORD = (
    "app_id string, batch_id long, files long, lines_read long, bronze_inserted long, "
    "quarantined long, duplicates_in_batch long, duplicates_existing long, validation_run boolean, "
    "validation_success boolean, validation_failed_expectations array<string>, "
    "validation_seconds double, batch_seconds double, source_offsets string"
)
"""The columns of ``ingest_batch_record`` (``_ops/ingest_batches`` less ``ingest_time``)."""


def ingest_batch_record(
    app_id: str,
    batch_id: int,
    counts: BatchCounts,
    outcome: ValidationOutcome | None,
    batch_seconds: float,
    source_offsets: str | None = None,
) -> tuple[object, ...]:
    """The ``_ops/ingest_batches`` row of one micro-batch, in ``INGEST_BATCH_RECORD`` order."""
    return (
        app_id,
        int(batch_id),
        counts.files,
        counts.lines_read,
        counts.bronze_inserted,
        counts.quarantined,
        counts.duplicates_in_batch,
        counts.duplicates_existing,
        outcome is not None,
        outcome.success if outcome else None,
        list(outcome.failed_expectations) if outcome else [],
        outcome.seconds if outcome else 0.0,
        batch_seconds,
        source_offsets,
    )


VALIDATION_RECORD = (
    "app_id string, batch_id long, suite string, success boolean, evaluated_expectations long, "
    "successful_expectations long, failed_expectations string, result_json string"
)
"""The columns of ``validation_record`` (``_ops/validation/bronze_interactions`` less ``validated_at``)."""


def validation_record(app_id: str, outcome: ValidationOutcome) -> tuple[object, ...]:
    """The ``_ops/validation/bronze_interactions`` row of one gate run, in ``VALIDATION_RECORD`` order."""
    return (
        app_id,
        outcome.batch_id,
        SUITE_NAME,
        outcome.success,
        outcome.evaluated,
        outcome.successful,
        json.dumps(list(outcome.failed_expectations)),
        outcome.result_json,
    )


def describe_batch(batch_id: int, counts: BatchCounts, outcome: ValidationOutcome | None, batch_seconds: float) -> str:
    """The one log line of a bronze micro-batch."""
    if outcome is None:
        gate = "skipped"
    else:
        gate = "passed" if outcome.success else f"FAILED {list(outcome.failed_expectations)}"
    return (
        f"bronze batch {batch_id}: {counts.lines_read} lines from {counts.files} files -> {counts.bronze_inserted} inserted, "
        f"{counts.quarantined} quarantined, {counts.duplicates_in_batch + counts.duplicates_existing} duplicates "
        f"({counts.duplicates_in_batch} in batch, {counts.duplicates_existing} already in bronze); "
        f"validation {gate} in {outcome.seconds if outcome else 0.0:.2f}s; batch {batch_seconds:.2f}s"
    )


class BatchRejected(RuntimeError):
    """A bronze batch failed the Great Expectations gate and ``on_failure`` is ``stop``: nothing was written."""


class BronzeBatchWriter:
    """The ``foreachBatch`` function of the bronze stream (idempotent under batch replay)."""

    def __init__(
        self,
        lake: LakePaths,
        app_id: str,
        validator: BatchValidator | None,
        target_files: int = 1,
        max_rows_per_file: int = 25_000,
        ingest: IngestConfig | None = None,
        landing_dir: str | None = None,
    ) -> None:
        """``ingest`` sets the line limits (defaults when None); ``landing_dir``, when given, is
        listed each batch so that files the source skips are recorded (``record_unread_files``)."""
        if not app_id:
            raise ValueError("app_id must be non-empty")
        if target_files < 1:
            raise ValueError(f"target_files must be >= 1, got {target_files}")
        if max_rows_per_file < 1:
            raise ValueError(f"max_rows_per_file must be >= 1, got {max_rows_per_file}")
        self.lake = lake
        self.app_id = app_id
        self.validator = validator
        self.target_files = target_files
        self.max_rows_per_file = max_rows_per_file
        self.ingest = ingest or IngestConfig()
        self.landing_dir = landing_dir

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        spark = batch.sparkSession
        batch_tag = f"{self.app_id}:{batch_id}"
        ingest_time = F.current_timestamp()
        timer = PhaseTimer()
        # Parsed once with its lineage cut, so the writes and GX below do not re-plan or re-parse it.
        with checkpointed(self._parse(batch)) as parsed:
            timer.mark("parse")
            offsets = offset_ranges(parsed) if "source_offset" in batch.columns else None
            outcome = self._gate(spark, parsed, batch_id, ingest_time)
            timer.mark("validate")
            if outcome is not None and not outcome.success:
                counts = self._quarantine_whole(parsed, batch_id, batch_tag, ingest_time, outcome)
            else:
                counts = self._write(spark, parsed, batch_id, batch_tag, ingest_time, timer)
        elapsed = time.perf_counter() - started
        record = spark.createDataFrame([ingest_batch_record(self.app_id, batch_id, counts, outcome, elapsed, offsets)], INGEST_BATCH_RECORD)
        record = record.withColumn("ingest_time", ingest_time).select(*INGEST_BATCHES_SCHEMA.fieldNames())
        self._append(record, self.lake.ingest_batches, "ops", batch_id)
        if self.landing_dir is not None:
            record_unread_files(spark, self.lake, self.landing_dir, self.ingest, self.app_id, batch_id)
        timer.mark("bookkeeping")
        LOG.debug("bronze batch %d phases: %s", batch_id, timer.render())
        LOG.info("%s", describe_batch(batch_id, counts, outcome, elapsed))

    def _parse(self, batch: DataFrame) -> DataFrame:
        landed_at = F.col("source_modified") if "source_modified" in batch.columns else None
        return parse_events(
            batch,
            barrier=False,
            max_line_bytes=self.ingest.max_line_bytes,
            max_future_skew_s=float(interval_seconds(self.ingest.max_future_skew)),
            landed_at=landed_at,
        )

    def _append(
        self,
        frame: DataFrame,
        path: str,
        writer: str,
        batch_id: int,
        partition_by: tuple[str, ...] = (),
        *,
        max_rows_per_file: int | None = None,
        merge_schema: bool = False,
    ) -> None:
        """Append once per (writer, batch): a replayed batch finds its commit and writes nothing."""
        append_once(frame, path, f"{self.app_id}/{writer}", batch_id, partition_by, max_rows_per_file, merge_schema)

    def _gate(self, spark: SparkSession, parsed: DataFrame, batch_id: int, ingest_time: Column) -> ValidationOutcome | None:
        """Run the GX gate on the batch's profile and record its result (None: not validated).

        Raises:
            BatchRejected: the gate failed and ``on_failure`` is ``stop``; raised before any
                write, so the batch is replayed from the same offsets once the cause is fixed.
        """
        validator = self.validator
        if validator is None or not validator.should_validate(batch_id) or parsed.isEmpty():
            return None
        outcome = validator.validate(batch_profile(parsed, validator.config), batch_id)
        if outcome is None:
            return None
        record = spark.createDataFrame([validation_record(self.app_id, outcome)], VALIDATION_RECORD)
        self._append(
            record.withColumn("validated_at", ingest_time).select(*VALIDATION_RESULTS_SCHEMA.fieldNames()),
            self.lake.validation_results,
            "validation",
            outcome.batch_id,
        )
        if not outcome.success and validator.stops_the_stream:
            raise BatchRejected(
                f"bronze batch {batch_id}: the Great Expectations gate failed {list(outcome.failed_expectations)}; "
                f"nothing was written (ingest.validation.on_failure: stop); see {self.lake.validation_results}"
            )
        return outcome

    def _quarantine(self, rows: DataFrame, batch_id: int) -> None:
        self._append(rows, self.lake.quarantine, "quarantine", batch_id, QUARANTINE_PARTITION_COLUMNS, merge_schema=True)

    def _quarantine_whole(
        self, parsed: DataFrame, batch_id: int, batch_tag: str, ingest_time: Column, outcome: ValidationOutcome
    ) -> BatchCounts:
        """A batch that failed the gate goes to quarantine whole."""
        counts = whole_batch_counts(line_totals(parsed))
        self._quarantine(failed_gate_rows(parsed, outcome.failed_expectations, ingest_time, batch_tag), batch_id)
        LOG.warning(
            "bronze batch %d failed the Great Expectations gate %s: all %d lines quarantined",
            batch_id,
            list(outcome.failed_expectations),
            counts.lines_read,
        )
        return counts

    def _write(
        self, spark: SparkSession, parsed: DataFrame, batch_id: int, batch_tag: str, ingest_time: Column, timer: PhaseTimer
    ) -> BatchCounts:
        """Valid lines to bronze, each event once; the rest to quarantine. Returns the batch's accounting."""
        totals = line_totals(parsed)
        timer.mark("count")
        valid, rejected = split_valid(parsed)
        # The ids repeated in the batch or already in bronze (on the batch's event dates only),
        # found by one shuffle of ids and kept (few rows; a replayed batch has them all). The
        # later steps join them by broadcast, so full rows are not shuffled to deduplicate.
        bronze_ids = (
            spark.read.format("delta")
            .load(self.lake.bronze)
            .filter(F.col("event_date").isin(list(totals.dates)))
            .select("event_id", "ingest_batch")
        )
        with checkpointed(match_event_ids(valid, bronze_ids)) as flags:
            duplicates = duplicate_stats(flags, batch_tag)
            counts = batch_counts(totals, duplicates)
            timer.mark("deduplicate")
            with checkpointed(deduplicate_batch(valid, repeated_ids(flags)), eager=False) as unique:
                writes: list[Callable[[], None]] = []
                if counts.quarantined:
                    quarantined = quarantine_rows(rejected, ingest_time, batch_tag)
                    writes.append(lambda: self._quarantine(quarantined, batch_id))
                if counts.bronze_inserted > duplicates.replayed:
                    rows = in_event_time_order(new_bronze_rows(unique, ids_in_bronze(flags), ingest_time, batch_tag), self.target_files)
                    writes.append(
                        lambda: self._append(
                            rows, self.lake.bronze, "bronze", batch_id, BRONZE_PARTITION_COLUMNS, max_rows_per_file=self.max_rows_per_file
                        )
                    )
                run_together(writes)
                timer.mark("write")
        return counts


def bronze_writer(config: AppConfig, lake: LakePaths, landing_dir: str | None = None) -> BronzeBatchWriter:
    """The sink of the bronze query, bound to the app id of its checkpoint."""
    validator = BatchValidator(config.ingest.validation) if config.ingest.validation.enabled else None
    return BronzeBatchWriter(
        lake,
        app_id_for(lake.checkpoint(BRONZE_QUERY_NAME)),
        validator,
        config.ingest.target_files_per_partition,
        config.ingest.max_rows_per_file,
        ingest=config.ingest,
        landing_dir=landing_dir,
    )


def start_bronze_stream(
    spark: SparkSession,
    config: AppConfig,
    events_dir: str | None,
    lake: LakePaths,
    available_now: bool,
    writer: BronzeBatchWriter | None = None,
) -> StreamingQuery:
    """Start the source -> bronze query (availableNow for batch runs, processing time for streams).

    The source is ``ingest.source``: the landing folder ``events_dir`` or the Kafka topic of
    ``ingest.kafka`` (``events_dir`` None). ``writer`` defaults to ``bronze_writer``; tests pass
    one that fails on purpose.
    """
    ensure_bronze_tables(spark, lake)
    if config.ingest.source == "kafka":
        if events_dir is not None:
            raise ValueError("events_dir: ingest.source is kafka, so no landing folder is read; pass None")
        source = read_kafka(spark, config.ingest.kafka)
    else:
        if events_dir is None:
            raise ValueError("events_dir: ingest.source is files, so a landing folder is needed")
        # Recorded now as well: a folder where nothing matches never runs a batch.
        record_unread_files(spark, lake, events_dir, config.ingest, app_id_for(lake.checkpoint(BRONZE_QUERY_NAME)), -1)
        source = read_landing(spark, events_dir, config)
    stream = (
        source.writeStream.queryName(BRONZE_QUERY_NAME)
        .foreachBatch(writer or bronze_writer(config, lake, events_dir))
        .option("checkpointLocation", lake.checkpoint(BRONZE_QUERY_NAME))
    )
    if available_now:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=config.ingest.trigger_interval)
    return stream.start()


def summarize_ingest(spark: SparkSession, lake: LakePaths) -> dict[str, int]:
    """Totals over every batch ever ingested into this lake, and the row counts of the tables."""
    totals = spark.read.format("delta").load(lake.ingest_batches).agg(
        F.count(F.lit(1)).alias("batches"),
        F.coalesce(F.sum("files"), F.lit(0)).alias("files"),
        F.coalesce(F.sum("lines_read"), F.lit(0)).alias("lines_read"),
        F.coalesce(F.sum("bronze_inserted"), F.lit(0)).alias("bronze_inserted"),
        F.coalesce(F.sum("quarantined"), F.lit(0)).alias("quarantined"),
        F.coalesce(F.sum(F.col("duplicates_in_batch") + F.col("duplicates_existing")), F.lit(0)).alias("duplicates"),
        F.coalesce(F.sum(F.col("validation_run").cast("int")), F.lit(0)).alias("validated_batches"),
        F.coalesce(F.sum((~F.col("validation_success")).cast("int")), F.lit(0)).alias("failed_validations"),
    ).first()
    summary = {key: int(totals[key]) for key in totals.asDict()} if totals else {}
    summary["bronze_rows"] = spark.read.format("delta").load(lake.bronze).count()
    summary["quarantine_rows"] = spark.read.format("delta").load(lake.quarantine).count()
    summary["landing_files_skipped"] = spark.read.format("delta").load(lake.landing_skipped).count()
    return summary


def format_summary(summary: dict[str, int]) -> str:
    """A stable, human-readable rendering of ``summarize_ingest`` (printed by the CLI)."""
    return json.dumps(summary, indent=2, sort_keys=True)
