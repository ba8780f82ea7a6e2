"""Silver turns -> gold defect signals: the same pure functions for a micro-batch and a rebuild.

Each gold table is an aggregate of ``silver/turns`` (pure functions below). A micro-batch does
not add its counts to gold: it recomputes, from silver, the gold rows whose keys its turns
touch and MERGEs them in (``fold_into_gold``), so gold equals ``rebuild_gold`` after any mix of
stream, backfill, replay and reset checkpoints, and a replayed batch changes nothing.
The sketches hold keyed user ids (``feedback.core.privacy.keyed_user_id``), never raw ones, so a
sketch cannot be probed for a known user id; the analyst reads suppress rows of few users
(``feedback.core.privacy.published``).
"""

from __future__ import annotations

from collections.abc import Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from feedback.core.checkpoints import checkpointed
from feedback.core.lake import LakePaths
from feedback.core.privacy import keyed_user_id
from feedback.core.privacy import user_key as resolve_user_key
from feedback.core.schema import DEFECT_METRICS_SCHEMA, FAILURE_POINTS_SCHEMA, REPHRASE_PAIRS_SCHEMA, UTTERANCE_DEFECTS_SCHEMA

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


def failure_points_increment(turns: DataFrame) -> DataFrame:
    """Defective requests per day x domain x intent x device_type x failure_point (missing keys ``unknown``)."""
    return (
        turns.filter(F.col("failure_point").isNotNull() & (F.col("failure_point") != "none"))
        .groupBy(
            F.col("event_date").alias("day"),
            F.coalesce("domain", F.lit(UNKNOWN)).alias("domain"),
            F.coalesce("intent", F.lit(UNKNOWN)).alias("intent"),
            F.coalesce("device_type", F.lit(UNKNOWN)).alias("device_type"),
            "failure_point",
        )
        .agg(F.count(F.lit(1)).alias("defects"), F.avg("failure_point_score").alias("mean_score"))
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


def replace_in_scope(
    spark: SparkSession, path: str, recomputed: DataFrame, scope: DataFrame, keys: Sequence[str], columns: Sequence[str]
) -> None:
    """Make the rows of the Delta table at ``path`` that fall in ``scope`` equal ``recomputed``, in one MERGE.

    ``scope`` holds values of some of ``keys``: every target row matching it is updated from
    ``recomputed``, or deleted when ``recomputed`` no longer has its key; new keys are inserted.
    Columns outside ``columns`` (such as ``top_rephrase``) are left as they are.
    """
    existing = spark.read.format("delta").load(path).join(F.broadcast(scope), list(scope.columns), "left_semi")
    gone = existing.select(*keys).join(recomputed.select(*keys), list(keys), "left_anti")
    source = recomputed.select(*columns, F.lit(False).alias("_gone")).unionByName(
        gone.select(*keys, F.lit(True).alias("_gone")), allowMissingColumns=True
    )
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(source.alias("s"), " AND ".join(f"t.{k} <=> s.{k}" for k in keys))
        .whenMatchedDelete(condition="s._gone")
        .whenMatchedUpdate(set={c: f"s.{c}" for c in columns})
        .whenNotMatchedInsert(condition="NOT s._gone", values={c: f"s.{c}" for c in columns})
        .execute()
    )


DEFECT_METRICS_KEYS = ("hour", "domain", "intent", "device_type")
FAILURE_POINTS_KEYS = ("day", "domain", "intent", "device_type", "failure_point")
UTTERANCE_DEFECTS_KEYS = ("normalized_utterance",)
REPHRASE_PAIRS_KEYS = ("utterance", "rephrase")
_PAIR_INPUTS = ("event_id", "rephrase_of", "normalized_utterance", "chain_success", "defect", "user_id", "ts")


def refresh_top_rephrases(spark: SparkSession, lake: LakePaths, utterances: DataFrame | None) -> None:
    """Recompute ``top_rephrase`` of ``utterances`` (an ``utterance`` column; all when None) from ``gold/rephrase_pairs``.

    An utterance of ``utterances`` left without any pair gets nulls, as a rebuild gives it.
    """
    pairs = spark.read.format("delta").load(lake.rephrase_pairs)
    if utterances is None:
        source = top_rephrases(pairs)
    else:
        affected = utterances.select(F.col("utterance").alias("normalized_utterance")).distinct()
        best = top_rephrases(pairs.join(F.broadcast(utterances.select("utterance").distinct()), "utterance", "left_semi"))
        source = affected.join(best, "normalized_utterance", "left")
    (
        DeltaTable.forPath(spark, lake.utterance_defects)
        .alias("t")
        .merge(source.alias("s"), "t.normalized_utterance = s.normalized_utterance")
        .whenMatchedUpdate(set={"top_rephrase": "s.top_rephrase", "top_rephrase_count": "s.top_rephrase_count"})
        .execute()
    )


def fold_into_gold(spark: SparkSession, lake: LakePaths, turns: DataFrame, user_key: bytes | None = None) -> None:
    """Bring every gold row a batch of turns touches back to what ``rebuild_gold`` would give it.

    Why not add the batch's counts: the same turn can reach silver more than once (a backfill
    writes sessions the stream still holds open and emits later; a reset checkpoint emits every
    session again). Silver is upserted by event id, so it holds each turn once; gold rows are
    recomputed from silver for the keys the batch touches: the hours of its turns, their days
    (failure points), the utterances it holds, and the pairs whose rephrase is one of them (a
    pair's link lives on its rephrase turn). Running it again gives the same tables, so a
    replay needs no guard.
    ``turns`` must already be in silver. ``user_key``: the key of the sketched user ids; None
    reads the lake's (``feedback.core.privacy.user_key``).
    """
    key = user_key if user_key is not None else resolve_user_key(lake, quiet=True)
    silver = spark.read.format("delta").load(lake.silver_turns)
    hour = F.date_trunc("hour", "ts").alias("hour")
    with checkpointed(turns.select(hour, "event_date").distinct()) as hours, checkpointed(
        turns.select("normalized_utterance").distinct()
    ) as utterances:
        dates = [r["event_date"] for r in hours.select("event_date").distinct().collect()]
        touched_hours = hours.select("hour").distinct()
        in_hours = silver.filter(F.col("event_date").isin(dates)).join(
            F.broadcast(touched_hours), F.date_trunc("hour", "ts") == touched_hours["hour"], "left_semi"
        )
        replace_in_scope(
            spark, lake.defect_metrics, defect_metrics_increment(in_hours), touched_hours,
            DEFECT_METRICS_KEYS, DEFECT_METRICS_SCHEMA.fieldNames(),
        )
        in_days = silver.filter(F.col("event_date").isin(dates))
        touched_days = hours.select(F.col("event_date").alias("day")).distinct()
        replace_in_scope(
            spark, lake.failure_points, failure_points_increment(in_days), touched_days,
            FAILURE_POINTS_KEYS, FAILURE_POINTS_SCHEMA.fieldNames(),
        )
        of_utterances = silver.join(F.broadcast(utterances), "normalized_utterance", "left_semi")
        utterance_columns = [c for c in UTTERANCE_DEFECTS_SCHEMA.fieldNames() if not c.startswith("top_rephrase")]
        replace_in_scope(
            spark, lake.utterance_defects, utterance_defects_increment(of_utterances, key), utterances,
            UTTERANCE_DEFECTS_KEYS, utterance_columns,
        )
        with checkpointed(of_utterances.filter(F.col("rephrase_of").isNotNull()).select(*_PAIR_INPUTS)) as links:
            source_ids = links.select(F.col("rephrase_of").alias("event_id")).distinct()
            sources = silver.join(F.broadcast(source_ids), "event_id", "left_semi").select(*_PAIR_INPUTS)
            pair_turns = links.unionByName(sources).dropDuplicates(["event_id"])
            before = spark.read.format("delta").load(lake.rephrase_pairs).join(
                F.broadcast(utterances.select(F.col("normalized_utterance").alias("rephrase"))), "rephrase", "left_semi"
            )
            with checkpointed(before.select("utterance")) as touched_sources:
                replace_in_scope(
                    spark, lake.rephrase_pairs, rephrase_pairs_increment(pair_turns, key),
                    utterances.select(F.col("normalized_utterance").alias("rephrase")),
                    REPHRASE_PAIRS_KEYS, REPHRASE_PAIRS_SCHEMA.fieldNames(),
                )
                after = spark.read.format("delta").load(lake.rephrase_pairs).join(
                    F.broadcast(utterances.select(F.col("normalized_utterance").alias("rephrase"))), "rephrase", "left_semi"
                )
                refresh_top_rephrases(spark, lake, touched_sources.unionByName(after.select("utterance")))


def rebuild_gold(spark: SparkSession, lake: LakePaths, user_key: bytes | None = None) -> None:
    """Recompute every gold table from the whole of ``silver/turns`` (after a backfill or a key change).

    ``user_key``: the key of the sketched user ids; None reads the lake's (``feedback.core.privacy.user_key``).
    """
    key = user_key if user_key is not None else resolve_user_key(lake)
    silver = spark.read.format("delta").load(lake.silver_turns)
    pairs = rephrase_pairs_increment(silver, key)
    utterances = utterance_defects_increment(silver, key).withColumn("top_rephrase", F.lit(None).cast("string")).withColumn(
        "top_rephrase_count", F.lit(None).cast("long")
    )
    for path, frame, schema in (
        (lake.defect_metrics, defect_metrics_increment(silver), DEFECT_METRICS_SCHEMA),
        (lake.failure_points, failure_points_increment(silver), FAILURE_POINTS_SCHEMA),
        (lake.utterance_defects, utterances, UTTERANCE_DEFECTS_SCHEMA),
        (lake.rephrase_pairs, pairs, REPHRASE_PAIRS_SCHEMA),
    ):
        frame.select(*schema.fieldNames()).write.format("delta").mode("overwrite").save(path)
    refresh_top_rephrases(spark, lake, None)
