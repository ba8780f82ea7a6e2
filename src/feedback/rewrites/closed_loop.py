"""The closed-loop A/B: the same simulated world with and without a rewriter before the NLU.

Why a closed loop rather than the offline win/loss of ``feedback.rewrites.evaluate``: users react
to what the assistant does with the rewrite. A fixed request needs no rephrase; a rewrite to
another meaning is a new defect that users barge into and rephrase. Only the simulator can replay
the same people, on the same seed, with the rewriter on.

Both arms simulate the same window; the rewriter is on in the treatment arm from
``judged_from_day`` on, so both arms are identical before it (the history a rewriter is mined
from) and are compared on the judged days only. Every rewritten request also carries what the
same draws gave without the rewrite (``RewriteRecord.defective_as_heard``), so fixed and broken
requests are counted per request, not inferred from the two arms' totals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd

from feedback.config import SimulationConfig
from feedback.rewrites.pyfunc import PRECOMPUTED, QueryRewriter, RewriteTable, normalize_text
from feedback.simulate.constants import MS_PER_DAY
from feedback.simulate.interpret import RequestRewriter
from feedback.simulate.runner import simulate_turns, window_start_ms
from feedback.simulate.sessions import Turn

class TableRewriter:
    """A ``RequestRewriter`` over a mined rewrite table: the exact, precomputed layer."""

    def __init__(self, table: RewriteTable) -> None:
        self._table = dict(table)

    def rewrite(self, utterance: str, user_id: str) -> tuple[str, str] | None:
        hit = self._table.get(normalize_text(utterance))
        return None if hit is None else (hit[0], PRECOMPUTED)


class PyfuncRewriter:
    """A ``RequestRewriter`` over any served rewriter model: one ``predict`` per request.

    Reads ``rewrite``, ``rewritten`` and ``layer`` (``precomputed`` for a model without one).
    """

    def __init__(self, model: Any) -> None:
        self._model = model

    def rewrite(self, utterance: str, user_id: str) -> tuple[str, str] | None:
        answer = self._model.predict(pd.DataFrame({"utterance": [utterance], "user_id": [user_id]}))
        if not bool(answer["rewritten"].iloc[0]):
            return None
        layer = str(answer["layer"].iloc[0]) if "layer" in answer.columns else PRECOMPUTED
        return str(answer["rewrite"].iloc[0]), layer


def load_rewriter(model_uri: str) -> RequestRewriter:
    """The rewriter behind ``model_uri`` (e.g. ``models:/query-rewriter@champion``), ready for the simulator."""
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise ValueError(f"model_uri must be a model URI, got {model_uri!r}")
    model = mlflow.pyfunc.load_model(model_uri)
    inner = model.unwrap_python_model()
    if isinstance(inner, QueryRewriter):
        return TableRewriter(inner.table)
    return PyfuncRewriter(model)


@dataclass(frozen=True)
class ArmFigures:
    """Requests (system commands excluded) and defective requests of one arm on the judged days."""

    requests: int
    defective: int

    @property
    def defect_rate(self) -> float:
        return self.defective / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class LayerFigures:
    """What one layer's rewrites did, each judged against the same request as heard."""

    layer: str
    rewritten: int
    fixed: int
    """Defective as heard, served right after the rewrite."""
    broken: int
    """Served right as heard, defective after the rewrite."""
    still_defective: int
    """Defective either way."""

    @property
    def broken_share(self) -> float:
        return self.broken / self.rewritten if self.rewritten else 0.0


@dataclass(frozen=True)
class ABReport:
    """Control against treatment on the judged days."""

    rewriter: str
    seed: int
    users: int
    history_days: int
    judged_days: int
    control: ArmFigures
    treatment: ArmFigures
    layers: tuple[LayerFigures, ...]

    @property
    def relative_reduction(self) -> float:
        """(control rate - treatment rate) / control rate: the share of defects the rewriter removed."""
        if not self.control.defect_rate:
            return 0.0
        return (self.control.defect_rate - self.treatment.defect_rate) / self.control.defect_rate

    @property
    def rewritten(self) -> int:
        return sum(layer.rewritten for layer in self.layers)

    @property
    def broken(self) -> int:
        return sum(layer.broken for layer in self.layers)

    @property
    def fixed(self) -> int:
        return sum(layer.fixed for layer in self.layers)

    @property
    def broken_share(self) -> float:
        """Broken requests / rewritten requests (the promotion limit is 1%)."""
        return self.broken / self.rewritten if self.rewritten else 0.0

    def metrics(self) -> dict[str, float]:
        """Flat figures for MLflow."""
        values = {
            "control_requests": float(self.control.requests),
            "control_defective": float(self.control.defective),
            "control_defect_rate": self.control.defect_rate,
            "treatment_requests": float(self.treatment.requests),
            "treatment_defective": float(self.treatment.defective),
            "treatment_defect_rate": self.treatment.defect_rate,
            "relative_reduction": self.relative_reduction,
            "rewritten": float(self.rewritten),
            "fixed": float(self.fixed),
            "broken": float(self.broken),
            "broken_share": self.broken_share,
        }
        for layer in self.layers:
            values |= {
                f"{layer.layer}_rewritten": float(layer.rewritten),
                f"{layer.layer}_fixed": float(layer.fixed),
                f"{layer.layer}_broken": float(layer.broken),
            }
        return values

    def as_dict(self) -> dict[str, object]:
        """Everything, JSON-safe."""
        return dataclasses.asdict(self) | {
            "relative_reduction": self.relative_reduction,
            "broken_share": self.broken_share,
            "control_defect_rate": self.control.defect_rate,
            "treatment_defect_rate": self.treatment.defect_rate,
        }

    def render(self) -> str:
        lines = [
            f"closed-loop A/B, rewriter {self.rewriter}: seed {self.seed}, {self.users} households, "
            f"{self.history_days} days of history (both arms alike), {self.judged_days} days judged",
            "",
            "| arm | requests | defective | defect rate |",
            "|---|---|---|---|",
            f"| control (no rewriter) | {self.control.requests} | {self.control.defective} | {self.control.defect_rate:.4f} |",
            f"| treatment | {self.treatment.requests} | {self.treatment.defective} | {self.treatment.defect_rate:.4f} |",
            "",
            f"relative defect reduction: {self.relative_reduction:.4f}; rewritten {self.rewritten} requests, "
            f"fixed {self.fixed}, broke {self.broken} ({self.broken_share:.4f} of rewritten)",
            "",
            "| layer | rewritten | fixed | broken | still defective | broken share |",
            "|---|---|---|---|---|---|",
        ]
        for layer in self.layers:
            lines.append(
                f"| {layer.layer} | {layer.rewritten} | {layer.fixed} | {layer.broken} | {layer.still_defective} | {layer.broken_share:.4f} |"
            )
        return "\n".join(lines)


def arm_figures(turns: Iterable[Turn], from_ms: int) -> ArmFigures:
    """Requests and defective requests at or after ``from_ms``."""
    requests = defective = 0
    for turn in turns:
        if turn.is_system or turn.ts_ms < from_ms:
            continue
        requests += 1
        defective += bool(turn.causes)
    return ArmFigures(requests, defective)


def layer_figures(turns: Iterable[Turn], from_ms: int) -> tuple[LayerFigures, ...]:
    """Per layer (sorted by name): rewritten, fixed, broken and still defective requests."""
    counts: dict[str, list[int]] = {}
    for turn in turns:
        if turn.rewrite is None or turn.ts_ms < from_ms:
            continue
        row = counts.setdefault(turn.rewrite.layer, [0, 0, 0, 0])
        after = bool(turn.causes)
        before = turn.rewrite.defective_as_heard
        row[0] += 1
        row[1] += before and not after
        row[2] += after and not before
        row[3] += before and after
    return tuple(LayerFigures(layer, *values) for layer, values in sorted(counts.items()))


def run_arms(
    simulation: SimulationConfig,
    rewriter_uri: str,
    rewriter: RequestRewriter,
    history_days: int,
    control: list[Turn] | None = None,
    progress: bool = True,
) -> ABReport:
    """Simulate both arms of ``simulation`` (its whole window) and compare them after ``history_days``.

    Both arms run with ``simulation.paired_sessions``: a session no rewrite touched is the same
    in both, so the difference is the rewrites' own effect, not two random draws of the week.
    ``control``: the control arm's turns when already simulated (the same config with
    ``paired_sessions`` and no rewriter).
    """
    if not 1 <= history_days < simulation.days:
        raise ValueError(f"history_days must be in [1, {simulation.days}) for a {simulation.days}-day window, got {history_days}")
    plain = dataclasses.replace(simulation, rewriter=None, rewrite_from_day=0, paired_sessions=True)
    treated = dataclasses.replace(plain, rewriter=rewriter_uri, rewrite_from_day=history_days)
    if control is None:
        control, _ = simulate_turns(plain, progress)
    treatment, _ = simulate_turns(treated, progress, rewriter)
    from_ms = window_start_ms(simulation) + history_days * MS_PER_DAY
    return ABReport(
        rewriter=rewriter_uri,
        seed=simulation.seed,
        users=simulation.users,
        history_days=history_days,
        judged_days=simulation.days - history_days,
        control=arm_figures(control, from_ms),
        treatment=arm_figures(treatment, from_ms),
        layers=layer_figures(treatment, from_ms),
    )
