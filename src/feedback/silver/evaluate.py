"""Score silver/turns against a simulator ground-truth file.

Precision, recall and F1 for barge-in, termination and defect (per turn), for rephrase
links (pairs event -> the event it rephrases) and for goal segmentation, with the accuracy of
goal success, over the ground-truth events that silver holds; ``coverage`` says how many that
is (events still in an open session or behind the watermark are not in silver until a later
run or a backfill).

``run`` also scores the naive baseline of ``feedback.silver.baseline`` on the same rows of
silver/turns with the same code, and reports it beside ours: a signal on which we do not beat it
is a finding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feedback.core.lake import LakePaths, require_lake
from feedback.core.truth import read_truth
from feedback.silver.baseline import baseline_predictions, silver_traffic
from feedback.silver.failure_points import FAILURE_POINTS

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
class DetectableDefects:
    """How many defects left a signal an implicit detector can see, and how many of those were found.

    A defect is *detectable* when the user barged in, stopped the answer, rephrased the request or
    gave negative feedback, or the assistant said it failed (status unhandled or error). The
    rest are silent: a wrong answer the user just let go, invisible to any implicit signal.
    """

    detectable: int
    silent: int
    found: int

    @property
    def silent_share(self) -> float:
        total = self.detectable + self.silent
        return self.silent / total if total else 0.0

    @property
    def recall(self) -> float:
        return self.found / self.detectable if self.detectable else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self) | {"silent_share": self.silent_share, "recall": self.recall}


@dataclass(frozen=True)
class GoalScores:
    """How well silver's goals (``goal_id``, ``goal_success``) match what the users were trying to do.

    Over the requests that both hold: a goal of silver is *matched* when a true goal has exactly
    the same requests (a true goal is a request and the rephrases the ground truth links to it).
    ``success_correct`` counts the true goals whose success silver gives right, read at the goal's
    last request.
    """

    predicted_goals: int
    true_goals: int
    matched_goals: int
    success_correct: int

    @property
    def precision(self) -> float:
        return self.matched_goals / self.predicted_goals if self.predicted_goals else 0.0

    @property
    def recall(self) -> float:
        return self.matched_goals / self.true_goals if self.true_goals else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    @property
    def success_accuracy(self) -> float:
        return self.success_correct / self.true_goals if self.true_goals else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self) | {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "success_accuracy": self.success_accuracy,
        }


def root_events(parents: Mapping[str, str | None]) -> dict[str, str]:
    """``{event: the first request of its chain}``, following ``parents`` (event -> the event it rephrases).

    A parent outside ``parents`` ends the walk there; a cycle raises ``ValueError``.
    """
    roots: dict[str, str] = {}
    for event in parents:
        path: list[str] = []
        current = event
        while current not in roots:
            parent = parents.get(current)
            if parent is None:
                roots[current] = current
                break
            if current in path:
                raise ValueError(f"parents: rephrase links form a cycle through {current!r}")
            path.append(current)
            current = parent
        for visited in path:
            roots[visited] = roots[current]
    return roots


def score_goals(
    requests: Sequence[str],
    predicted_goal: Mapping[str, str | None],
    predicted_success: Mapping[str, bool | None],
    true_goal: Mapping[str, str],
    true_success: Mapping[str, bool],
) -> GoalScores:
    """Score silver's goals on ``requests`` (in time order) against the true ones; see ``GoalScores``.

    ``true_success`` is keyed by true goal id; a request with no predicted goal is a goal of its own.
    """
    predicted_sets: dict[str, set[str]] = {}
    true_sets: dict[str, set[str]] = {}
    last_request: dict[str, str] = {}
    for request in requests:
        predicted_sets.setdefault(predicted_goal.get(request) or request, set()).add(request)
        goal = true_goal[request]
        true_sets.setdefault(goal, set()).add(request)
        last_request[goal] = request
    matched = len({frozenset(s) for s in predicted_sets.values()} & {frozenset(s) for s in true_sets.values()})
    correct = sum(1 for goal, request in last_request.items() if predicted_success.get(request) == true_success[goal])
    return GoalScores(len(predicted_sets), len(true_sets), matched, correct)


def evaluate_goals(turns: DataFrame, truth: DataFrame) -> GoalScores:
    """``score_goals`` over the ground-truth requests (not system commands) that silver ``turns`` hold."""
    parents = {row["event_id"]: row["rephrase_of"] for row in truth.select("event_id", "rephrase_of").toLocalIterator()}
    roots = root_events(parents)
    rows = (
        turns.select("event_id", "ts", "goal_id", "goal_success")
        .join(truth.filter(~F.col("is_system_command")).select("event_id", "defective"), "event_id", "inner")
        .orderBy("ts", "event_id")
        .collect()
    )
    requests = [row["event_id"] for row in rows]
    true_success: dict[str, bool] = {}
    for row in rows:  # time order: the last request of a goal decides
        true_success[roots[row["event_id"]]] = not row["defective"]
    return score_goals(
        requests,
        {row["event_id"]: row["goal_id"] for row in rows},
        {row["event_id"]: row["goal_success"] for row in rows},
        {request: roots[request] for request in requests},
        true_success,
    )


@dataclass(frozen=True)
class FailurePointScores:
    """Silver's ``failure_point`` against the true one, on the defects both hold.

    ``matrix[i][j]`` counts turns whose true failure point is ``labels[i]`` and predicted
    ``labels[j]``; ``labels`` are the failure points either side names, in pipeline order.
    Macro-F1 averages the F1 of the failure points the truth holds.
    """

    labels: tuple[str, ...]
    matrix: tuple[tuple[int, ...], ...]

    @property
    def turns(self) -> int:
        return sum(sum(row) for row in self.matrix)

    @property
    def accuracy(self) -> float:
        return sum(self.matrix[i][i] for i in range(len(self.labels))) / self.turns if self.turns else 0.0

    def f1(self, label: str) -> float:
        i = self.labels.index(label)
        predicted = sum(row[i] for row in self.matrix)
        actual = sum(self.matrix[i])
        hits = self.matrix[i][i]
        return 2 * hits / (predicted + actual) if predicted + actual else 0.0

    @property
    def macro_f1(self) -> float:
        present = [label for i, label in enumerate(self.labels) if sum(self.matrix[i])]
        return sum(self.f1(label) for label in present) / len(present) if present else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "labels": list(self.labels),
            "matrix": [list(row) for row in self.matrix],
            "turns": self.turns,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "f1": {label: self.f1(label) for label in self.labels},
        }

    def render(self) -> str:
        lines = [
            f"failure points on {self.turns} defects found: accuracy {self.accuracy:.4f}, macro-F1 {self.macro_f1:.4f}",
            "| true \\ predicted | " + " | ".join(self.labels) + " | F1 |",
            "|---|" + "---|" * (len(self.labels) + 1),
        ]
        for label, row in zip(self.labels, self.matrix):
            lines.append(f"| {label} | " + " | ".join(str(n) for n in row) + f" | {self.f1(label):.4f} |")
        return "\n".join(lines)


def score_failure_points(pairs: Sequence[tuple[str, str]], order: Sequence[str]) -> FailurePointScores:
    """Confusion matrix of (true, predicted) failure points; labels in ``order``, any other after them."""
    named = {label for pair in pairs for label in pair}
    labels = tuple([label for label in order if label in named] + sorted(named - set(order)))
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for actual, predicted in pairs:
        matrix[index[actual]][index[predicted]] += 1
    return FailurePointScores(labels, tuple(tuple(row) for row in matrix))


def evaluate_failure_points(turns: DataFrame, truth: DataFrame) -> FailurePointScores | None:
    """``score_failure_points`` on the turns both silver and the truth call defects; None when the truth has no failure points."""
    rows = (
        turns.filter(F.col("defect") & F.col("failure_point").isNotNull() & (F.col("failure_point") != "none"))
        .select("event_id", F.col("failure_point").alias("predicted"))
        .join(truth.filter(F.col("defective")).select("event_id", F.col("failure_point").alias("actual")), "event_id", "inner")
        .groupBy("actual", "predicted")
        .count()
        .collect()
    )
    if not rows or all(row["actual"] is None for row in rows):
        return None
    pairs = [(row["actual"], row["predicted"]) for row in rows if row["actual"] is not None for _ in range(int(row["count"]))]
    return score_failure_points(pairs, FAILURE_POINTS[1:])


@dataclass(frozen=True)
class Evaluation:
    """Our scores per signal, and the naive baseline's on the same events when it was scored."""

    truth_events: int
    scored_events: int
    barge_in: Score
    terminated: Score
    defect: Score
    rephrase_link: Score
    detectable: DetectableDefects | None = None
    baseline: Evaluation | None = None
    goals: GoalScores | None = None
    failure_points: FailurePointScores | None = None

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
        if self.detectable is not None:
            figures["detectable_defects"] = self.detectable.as_dict()
        if self.goals is not None:
            figures["goals"] = self.goals.as_dict()
        if self.failure_points is not None:
            figures["failure_points"] = self.failure_points.as_dict()
        if self.baseline is not None:
            figures["baseline"] = {name: score.as_dict() for name, score in self.baseline.scores().items()}
            if self.baseline.detectable is not None:
                figures["baseline"]["detectable_defects"] = self.baseline.detectable.as_dict()
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
        if self.detectable is not None:
            found = f"ours {self.detectable.found} (recall {self.detectable.recall:.4f})"
            if base is not None and base.detectable is not None:
                found += f", baseline {base.detectable.found} (recall {base.detectable.recall:.4f})"
            lines.append(
                f"defects: {self.detectable.detectable} detectable, {self.detectable.silent} silent "
                f"(silent share {self.detectable.silent_share:.4f}); detectable defects found: {found}"
            )
        if self.goals is not None:
            goals = self.goals
            lines.append(
                f"goals: {goals.matched_goals} of {goals.predicted_goals} segmented exactly as one of the {goals.true_goals} true goals "
                f"(precision {goals.precision:.4f}, recall {goals.recall:.4f}, F1 {goals.f1:.4f}); "
                f"success right for {goals.success_correct} (accuracy {goals.success_accuracy:.4f})"
            )
        if self.failure_points is not None:
            lines.append(self.failure_points.render())
        return "\n".join(lines)


def _binary(joined: DataFrame, predicted: str, actual: str) -> Score:
    row = joined.agg(
        F.sum((F.col(predicted) & F.col(actual)).cast("long")).alias("tp"),
        F.sum((F.col(predicted) & ~F.col(actual)).cast("long")).alias("fp"),
        F.sum((~F.col(predicted) & F.col(actual)).cast("long")).alias("fn"),
    ).first()
    return Score(int(row["tp"] or 0), int(row["fp"] or 0), int(row["fn"] or 0))


def visible_defects(turns: DataFrame, truth: DataFrame) -> DataFrame:
    """``event_id``, ``visible``: for each defective ground-truth turn, whether it left a signal
    (``DetectableDefects``); the assistant's own status is read from silver ``turns``."""
    rephrased = truth.filter(F.col("rephrase_of").isNotNull()).select(F.col("rephrase_of").alias("event_id")).distinct()
    status = turns.select("event_id", "status")
    visible = (
        F.coalesce(F.col("barge_in"), F.lit(False))
        | F.coalesce(F.col("terminated"), F.lit(False))
        | F.col("_rephrased")
        | (F.coalesce(F.col("explicit_feedback"), F.lit("")) == F.lit("negative"))
        | F.coalesce(F.col("status").isin("unhandled", "error"), F.lit(False))
    )
    return (
        truth.filter(F.col("defective"))
        .join(rephrased.withColumn("_rephrased", F.lit(True)), "event_id", "left")
        .fillna(False, subset=["_rephrased"])
        .join(status, "event_id", "inner")
        .select("event_id", visible.alias("visible"))
    )


def _detectable(turns: DataFrame, visible: DataFrame) -> DetectableDefects:
    row = (
        visible.join(turns.select("event_id", "defect"), "event_id", "inner")
        .agg(
            F.sum(F.col("visible").cast("long")).alias("detectable"),
            F.sum((~F.col("visible")).cast("long")).alias("silent"),
            F.sum((F.col("visible") & F.col("defect")).cast("long")).alias("found"),
        )
        .first()
    )
    return DetectableDefects(int(row["detectable"] or 0), int(row["silent"] or 0), int(row["found"] or 0))


def evaluate_turns(turns: DataFrame, truth: DataFrame, visible: DataFrame | None = None) -> Evaluation:
    """Compare silver turns with ground truth, joined on event_id; with ``visible``
    (``visible_defects``), also how many detectable defects the turns found."""
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
            detectable=_detectable(turns, visible) if visible is not None else None,
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
    visible = visible_defects(turns, truth).persist()
    try:
        evaluation = evaluate_turns(turns, truth, visible)
        if baseline:
            reference = evaluate_turns(baseline_predictions(silver_traffic(turns)), truth, visible)
            evaluation = replace(evaluation, baseline=reference)
        evaluation = replace(evaluation, goals=evaluate_goals(turns, truth), failure_points=evaluate_failure_points(turns, truth))
    finally:
        visible.unpersist()
    if json_out is not None:
        Path(json_out).write_text(json.dumps(evaluation.as_dict(), indent=2, sort_keys=True) + "\n")
    return evaluation
