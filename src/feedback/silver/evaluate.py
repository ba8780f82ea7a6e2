"""Score silver/turns against a simulator ground-truth file.

Precision, recall and F1 for barge-in, termination and defect (per turn) and for rephrase
links (pairs event -> the event it rephrases), over the ground-truth events that silver
holds; ``coverage`` says how many that is (events still in an open session or behind the
watermark are not in silver until a later run or a backfill).

``run`` also scores the naive baseline of ``feedback.silver.baseline`` on the same rows of
silver/turns with the same code, and reports it beside ours: a signal on which we do not beat it
is a finding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feedback.core.lake import LakePaths, require_lake
from feedback.core.truth import read_truth
from feedback.silver.baseline import baseline_predictions, silver_traffic

SIGNALS = ("barge_in", "terminated", "defect", "rephrase_link")


@dataclass(frozen=True)
class Score:
    """Counts and rates of one binary decision."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 0.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self) | {"precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass(frozen=True)
class Evaluation:
    """Our scores per signal, and the naive baseline's on the same events when it was scored."""

    truth_events: int
    scored_events: int
    barge_in: Score
    terminated: Score
    defect: Score
    rephrase_link: Score
    baseline: Evaluation | None = None

    @property
    def coverage(self) -> float:
        return self.scored_events / self.truth_events if self.truth_events else 0.0

    def scores(self) -> dict[str, Score]:
        """``{signal: Score}`` in ``SIGNALS`` order."""
        return {name: getattr(self, name) for name in SIGNALS}

    def as_dict(self) -> dict[str, object]:
        figures: dict[str, object] = {
            "truth_events": self.truth_events,
            "scored_events": self.scored_events,
            "coverage": self.coverage,
            **{name: score.as_dict() for name, score in self.scores().items()},
        }
        if self.baseline is not None:
            figures["baseline"] = {name: score.as_dict() for name, score in self.baseline.scores().items()}
        return figures

    def render(self) -> str:
        """A markdown table, with the baseline's precision, recall and F1 beside ours when it was scored."""
        base = self.baseline
        header = "| signal | precision | recall | F1 | TP | FP | FN |"
        if base is not None:
            header += " baseline P | baseline R | baseline F1 |"
        lines = [
            f"scored {self.scored_events} of {self.truth_events} ground-truth events (coverage {self.coverage:.4f})",
            header,
            "|" + "---|" * (header.count("|") - 1),
        ]
        for name, score in self.scores().items():
            line = (
                f"| {name} | {score.precision:.4f} | {score.recall:.4f} | {score.f1:.4f} | "
                f"{score.true_positives} | {score.false_positives} | {score.false_negatives} |"
            )
            if base is not None:
                reference: Score = getattr(base, name)
                line += f" {reference.precision:.4f} | {reference.recall:.4f} | {reference.f1:.4f} |"
            lines.append(line)
        return "\n".join(lines)


def _binary(joined: DataFrame, predicted: str, actual: str) -> Score:
    row = joined.agg(
        F.sum((F.col(predicted) & F.col(actual)).cast("long")).alias("tp"),
        F.sum((F.col(predicted) & ~F.col(actual)).cast("long")).alias("fp"),
        F.sum((~F.col(predicted) & F.col(actual)).cast("long")).alias("fn"),
    ).first()
    return Score(int(row["tp"] or 0), int(row["fp"] or 0), int(row["fn"] or 0))


def evaluate_turns(turns: DataFrame, truth: DataFrame) -> Evaluation:
    """Compare silver turns with ground truth, joined on event_id."""
    predicted = turns.select(
        "event_id",
        F.col("barge_in").alias("p_barge_in"),
        F.col("terminated").alias("p_terminated"),
        F.col("defect").alias("p_defect"),
        F.col("rephrase_of").alias("p_rephrase_of"),
    )
    actual = truth.select(
        "event_id",
        F.col("barge_in").alias("t_barge_in"),
        F.col("terminated").alias("t_terminated"),
        F.col("defective").alias("t_defect"),
        F.col("rephrase_of").alias("t_rephrase_of"),
    )
    joined = predicted.join(actual, "event_id", "inner").persist()
    try:
        links = joined.agg(
            F.sum(
                (F.col("p_rephrase_of").isNotNull() & (F.col("p_rephrase_of") == F.col("t_rephrase_of"))).cast("long")
            ).alias("tp"),
            F.sum(
                (
                    F.col("p_rephrase_of").isNotNull()
                    & (F.col("t_rephrase_of").isNull() | (F.col("p_rephrase_of") != F.col("t_rephrase_of")))
                ).cast("long")
            ).alias("fp"),
            F.sum(
                (
                    F.col("t_rephrase_of").isNotNull()
                    & (F.col("p_rephrase_of").isNull() | (F.col("p_rephrase_of") != F.col("t_rephrase_of")))
                ).cast("long")
            ).alias("fn"),
        ).first()
        return Evaluation(
            truth_events=truth.count(),
            scored_events=joined.count(),
            barge_in=_binary(joined, "p_barge_in", "t_barge_in"),
            terminated=_binary(joined, "p_terminated", "t_terminated"),
            defect=_binary(joined, "p_defect", "t_defect"),
            rephrase_link=Score(int(links["tp"] or 0), int(links["fp"] or 0), int(links["fn"] or 0)),
        )
    finally:
        joined.unpersist()


def run(
    spark: SparkSession,
    lake: LakePaths,
    truth_path: str | Path,
    json_out: str | Path | None = None,
    *,
    baseline: bool = True,
) -> Evaluation:
    """Evaluate ``LAKE/silver/turns`` against ``truth_path``; optionally write the figures as JSON.

    With ``baseline`` (the default, and always for ``feedback evaluate``) the naive baseline is
    computed on the same rows of silver/turns and scored with the same code.
    """
    turns = spark.read.format("delta").load(require_lake(lake).silver_turns)
    truth = read_truth(spark, truth_path)
    evaluation = evaluate_turns(turns, truth)
    if baseline:
        evaluation = replace(evaluation, baseline=evaluate_turns(baseline_predictions(silver_traffic(turns)), truth))
    if json_out is not None:
        Path(json_out).write_text(json.dumps(evaluation.as_dict(), indent=2, sort_keys=True) + "\n")
    return evaluation
