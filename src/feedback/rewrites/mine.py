"""Rewrite mining: rephrase chains pooled across users as one absorbing Markov chain.

States are normalized utterances. Every request turn of an utterance ``u`` is one visit to ``u``
and ends in one of three ways:

* a detected rephrase to ``v`` (a transient step ``u -> v``; a turn that ``k`` later turns
  rephrase counts ``1/k`` towards each, so every visit weighs one);
* a success on its own: the turn was no defect and nobody rephrased it (absorbed in ``S(u)``);
* a failure: a defect nobody rephrased (abandoned, or still defective: absorbed in ``F``).

With ``Q`` the transient part, ``s`` the direct success and ``f`` the failure probabilities,
``B = (I - Q)^-1 [diag(s) | f]`` says, for a user who starts with ``u``, through which
utterance they finally succeeded. Every successful utterance is its own absorbing state, and
``S(w)`` is entered only from ``w``, so ``B[u, S(w)] = N[u, w] * s[w]`` with the fundamental
matrix ``N = (I - Q)^-1``. The rewrite of ``u`` is the ``w != u`` with the highest
``B[u, S(w)]``, emitted only when it clears the gates of ``MiningConfig`` (probability, its
share of the success found away from ``u``, support, the target's and the source's own success
rates; optionally beating ``B[u, S(u)]``). ``u`` itself is never a rewrite target, and a source
that succeeds on its own more often than ``max_source_success_rate`` is never rewritten.

Scale: ``B[u, .]`` is zero outside ``u``'s connected component of the rephrase graph, so the
components (label propagation in Spark) are solved independently, spread over Spark with
``applyInPandas``. Inside a group, components of similar size are stacked into one
block-diagonal sparse system: one ``splu`` factorisation, and a right-hand side whose column
``j`` holds the unit vector of the ``j``-th state of *every* component at once, so a group of
thousands of small components costs a handful of sparse solves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig, MiningConfig
from feedback.core.checkpoints import release
from feedback.core.lake import LakePaths, require_lake
from feedback.core.schema import CHANGE_DATA_FEED, REWRITE_VALUE_COLUMNS, REWRITE_VETOES_SCHEMA, REWRITES_SCHEMA, TABLE_COMMENTS
from feedback.core.tables import ensure_table, table_version
from feedback.rewrites.chain import (
    CANDIDATE_SCHEMA,
    KIND_FAILURE,
    KIND_NEXT,
    KIND_SUCCESS,
    KIND_VETO,
    solve_components,
)
from feedback.rewrites.register import register_rewriter, start_mining_run
from feedback.silver.sessionize import normalize_utterance

LOG = logging.getLogger("feedback.rewrites.mine")

# ----- Spark: silver turns -> transitions, statistics, components, candidates, rewrites --------


def is_request(turns: DataFrame) -> Column:
    """A request of silver: system commands are never rephrased or rewritten; empty texts have no key."""
    return ~turns["is_system_command"] & (F.length(turns["normalized_utterance"]) > 0)


def request_turns(turns: DataFrame) -> DataFrame:
    """The requests of silver (``is_request``), with the columns mining reads."""
    return turns.filter(is_request(turns)).select(
        "event_id", "user_id", "normalized_utterance", "defect", "rephrase_of", "chain_id", "chain_success", "turn_index"
    )


def state_transitions(turns: DataFrame) -> DataFrame:
    """Visits of each utterance by outcome: ``(source, target, kind, weight)``.

    A rephrased turn is a ``next`` step to each turn that rephrases it (``1/k`` each); any
    other turn is absorbed: ``success`` when it was no defect, ``failure`` otherwise.
    """
    requests = request_turns(turns)
    successors = requests.filter(F.col("rephrase_of").isNotNull()).select(
        F.col("rephrase_of").alias("event_id"), F.col("normalized_utterance").alias("target")
    )
    fanout = successors.groupBy("event_id").agg(F.count(F.lit(1)).alias("_fanout"))
    steps = (
        requests.join(successors, "event_id")
        .join(fanout, "event_id")
        .select(
            F.col("normalized_utterance").alias("source"),
            "target",
            F.lit(KIND_NEXT).alias("kind"),
            (F.lit(1.0) / F.col("_fanout")).alias("weight"),
        )
    )
    ends = requests.join(fanout, "event_id", "left_anti").select(
        F.col("normalized_utterance").alias("source"),
        F.lit(None).cast("string").alias("target"),
        F.when(F.col("defect"), F.lit(KIND_FAILURE)).otherwise(F.lit(KIND_SUCCESS)).alias("kind"),
        F.lit(1.0).alias("weight"),
    )
    return steps.unionByName(ends).groupBy("source", "target", "kind").agg(F.sum("weight").alias("weight"))


def utterance_stats(turns: DataFrame) -> DataFrame:
    """Per utterance: requests, those that were no defect, and the share (its success on its own)."""
    return (
        request_turns(turns)
        .groupBy(F.col("normalized_utterance").alias("utterance"))
        .agg(F.count(F.lit(1)).alias("traffic"), F.sum((~F.col("defect")).cast("long")).alias("successes"))
        .withColumn("success_rate", F.col("successes") / F.col("traffic"))
    )


def supporting_chains(turns: DataFrame) -> DataFrame:
    """The support rule: a chain supports ``source -> rewrite`` when ``source`` was said before its
    last request, and that last request said ``rewrite`` (another text) and was no defect.

    Returns ``chain_id``, ``user_id``, ``source_utterance``, ``rewrite_utterance``, once per chain
    and pair (``chain_support`` counts them; the review notebook shows them).
    """
    chained = turns.filter(is_request(turns) & turns["chain_id"].isNotNull())
    ends = chained.groupBy("chain_id").agg(
        F.max("turn_index").alias("_last_index"),
        F.max_by("normalized_utterance", "turn_index").alias("rewrite_utterance"),
        F.max_by("defect", "turn_index").alias("_last_defect"),
    )
    return (
        chained.join(ends, "chain_id")
        .filter(
            (F.col("turn_index") < F.col("_last_index"))
            & ~F.col("_last_defect")
            & (F.col("normalized_utterance") != F.col("rewrite_utterance"))
        )
        .select("chain_id", "user_id", F.col("normalized_utterance").alias("source_utterance"), "rewrite_utterance")
        .distinct()
    )


def chain_support(turns: DataFrame) -> DataFrame:
    """Per (source, target): the chains that support it (``supporting_chains``) and their users."""
    return (
        supporting_chains(turns)
        .groupBy("source_utterance", "rewrite_utterance")
        .agg(F.count_distinct("chain_id").alias("support_chains"), F.count_distinct("user_id").alias("support_users"))
    )


def connected_components(edges: DataFrame, max_iterations: int) -> tuple[DataFrame, int]:
    """``(utterance, component)`` of every utterance on an edge, by min-label propagation; and the rounds taken.

    Labels are 64-bit hashes; a collision can only merge two components, which is harmless
    (components are solved separately for speed, a merged one is still solved exactly). Each
    round takes the smallest label among the neighbours and then the label of the label
    (pointer jumping), so long paths converge in few rounds.

    Raises:
        RuntimeError: not converged in ``max_iterations`` rounds (a split component would be solved wrongly).
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    pairs = edges.filter(F.col("source") != F.col("target")).select(
        F.xxhash64("source").alias("src"), F.xxhash64("target").alias("dst")
    )
    links = pairs.unionByName(pairs.select(F.col("dst").alias("src"), F.col("src").alias("dst"))).distinct()
    links = links.localCheckpoint(eager=True)
    names = (
        edges.select(F.col("source").alias("utterance"))
        .unionByName(edges.select(F.col("target").alias("utterance")))
        .distinct()
        .withColumn("id", F.xxhash64("utterance"))
    )
    labels = links.select(F.col("src").alias("id")).distinct().withColumn("label", F.col("id")).localCheckpoint(eager=True)
    held = labels  # the checkpoint behind ``labels``, freed once the next round's is computed
    for round_number in range(1, max_iterations + 1):
        lowest = (
            links.join(labels.withColumnRenamed("id", "src"), "src")
            .groupBy(F.col("dst").alias("id"))
            .agg(F.min("label").alias("_neighbour"))
        )
        stepped = labels.join(lowest, "id", "left").select(
            "id", F.least("label", F.coalesce("_neighbour", "label")).alias("label")
        )
        jumped = (
            stepped.alias("a")
            .join(stepped.alias("b"), F.col("a.label") == F.col("b.id"))
            .join(labels.alias("old"), F.col("a.id") == F.col("old.id"))
            .select(
                F.col("a.id").alias("id"),
                F.least(F.col("a.label"), F.col("b.label")).alias("label"),
                (F.least(F.col("a.label"), F.col("b.label")) != F.col("old.label")).alias("_changed"),
            )
            .localCheckpoint(eager=True)
        )
        changed = jumped.filter(F.col("_changed")).count()
        release(held)
        held = jumped
        labels = jumped.drop("_changed")
        LOG.info("components: round %d, %d labels changed", round_number, changed)
        if changed == 0:
            return names.join(labels, "id").select("utterance", F.col("label").alias("component")), round_number
    raise RuntimeError(
        f"connected components did not converge in {max_iterations} rounds; raise mining.max_label_iterations"
    )


@dataclass(frozen=True)
class MiningOutcome:
    """What one mining pass produced (DataFrames are lazy unless stated) and its sizes."""

    rewrites: DataFrame
    candidates: DataFrame
    states: int
    components: int
    skipped_components: int
    label_rounds: int
    seconds: dict[str, float] = field(default_factory=dict)


def solve_candidates(transitions: DataFrame, vetoes: DataFrame, config: MiningConfig) -> tuple[DataFrame, int]:
    """Components of the rephrase graph, then ``solve_components`` per group of components (``applyInPandas``).

    Returns the candidates, materialised (``localCheckpoint``), and the label-propagation rounds.
    """
    edges = transitions.filter(F.col("kind") == KIND_NEXT).select("source", "target").distinct()
    components, rounds = connected_components(edges, config.max_label_iterations)
    components = components.withColumnRenamed("utterance", "source")
    moves = transitions.join(components, "source")
    blocked = (
        vetoes.filter(F.col("rewrite_utterance").isNotNull())
        .select(
            F.col("source_utterance").alias("source"),
            F.col("rewrite_utterance").alias("target"),
            F.lit(KIND_VETO).alias("kind"),
            F.lit(0.0).alias("weight"),
        )
        .join(components, "source")
    )
    grouped = moves.unionByName(blocked).withColumn("_bucket", F.pmod("component", F.lit(config.solve_buckets)))
    max_cells, max_states = config.solve_cells, config.max_component_states

    def solve(frame: pd.DataFrame) -> pd.DataFrame:
        return solve_components(frame.drop(columns=["_bucket"]), max_cells=max_cells, max_component_states=max_states)

    candidates = grouped.groupBy("_bucket").applyInPandas(solve, CANDIDATE_SCHEMA)
    return candidates.localCheckpoint(eager=True), rounds


def select_rewrites(
    candidates: DataFrame,
    stats: DataFrame,
    support: DataFrame,
    vetoes: DataFrame,
    config: MiningConfig,
    run_id: str,
    mined_at: dt.datetime,
) -> DataFrame:
    """Candidates that clear every threshold, as ``REWRITES_SCHEMA`` rows.

    The candidate is the best success state other than the source (vetoed pairs were already
    passed over by the solver); every gate of ``MiningConfig`` applies to it, and a source
    vetoed as a whole is dropped.
    """
    source_stats = stats.select(
        F.col("utterance").alias("source_utterance"), F.col("success_rate").alias("source_success_rate")
    )
    target_stats = stats.select(
        F.col("utterance").alias("rewrite_utterance"), F.col("success_rate").alias("target_success_rate")
    )
    whole_source = vetoes.filter(F.col("rewrite_utterance").isNull()).select("source_utterance").distinct()
    pair = vetoes.filter(F.col("rewrite_utterance").isNotNull()).select("source_utterance", "rewrite_utterance").distinct()
    return (
        candidates.filter(F.col("rewrite_utterance").isNotNull())
        .join(source_stats, "source_utterance")
        .join(target_stats, "rewrite_utterance")
        .join(support, ["source_utterance", "rewrite_utterance"], "left")
        .fillna(0, subset=["support_chains", "support_users"])
        .join(whole_source, "source_utterance", "left_anti")
        .join(pair, ["source_utterance", "rewrite_utterance"], "left_anti")
        .filter(
            (F.col("probability") >= F.lit(config.min_probability))
            & (F.col("probability") >= F.lit(config.min_target_share) * F.col("other_probability"))
            & ((F.col("probability") > F.col("own_probability")) | F.lit(not config.beat_own_success))
            & (F.col("source_success_rate") <= F.lit(config.max_source_success_rate))
            & (F.col("target_success_rate") >= F.lit(config.min_target_success_rate))
            & (F.col("support_users") >= F.lit(config.min_support_users))
            & (F.col("support_chains") >= F.lit(config.min_support_chains))
        )
        .select(
            "source_utterance",
            "rewrite_utterance",
            "probability",
            F.col("support_users").cast("long").alias("support_users"),
            F.col("support_chains").cast("long").alias("support_chains"),
            "source_success_rate",
            "target_success_rate",
            F.lit(mined_at).cast("timestamp").alias("mined_at"),
            F.lit(run_id).alias("run_id"),
        )
    )


def mine_rewrites(
    turns: DataFrame, vetoes: DataFrame, config: MiningConfig, run_id: str, mined_at: dt.datetime
) -> MiningOutcome:
    """Silver turns (and vetoes) -> the rewrite table's rows, with the sizes of the problem solved.

    The transitions and the candidates are materialised (``localCheckpoint``) so the counts and
    the later joins do not solve the chains again; ``rewrites`` stays lazy.
    """
    started = time.perf_counter()
    transitions = state_transitions(turns).localCheckpoint(eager=True)
    counted = time.perf_counter()
    LOG.info("transitions counted in %.1fs; solving the components", counted - started)
    candidates, rounds = solve_candidates(transitions, vetoes, config)
    solved = time.perf_counter()
    sizes = candidates.agg(
        F.count_distinct("component").alias("components"),
        F.count_distinct(F.when(F.col("component_states") > config.max_component_states, F.col("component"))).alias("skipped"),
    ).first()
    components, skipped = (int(sizes["components"]), int(sizes["skipped"])) if sizes else (0, 0)
    states = (
        transitions.select("source")
        .unionByName(transitions.filter(F.col("kind") == KIND_NEXT).select(F.col("target").alias("source")))
        .distinct()
        .count()
    )
    LOG.info(
        "%d states, %d components with a rephrase solved in %.1fs (%d label rounds)", states, components, solved - counted, rounds
    )
    if skipped:
        LOG.warning("%d components above mining.max_component_states=%d were skipped", skipped, config.max_component_states)
    rewrites = select_rewrites(candidates, utterance_stats(turns), chain_support(turns), vetoes, config, run_id, mined_at)
    return MiningOutcome(
        rewrites=rewrites,
        candidates=candidates,
        states=int(states),
        components=components,
        skipped_components=skipped,
        label_rounds=rounds,
        seconds={"transitions": counted - started, "solve": solved - counted},
    )


# ----- Delta I/O and the job ---------------------------------------------------------------------


def ensure_rewrite_tables(spark: SparkSession, lake: LakePaths) -> None:
    """Create ``gold/rewrites`` and the (empty) ``gold/rewrite_vetoes`` if absent; both record their changes."""
    ensure_table(spark, lake.rewrites, REWRITES_SCHEMA, (), CHANGE_DATA_FEED, comment=TABLE_COMMENTS["rewrites"])
    ensure_table(spark, lake.rewrite_vetoes, REWRITE_VETOES_SCHEMA, (), CHANGE_DATA_FEED, comment=TABLE_COMMENTS["rewrite_vetoes"])




class MiningRefused(RuntimeError):
    """A mining run would delete too much of ``gold/rewrites``; nothing was written.

    A RuntimeError so the scheduled job fails visibly instead of serving an emptied table.
    """

    def __init__(self, message: str, *, deleted: int, live: int, max_delete_share: float) -> None:
        super().__init__(message)
        self.deleted = deleted
        self.live = live
        self.max_delete_share = max_delete_share


def check_deletions(spark: SparkSession, path: str, rewrites: DataFrame, max_delete_share: float) -> tuple[int, int]:
    """Refuse a MERGE that would delete more than ``max_delete_share`` of the live rows; returns (deleted, live).

    The MERGE deletes every live source the run no longer mines, so an empty or broken silver
    (no chains) would empty the table the assistant serves from. Call with ``rewrites``
    materialised: it is read once here and again by the MERGE.

    Raises:
        MiningRefused: ``deleted / live > max_delete_share`` (with at least one live row).
        ValueError: ``max_delete_share`` is not in [0, 1].
    """
    if isinstance(max_delete_share, bool) or not isinstance(max_delete_share, (int, float)) or not 0.0 <= max_delete_share <= 1.0:
        raise ValueError(f"max_delete_share must be a number in [0, 1], got {max_delete_share!r}")
    live_rows = DeltaTable.forPath(spark, path).toDF().select("source_utterance")
    counts = (
        live_rows.join(rewrites.select("source_utterance").distinct().withColumn("_kept", F.lit(True)), "source_utterance", "left")
        .agg(F.count(F.lit(1)).alias("live"), F.count_if(F.col("_kept").isNull()).alias("deleted"))
        .first()
    )
    live, deleted = (int(counts["live"]), int(counts["deleted"])) if counts else (0, 0)
    if live and deleted / live > max_delete_share:
        message = (
            f"mining refused: the run would delete {deleted} of the {live} live rewrites in {path} "
            f"(share {deleted / live:.3f} > mining.max_delete_share={max_delete_share}); nothing was written. "
            "Check silver/turns (an empty or broken run mines no chains), or raise mining.max_delete_share "
            "to accept the deletions."
        )
        LOG.error("%s", message)
        raise MiningRefused(message, deleted=deleted, live=live, max_delete_share=float(max_delete_share))
    if deleted:
        LOG.info("the MERGE deletes %d of the %d live rewrites", deleted, live)
    return deleted, live


def merge_rewrites(spark: SparkSession, path: str, rewrites: DataFrame, max_delete_share: float = MiningConfig.max_delete_share) -> int:
    """MERGE the mined rows into ``gold/rewrites`` by source; returns the table's new Delta version.

    Changed rows are updated, new sources inserted, sources no longer mined deleted; a row that
    did not change keeps its ``mined_at``/``run_id``, so the Delta history shows what changed.
    ``check_deletions`` runs first: a run that would delete more than ``max_delete_share`` of
    the live rows raises ``MiningRefused`` and writes nothing.
    """
    check_deletions(spark, path, rewrites, max_delete_share)
    changed = " OR ".join(f"NOT (t.{c} <=> s.{c})" for c in REWRITE_VALUE_COLUMNS)
    columns = REWRITES_SCHEMA.fieldNames()
    (
        DeltaTable.forPath(spark, path)
        .alias("t")
        .merge(rewrites.select(*columns).alias("s"), "t.source_utterance = s.source_utterance")
        .whenMatchedUpdate(condition=changed, set={c: f"s.{c}" for c in columns})
        .whenNotMatchedInsert(values={c: f"s.{c}" for c in columns})
        .whenNotMatchedBySourceDelete()
        .execute()
    )
    return table_version(spark, path)


def add_veto(spark: SparkSession, lake: LakePaths, source: str, rewrite: str | None, reason: str | None) -> None:
    """Append a veto (the texts are normalized like silver's keys); the next mining run respects it."""
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"source must be a non-empty string, got {source!r}")
    ensure_rewrite_tables(spark, lake)
    row = spark.createDataFrame([(source, rewrite, reason)], "source string, rewrite string, reason string")
    row.select(
        normalize_utterance(F.col("source")).alias("source_utterance"),
        normalize_utterance(F.col("rewrite")).alias("rewrite_utterance"),
        F.col("reason"),
        F.current_timestamp().alias("vetoed_at"),
    ).write.format("delta").mode("append").save(lake.rewrite_vetoes)


@dataclass(frozen=True)
class MiningResult:
    """Summary of ``run`` (the CLI prints ``render``)."""

    run_id: str
    rewrites: int
    table_version: int
    states: int
    components: int
    skipped_components: int
    label_rounds: int
    seconds: float
    registration: str | None = None

    def render(self) -> str:
        lines = [
            f"rewrite mining run {self.run_id}: {self.rewrites} rewrites in gold/rewrites (Delta version {self.table_version})",
            f"  {self.states} states, {self.components} components with a rephrase, "
            f"{self.skipped_components} skipped as too large, {self.label_rounds} label rounds, {self.seconds:.1f}s",
        ]
        if self.registration:
            lines.append(f"  {self.registration}")
        return "\n".join(lines)


def run(
    spark: SparkSession,
    config: AppConfig,
    lake: LakePaths,
    truth_path: str | Path | None = None,
    register: bool | None = None,
) -> MiningResult:
    """Mine ``LAKE/silver/turns`` into ``LAKE/gold/rewrites`` and (by default) register the query rewriter.

    Args:
        spark: the session.
        config: ``config.mining`` holds the thresholds.
        lake: the lake root.
        truth_path: a simulator ground truth; when given, the champion rule compares versions on
            it (``feedback.rewrites.evaluate``), otherwise on the implicit evaluation from silver.
        register: overrides ``mining.register``.

    Raises:
        MiningRefused: the MERGE would delete more than ``mining.max_delete_share`` of the live
            rewrites (``check_deletions``); ``gold/rewrites`` is left as it was.
    """
    started = time.perf_counter()
    paths = require_lake(lake)
    if not DeltaTable.isDeltaTable(spark, paths.silver_turns):
        raise ValueError(f"lake: no Delta table at {paths.silver_turns}; run `feedback pipeline` into this lake first")
    ensure_rewrite_tables(spark, paths)
    turns = spark.read.format("delta").load(paths.silver_turns)
    vetoes = spark.read.format("delta").load(paths.rewrite_vetoes)
    do_register = config.mining.register if register is None else register
    mined_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    if not do_register:
        return _mine_and_merge(spark, config, paths, turns, vetoes, uuid.uuid4().hex, mined_at, started)

    with start_mining_run(paths, config.mining) as active:
        result = _mine_and_merge(spark, config, paths, turns, vetoes, active.info.run_id, mined_at, started)
        decision = register_rewriter(spark, paths, config, result.table_version, truth_path)
    return dataclasses.replace(result, registration=decision, seconds=time.perf_counter() - started)


def _mine_and_merge(
    spark: SparkSession,
    config: AppConfig,
    paths: LakePaths,
    turns: DataFrame,
    vetoes: DataFrame,
    run_id: str,
    mined_at: dt.datetime,
    started: float,
) -> MiningResult:
    LOG.info("mining rewrites from %s (run %s)", paths.silver_turns, run_id)
    outcome = mine_rewrites(turns, vetoes, config.mining, run_id, mined_at)
    rows = outcome.rewrites.localCheckpoint(eager=True)
    try:
        count = rows.count()
        LOG.info("%d rewrites from %d states in %d components; merging", count, outcome.states, outcome.components)
        version = merge_rewrites(spark, paths.rewrites, rows, config.mining.max_delete_share)
    finally:
        release(rows)
        release(outcome.candidates)
    return MiningResult(
        run_id=run_id,
        rewrites=count,
        table_version=version,
        states=outcome.states,
        components=outcome.components,
        skipped_components=outcome.skipped_components,
        label_rounds=outcome.label_rounds,
        seconds=time.perf_counter() - started,
    )
