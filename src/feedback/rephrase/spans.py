"""Span decoding for the rephrase detector, the way an extractive-QA post-processor does it.

The model gives every token a start logit and an end logit. A sequence holds a request with its
context (first segment) and the candidate follow-up requests (second segment, one token range per
candidate). A *valid* span starts and ends inside one candidate's range, start <= end, and is at
most ``max_span_tokens`` long; only the ``n_best`` highest start and end logits are combined, as in
Hugging Face's ``utils_qa.postprocess_qa_predictions``. The null span is ([CLS], [CLS]): "no
candidate rephrases this request".

Each candidate's score is its best valid span; softmax over (null, candidate 1, ..., candidate k)
turns those into probabilities, so a pair score is "the probability that this follow-up is the
span that rephrases the request" and the link threshold reads as a probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NULL_INDEX = 0
"""Position of [CLS]: the null span."""


@dataclass(frozen=True)
class Span:
    """A token span [start, end] (inclusive) with its score start_logit + end_logit."""

    start: int
    end: int
    score: float


@dataclass(frozen=True)
class SpanDecision:
    """What one sequence decodes to.

    ``best_candidate`` is the index of the candidate holding the best valid span, or None when the
    null score (plus its margin) is at least as high. ``probabilities`` has one entry per candidate.
    """

    null_score: float
    best_span: Span | None
    best_candidate: int | None
    probabilities: np.ndarray


def _check_logits(start_logits: np.ndarray, end_logits: np.ndarray) -> None:
    if start_logits.ndim != 1 or end_logits.ndim != 1:
        raise ValueError(f"start_logits and end_logits must be 1-d, got shapes {start_logits.shape}, {end_logits.shape}")
    if start_logits.shape != end_logits.shape:
        raise ValueError(f"start_logits and end_logits differ in length: {start_logits.shape} vs {end_logits.shape}")


def valid_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    segments: Sequence[tuple[int, int] | None],
    n_best: int,
    max_span_tokens: int,
) -> list[Span]:
    """The valid spans among the ``n_best`` top starts x ``n_best`` top ends, best first.

    Args:
        start_logits, end_logits: one logit per token of the sequence.
        segments: per candidate, its inclusive token range (first, last), or None when it was
            truncated away (it can hold no span).
        n_best: how many top start and top end positions to combine.
        max_span_tokens: longest span accepted.
    """
    _check_logits(start_logits, end_logits)
    if n_best < 1:
        raise ValueError(f"n_best must be >= 1, got {n_best}")
    if max_span_tokens < 1:
        raise ValueError(f"max_span_tokens must be >= 1, got {max_span_tokens}")
    owner = np.full(start_logits.shape[0], -1, dtype=np.int64)
    for index, segment in enumerate(segments):
        if segment is None:
            continue
        first, last = segment
        if not 0 < first <= last < start_logits.shape[0]:
            raise ValueError(f"segments[{index}] = {segment} is not a token range inside the sequence (after [CLS])")
        owner[first : last + 1] = index
    starts = np.argsort(start_logits, kind="stable")[::-1][:n_best]
    ends = np.argsort(end_logits, kind="stable")[::-1][:n_best]
    spans = [
        Span(int(s), int(e), float(start_logits[s] + end_logits[e]))
        for s in starts
        for e in ends
        if owner[s] >= 0 and owner[s] == owner[e] and s <= e and e - s + 1 <= max_span_tokens
    ]
    spans.sort(key=lambda span: (-span.score, span.start, span.end))
    return spans


def decode_rephrase(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    segments: Sequence[tuple[int, int] | None],
    n_best: int = 5,
    max_span_tokens: int = 40,
    null_score_margin: float = 0.0,
) -> SpanDecision:
    """Decode one sequence into a best span (or null) and one probability per candidate.

    A candidate with no valid span among the n-best gets probability 0. ``null_score_margin``
    is added to the null score before both the decision and the softmax (a positive margin makes
    links rarer, like ``null_score_diff_threshold`` in extractive QA).
    """
    spans = valid_spans(start_logits, end_logits, segments, n_best, max_span_tokens)
    null_score = float(start_logits[NULL_INDEX] + end_logits[NULL_INDEX]) + null_score_margin
    best_per_candidate = [-math.inf] * len(segments)
    owner_of: dict[tuple[int, int], int] = {}
    for index, segment in enumerate(segments):
        if segment is not None:
            owner_of[segment] = index
    for span in spans:
        for segment, index in owner_of.items():
            if segment[0] <= span.start and span.end <= segment[1]:
                best_per_candidate[index] = max(best_per_candidate[index], span.score)
    scores = np.array([null_score, *best_per_candidate], dtype=np.float64)
    finite = np.isfinite(scores)
    shifted = np.where(finite, scores - scores[finite].max(), -np.inf)
    weights = np.exp(shifted)
    probabilities = weights[1:] / weights.sum()
    best = spans[0] if spans else None
    best_candidate = None
    if best is not None and best.score > null_score:
        best_candidate = next(i for seg, i in owner_of.items() if seg[0] <= best.start and best.end <= seg[1])
    return SpanDecision(null_score, best, best_candidate, probabilities)
