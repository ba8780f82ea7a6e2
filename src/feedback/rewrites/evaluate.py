"""Offline win/loss of a rewrite table: replay the traffic through the rewriter and judge each rewrite.

For every request whose normalized utterance has a rewrite:

* **win**: the request was defective and the rewrite's target carries the meaning the user intended;
* **loss**: the target means something else (whether the request was defective or fine);
* **neutral**: the request was fine and the target means the same (a harmless paraphrase).

Meanings are (intent, slots). With the simulator's ground truth (``evaluation_traffic`` with a
truth file) a request's meaning is what the user intended, and a target's meaning is the
intended meaning of the target's own requests that were served correctly (an utterance the
assistant never served correctly has no meaning to offer, so rewriting to it is a loss). Without
ground truth the same rules run on ``silver/turns`` (the implicit evaluation): a request's
meaning is its NLU interpretation when it was no defect, or the interpretation of the turn
where its chain finally succeeded; unknown when the user gave up.

Figures: wins and losses by traffic (requests) and by rewrite (a rewrite wins when its traffic
has more wins than losses, loses when it has more losses), the share of defective traffic the
rewrites fix (wins / defective requests, overall and among rewritten sources), and
``net_fixed_share`` ((wins - losses) / defective requests), the champion rule's score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from feedback.core.lake import LakePaths, require_lake
from feedback.core.registry import configure_mlflow
from feedback.core.truth import read_truth
from feedback.rewrites.pyfunc import load_table
from feedback.silver.sessionize import normalize_utterance

TRAFFIC_COLUMNS = ("utterance", "intended", "defective")


def meaning_key(intent: Column, slots: Column) -> Column:
    """``intent|slot=value;slot=value`` with slots sorted; null when the intent is null."""
    pairs = F.transform(F.map_entries(F.coalesce(slots, F.create_map().cast("map<string,string>"))), lambda e: F.concat(e["key"], F.lit("="), e["value"]))
    return F.when(intent.isNotNull(), F.concat(intent, F.lit("|"), F.array_join(F.array_sort(pairs), ";")))


def truth_traffic(truth: DataFrame) -> DataFrame:
    """Requests of a ground truth as ``(utterance, intended, defective)``."""
    return truth.filter(~F.col("is_system_command")).select(
        normalize_utterance(F.col("utterance")).alias("utterance"),
        meaning_key(F.col("intended_intent"), F.col("intended_slots")).alias("intended"),
        F.col("defective").alias("defective"),
    ).filter(F.length("utterance") > 0)


def implicit_traffic(turns: DataFrame) -> DataFrame:
    """Requests of ``silver/turns`` as ``(utterance, intended, defective)``, meanings from the NLU (see module doc).

    Chained and unchained requests are handled apart: a join or window keyed on ``chain_id``
    would send every unchained request (most of the traffic, key null) to one task.
    """
    requests = turns.filter(~F.col("is_system_command") & (F.length("normalized_utterance") > 0)).withColumn(
        "_meaning", meaning_key(F.col("intent"), F.col("slots"))
    )
    chained = requests.filter(F.col("chain_id").isNotNull())
    finals = chained.groupBy("chain_id").agg(F.max_by("_meaning", "turn_index").alias("_final"))
    own = F.when(~F.col("defect"), F.col("_meaning"))
    with_chain = chained.join(finals, "chain_id").select(
        F.col("normalized_utterance").alias("utterance"),
        F.coalesce(own, F.when(F.coalesce(F.col("chain_success"), F.lit(False)), F.col("_final"))).alias("intended"),
        F.col("defect").alias("defective"),
    )
    alone = requests.filter(F.col("chain_id").isNull()).select(
        F.col("normalized_utterance").alias("utterance"), own.alias("intended"), F.col("defect").alias("defective")
    )
    return with_chain.unionByName(alone)


def target_meanings(traffic: DataFrame) -> DataFrame:
    """``(utterance, meaning)``: the most frequent intended meaning of the utterance's requests served correctly."""
    ranked = Window.partitionBy("utterance").orderBy(F.desc("n"), F.asc("intended"))
    return (
        traffic.filter(~F.col("defective") & F.col("intended").isNotNull())
        .groupBy("utterance", "intended")
        .agg(F.count(F.lit(1)).alias("n"))
        .withColumn("_rank", F.row_number().over(ranked))
        .filter(F.col("_rank") == 1)
        .select("utterance", F.col("intended").alias("meaning"))
    )


def judge_requests(rewrites: DataFrame, traffic: DataFrame, meanings: DataFrame | None = None) -> DataFrame:
    """Every rewritten request with its ``outcome``: win, loss, neutral or unknown (intended meaning not known).

    A target's meaning is learned from ``meanings`` (traffic of the same columns; default
    ``traffic`` itself). Judging a later slice of traffic, pass the whole: what a wording means
    when it is served does not depend on whether it was said again in the slice.
    """
    targets = target_meanings(traffic if meanings is None else meanings).select(F.col("utterance").alias("rewrite_utterance"), F.col("meaning").alias("target_meaning"))
    outcome = (
        F.when(F.col("intended").isNull(), F.lit("unknown"))
        .when(F.col("target_meaning").isNull() | (F.col("intended") != F.col("target_meaning")), F.lit("loss"))
        .when(F.col("defective"), F.lit("win"))
        .otherwise(F.lit("neutral"))
    )
    return (
        traffic.join(rewrites.select(F.col("source_utterance").alias("utterance"), "rewrite_utterance"), "utterance")
        .join(targets, "rewrite_utterance", "left")
        .withColumn("outcome", outcome)
    )


def _ratio(numerator: int, denominator: int) -> float:
    if denominator:
        return numerator / denominator
    return math.inf if numerator else 0.0


@dataclass(frozen=True)
class RewriteEvaluation:
    """Win/loss counts of one rewrite table on one traffic."""

    rewrites: int
    rewrites_won: int
    rewrites_lost: int
    rewrites_neutral: int
    requests: int
    defective_requests: int
    rewritten_requests: int
    defective_rewritten_requests: int
    wins: int
    losses: int
    neutral: int
    unknown: int

    @property
    def win_loss_by_traffic(self) -> float:
        return _ratio(self.wins, self.losses)

    @property
    def win_loss_by_rewrite(self) -> float:
        return _ratio(self.rewrites_won, self.rewrites_lost)

    @property
    def fixed_share(self) -> float:
        """Wins / every defective request of the traffic."""
        return self.wins / self.defective_requests if self.defective_requests else 0.0

    @property
    def fixed_share_of_rewritten(self) -> float:
        """Wins / defective requests whose utterance has a rewrite (the defect reduction on rewritten traffic)."""
        return self.wins / self.defective_rewritten_requests if self.defective_rewritten_requests else 0.0

    @property
    def net_fixed_share(self) -> float:
        """(Wins - losses) / defective requests: the champion rule's score."""
        return (self.wins - self.losses) / self.defective_requests if self.defective_requests else 0.0

    def metrics(self) -> dict[str, float]:
        """Everything as MLflow metrics (an infinite ratio, with no losses, is left out: counts say it)."""
        values: dict[str, float] = {key: float(value) for key, value in asdict(self).items()}
        for name in ("win_loss_by_traffic", "win_loss_by_rewrite", "fixed_share", "fixed_share_of_rewritten", "net_fixed_share"):
            value = float(getattr(self, name))
            if math.isfinite(value):
                values[name] = value
        return values

    def as_dict(self) -> dict[str, object]:
        """Counts and rates, JSON-safe: an infinite ratio (no losses) is null."""
        rates = {
            name: float(getattr(self, name))
            for name in ("win_loss_by_traffic", "win_loss_by_rewrite", "fixed_share", "fixed_share_of_rewritten", "net_fixed_share")
        }
        return asdict(self) | {name: value if math.isfinite(value) else None for name, value in rates.items()}

    def render(self) -> str:
        def ratio(value: float) -> str:
            return "inf (no losses)" if math.isinf(value) else f"{value:.2f}"

        return "\n".join(
            [
                "| | wins | losses | neutral | unknown | win/loss |",
                "|---|---|---|---|---|---|",
                f"| by rewrite ({self.rewrites} rewrites) | {self.rewrites_won} | {self.rewrites_lost} | "
                f"{self.rewrites_neutral} | – | {ratio(self.win_loss_by_rewrite)} |",
                f"| by traffic ({self.rewritten_requests} rewritten requests) | {self.wins} | {self.losses} | "
                f"{self.neutral} | {self.unknown} | {ratio(self.win_loss_by_traffic)} |",
                "",
                f"defective requests: {self.defective_requests} of {self.requests}; "
                f"fixed: {self.fixed_share:.4f} of all defective traffic, "
                f"{self.fixed_share_of_rewritten:.4f} of the {self.defective_rewritten_requests} defective requests "
                f"with a rewrite; net fixed share (wins - losses) / defective: {self.net_fixed_share:.4f}",
            ]
        )


def evaluate_rewrites(rewrites: DataFrame, traffic: DataFrame, meanings: DataFrame | None = None) -> RewriteEvaluation:
    """Judge ``rewrites`` (``source_utterance``, ``rewrite_utterance``) on ``traffic`` (``TRAFFIC_COLUMNS``),
    the targets' meanings learned from ``meanings`` (default ``traffic``; see ``judge_requests``)."""
    missing = {"source_utterance", "rewrite_utterance"} - set(rewrites.columns)
    if missing:
        raise ValueError(f"rewrites is missing columns {sorted(missing)}")
    for name, frame in (("traffic", traffic), ("meanings", meanings)):
        missing = set(TRAFFIC_COLUMNS) - set(frame.columns) if frame is not None else set()
        if missing:
            raise ValueError(f"{name} is missing columns {sorted(missing)}")
    traffic = traffic.persist()
    try:
        totals = traffic.agg(
            F.count(F.lit(1)).alias("requests"), F.coalesce(F.sum(F.col("defective").cast("long")), F.lit(0)).alias("defective")
        ).first()
        judged = judge_requests(rewrites, traffic, meanings)
        per_rewrite = judged.groupBy("utterance").agg(
            F.count(F.lit(1)).alias("requests"),
            F.sum(F.col("defective").cast("long")).alias("defective"),
            F.sum((F.col("outcome") == "win").cast("long")).alias("wins"),
            F.sum((F.col("outcome") == "loss").cast("long")).alias("losses"),
            F.sum((F.col("outcome") == "neutral").cast("long")).alias("neutral"),
            F.sum((F.col("outcome") == "unknown").cast("long")).alias("unknown"),
        )
        row = per_rewrite.agg(
            F.count(F.lit(1)).alias("seen"),
            F.coalesce(F.sum((F.col("wins") > F.col("losses")).cast("long")), F.lit(0)).alias("won"),
            F.coalesce(F.sum((F.col("losses") > F.col("wins")).cast("long")), F.lit(0)).alias("lost"),
            *[F.coalesce(F.sum(c), F.lit(0)).alias(c) for c in ("requests", "defective", "wins", "losses", "neutral", "unknown")],
        ).first()
        rewrites_total = rewrites.select("source_utterance").distinct().count()
    finally:
        traffic.unpersist()
    won, lost = int(row["won"]), int(row["lost"])
    return RewriteEvaluation(
        rewrites=rewrites_total,
        rewrites_won=won,
        rewrites_lost=lost,
        rewrites_neutral=rewrites_total - won - lost,
        requests=int(totals["requests"]),
        defective_requests=int(totals["defective"]),
        rewritten_requests=int(row["requests"]),
        defective_rewritten_requests=int(row["defective"]),
        wins=int(row["wins"]),
        losses=int(row["losses"]),
        neutral=int(row["neutral"]),
        unknown=int(row["unknown"]),
    )


def evaluation_traffic(spark: SparkSession, lake: LakePaths, truth_path: str | Path | None) -> DataFrame:
    """Ground-truth traffic when a truth file is given, else the implicit traffic of ``silver/turns``."""
    if truth_path is not None:
        return truth_traffic(read_truth(spark, truth_path))
    return implicit_traffic(spark.read.format("delta").load(lake.silver_turns))


def rewrites_frame(spark: SparkSession, table: Mapping[str, tuple[str, float]]) -> DataFrame:
    """A rewrite table (e.g. a registered model's) as a Spark DataFrame ``(source_utterance, rewrite_utterance)``."""
    rows = [(source, target) for source, (target, _) in sorted(table.items())]
    return spark.createDataFrame(rows, "source_utterance string, rewrite_utterance string")


def run(
    spark: SparkSession,
    lake: LakePaths,
    truth_path: str | Path,
    json_out: str | Path | None = None,
    model_uri: str | None = None,
) -> RewriteEvaluation:
    """Evaluate ``LAKE/gold/rewrites`` (or the registered model ``model_uri``) against ``truth_path``."""
    require_lake(lake)
    if model_uri is not None:
        configure_mlflow(lake)
        rewrites = rewrites_frame(spark, load_table(model_uri))
    else:
        rewrites = spark.read.format("delta").load(lake.rewrites).select("source_utterance", "rewrite_utterance")
    evaluation = evaluate_rewrites(rewrites, evaluation_traffic(spark, lake, truth_path))
    if json_out is not None:
        Path(json_out).write_text(json.dumps(evaluation.as_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return evaluation
