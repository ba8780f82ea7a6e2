"""The queries behind the analyst notebooks (``notebooks/*.ipynb``).

The notebooks read the lake's Delta tables and MLflow registry and plot what these functions
return; keeping the logic here (pure DataFrame -> DataFrame functions, plus two small readers of
the registry) means it is unit-tested on hand-made frames and the notebooks stay a few lines per
cell. Rates are always recomputed from summed counts, never averaged over rows, so an hour with
three turns does not weigh as much as one with three thousand.

What they show about users is counts, never user ids. Gold rows seen from fewer than
``privacy.min_users`` distinct users are left out here (``feedback.core.privacy.published``): the
gold tables keep them, because their user sketches are unioned into counts over several rows,
so this read is where they are suppressed. ``gold/defect_metrics`` has no per-user column and
is shown whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from feedback.core.privacy import DEFAULT_MIN_USERS, check_min_users, published
from feedback.core.registry import CHAMPION_ALIAS, QUERY_REWRITER, REPHRASE_DETECTOR
from feedback.core.schema import REWRITE_VALUE_COLUMNS
from feedback.rewrites.mine import supporting_chains

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

GRAINS = ("hour", "day", "week")
DIMENSIONS = ("domain", "intent", "device_type")
COUNT_COLUMNS = ("turns", "defects", "barge_ins", "rephrases", "terminations")
RATE_COLUMNS = ("defect_rate", "barge_in_rate", "rephrase_rate", "termination_rate")
NO_CANDIDATE = "(no candidate)"
REWRITE_COLUMNS = ("source_utterance", *REWRITE_VALUE_COLUMNS)
MODELS = (REPHRASE_DETECTOR, QUERY_REWRITER)


def _check_grain(grain: str) -> None:
    if grain not in GRAINS:
        raise ValueError(f"grain must be one of {', '.join(GRAINS)}, got {grain!r}")


def _check_dimension(by: str | None) -> None:
    if by is not None and by not in DIMENSIONS:
        raise ValueError(f"by must be None or one of {', '.join(DIMENSIONS)}, got {by!r}")


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _rates(frame: DataFrame) -> DataFrame:
    """Add each rate as count / turns (0 turns cannot happen in gold: a row exists because a turn did)."""
    turns = F.col("turns")
    return (
        frame.withColumn("defect_rate", F.col("defects") / turns)
        .withColumn("barge_in_rate", F.col("barge_ins") / turns)
        .withColumn("rephrase_rate", F.col("rephrases") / turns)
        .withColumn("termination_rate", F.col("terminations") / turns)
    )


def _summed(frame: DataFrame, keys: Sequence[Column | str]) -> DataFrame:
    return frame.groupBy(*keys).agg(*[F.sum(c).cast("long").alias(c) for c in COUNT_COLUMNS])


# ----- defect_overview ------------------------------------------------------------------------------


def rates_over_time(metrics: DataFrame, by: str | None = None, grain: str = "day") -> DataFrame:
    """Turns, defects and the defect, barge-in, rephrase and termination rates per period of ``gold/defect_metrics``.

    Args:
        metrics: ``gold/defect_metrics`` (one row per hour x domain x intent x device_type).
        by: also split by this dimension (``domain``, ``intent`` or ``device_type``); None: all traffic.
        grain: ``hour``, ``day`` or ``week`` (weeks start on Monday, UTC).

    Returns:
        ``period`` (timestamp, start of the period), ``by`` when given, the summed counts and the
        four rates, ordered by period then ``by``.

    Example::

        rates_over_time(spark.read.format("delta").load(paths.defect_metrics), by="domain")
    """
    _check_grain(grain)
    _check_dimension(by)
    keys: list[Column | str] = [F.date_trunc(grain, F.col("hour")).alias("period")]
    if by is not None:
        keys.append(by)
    order = ["period"] + ([by] if by is not None else [])
    return _rates(_summed(metrics, keys)).orderBy(*order)


def rates_by(metrics: DataFrame, by: str, top: int | None = None) -> DataFrame:
    """The four rates per value of ``by`` over the whole table, busiest values first.

    Args:
        metrics: ``gold/defect_metrics``.
        by: ``domain``, ``intent`` or ``device_type``.
        top: keep only the ``top`` values with the most turns (ties by name); None keeps all.
    """
    if by is None:
        raise ValueError("by must be one of domain, intent, device_type, got None")
    _check_dimension(by)
    if top is not None:
        _check_positive("top", top)
    ranked = _rates(_summed(metrics, [by])).orderBy(F.desc("turns"), F.asc(by))
    return ranked.limit(top) if top is not None else ranked


def failure_point_shares(failure_points: DataFrame, by: str) -> DataFrame:
    """Defects per value of ``by`` and failure point, with their share of that value's defects.

    Args:
        failure_points: ``gold/failure_points`` (one row per day x domain x intent x device_type x failure point).
        by: ``domain``, ``intent`` or ``device_type``.
    """
    _check_dimension(by)
    counts = failure_points.groupBy(by, "failure_point").agg(F.sum("defects").alias("defects"))
    total = F.sum("defects").over(Window.partitionBy(by))
    return counts.withColumn("share", F.col("defects") / total).orderBy(by, "failure_point")


def top_defective_utterances(
    utterances: DataFrame,
    pairs: DataFrame,
    n: int = 10,
    rephrases_per_utterance: int = 3,
    min_traffic: int = 1,
    min_users: int = DEFAULT_MIN_USERS,
) -> DataFrame:
    """The requests that fail most often, each with the wordings users most often switched to.

    Args:
        utterances: ``gold/utterance_defects``.
        pairs: ``gold/rephrase_pairs`` (``utterance`` -> ``rephrase``, with ``chains`` and ``users``).
        n: how many utterances (most defects first; ties: higher rate, then the text).
        rephrases_per_utterance: rephrases kept per utterance, most chains first (ties: the text).
        min_traffic: ignore utterances heard fewer times than this.
        min_users: ``privacy.min_users``: utterances and rephrases said by fewer distinct users
            are not shown (the rows are left out before ranking).

    Returns:
        ``normalized_utterance``, ``traffic``, ``defects``, ``defect_rate``, ``users`` and
        ``rephrases``: an array of ``(rephrase, chains, success_share)`` structs, empty when
        nobody rephrased it.
    """
    _check_positive("n", n)
    _check_positive("rephrases_per_utterance", rephrases_per_utterance)
    _check_positive("min_traffic", min_traffic)
    check_min_users(min_users)
    utterances = published(utterances, min_users)
    pairs = published(pairs, min_users)
    worst = (
        utterances.filter((F.col("traffic") >= min_traffic) & (F.col("defects") > 0))
        .orderBy(F.desc("defects"), F.desc("defect_rate"), F.asc("normalized_utterance"))
        .limit(n)
        .select("normalized_utterance", "traffic", "defects", "defect_rate", "users")
    )
    rank = Window.partitionBy("utterance").orderBy(F.desc("chains"), F.asc("rephrase"))
    top_rephrases = (
        pairs.withColumn("_rank", F.row_number().over(rank))
        .filter(F.col("_rank") <= rephrases_per_utterance)
        .groupBy(F.col("utterance").alias("normalized_utterance"))
        .agg(
            F.sort_array(
                F.collect_list(F.struct(F.col("_rank"), F.col("rephrase"), F.col("chains"), F.col("success_share")))
            ).alias("_ranked")
        )
        .select(
            "normalized_utterance",
            F.transform(
                "_ranked",
                lambda r: F.struct(r["rephrase"].alias("rephrase"), r["chains"].alias("chains"), r["success_share"].alias("success_share")),
            ).alias("rephrases"),
        )
    )
    empty = F.array().cast("array<struct<rephrase:string,chains:bigint,success_share:double>>")
    return (
        worst.join(top_rephrases, "normalized_utterance", "left")
        .withColumn("rephrases", F.coalesce(F.col("rephrases"), empty))
        .orderBy(F.desc("defects"), F.desc("defect_rate"), F.asc("normalized_utterance"))
    )


# ----- rewrite_review -------------------------------------------------------------------------------


def current_rewrites(rewrites: DataFrame) -> DataFrame:
    """``gold/rewrites`` as a reviewer reads it: the best supported rewrites first."""
    return rewrites.select(*REWRITE_COLUMNS, "mined_at").orderBy(
        F.desc("support_users"), F.desc("probability"), F.asc("source_utterance")
    )


def table_history(spark: SparkSession, path: str) -> DataFrame:
    """Every Delta version of the table at ``path``: when, which operation, and the rows it touched.

    ``inserted``/``updated``/``deleted`` come from the MERGE metrics (0 for other operations,
    whose ``written`` rows are the rows appended).
    """
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        raise ValueError(f"path: no Delta table at {path}")
    metric = F.col("operationMetrics")

    def count(name: str) -> Column:
        return F.coalesce(metric.getItem(name).cast("long"), F.lit(0).cast("long"))

    return (
        DeltaTable.forPath(spark, path)
        .history()
        .select(
            F.col("version"),
            F.col("timestamp"),
            F.col("operation"),
            count("numTargetRowsInserted").alias("inserted"),
            count("numTargetRowsUpdated").alias("updated"),
            count("numTargetRowsDeleted").alias("deleted"),
            count("numOutputRows").alias("written"),
        )
        .orderBy("version")
    )


def read_version(spark: SparkSession, path: str, version: int) -> DataFrame:
    """The Delta table at ``path`` as it was at ``version`` (time travel)."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def diff_rewrites(old: DataFrame, new: DataFrame) -> DataFrame:
    """What changed between two states of ``gold/rewrites``, one row per source that changed.

    ``change`` is ``added`` (source only in ``new``), ``removed`` (only in ``old``) or
    ``changed`` (another rewrite, probability or support); unchanged sources are left out.

    Returns:
        ``source_utterance``, ``change``, and ``old_``/``new_`` ``rewrite``, ``probability``,
        ``support_users``, ``support_chains`` (null on the side that lacks the source), ordered by
        change then source.
    """
    values = ("rewrite_utterance", "probability", "support_users", "support_chains")
    short = {"rewrite_utterance": "rewrite"}

    def side(frame: DataFrame, prefix: str) -> DataFrame:
        return frame.select(
            "source_utterance",
            F.lit(True).alias(f"_{prefix}"),
            *[F.col(c).alias(f"{prefix}_{short.get(c, c)}") for c in values],
        )

    joined = side(old, "old").join(side(new, "new"), "source_utterance", "full_outer")
    differs = F.lit(False)
    for c in values:
        name = short.get(c, c)
        differs = differs | ~F.col(f"old_{name}").eqNullSafe(F.col(f"new_{name}"))
    change = (
        F.when(F.col("_old").isNull(), F.lit("added"))
        .when(F.col("_new").isNull(), F.lit("removed"))
        .when(differs, F.lit("changed"))
    )
    columns = [f"{p}_{short.get(c, c)}" for c in values for p in ("old", "new")]
    return (
        joined.withColumn("change", change)
        .filter(F.col("change").isNotNull())
        .select("source_utterance", "change", *columns)
        .orderBy("change", "source_utterance")
    )


def chains_behind(turns: DataFrame, source: str, rewrite: str, max_chains: int = 3) -> DataFrame:
    """Example rephrase chains that support ``source -> rewrite``: every request of each chain, in order.

    A chain supports the pair by mining's own rule (``feedback.rewrites.mine.supporting_chains``):
    ``source`` was said before the chain's last request, which said ``rewrite`` and was no defect.

    Args:
        turns: ``silver/turns``.
        source, rewrite: normalized utterances, as in ``gold/rewrites``.
        max_chains: the earliest chains kept.

    Returns:
        ``chain_id``, ``turn_index``, ``ts``, ``utterance``, ``normalized_utterance``, ``status``,
        ``defect``, ``rephrase_score``, ``rephrase_detector``; ordered by chain start, turn. No
        ``user_id``: a reviewer needs the wordings, not who said them (``support_users`` counts them).
    """
    for name, value in (("source", source), ("rewrite", rewrite)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty normalized utterance, got {value!r}")
    _check_positive("max_chains", max_chains)
    requests = turns.filter(F.col("chain_id").isNotNull() & ~F.col("is_system_command"))
    starts = requests.groupBy("chain_id").agg(F.min("ts").alias("_start"))
    supporting = (
        supporting_chains(turns)
        .filter((F.col("source_utterance") == F.lit(source)) & (F.col("rewrite_utterance") == F.lit(rewrite)))
        .select("chain_id")
        .distinct()
        .join(starts, "chain_id")
        .orderBy("_start", "chain_id")
        .limit(max_chains)
    )
    return (
        requests.join(supporting, "chain_id")
        .select(
            "chain_id",
            "turn_index",
            "ts",
            "utterance",
            "normalized_utterance",
            "status",
            "defect",
            "rephrase_score",
            "rephrase_detector",
            "_start",
        )
        .orderBy("_start", "chain_id", "turn_index")
        .drop("_start")
    )


def vetoed_rewrites(rewrites: DataFrame, vetoes: DataFrame) -> DataFrame:
    """Rows of ``gold/rewrites`` that a veto rules out: the next ``mine-rewrites`` removes them.

    A veto with a null ``rewrite_utterance`` rules out every rewrite of its source.
    """
    matches = (F.col("r.source_utterance") == F.col("v.source_utterance")) & (
        F.col("v.rewrite_utterance").isNull() | (F.col("v.rewrite_utterance") == F.col("r.rewrite_utterance"))
    )
    return (
        rewrites.alias("r")
        .join(vetoes.alias("v"), matches, "inner")
        .select("r.source_utterance", "r.rewrite_utterance", "r.probability", "r.support_users", "v.reason", "v.vetoed_at")
        .orderBy("source_utterance", "rewrite_utterance", "vetoed_at")
    )


# ----- model_monitoring -----------------------------------------------------------------------------


def detector_share(turns: DataFrame) -> DataFrame:
    """Per event date, the share of silver turns scored by each ``rephrase_detector`` value.

    Turns without a rephrase candidate have no score; they count as ``(no candidate)``, so the
    shares of a date add up to 1 and a model version's share is read against all traffic.

    Returns:
        ``event_date``, ``detector``, ``turns``, ``share`` ordered by date, then detector.
    """
    detector = F.coalesce(F.col("rephrase_detector"), F.lit(NO_CANDIDATE)).alias("detector")
    per_day = Window.partitionBy("event_date")
    return (
        turns.groupBy("event_date", detector)
        .agg(F.count(F.lit(1)).alias("turns"))
        .withColumn("share", F.col("turns") / F.sum("turns").over(per_day))
        .orderBy("event_date", "detector")
    )


def registered_versions(client: MlflowClient, models: Sequence[str] = MODELS) -> pd.DataFrame:
    """Every registered version of ``models``: its aliases, when it was made, its run and the champion decision.

    A model that was never registered has no rows. ``created`` is UTC. Aliases come from the
    registered model: the versions ``search_model_versions`` returns do not reliably carry them.
    """
    columns = ["model", "version", "aliases", "created", "run_id", "champion_decision", "status"]
    rows: list[dict[str, object]] = []
    for name in models:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            continue
        aliases: dict[str, list[str]] = {}
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
        for version in versions:
            rows.append(
                {
                    "model": name,
                    "version": int(version.version),
                    "aliases": ",".join(sorted(aliases.get(str(version.version), []))),
                    "created": pd.Timestamp(version.creation_timestamp, unit="ms", tz="UTC"),
                    "run_id": version.run_id,
                    "champion_decision": (version.tags or {}).get("champion_decision", ""),
                    "status": version.status,
                }
            )
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["model", "version"], ignore_index=True)


def version_metrics(client: MlflowClient, models: Sequence[str] = MODELS) -> pd.DataFrame:
    """The metrics of the run behind each registered version, long format, oldest version first.

    Returns:
        ``model``, ``version``, ``created`` (UTC), ``champion`` (the version holds the alias
        now), ``metric``, ``value``.
    """
    versions = registered_versions(client, models)
    rows: list[dict[str, object]] = []
    for version in versions.itertuples(index=False):
        if not version.run_id:
            continue
        metrics = client.get_run(str(version.run_id)).data.metrics
        for key in sorted(metrics):
            rows.append(
                {
                    "model": version.model,
                    "version": version.version,
                    "created": version.created,
                    "champion": CHAMPION_ALIAS in str(version.aliases).split(","),
                    "metric": key,
                    "value": float(metrics[key]),
                }
            )
    frame = pd.DataFrame(rows, columns=["model", "version", "created", "champion", "metric", "value"])
    return frame.sort_values(["model", "version", "metric"], ignore_index=True)
