"""Scores pooled over evaluation sets, and how ``train-rephrase`` renders them: hand-worked."""

from __future__ import annotations

import pytest

from feedback.rephrase.train import SetScores, TrainingResult, pooled
from feedback.silver.evaluate import Score


def test_pooled_adds_counts_rather_than_averaging_rates() -> None:
    # P = 5/12, R = 5/14, F1 = 2PR / (P + R) = 50/130; the mean of the two F1s would be 0.3 instead.
    total = pooled([Score(1, 2, 3), Score(4, 5, 6)])
    assert total == Score(5, 7, 9)
    assert total.f1 == pytest.approx(50 / 130)
    assert pooled([]) == Score(0, 0, 0)


def _set(name: str, cross: bool, model: Score, baseline: Score) -> SetScores:
    return SetScores(name, cross, groups=10, pairs=20, fp32=model, int8=model, heuristic=Score(1, 1, 1), baseline=baseline)


def test_the_cross_profile_sets_are_pooled_apart_and_named_in_the_table() -> None:
    result = TrainingResult(
        run_id="r",
        version="3",
        promoted=True,
        sets=(
            _set("snips / profile a", False, Score(9, 1, 0), Score(5, 5, 5)),
            _set("sgd / profile b", True, Score(3, 1, 1), Score(1, 1, 3)),
        ),
        served="int8",
        champion_f1=None,
        train_groups=100,
        fp32_sequences_per_s=10.0,
        int8_sequences_per_s=20.0,
    )
    assert (result.model, result.every_set.groups, result.every_set.pairs) == (Score(12, 2, 1), 20, 40)
    lines = result.render().splitlines()
    # sgd/b: P = R = 3/4; the baseline: P = 1/2, R = 1/4, F1 = 1/3.
    assert "| sgd / profile b (cross profile) | 0.7500 | 0.7500 | **0.7500** | 0.7500 | 0.5000 | 0.3333 |" in lines
    assert "| **cross-profile sets, pooled** | 0.7500 | 0.7500 | **0.7500** | 0.7500 | 0.5000 | 0.3333 |" in lines
    # Every set: P = 12/14, R = 12/13, F1 = 24/27; the baseline (6, 6, 8): P = 1/2, R = 6/14, F1 = 12/26.
    assert "| every set, pooled | 0.8571 | 0.9231 | **0.8889** | 0.8889 | 0.5000 | 0.4615 |" in lines


def test_set_metrics_are_keyed_by_corpus_and_profile() -> None:
    metrics = _set("sgd / profile b", True, Score(3, 1, 1), Score(1, 1, 3)).metrics()
    assert metrics["eval_sgd_b_f1"] == pytest.approx(0.75)
    assert metrics["eval_sgd_b_baseline_recall"] == pytest.approx(0.25)
    assert sorted(metrics) == sorted(
        f"eval_sgd_b_{kind}{name}" for kind in ("", "int8_", "heuristic_", "baseline_") for name in ("precision", "recall", "f1")
    )
