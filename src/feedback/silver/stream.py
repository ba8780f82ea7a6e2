"""bronze/interactions -> silver/turns (one row per turn) -> gold/*, streaming and as a backfill.

The stream reads bronze as a Delta streaming source, closes gap-based sessions under a
watermark (RocksDB state, bounded by the watermark), and hands each micro-batch of complete
sessions to ``SilverBatchWriter``: turns are built by the pure ``build_turns`` and upserted
into silver by ``event_id``; the gold rows they touch are recomputed from silver
(``feedback.gold.aggregate``), so a replayed batch changes nothing.

Events older than the watermark when they reach the stream are not sessionized by it (they
are safe in bronze); ``backfill`` recomputes silver for whole days from bronze and rebuilds
gold from silver.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from feedback.config import AppConfig, DetectConfig, SessionizeConfig
from feedback.core.checkpoints import checkpointed
from feedback.core.lake import LakePaths
from feedback.core.schema import (
    CHANGE_DATA_FEED,
    DEFECT_METRICS_SCHEMA,
    FAILURE_POINTS_SCHEMA,
    REPHRASE_PAIRS_SCHEMA,
    SILVER_BATCH_COUNTS,
    SILVER_BATCHES_SCHEMA,
    SILVER_PARTITION_COLUMNS,
    SILVER_TURNS_SCHEMA,
    TABLE_COMMENTS,
    UTTERANCE_DEFECTS_SCHEMA,
)
from feedback.core.tables import app_id_for, append_once, ensure_table, idempotent_writes
from feedback.silver.detect import (
    SCORING_CASCADE,
    SCORING_FALLBACK,
    SCORING_MODEL,
    PairScorer,
    label_defects,
    link_rephrases,
    rephrase_candidates,
    score_pairs_heuristic,
)
from feedback.silver.failure_points import FailurePointClassifier, failure_points_by_rules
from feedback.silver.sessionize import TURN_FIELDS, aggregate_sessions, explode_sessions, mark_turns

LOG = logging.getLogger("feedback.silver.stream")

SILVER_QUERY_NAME = "silver_turns"

GoldFold = Callable[[SparkSession, LakePaths, DataFrame], None]
"""Folds a silver batch's turns into the gold tables (``feedback.gold.aggregate.fold_into_gold``),
passed in by ``feedback.pipeline`` so silver does not depend on a later stage."""
GoldRebuild = Callable[[SparkSession, LakePaths], None]
"""Rebuilds the gold tables from silver (``feedback.gold.aggregate.rebuild_gold``)."""


def resolve_chains(turns: DataFrame, max_chain_length: int) -> DataFrame:
    """Add ``chain_id`` (the first request of the rephrase chain) and ``chain_success``.

    A chain is a request and its successive rephrases; it succeeded when its last turn is not
    a defect. Links only point backwards inside a session, so following parents
    ``max_chain_length`` times reaches every root.
    """
    if max_chain_length < 2:
        raise ValueError(f"max_chain_length must be >= 2, got {max_chain_length}")
    parents = turns.select(F.col("event_id").alias("_parent_id"), F.col("rephrase_of").alias("_grandparent"))
    roots = turns.select("event_id", F.coalesce("rephrase_of", "event_id").alias("_root"))
    for _ in range(max_chain_length - 2):
        roots = roots.join(parents, F.col("_root") == F.col("_parent_id"), "left").select(
            "event_id", F.coalesce("_grandparent", "_root").alias("_root")
        )
    in_chain = F.col("rephrase_of").isNotNull() | F.col("rephrased")
    chained = turns.join(roots, "event_id", "left").withColumn("chain_id", F.when(in_chain, F.col("_root"))).drop("_root")
    last_turn = Window.partitionBy("chain_id")
    final_defect = F.max_by("defect", "turn_index").over(last_turn)
    return chained.withColumn("chain_success", F.when(F.col("chain_id").isNotNull(), ~final_defect))


def resolve_goals(turns: DataFrame) -> DataFrame:
    """Add ``goal_id`` and ``goal_success``: what the user was trying to get done, and whether they got it.

    A goal is a request and its rephrases (its chain), or a request on its own. A system command
    (stop, volume, next) serves the goal of the latest request before it in the session, so a stop
    between a request and its rephrase does not split their goal; one before any request has none.
    A goal succeeds when its last request is no defect.
    """
    request_goal = F.when(~F.col("is_system_command"), F.coalesce("chain_id", "event_id"))
    request_success = F.when(~F.col("is_system_command"), F.coalesce("chain_success", ~F.col("defect")))
    earlier = Window.partitionBy("session_id").orderBy("turn_index").rowsBetween(Window.unboundedPreceding, -1)
    return (
        turns.withColumn("_request_goal", request_goal)
        .withColumn("_request_success", request_success)
        .withColumn("goal_id", F.coalesce("_request_goal", F.last("_request_goal", ignorenulls=True).over(earlier)))
        .withColumn(
            "goal_success",
            F.when(~F.col("is_system_command"), F.col("_request_success")).otherwise(
                F.last("_request_success", ignorenulls=True).over(earlier)
            ),
        )
        .drop("_request_goal", "_request_success")
    )


def prepare_turns(sessions: DataFrame, sessionize: SessionizeConfig) -> DataFrame:
    """Complete sessions -> ordered turns with barge-in and termination (before rephrase detection)."""
    return mark_turns(explode_sessions(sessions), sessionize)


def label_turns(
    turns: DataFrame, scored_pairs: DataFrame, detect: DetectConfig, classify: FailurePointClassifier = failure_points_by_rules
) -> DataFrame:
    """``prepare_turns`` output and its scored candidate pairs -> silver turns (``SILVER_TURNS_SCHEMA``);
    ``classify`` says where each defect failed first (the rules, or the registered classifier)."""
    linked = link_rephrases(turns, scored_pairs, detect.rephrase_threshold)
    chained = resolve_goals(resolve_chains(label_defects(linked), detect.max_chain_length))
    labelled = classify(chained, detect.failure_points)
    silver = labelled.withColumn("processed_at", F.current_timestamp()).withColumn(
        "turn_index", F.col("turn_index").cast("int")
    )
    return silver.select(*SILVER_TURNS_SCHEMA.fieldNames())


def build_turns(
    sessions: DataFrame,
    sessionize: SessionizeConfig,
    detect: DetectConfig,
    scorer: PairScorer = score_pairs_heuristic,
    classify: FailurePointClassifier = failure_points_by_rules,
) -> DataFrame:
    """Complete sessions -> silver turns (the ``SILVER_TURNS_SCHEMA`` columns), as one plan.

    Args:
        sessions: output of ``aggregate_sessions`` (static: one micro-batch or a backfill).
        sessionize: timing rules.
        detect: rephrase candidate and linking rules.
        scorer: adds ``rephrase_score``/``rephrase_detector`` to candidate pairs; the heuristic
            baseline by default, the registered model when there is one.
        classify: the failure-point classifier (``label_turns``).

    The plan reads the scored pairs several times; with a model scorer use ``staged_turns``,
    which scores once.
    """
    turns = prepare_turns(sessions, sessionize)
    return label_turns(turns, scorer(rephrase_candidates(turns, detect), detect), detect, classify)


@dataclass(frozen=True)
class ScoringCounts:
    """How a batch's candidate pairs were scored (``feedback.rephrase.spark.SCORING_KINDS``)."""

    candidate_pairs: int = 0
    model_pairs: int = 0
    cascade_pairs: int = 0
    fallback_pairs: int = 0
    fallback_groups: int = 0


def scoring_counts(scored: DataFrame) -> tuple[ScoringCounts, list[str]]:
    """Counts of ``scored`` pairs by how they were scored, and the request ids the model failed on."""
    if "scoring" not in scored.columns:
        return ScoringCounts(candidate_pairs=scored.count()), []
    row = scored.agg(
        F.count(F.lit(1)).alias("candidate_pairs"),
        F.count(F.when(F.col("scoring") == SCORING_MODEL, 1)).alias("model_pairs"),
        F.count(F.when(F.col("scoring") == SCORING_CASCADE, 1)).alias("cascade_pairs"),
        F.count(F.when(F.col("scoring") == SCORING_FALLBACK, 1)).alias("fallback_pairs"),
        F.count_distinct(F.when(F.col("scoring") == SCORING_FALLBACK, F.col("source_event_id"))).alias("fallback_groups"),
    ).first()
    counts = ScoringCounts(**{key: int(value) for key, value in row.asDict().items()}) if row else ScoringCounts()
    failed: list[str] = []
    if counts.fallback_groups:
        failed = sorted(
            r["source_event_id"]
            for r in scored.filter(F.col("scoring") == SCORING_FALLBACK).select("source_event_id").distinct().collect()
        )
    return counts, failed


@contextmanager
def staged_turns(
    sessions: DataFrame,
    sessionize: SessionizeConfig,
    detect: DetectConfig,
    scorer: PairScorer,
    classify: FailurePointClassifier = failure_points_by_rules,
) -> Iterator[tuple[DataFrame, DataFrame]]:
    """``build_turns`` in three materialised steps; yields (silver turns, scored candidate pairs).

    Why: the labelling reads the scored pairs several times and would re-run the scorer (the
    model) each time, and a plan that joins on them may put the model under a broadcast, whose
    timeout then grows with the batch. Here the turns, the scored pairs and the labelled turns are
    each computed once (``checkpointed``: freed on leaving the block), as plain jobs without
    timeouts.
    """
    with checkpointed(prepare_turns(sessions, sessionize)) as turns:
        # An empty batch (the stream's no-data batches) has nothing for the model: no job on the workers.
        active = score_pairs_heuristic if turns.isEmpty() else scorer
        with checkpointed(active(rephrase_candidates(turns, detect), detect)) as scored:
            # The non-deterministic processed_at is fixed here, so every write below sees one value.
            with checkpointed(label_turns(turns, scored, detect, classify)) as labelled:
                yield labelled, scored


def ensure_silver_tables(spark: SparkSession, lake: LakePaths) -> None:
    """Create silver, the gold tables and the batch log if absent (readers see schemas at once);
    silver and gold record their changes (``CHANGE_DATA_FEED``)."""
    ensure_table(
        spark, lake.silver_turns, SILVER_TURNS_SCHEMA, SILVER_PARTITION_COLUMNS, CHANGE_DATA_FEED,
        comment=TABLE_COMMENTS["silver_turns"],
    )
    ensure_table(spark, lake.defect_metrics, DEFECT_METRICS_SCHEMA, (), CHANGE_DATA_FEED, comment=TABLE_COMMENTS["defect_metrics"])
    ensure_table(spark, lake.failure_points, FAILURE_POINTS_SCHEMA, (), CHANGE_DATA_FEED, comment=TABLE_COMMENTS["failure_points"])
    ensure_table(
        spark, lake.utterance_defects, UTTERANCE_DEFECTS_SCHEMA, (), CHANGE_DATA_FEED, comment=TABLE_COMMENTS["utterance_defects"]
    )
    ensure_table(spark, lake.rephrase_pairs, REPHRASE_PAIRS_SCHEMA, (), CHANGE_DATA_FEED, comment=TABLE_COMMENTS["rephrase_pairs"])
    ensure_table(spark, lake.silver_batches, SILVER_BATCHES_SCHEMA, (), comment=TABLE_COMMENTS["silver_batches"])


def upsert_turns(spark: SparkSession, lake: LakePaths, turns: DataFrame, dates: list[dt.date]) -> None:
    """MERGE turns into silver by event_id, reading only the partitions of ``dates``."""
    if not dates:
        return
    date_list = ", ".join(f"DATE'{d.isoformat()}'" for d in dates)
    (
        DeltaTable.forPath(spark, lake.silver_turns)
        .alias("t")
        .merge(turns.alias("s"), f"t.event_date IN ({date_list}) AND t.event_id = s.event_id")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute()
    )


class SilverBatchWriter:
    """The ``foreachBatch`` function of the silver query: turns into silver, increments into gold
    (``fold_gold``), both idempotent per batch id."""

    def __init__(
        self,
        lake: LakePaths,
        app_id: str,
        config: AppConfig,
        *,
        fold_gold: GoldFold,
        scorer: PairScorer = score_pairs_heuristic,
        classify: FailurePointClassifier = failure_points_by_rules,
    ) -> None:
        if not app_id:
            raise ValueError("app_id must be non-empty")
        self.lake = lake
        self.app_id = app_id
        self.config = config
        self.fold_gold = fold_gold
        self.scorer = scorer
        self.classify = classify

    def __call__(self, sessions: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        spark = sessions.sparkSession
        scoring = ScoringCounts()
        failed: list[str] = []
        # Materialised once: every MERGE below would otherwise re-plan (and re-score) the batch.
        with staged_turns(sessions, self.config.sessionize, self.config.detect, self.scorer, self.classify) as (turns, scored):
            row = turns.agg(
                F.count(F.lit(1)).alias("turns"),
                F.count_distinct("session_id").alias("sessions"),
                F.count("rephrase_of").alias("rephrase_links"),
                F.coalesce(F.sum(F.col("defect").cast("long")), F.lit(0)).alias("defects"),
            ).first()
            stats = {key: int(value) for key, value in row.asDict().items()} if row else {}
            if stats.get("turns"):
                scoring, failed = scoring_counts(scored)
                dates = [r["event_date"] for r in turns.select("event_date").distinct().collect()]
                with idempotent_writes(spark, f"{self.app_id}/silver", batch_id):
                    upsert_turns(spark, self.lake, turns, dates)
                self.fold_gold(spark, self.lake, turns)
        if failed:
            LOG.warning(
                "silver batch %d: the rephrase detector failed on %d request groups, scored by the heuristic instead "
                "(source event ids: %s)",
                batch_id,
                len(failed),
                ", ".join(failed),
            )
        elapsed = time.perf_counter() - started
        counts = {key: stats.get(key, 0) for key in ("sessions", "turns", "rephrase_links", "defects")}
        counts |= asdict(scoring)
        values = [counts[name] for name in SILVER_BATCH_COUNTS]
        record = spark.createDataFrame(
            [(self.app_id, int(batch_id), *values, elapsed)],
            "app_id string, batch_id long, " + ", ".join(f"{name} long" for name in SILVER_BATCH_COUNTS) + ", batch_seconds double",
        ).withColumn("processed_at", F.current_timestamp())
        append_once(
            record.select(*SILVER_BATCHES_SCHEMA.fieldNames()),
            self.lake.silver_batches,
            f"{self.app_id}/ops",
            batch_id,
            merge_schema=True,
        )
        LOG.info(
            "silver batch %d: %s in %.2fs", batch_id, ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in SILVER_BATCH_COUNTS), elapsed
        )


def bronze_files_per_batch(config: AppConfig) -> int:
    """Bronze files a silver micro-batch admits: bronze files hold at most
    ``ingest.max_rows_per_file`` rows, so this many hold at most ``sessionize.max_rows_per_batch``."""
    by_rows = max(1, config.sessionize.max_rows_per_batch // config.ingest.max_rows_per_file)
    return min(config.sessionize.max_files_per_trigger, by_rows)


def read_bronze_stream(spark: SparkSession, lake: LakePaths, max_files_per_trigger: int) -> DataFrame:
    """Bronze as a Delta streaming source, only the columns sessionization needs.

    ``max_files_per_trigger`` is the admission control: a backlog of any size drains as a series
    of bounded micro-batches, each committed (``bronze_files_per_batch``).
    """
    return (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", max_files_per_trigger)
        .load(lake.bronze)
        .select("user_id", "device_id", *TURN_FIELDS)
    )


def start_silver_stream(
    spark: SparkSession,
    config: AppConfig,
    lake: LakePaths,
    available_now: bool,
    writer: SilverBatchWriter,
) -> StreamingQuery:
    """Start the bronze -> silver/gold query (append mode: a session is emitted once it is closed);
    ``writer`` (``silver_writer``) writes each micro-batch."""
    ensure_silver_tables(spark, lake)
    checkpoint = lake.checkpoint(SILVER_QUERY_NAME)
    stream = (
        aggregate_sessions(read_bronze_stream(spark, lake, bronze_files_per_batch(config)), config.sessionize)
        .writeStream.queryName(SILVER_QUERY_NAME)
        .outputMode("append")
        .foreachBatch(writer)
        .option("checkpointLocation", checkpoint)
    )
    if available_now:
        stream = stream.trigger(availableNow=True)
    else:
        stream = stream.trigger(processingTime=config.ingest.trigger_interval)
    return stream.start()


def silver_writer(
    lake: LakePaths,
    config: AppConfig,
    fold_gold: GoldFold,
    scorer: PairScorer,
    classify: FailurePointClassifier = failure_points_by_rules,
) -> SilverBatchWriter:
    """The silver query's batch writer, its app id taken from the query's checkpoint."""
    checkpoint_app = app_id_for(lake.checkpoint(SILVER_QUERY_NAME))
    return SilverBatchWriter(lake, checkpoint_app, config, fold_gold=fold_gold, scorer=scorer, classify=classify)


def backfill(
    spark: SparkSession,
    config: AppConfig,
    lake: LakePaths,
    first_day: dt.date,
    last_day: dt.date,
    scorer: PairScorer,
    rebuild_gold: GoldRebuild | None = None,
    classify: FailurePointClassifier = failure_points_by_rules,
) -> int:
    """Recompute silver for event dates ``first_day``..``last_day`` from bronze, then ``rebuild_gold``.

    Sessions are rebuilt from bronze events of one extra day on each side, so a session that
    crosses midnight is whole; only turns dated inside the range are replaced (atomically,
    with ``replaceWhere``). ``rebuild_gold=None`` leaves gold to the caller (several ranges, one
    rebuild). Returns the number of turns written.
    """
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    ensure_silver_tables(spark, lake)
    margin = dt.timedelta(days=1)
    events = (
        spark.read.format("delta")
        .load(lake.bronze)
        .filter(F.col("event_date").between(F.lit(first_day - margin), F.lit(last_day + margin)))
        .select("user_id", "device_id", *TURN_FIELDS)
    )
    sessions = aggregate_sessions(events, config.sessionize)
    with staged_turns(sessions, config.sessionize, config.detect, scorer, classify) as (turns, _):
        in_range = turns.filter(F.col("event_date").between(F.lit(first_day), F.lit(last_day)))
        written = in_range.count()
        (
            in_range.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"event_date >= '{first_day.isoformat()}' AND event_date <= '{last_day.isoformat()}'")
            .save(lake.silver_turns)
        )
    if rebuild_gold is not None:
        rebuild_gold(spark, lake)
    LOG.info("backfill %s..%s: %d turns rewritten%s", first_day, last_day, written, ", gold rebuilt" if rebuild_gold else "")
    return written


def summarize_silver(spark: SparkSession, lake: LakePaths) -> dict[str, int]:
    """Totals of the silver batches so far and the row counts of silver and gold."""
    totals = spark.read.format("delta").load(lake.silver_batches).agg(
        F.count(F.lit(1)).alias("batches"), *[F.coalesce(F.sum(name), F.lit(0)).alias(name) for name in SILVER_BATCH_COUNTS]
    ).first()
    summary = {key: int(value) for key, value in totals.asDict().items()} if totals else {}
    for name, path in (
        ("silver_rows", lake.silver_turns),
        ("defect_metrics_rows", lake.defect_metrics),
        ("utterance_defects_rows", lake.utterance_defects),
        ("rephrase_pairs_rows", lake.rephrase_pairs),
    ):
        summary[name] = spark.read.format("delta").load(path).count()
    return summary
