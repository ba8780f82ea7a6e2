"""Span decoding worked by hand on an 8-token sequence.

Tokens: 0 [CLS] | 1-2 the request and its context | 3 [SEP] | 4-5 candidate 0 | 6 candidate 1 | 7 [SEP].
start = [1, 0, 0, 0, 2, 0, 1, 0], end = [1, 0, 0, 0, 0, 3, 0.5, 0]; null score = 1 + 1 = 2.
Top-3 starts: 4, 6, 0; top-3 ends: 5, 0, 6. Valid spans: (4, 5) = 2 + 3 = 5 and (6, 6) = 1 + 0.5 = 1.5;
(4, 6) crosses two candidates and (6, 5) ends before it starts; position 0 belongs to no candidate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedback.rephrase.spans import Span, decode_rephrase, valid_spans

START = np.array([1, 0, 0, 0, 2, 0, 1, 0], dtype=np.float64)
END = np.array([1, 0, 0, 0, 0, 3, 0.5, 0], dtype=np.float64)
SEGMENTS = [(4, 5), (6, 6)]


def _softmax_tail(scores: list[float]) -> list[float]:
    weights = [math.exp(s - max(scores)) if s > -math.inf else 0.0 for s in scores]
    return [w / sum(weights) for w in weights[1:]]


def test_valid_spans_keeps_only_spans_inside_one_candidate() -> None:
    assert valid_spans(START, END, SEGMENTS, n_best=3, max_span_tokens=40) == [Span(4, 5, 5.0), Span(6, 6, 1.5)]


def test_decode_picks_the_best_candidate_and_gives_softmax_probabilities() -> None:
    decision = decode_rephrase(START, END, SEGMENTS, n_best=3, max_span_tokens=40)
    assert decision.null_score == 2.0
    assert decision.best_span == Span(4, 5, 5.0)
    assert decision.best_candidate == 0
    # softmax over (null 2, candidate 0: 5, candidate 1: 1.5) = 1/1.079984, e^-3.5/1.079984
    np.testing.assert_allclose(decision.probabilities, [0.925940, 0.027961], atol=1e-6)
    np.testing.assert_allclose(decision.probabilities, _softmax_tail([2.0, 5.0, 1.5]), rtol=1e-12)


def test_null_margin_turns_the_decision_to_no_rephrase() -> None:
    decision = decode_rephrase(START, END, SEGMENTS, n_best=3, max_span_tokens=40, null_score_margin=4.0)
    assert decision.best_candidate is None
    assert decision.null_score == 6.0
    np.testing.assert_allclose(decision.probabilities, [0.266775, 0.008056], atol=1e-6)


def test_too_long_span_is_invalid_and_its_candidate_gets_zero() -> None:
    decision = decode_rephrase(START, END, SEGMENTS, n_best=3, max_span_tokens=1)
    assert decision.best_span == Span(6, 6, 1.5)
    assert decision.best_candidate is None  # 1.5 < null 2
    np.testing.assert_allclose(decision.probabilities, [0.0, 0.377541], atol=1e-6)


def test_truncated_candidate_holds_no_span() -> None:
    decision = decode_rephrase(START, END, [(4, 5), None], n_best=3, max_span_tokens=40)
    np.testing.assert_allclose(decision.probabilities, [1 / (1 + math.exp(-3)), 0.0], atol=1e-12)
    assert decision.best_candidate == 0


def test_no_candidates_decodes_to_null() -> None:
    decision = decode_rephrase(START, END, [], n_best=3)
    assert decision.best_span is None and decision.best_candidate is None
    assert decision.probabilities.shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"segments": [(0, 2)]}, "segments\\[0\\]"),
        ({"segments": [(4, 9)]}, "segments\\[0\\]"),
        ({"n_best": 0}, "n_best"),
        ({"max_span_tokens": 0}, "max_span_tokens"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"segments": SEGMENTS, "n_best": 3, "max_span_tokens": 40} | kwargs
    with pytest.raises(ValueError, match=message):
        valid_spans(START, END, **arguments)  # type: ignore[arg-type]


def test_mismatched_logits_are_rejected() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        valid_spans(START, END[:-1], SEGMENTS, 3, 40)
