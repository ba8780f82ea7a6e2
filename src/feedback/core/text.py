"""How alike two phrases are, by spelling and by sound: shared by the rephrase evidence, the
NLU labels and the failure-point features, so that all of them agree on one definition."""

from __future__ import annotations

import re

import jellyfish

_NOT_A_WORD = re.compile(r"[^\w']+")


def normalized_words(text: str) -> list[str]:
    """``text`` as silver normalizes it (lower case, punctuation to spaces, apostrophes kept), split in words."""
    return _NOT_A_WORD.sub(" ", text.lower()).replace("_", " ").split()


def spelling_similarity(left: str, right: str) -> float:
    """1 - Levenshtein distance / longer length, in [0, 1] (1 for two empty strings)."""
    if not left and not right:
        return 1.0
    return 1.0 - jellyfish.levenshtein_distance(left, right) / max(len(left), len(right))


def sound_similarity(left: str, right: str) -> float:
    """``spelling_similarity`` of the Metaphone codes of the words: "beetles" and "beatles" score 1."""
    return spelling_similarity(
        " ".join(jellyfish.metaphone(w) for w in normalized_words(left)),
        " ".join(jellyfish.metaphone(w) for w in normalized_words(right)),
    )


def similarity(left: str, right: str) -> float:
    """How alike two phrases are, in [0, 1]: the better of spelling and sound, over normalized words.

    A misheard word that sounds right ("beetles", "beatles") scores as high as a typo.
    """
    spelling = spelling_similarity(" ".join(normalized_words(left)), " ".join(normalized_words(right)))
    return max(spelling, sound_similarity(left, right))
