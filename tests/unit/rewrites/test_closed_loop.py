"""The closed-loop A/B on a tiny world: both arms simulated, rewrites judged against their own counterfactual."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from feedback.config import SimulationConfig
from feedback.rewrites.closed_loop import (
    ABReport,
    ArmFigures,
    LayerFigures,
    PyfuncRewriter,
    TableRewriter,
    run_arms,
)
from feedback.rewrites.pyfunc import RewriteTable
from feedback.simulate.constants import MS_PER_DAY
from feedback.simulate.interpret import normalized
from feedback.simulate.runner import simulate_turns, window_start_ms
from feedback.simulate.sessions import Turn
from feedback.simulate.world import build_world

TINY = SimulationConfig(users=40, days=4, seed=5)
HISTORY_DAYS = 2


def oracle_table(config: SimulationConfig) -> RewriteTable:
    """Every popular request with a misheard value, as heard -> as meant (what a perfect miner would find)."""
    world = build_world(config.seed, corpus=config.corpus)
    table: RewriteTable = {}
    for request in world.catalog[:400]:
        for _, value in request.slots:
            if value in world.confusions:
                heard = request.text().replace(value, world.confusions[value])
                table[normalized(heard)] = (normalized(request.text()), 1.0)
    return table


def both_arms(config: SimulationConfig, table: RewriteTable) -> tuple[list[Turn], list[Turn]]:
    paired = dataclasses.replace(config, paired_sessions=True)
    control, _ = simulate_turns(paired, progress=False)
    treated = dataclasses.replace(paired, rewriter="table:test", rewrite_from_day=HISTORY_DAYS)
    treatment, _ = simulate_turns(treated, progress=False, rewriter=TableRewriter(table))
    return control, treatment


def judged(turns: list[Turn], config: SimulationConfig) -> list[Turn]:
    start = window_start_ms(config) + HISTORY_DAYS * MS_PER_DAY
    return [t for t in turns if t.ts_ms >= start and not t.is_system]


def test_the_oracle_rewriter_lowers_the_defect_rate_with_exact_counts() -> None:
    report = run_arms(TINY, "table:oracle", TableRewriter(oracle_table(TINY)), HISTORY_DAYS, progress=False)
    assert report.control == ArmFigures(requests=676, defective=156)
    assert report.treatment == ArmFigures(requests=623, defective=82)
    assert report.layers == (LayerFigures("precomputed", rewritten=59, fixed=55, broken=0, still_defective=4),)
    assert report.relative_reduction == pytest.approx((156 / 676 - 82 / 623) / (156 / 676))
    assert (report.history_days, report.judged_days, report.users, report.seed) == (2, 2, 40, 5)


def test_the_report_recounts_from_the_turns() -> None:
    control, treatment = both_arms(TINY, oracle_table(TINY))
    report = run_arms(TINY, "table:oracle", TableRewriter(oracle_table(TINY)), HISTORY_DAYS, control=control, progress=False)
    treated = judged(treatment, TINY)
    assert report.control.requests == len(judged(control, TINY))
    assert report.control.defective == len([t for t in judged(control, TINY) if t.causes])
    assert report.treatment.defective == len([t for t in treated if t.causes])
    rewritten = [t for t in treated if t.rewrite is not None]
    assert report.layers[0].rewritten == len(rewritten)
    assert report.layers[0].fixed == len([t for t in rewritten if t.rewrite.defective_as_heard and not t.causes])  # type: ignore[union-attr]


def test_arms_share_the_history_and_every_session_no_rewrite_touched() -> None:
    control, treatment = both_arms(TINY, oracle_table(TINY))
    start = window_start_ms(TINY) + HISTORY_DAYS * MS_PER_DAY

    def sessions(turns: list[Turn]) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
        grouped: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for turn in turns:
            grouped.setdefault(turn.session_key, []).append((turn.utterance, tuple(turn.causes)))
        return grouped

    assert [(t.event_id, t.ts_ms) for t in control if t.ts_ms < start] == [(t.event_id, t.ts_ms) for t in treatment if t.ts_ms < start]
    touched = {t.session_key for t in treatment if t.rewrite is not None}
    by_control, by_treatment = sessions(control), sessions(treatment)
    untouched = sorted(set(by_control) - touched)
    assert (len(touched), len(untouched)) == (51, 265)
    assert [by_control[key] for key in untouched] == [by_treatment.get(key) for key in untouched]


def test_a_rewrite_to_another_meaning_is_counted_broken() -> None:
    world = build_world(TINY.seed, corpus=TINY.corpus)
    popular = next(r for r in world.catalog if r.intent == "GetWeather" and len(r.slots) == 1 and not any(v in world.confusions for _, v in r.slots))
    wrong = popular.text().replace(popular.slots[0][1], "paris")
    table: RewriteTable = {normalized(popular.text()): (wrong, 1.0)}
    control, treatment = both_arms(TINY, table)
    rewritten = [t for t in judged(treatment, TINY) if t.rewrite is not None]
    broken = [t for t in rewritten if t.causes and not t.rewrite.defective_as_heard]  # type: ignore[union-attr]
    report = run_arms(TINY, "table:wrong", TableRewriter(table), HISTORY_DAYS, control=control, progress=False)
    assert len(rewritten) > 0
    assert all(t.causes == ["rewrite"] or "rewrite" in t.causes for t in broken)
    assert report.layers == (LayerFigures("precomputed", len(rewritten), 0, len(broken), len(rewritten) - len(broken)),)
    assert report.broken_share == len(broken) / len(rewritten)
    assert report.treatment.defect_rate > report.control.defect_rate


def test_report_figures_are_worked_by_hand() -> None:
    report = ABReport(
        rewriter="m",
        seed=1,
        users=2,
        history_days=14,
        judged_days=7,
        control=ArmFigures(requests=1000, defective=200),
        treatment=ArmFigures(requests=950, defective=152),
        layers=(LayerFigures("global", 10, 6, 1, 3), LayerFigures("precomputed", 40, 30, 0, 10)),
    )
    assert report.relative_reduction == pytest.approx((0.2 - 0.16) / 0.2)  # 0.2
    assert (report.rewritten, report.fixed, report.broken) == (50, 36, 1)
    assert report.broken_share == pytest.approx(0.02)
    assert report.metrics()["global_broken"] == 1.0 and report.metrics()["precomputed_fixed"] == 30.0
    assert "| global | 10 | 6 | 1 | 3 | 0.1000 |" in report.render()


def test_a_rewriter_without_its_uri_or_a_uri_without_a_rewriter_is_refused() -> None:
    with pytest.raises(ValueError, match="rewriter: simulation.rewriter is 'models:/x/1'"):
        simulate_turns(dataclasses.replace(TINY, rewriter="models:/x/1"), progress=False)
    with pytest.raises(ValueError, match="simulation.rewriter does not name it"):
        simulate_turns(TINY, progress=False, rewriter=TableRewriter({}))
    with pytest.raises(ValueError, match="history_days must be in"):
        run_arms(TINY, "m", TableRewriter({}), 4, progress=False)


class UpperCaseModel:
    """A served rewriter with a layer column: rewrites what it knows, in upper case."""

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        known = frame["utterance"] == "play jazz"
        return pd.DataFrame(
            {
                "utterance": frame["utterance"],
                "rewrite": frame["utterance"].where(~known, "PLAY JAZZ MUSIC"),
                "rewritten": known,
                "layer": ["personal" if k else "none" for k in known],
            }
        )


def test_a_served_model_is_asked_one_request_at_a_time() -> None:
    rewriter = PyfuncRewriter(UpperCaseModel())
    assert rewriter.rewrite("play jazz", "u1") == ("PLAY JAZZ MUSIC", "personal")
    assert rewriter.rewrite("play rock", "u1") is None
    assert TableRewriter({"play jazz": ("play jazz music", 0.9)}).rewrite("Play Jazz!", "u1") == ("play jazz music", "precomputed")
