"""The simulated assistant reading a text: which request of the world a clean wording says.

Why: a rewriter hands the assistant a new text instead of what the recogniser heard. The
simulated NLU does not parse words (its failures are drawn), so the rewritten text is mapped
back onto the world's wordings: a corpus template, the same wording after one of the users'
lead-ins ("i said ..."), or its short form ("weather in X on D"). Slot values are whatever
words fill the template's gaps, so a rewrite to a misheard value means that value, and a text
no wording matches cannot be interpreted at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from feedback.core.text import normalized_words
from feedback.simulate.constants import CORRECTION_LEAD_IN, LEAD_INS
from feedback.simulate.world import Request, Template, World, derived_template, shortened

LEAD_IN_PREFIXES: tuple[str, ...] = tuple(sorted((CORRECTION_LEAD_IN, *LEAD_INS), key=len, reverse=True))
"""What users put before a request when they say it again (longest first)."""


class RequestRewriter(Protocol):
    """What the simulated assistant calls between recognition and understanding (a treatment arm)."""

    def rewrite(self, utterance: str, user_id: str) -> tuple[str, str] | None:
        """``(rewritten text, layer)`` for ``utterance`` said by ``user_id``, or None to leave it as heard."""

def normalized(text: str) -> str:
    """``text`` as silver normalizes it (``core.text.normalized_words``), words joined by one space."""
    return " ".join(normalized_words(text))


@dataclass(frozen=True)
class _Pattern:
    """One wording as a regular expression over normalized text, with the template it stands for."""

    template: Template
    regex: re.Pattern[str]
    slots: tuple[str, ...]


def _pattern(template: Template) -> _Pattern:
    pieces: list[str] = []
    for text, is_slot in template.parts:
        pieces.append(r"(.+?)" if is_slot else re.escape(normalized(text)))
    return _Pattern(template, re.compile("^" + " ".join(p for p in pieces if p) + "$"), template.slots)


def _first_word(template: Template) -> str | None:
    """The normalized first word when the wording starts with literal words, None when with a slot."""
    text, is_slot = template.parts[0]
    words = normalized(text).split()
    return None if is_slot or not words else words[0]


class TextInterpreter:
    """Maps a clean text onto the request of ``world`` it says, or None when no wording matches.

    Among several matching wordings the one whose values the corpus knows for that slot wins,
    then the one with fewer slots, then corpus order: a gazetteer-backed parser would choose so.
    """

    def __init__(self, world: World) -> None:
        self._known: dict[tuple[str, str], frozenset[str]] = {}
        for intent, body in world.corpus.data["intents"].items():
            for slot, values in body["slots"].items():
                self._known[(intent, slot)] = frozenset(normalized(str(value)) for value, _ in values)
        self._by_word: dict[str | None, list[_Pattern]] = {}
        self._same_slots: dict[tuple[str, tuple[str, ...]], list[Template]] = world.paraphrases
        for intent in world.corpus.intents:
            for template in world.templates[intent]:
                for wording in self._wordings(template):
                    self._by_word.setdefault(_first_word(wording), []).append(_pattern(wording))

    @staticmethod
    def _wordings(template: Template) -> Iterable[Template]:
        """The corpus wording and its short form (a derived template, index ``-1 - index``)."""
        yield template
        placeholder = Request(template.intent, template, tuple((slot, slot) for slot in template.slots))
        short = shortened(placeholder)
        if short is not None:
            yield short.template

    def _matches(self, text: str) -> list[tuple[int, Request]]:
        """Every wording ``text`` fits, with how many of its values the corpus does not know for that slot."""
        words = text.split()
        if not words:
            return []
        found: list[tuple[int, Request]] = []
        for pattern in self._by_word.get(words[0], []) + self._by_word.get(None, []):
            match = pattern.regex.match(text)
            if match is None:
                continue
            values = tuple(zip(pattern.slots, match.groups()))
            if len({slot for slot, _ in values}) != len(values):
                continue  # a wording that names one slot twice cannot be told apart here
            intent = pattern.template.intent
            unknown = sum(value not in self._known.get((intent, slot), frozenset()) for slot, value in values)
            found.append((unknown, Request(intent, pattern.template, values)))
        return found

    def _renders(self, text: str, intended: Request) -> Request | None:
        """``intended`` said with a wording of its own intent and slots (or one of its short or lead-in forms) that reads ``text``."""
        bodies = [text] + [text[len(lead_in) + 1 :] for lead_in in LEAD_IN_PREFIXES if text.startswith(lead_in + " ")]
        values = intended.slot_dict()
        for template in self._same_slots.get((intended.intent, intended.template.signature), []):
            candidate = Request(intended.intent, template, tuple((slot, values[slot]) for slot in template.slots))
            short = shortened(candidate)
            for wording in (candidate, short):
                if wording is not None and normalized(wording.text()) in bodies:
                    return wording
        return None

    def interpret(self, text: str, intended: Request | None = None) -> Request | None:
        """The request ``text`` says, or None when no wording fits.

        ``intended`` first: when ``text`` is one of its wordings, that is what it says (a parser
        that knows the words would agree, and gaps alone cannot always tell where a value ends).
        Otherwise the wording that fits with the fewest unknown values, the text as said before
        the text without a lead-in.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        clean = normalized(text)
        if intended is not None:
            own = self._renders(clean, intended)
            if own is not None:
                return own
        best: tuple[tuple[int, int, int], Request] | None = None
        forms = [("", clean)] + [(lead_in, clean[len(lead_in) + 1 :]) for lead_in in LEAD_IN_PREFIXES if clean.startswith(lead_in + " ")]
        for form, (lead_in, body) in enumerate(forms):
            for order, (unknown, request) in enumerate(self._matches(body)):
                rank = (unknown, form, len(request.slots) * 10_000 + order)
                if best is None or rank < best[0]:
                    if lead_in:
                        parts = ((lead_in, False), *request.template.parts)
                        request = Request(request.intent, derived_template(request.template, parts), request.slots)
                    best = (rank, request)
        return None if best is None else best[1]


def same_meaning(intended: Request, understood: Request) -> bool:
    """Same intent and the same slot values, compared as normalized text."""
    if intended.intent != understood.intent:
        return False
    return sorted((slot, normalized(value)) for slot, value in intended.slots) == sorted(
        (slot, normalized(value)) for slot, value in understood.slots
    )
