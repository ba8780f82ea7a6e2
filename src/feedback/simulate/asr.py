"""Speech-recognition errors: systematic confusions of slot values and rare random errors.

Systematic errors are what makes implicit-feedback mining work in production: the same slot value
("the beatles") is misheard the same way ("the beetles") for every user who says it, so the
failing utterance recurs across users and so does the rephrase that fixes it. ``confusion_for``
derives one fixed misrecognition per value from phonetic rules; the world picks which values are
confusable (per seed). ``random_word_error`` models the occasional one-off error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Callable

import jellyfish
import numpy as np

# Whole-value confusions of words an ASR splits or merges (service and brand names mostly).
SPLIT_MERGE: dict[str, str] = {
    "youtube": "you tube",
    "itunes": "i tunes",
    "soundcloud": "sound cloud",
    "spotify": "spot if i",
    "pandora": "panda ra",
    "deezer": "d's er",
    "lastfm": "last fm",
    "last fm": "lastfm",
    "iheart": "i heart",
    "netflix": "net flicks",
    "zvooq": "zoo k",
    "vimeo": "vim eo",
    "groove shark": "grooveshark",
    "google music": "google musik",
    "slacker": "slack her",
    "new york": "newyork",
    "new jersey": "new jersy",
    "los angeles": "los angelis",
    "san francisco": "sanfrancisco",
}

HOMOPHONES: dict[str, str] = {
    "for": "four", "four": "for", "two": "too", "to": "two", "night": "knight", "knight": "night",
    "sea": "see", "see": "sea", "son": "sun", "sun": "son", "right": "write", "write": "right",
    "blue": "blew", "red": "read", "new": "knew", "road": "rode", "whole": "hole", "hole": "whole",
    "peace": "piece", "piece": "peace", "one": "won", "won": "one", "eight": "ate", "meet": "meat",
    "week": "weak", "hour": "our", "flower": "flour", "break": "brake", "tail": "tale",
    "male": "mail", "rain": "reign", "be": "bee", "there": "their", "where": "wear",
    "would": "wood", "i": "eye", "prince": "prints", "heart": "hart", "soul": "sole", "rose": "rows",
    "fair": "fare", "sail": "sale", "knows": "nose", "no": "know", "mary": "merry", "hear": "here",
    "here": "hear", "dear": "deer", "steel": "steal", "wait": "weight", "way": "weigh",
    "band": "banned", "missed": "mist", "made": "maid", "plain": "plane", "pair": "pear",
    "bear": "bare", "die": "dye", "hi": "high", "high": "hi", "lone": "loan", "sweet": "suite",
    "beatles": "beetles", "seven": "heaven", "moon": "mood", "city": "sitty", "queen": "cream",
}

# Sub-word rewrites: (pattern, replacement), applied at one match.
PHONETIC_RULES: tuple[tuple[str, str], ...] = (
    ("ph", "f"),
    (r"\bth", "t"),
    (r"th\b", "f"),
    ("v", "b"),
    ("ck", "k"),
    (r"c(?=[aou])", "k"),
    ("x", "ks"),
    ("qu", "kw"),
    ("z", "s"),
    (r"(?<=[aeiou])s(?=[aeiou])", "z"),
    ("ght", "t"),
    ("tion", "shun"),
    (r"(?<=n)d\b", ""),
    (r"(?<=[sn])t\b", ""),
    ("ll", "l"),
    ("tt", "t"),
    ("ss", "s"),
    ("wh", "w"),
    ("kn", "n"),
)
VOWEL_RULES: tuple[tuple[str, str], ...] = (
    ("ee", "ea"),
    ("ea", "ee"),
    ("ou", "ow"),
    ("ai", "ay"),
    ("ay", "ai"),
    (r"ie\b", "y"),
    (r"(?<=[^aeiou])y\b", "ie"),
    (r"er\b", "a"),
    ("oo", "u"),
    (r"(?<=[^aeiou])i(?=[^aeiou])", "e"),
    (r"(?<=[^aeiou])e(?=[^aeiou])", "i"),
)

_SIMILAR_LETTERS: dict[str, str] = {
    "a": "e", "e": "i", "i": "e", "o": "u", "u": "o", "b": "p", "p": "b", "d": "t", "t": "d",
    "g": "k", "k": "g", "m": "n", "n": "m", "s": "z", "z": "s", "f": "v", "v": "f", "l": "r",
    "r": "l", "c": "k", "w": "v", "y": "i", "h": "", "j": "g", "q": "k", "x": "s",
}
_CARRIER_SWAPS: dict[str, str] = {
    "the": "a", "a": "the", "me": "my", "my": "me", "in": "and", "on": "in", "what's": "what is",
    "play": "played", "please": "", "some": "sum", "is": "was", "find": "fine", "add": "at",
}


def _apply_regex(value: str, pattern: str, replacement: str, rng: np.random.Generator) -> str | None:
    """Rewrite one (rng-chosen) match of ``pattern``; None when there is none."""
    matches = list(re.finditer(pattern, value))
    if not matches:
        return None
    match = matches[int(rng.integers(len(matches)))]
    return value[: match.start()] + replacement + value[match.end() :]


def _homophone(value: str, rng: np.random.Generator) -> str | None:
    """Replace one word by a homophone."""
    words = value.split()
    candidates = [i for i, w in enumerate(words) if w in HOMOPHONES]
    if not candidates:
        return None
    index = candidates[int(rng.integers(len(candidates)))]
    words[index] = HOMOPHONES[words[index]]
    return " ".join(words)


def _merge_words(value: str, rng: np.random.Generator) -> str | None:
    """Merge two adjacent short words ("new york" -> "newyork")."""
    words = value.split()
    pairs = [
        i
        for i in range(len(words) - 1)
        if len(words[i]) + len(words[i + 1]) <= 10 and words[i].isalpha() and words[i + 1].isalpha()
    ]
    if not pairs:
        return None
    i = pairs[int(rng.integers(len(pairs)))]
    return " ".join(words[:i] + [words[i] + words[i + 1]] + words[i + 2 :])


def _split_word(value: str, rng: np.random.Generator) -> str | None:
    """Split a long word at a vowel-consonant boundary ("sunflower" -> "sun flower")."""
    words = value.split()
    long_words = [i for i, w in enumerate(words) if len(w) >= 8 and w.isalpha()]
    if not long_words:
        return None
    i = long_words[int(rng.integers(len(long_words)))]
    word = words[i]
    cuts = [k for k in range(3, len(word) - 3) if word[k - 1] in "aeiou" and word[k] not in "aeiou"]
    if not cuts:
        return None
    k = cuts[int(rng.integers(len(cuts)))]
    words[i] = word[:k] + " " + word[k:]
    return " ".join(words)


class _RegexRule:
    """A sub-word rewrite as a callable rule (why a class: typed, and no late-binding lambdas)."""

    def __init__(self, pattern: str, replacement: str) -> None:
        self.pattern = pattern
        self.replacement = replacement

    def __call__(self, value: str, rng: np.random.Generator) -> str | None:
        return _apply_regex(value, self.pattern, self.replacement, rng)


def _rule_functions() -> list[Callable[[str, np.random.Generator], str | None]]:
    """All generic confusion rules as callables, in a fixed order (shuffled per value)."""
    rules: list[Callable[[str, np.random.Generator], str | None]] = []
    for pattern, replacement in PHONETIC_RULES + VOWEL_RULES:
        rules.append(_RegexRule(pattern, replacement))
    rules.extend([_merge_words, _split_word])
    return rules


_RULES = _rule_functions()


def _acceptable(original: str, confused: str | None) -> bool:
    """A confusion must change the value and keep at least one letter."""
    if confused is None:
        return False
    confused = " ".join(confused.split())
    return bool(confused) and confused != original and any(c.isalpha() for c in confused)


def confusion_for(value: str, rng: np.random.Generator) -> str | None:
    """The fixed misrecognition of ``value``, or None when no rule applies.

    Why this order: known splits/merges and homophones are the most natural confusions, so they
    win; otherwise one of the phonetic/vowel/segmentation rules is picked at random.
    """
    if value in SPLIT_MERGE:
        return SPLIT_MERGE[value]
    homophone = _homophone(value, rng)
    if _acceptable(value, homophone) and rng.random() < 0.8:
        return " ".join(str(homophone).split())
    for index in rng.permutation(len(_RULES)):
        confused = _RULES[int(index)](value, rng)
        if _acceptable(value, confused):
            return " ".join(str(confused).split())
    return None


@dataclass(frozen=True)
class PhoneticLexicon:
    """The words of a corpus grouped by how they sound (their Metaphone code).

    Why: a recogniser's language model turns what it half-heard into a word it knows, so its
    confusions land on other words of the vocabulary ("settle" for "seattle"), not only on the
    spellings a fixed list of rules produces.
    """

    by_code: Mapping[str, tuple[str, ...]]

    def sound_alikes(self, word: str) -> tuple[str, ...]:
        """Other words of the lexicon that sound like ``word`` (same Metaphone code)."""
        return tuple(w for w in self.by_code.get(jellyfish.metaphone(word), ()) if w != word)


def build_lexicon(texts: Iterable[str]) -> PhoneticLexicon:
    """The lexicon of every alphabetic word of three letters or more in ``texts`` (sorted, so the
    same corpus always gives the same lexicon)."""
    words = sorted({w for text in texts for w in text.split() if len(w) >= 3 and w.isalpha()})
    by_code: dict[str, list[str]] = {}
    for word in words:
        by_code.setdefault(jellyfish.metaphone(word), []).append(word)
    return PhoneticLexicon({code: tuple(group) for code, group in by_code.items() if len(group) > 1})


def lexicon_confusion(value: str, lexicon: PhoneticLexicon, rng: np.random.Generator) -> str | None:
    """``value`` with one word replaced by a vocabulary word that sounds the same; None when no
    word of it has one."""
    words = value.split()
    confusable = [(i, lexicon.sound_alikes(w)) for i, w in enumerate(words)]
    confusable = [(i, alikes) for i, alikes in confusable if alikes]
    if not confusable:
        return None
    index, alikes = confusable[int(rng.integers(len(confusable)))]
    words[index] = alikes[int(rng.integers(len(alikes)))]
    return " ".join(words)


def _garble_word(word: str, rng: np.random.Generator) -> str:
    """One random character-level error in ``word`` (substitute, drop or double a letter)."""
    letters = [i for i, c in enumerate(word) if c in _SIMILAR_LETTERS]
    if not letters:
        return word + "s"
    i = letters[int(rng.integers(len(letters)))]
    operation = rng.random()
    if operation < 0.55:
        garbled = word[:i] + _SIMILAR_LETTERS[word[i]] + word[i + 1 :]
    elif operation < 0.8 and len(word) > 3:
        garbled = word[:i] + word[i + 1 :]
    else:
        garbled = word[: i + 1] + word[i] + word[i + 1 :]
    return garbled if garbled.strip() and garbled != word else word + "s"


def random_word_error(value: str, rng: np.random.Generator) -> str:
    """A one-off misrecognition of a slot value: garble one of its words."""
    words = value.split()
    index = int(rng.integers(len(words)))
    words[index] = _garble_word(words[index], rng)
    return " ".join(" ".join(words).split())


def carrier_word_error(text: str, rng: np.random.Generator) -> str:
    """A harmless error on a non-slot word (article swap, dropped "please", garbled verb)."""
    words = text.split()
    if not words:
        return text
    index = int(rng.integers(len(words)))
    word = words[index]
    replacement = _CARRIER_SWAPS.get(word)
    words[index] = replacement if replacement is not None else _garble_word(word, rng)
    result = " ".join(" ".join(words).split())
    return result if result else text
