"""How a request group is written for the encoder: the request, its outcome and context, and
each candidate follow-up with its delay and its evidence against the request.

Why its own module: the wording is the model's input contract. ``DetectorSettings`` saves which
``evidence_version`` and ``text_version`` a detector was trained on, so a saved detector keeps
reading the text it learnt; these functions are pure Python (no torch, no Spark).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jellyfish
import numpy as np

from feedback.core.text import spelling_similarity

EVIDENCE_VERSIONS = (1, 2)
TEXT_VERSIONS = (1, 2)
"""How a group is written out: 1 in full; 2 compact (no earlier request, no seconds, a short response)."""
MAX_RESPONSE_CHARS = 120
COMPACT_RESPONSE_CHARS = 40
SPELLED_ALIKE = 0.5
STATUS_WORDS = {"success": "answered", "unhandled": "did not understand", "error": "failed"}


@dataclass(frozen=True)
class Candidate:
    """A later request of the session that might rephrase the source."""

    event_id: str
    text: str
    gap_s: float
    stop_between: bool


@dataclass(frozen=True)
class RephraseQuery:
    """A request, its visible outcome and context, and its candidate follow-ups (in order)."""

    source_event_id: str
    source_text: str
    status: str
    response_text: str | None
    barge_in: bool
    terminated: bool
    previous_text: str | None
    previous_gap_s: float | None
    candidates: tuple[Candidate, ...]


def pace_words(gap_s: float) -> str:
    """A coarse reading of a delay: a rephrase follows the response it corrects quickly, and
    the encoder reads words more reliably than numerals."""
    if not np.isfinite(gap_s):
        return "unknown delay"
    if gap_s < 10:
        return "right away"
    if gap_s < 20:
        return "soon after"
    if gap_s < 60:
        return "within a minute"
    return "minutes later"


def _seconds(gap_s: float | None) -> str:
    if gap_s is None or not np.isfinite(gap_s):
        return "unknown time"
    return f"{max(0, round(gap_s))} seconds"


def query_text(query: RephraseQuery, text_version: int = 1) -> str:
    """First segment: the request and its context, as text.

    Version 2 (compact) keeps the outcome and the head of the response and leaves out the earlier
    request: the encoder's cost grows faster than the tokens, and the pair's own words carry the
    decision (docs/quality.md measures what the compact text costs).
    """
    outcome = STATUS_WORDS.get(query.status, query.status)
    cut = ", interrupted" if query.barge_in else ""
    cut += ", stopped" if query.terminated else ""
    if text_version == 2:
        response = (query.response_text or "no response")[:COMPACT_RESPONSE_CHARS]
        return f"{query.source_text} | {outcome}{cut}: {response}"
    response = (query.response_text or "no response")[:MAX_RESPONSE_CHARS]
    parts = [query.source_text, f"assistant {outcome}{cut}: {response}"]
    if query.previous_text:
        parts.append(f"before, {_seconds(query.previous_gap_s)} earlier: {query.previous_text}")
    return " | ".join(parts)


_WORD = re.compile(r"[a-z0-9']+")


def words_of(text: str) -> list[str]:
    """Lower-case words (letters, digits, apostrophes), in order."""
    return _WORD.findall(text.lower())


def soundex(word: str) -> str:
    """American Soundex of the word's letters (as Spark's ``soundex``); "" when it has none.

    Digits and apostrophes are dropped first, so "d's" codes like "ds".
    """
    letters = "".join(c for c in word.lower() if "a" <= c <= "z")
    return jellyfish.soundex(letters) if letters else ""


def sound_code(word: str) -> str:
    """``soundex`` for a word with letters; the digits themselves for a number, so "1" and "2"
    do not read as sounding alike (evidence version 2)."""
    code = soundex(word)
    return code if code else "".join(c for c in word if c.isdigit())


def word_counts(texts: Iterable[str]) -> dict[str, int]:
    """In how many of the distinct ``texts`` each word occurs (saved with a version-2 detector)."""
    counts = Counter(word for text in set(texts) for word in set(words_of(text)))
    return dict(sorted(counts.items()))


def merged_counts(*counts: dict[str, int]) -> dict[str, int]:
    """The sum of several ``word_counts``."""
    merged: Counter[str] = Counter()
    for table in counts:
        merged.update(table)
    return dict(merged)


RAREST_KEPT = ("neither rarest word kept", "one of two rarest words kept", "both rarest words kept")


def rarest_kept(source_words: Sequence[str], target_words: Sequence[str], counts: dict[str, int]) -> str:
    """Whether the follow-up keeps the request's two rarest words, as words.

    Why: the rarest words of a request are its content (a title, a city, a name; a word never
    seen counts 0), the rest is how requests are worded. A follow-up that keeps neither is
    another request however alike its wording; one that keeps both, or words that sound like
    them (a misheard value said again), is the same request. Ties go to the earlier word.
    """
    order = {w: i for i, w in reversed(list(enumerate(source_words)))}
    rarest = sorted(order, key=lambda w: (counts.get(w, 0), order[w]))[:2]
    target_set = set(target_words)
    target_codes = {sound_code(w) for w in target_words} - {""}
    kept = sum(1 for w in rarest if w in target_set or sound_code(w) in target_codes)
    if len(rarest) == 1:
        return "rarest word kept" if kept else "rarest word not kept"
    return RAREST_KEPT[kept]


def pair_evidence(source: str, target: str, counts: dict[str, int] | None = None) -> str:
    """How a follow-up differs from the request, in words the encoder can read.

    Why: on intents and slot values it never saw, wordpieces alone cannot tell a misheard value
    said again ("the beetles" -> "the beatles") from another value ("paris" -> "london"). The
    words changed on each side are compared as a whole (catches split and merged words, "spot if
    i" -> "spotify") by Soundex code and by spelling. With ``counts`` (evidence version 2),
    numbers compare by their digits and ``rarest_kept`` is added.
    """
    code = soundex if counts is None else sound_code
    source_words, target_words = words_of(source), words_of(target)
    target_set, source_set = set(target_words), set(source_words)
    removed = [w for w in source_words if w not in target_set]
    added = [w for w in target_words if w not in source_set]
    shared = len(source_set & target_set)
    total = len(source_set | target_set)
    if not removed and not added:
        return "same words"
    text = f"{shared} of {total} words shared"
    if removed and added:
        before, after = "".join(removed), "".join(added)
        sound = "sound alike" if code(before) == code(after) else "sound different"
        spelling = "spelled alike" if spelling_similarity(before, after) >= SPELLED_ALIKE else "spelled differently"
        text += f", changed words {sound}, {spelling}"
    elif added:
        text += ", words added"
    else:
        text += ", words dropped"
    if counts is not None and source_words:
        text += f", {rarest_kept(source_words, target_words, counts)}"
    return text


def passage_text(
    query: RephraseQuery, evidence: bool = False, counts: dict[str, int] | None = None, text_version: int = 1
) -> tuple[str, list[tuple[int, int]]]:
    """Second segment: the candidates, and each candidate utterance's character span [start, end).

    With ``evidence``, each candidate is introduced by ``pace_words`` of its delay and
    ``pair_evidence`` against the request (version 2 when ``counts`` is given). Text version 2
    gives the delay in ``pace_words`` only.
    """
    text = ""
    spans: list[tuple[int, int]] = []
    for candidate in query.candidates:
        if text:
            text += " ; "
        stop = " after a stop" if candidate.stop_between else ""
        if text_version == 2:
            text += f"{pace_words(candidate.gap_s)}{stop}"
            if evidence:
                text += f", {pair_evidence(query.source_text, candidate.text, counts)}"
        else:
            text += f"{_seconds(candidate.gap_s)} later{stop}"
            if evidence:
                text += f" ({pace_words(candidate.gap_s)}), {pair_evidence(query.source_text, candidate.text, counts)}"
        text += ": "
        spans.append((len(text), len(text) + len(candidate.text)))
        text += candidate.text
    return text, spans


def query_texts(queries: Iterable[RephraseQuery]) -> list[str]:
    """Every request text of the queries: the sources and their candidates."""
    return [text for query in queries for text in (query.source_text, *(c.text for c in query.candidates))]
