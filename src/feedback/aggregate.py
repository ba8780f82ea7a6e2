"""Silver turns -> gold defect signals, incrementally and replay-safe.

Each micro-batch of complete sessions becomes an *increment* per gold table (pure functions
below), which is MERGEd into the table by adding counts, taking min/max of first/last seen
and unioning HyperLogLog sketches of users. The sketches hold keyed user ids
(``feedback.privacy.keyed_user_id``), never raw ones, so a sketch cannot be probed for a known
user id; the analyst reads suppress rows of few users (``feedback.privacy.published``). The MERGEs run with Delta's idempotent-write
session confs (``txnAppId``/``txnVersion``), so a replayed batch changes nothing.
``rebuild_gold`` applies the same increment functions to the whole silver table, so a
backfill and the stream agree by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from feedback.privacy import keyed_user_id, user_key as resolve_user_key
from feedback.tables import idempotent_writes
from feedback.schema import (
    DEFECT_METRICS_SCHEMA,
    REPHRASE_PAIRS_SCHEMA,
    UTTERANCE_DEFECTS_SCHEMA,
    LakePaths,
)

UNKNOWN = "unknown"


def defect_metrics_increment(turns: DataFrame) -> DataFrame:
    """Counts per hour x domain x intent x device_type (missing values grouped as ``unknown``).

    ``rephrases`` counts turns the user had to rephrase (a later turn links to them).
    """
    return (
        turns.groupBy(
            F.date_trunc("hour", "ts").alias("hour"),
            F.coalesce("domain", F.lit(UNKNOWN)).alias("domain"),
            F.coalesce("intent", F.lit(UNKNOWN)).alias("intent"),
            F.coalesce("device_type", F.lit(UNKNOWN)).alias("device_type"),
        )
        .agg(
            F.count(F.lit(1)).alias("turns"),
            F.sum(F.col("defect").cast("long")).alias("defects"),
            F.sum(F.col("barge_in").cast("long")).alias("barge_ins"),
            F.sum(F.col("rephrased").cast("long")).alias("rephrases"),
            F.sum(F.col("terminated").cast("long")).alias("terminations"),
        )
        .withColumn("defect_rate", F.col("defects") / F.col("turns"))
    )


def utterance_defects_increment(turns: DataFrame, user_key: bytes) -> DataFrame:
    """Traffic and defects per normalized utterance (requests only; system commands excluded).

    ``users_sketch`` sketches the user ids keyed with ``user_key`` (a raw id cannot probe it).
    """
    return (
        turns.filter(~F.col("is_system_command"))
        .groupBy("normalized_utterance")
        .agg(
            F.count(F.lit(1)).alias("traffic"),
            F.sum(F.col("defect").cast("long")).alias("defects"),
            F.hll_sketch_agg(keyed_user_id(F.col("user_id"), user_key)).alias("users_sketch"),
            F.min("ts").alias("first_seen"),
            F.max("ts").alias("last_seen"),
        )
        .withColumn("defect_rate", F.col("defects") / F.col("traffic"))
        .withColumn("users", F.hll_sketch_estimate("users_sketch"))
    )


def rephrase_pairs_increment(turns: DataFrame, user_key: bytes) -> DataFrame:
    """(utterance, rephrase) links with counts, users and how their chains ended.

    ``chains`` counts links; ``successful_chains`` those whose chain's last turn was not a
    defect; ``target_successes`` those whose rephrase itself was not a defect; ``users_sketch``
    sketches the user ids keyed with ``user_key``.
    """
    sources = turns.select(F.col("event_id").alias("_source_id"), F.col("normalized_utterance").alias("_source_text"))
    links = (
        turns.filter(F.col("rephrase_of").isNotNull())
        .select("rephrase_of", "normalized_utterance", "chain_success", "defect", "user_id", "ts")
        .join(sources, F.col("rephrase_of") == F.col("_source_id"), "inner")
    )
    return (
        links.groupBy(F.col("_source_text").alias("utterance"), F.col("normalized_utterance").alias("rephrase"))
        .agg(
            F.count(F.lit(1)).alias("chains"),
            F.sum(F.col("chain_success").cast("long")).alias("successful_chains"),
            F.sum((~F.col("defect")).cast("long")).alias("target_successes"),
            F.hll_sketch_agg(keyed_user_id(F.col("user_id"), user_key)).alias("users_sketch"),
            F.min("ts").alias("first_seen"),
            F.max("ts").alias("last_seen"),
        )
        .withColumn("success_share", F.col("successful_chains") / F.col("chains"))
        .withColumn("users", F.hll_sketch_estimate("users_sketch"))
    )


def top_rephrases(pairs: DataFrame) -> DataFrame:
    """The most frequent rephrase of each utterance (ties: alphabetical)."""
    best = Window.partitionBy("utterance").orderBy(F.desc("chains"), F.asc("rephrase"))
    return (
        pairs.withColumn("_rank", F.row_number().over(best))
        .filter(F.col("_rank") == 1)
        .select(
            F.col("utterance").alias("normalized_utterance"),
            F.col("rephrase").alias("top_rephrase"),
            F.col("chains").alias("top_rephrase_count"),
        )
    )


@dataclass(frozen=True)
class MergeSpec:
    """How an increment folds into its table."""

    keys: tuple[str, ...]
    sums: tuple[str, ...] = ()
    mins: tuple[str, ...] = ()
    maxs: tuple[str, ...] = ()
    sketches: tuple[tuple[str, str], ...] = ()  # (sketch column, estimate column)
    ratios: tuple[tuple[str, str, str], ...] = ()  # (ratio column, numerator, denominator)

    def update_set(self) -> dict[str, str]:
        updates = {c: f"t.{c} + s.{c}" for c in self.sums}
        updates |= {c: f"least(t.{c}, s.{c})" for c in self.mins}
        updates |= {c: f"greatest(t.{c}, s.{c})" for c in self.maxs}
        for sketch, estimate in self.sketches:
            updates[sketch] = f"hll_union(t.{sketch}, s.{sketch})"
            updates[estimate] = f"hll_sketch_estimate(hll_union(t.{sketch}, s.{sketch}))"
        for ratio, numerator, denominator in self.ratios:
            updates[ratio] = f"(t.{numerator} + s.{numerator}) / (t.{denominator} + s.{denominator})"
        return updates


DEFECT_METRICS_MERGE = MergeSpec(
    keys=("hour", "domain", "intent", "device_type"),
    sums=("turns", "defects", "barge_ins", "rephrases", "terminations"),
    ratios=(("defect_rate", "defects", "turns"),),
)
UTTERANCE_DEFECTS_MERGE = MergeSpec(
    keys=("normalized_utterance",),
    sums=("traffic", "defects"),
    mins=("first_seen",),
    maxs=("last_seen",),
    sketches=(("users_sketch", "users"),),
    ratios=(("defect_rate", "defects", "traffic"),),
)
REPHRASE_PAIRS_MERGE = MergeSpec(
    keys=("utterance", "rephrase"),
    sums=("chains", "successful_chains", "target_successes"),
    mins=("first_seen",),
    maxs=("last_seen",),
    sketches=(("users_sketch", "users"),),
    ratios=(("success_share", "successful_chains", "chains"),),
)


def merge_increment(spark: SparkSession, path: str, increment: DataFrame, spec: MergeSpec, columns: Sequence[str]) -> None:
    """Fold ``increment`` into the Delta table at ``path`` (insert new keys, combine existing ones)."""
    condition = " AND ".join(f"t.{k} = s.{k}" for k in spec.keys)
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(increment.select(*columns).alias("s"), condition)
        .whenMatchedUpdate(set=spec.update_set())
        .whenNotMatchedInsert(values={c: f"s.{c}" for c in columns})
        .execute()
    )


def refresh_top_rephrases(spark: SparkSession, lake: LakePaths, utterances: DataFrame | None) -> None:
    """Recompute ``top_rephrase`` of ``utterances`` (all when None) from ``gold/rephrase_pairs``."""
    pairs = spark.read.format("delta").load(lake.rephrase_pairs)
    if utterances is not None:
        pairs = pairs.join(utterances.select(F.col("utterance")).distinct(), "utterance", "left_semi")
    (
        DeltaTable.forPath(spark, lake.utterance_defects)
        .alias("t")
        .merge(top_rephrases(pairs).alias("s"), "t.normalized_utterance = s.normalized_utterance")
        .whenMatchedUpdate(set={"top_rephrase": "s.top_rephrase", "top_rephrase_count": "s.top_rephrase_count"})
        .execute()
    )


def fold_into_gold(
    spark: SparkSession, lake: LakePaths, turns: DataFrame, app_id: str, batch_id: int, user_key: bytes | None = None
) -> None:
    """Apply one batch of complete turns to every gold table, each MERGE idempotent for (app_id, batch_id).

    ``user_key``: the key of the sketched user ids; None reads the lake's (``feedback.privacy.user_key``).
    """
    key = user_key if user_key is not None else resolve_user_key(lake, quiet=True)
    metric_columns = DEFECT_METRICS_SCHEMA.fieldNames()
    utterance_columns = [c for c in UTTERANCE_DEFECTS_SCHEMA.fieldNames() if not c.startswith("top_rephrase")]
    pair_columns = REPHRASE_PAIRS_SCHEMA.fieldNames()
    pairs = rephrase_pairs_increment(turns, key).persist()
    try:
        with idempotent_writes(spark, f"{app_id}/defect_metrics", batch_id):
            merge_increment(spark, lake.defect_metrics, defect_metrics_increment(turns), DEFECT_METRICS_MERGE, metric_columns)
        with idempotent_writes(spark, f"{app_id}/utterance_defects", batch_id):
            merge_increment(
                spark, lake.utterance_defects, utterance_defects_increment(turns, key), UTTERANCE_DEFECTS_MERGE, utterance_columns
            )
        with idempotent_writes(spark, f"{app_id}/rephrase_pairs", batch_id):
            merge_increment(spark, lake.rephrase_pairs, pairs, REPHRASE_PAIRS_MERGE, pair_columns)
        # A recompute from rephrase_pairs, so running it again on replay gives the same result.
        refresh_top_rephrases(spark, lake, pairs)
    finally:
        pairs.unpersist()


def rebuild_gold(spark: SparkSession, lake: LakePaths, user_key: bytes | None = None) -> None:
    """Recompute every gold table from the whole of ``silver/turns`` (after a backfill or a key change).

    ``user_key``: the key of the sketched user ids; None reads the lake's (``feedback.privacy.user_key``).
    """
    key = user_key if user_key is not None else resolve_user_key(lake)
    silver = spark.read.format("delta").load(lake.silver_turns)
    pairs = rephrase_pairs_increment(silver, key)
    utterances = utterance_defects_increment(silver, key).withColumn("top_rephrase", F.lit(None).cast("string")).withColumn(
        "top_rephrase_count", F.lit(None).cast("long")
    )
    for path, frame, schema in (
        (lake.defect_metrics, defect_metrics_increment(silver), DEFECT_METRICS_SCHEMA),
        (lake.utterance_defects, utterances, UTTERANCE_DEFECTS_SCHEMA),
        (lake.rephrase_pairs, pairs, REPHRASE_PAIRS_SCHEMA),
    ):
        frame.select(*schema.fieldNames()).write.format("delta").mode("overwrite").save(path)
    refresh_top_rephrases(spark, lake, None)
