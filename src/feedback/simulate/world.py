"""The simulated world shared by all users: wordings, a popularity-ranked catalog, ASR confusions.

Everything here is fixed by the seed before any user is simulated, which is what makes defects
*systematic*: the catalog's head is requested by many users, a confusable slot value is misheard
the same way for all of them, and an ambiguous wording is misrouted whoever says it.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feedback.simulate.asr import PhoneticLexicon, build_lexicon, confusion_for, lexicon_confusion
from feedback.simulate.corpus import Corpus, load_corpus

CATALOG_SIZE = 6000
ZIPF_EXPONENT = 1.1
VALUE_ZIPF_EXPONENT = 0.7
POPULAR_REQUESTS = 400
CONFUSABLE_SHARE = 0.2
AMBIGUOUS_TEMPLATE_SHARE = 0.06
UNSUPPORTED_SERVICES = 2
HELDOUT_MIN_VALUES = 20
"""Only slots with this many values lose a share to the held-out vocabulary (small closed lists like
``service`` or ``rating_unit`` are part of the language, not of what a model could memorise)."""
_SLOT_RE = re.compile(r"\{([A-Za-z_]+)\}")


@dataclass(frozen=True)
class Template:
    """One wording of an intent, e.g. ``play {artist} on {service}``."""

    intent: str
    index: int
    text: str
    parts: tuple[tuple[str, bool], ...]
    slots: tuple[str, ...]
    weight: float

    @property
    def signature(self) -> tuple[str, ...]:
        """The slot set, sorted: templates with the same signature paraphrase each other."""
        return tuple(sorted(self.slots))


@dataclass(frozen=True)
class Request:
    """A concrete request: an intent, a wording and slot values."""

    intent: str
    template: Template
    slots: tuple[tuple[str, str], ...]

    def slot_dict(self) -> dict[str, str]:
        """Slot values as a fresh dict (template order)."""
        return dict(self.slots)

    def text(self) -> str:
        """The canonical wording: the template with its slot values filled in."""
        return render(self.template, self.slot_dict())

    def with_template(self, template: Template) -> Request:
        """The same meaning said with another wording (a paraphrase)."""
        return Request(self.intent, template, self.slots)


def parse_template(intent: str, index: int, text: str, weight: float) -> Template:
    """Split a template into literal and slot parts (why: ASR errors target one kind or the other)."""
    parts: list[tuple[str, bool]] = []
    position = 0
    for match in _SLOT_RE.finditer(text):
        literal = text[position : match.start()].strip()
        if literal:
            parts.append((literal, False))
        parts.append((match.group(1), True))
        position = match.end()
    tail = text[position:].strip()
    if tail:
        parts.append((tail, False))
    slots = tuple(name for name, is_slot in parts if is_slot)
    return Template(intent, index, text, tuple(parts), slots, weight)


def render(template: Template, values: dict[str, str]) -> str:
    """Fill ``template`` with ``values`` (missing slots render as nothing)."""
    pieces = [values.get(text, "") if is_slot else text for text, is_slot in template.parts]
    return " ".join(p for p in pieces if p)


def _template_text(parts: tuple[tuple[str, bool], ...]) -> str:
    return " ".join("{" + text + "}" if is_slot else text for text, is_slot in parts)


def derived_template(template: Template, parts: tuple[tuple[str, bool], ...]) -> Template:
    """A wording made from ``template`` by the user (index ``-1 - index``: no corpus wording's, so
    no systematic misroute of the corpus wording carries over)."""
    return parse_template(template.intent, -1 - abs(template.index), _template_text(parts), template.weight)


def shortened(request: Request) -> Request | None:
    """The request said tersely: each slot value with at most the two words before it ("tell me
    the weather in X on D" -> "weather in X on D"); a wording without slots keeps its last four
    words. None when that would not be shorter or would leave no words but values."""
    parts = request.template.parts
    kept: list[tuple[str, bool]] = []
    if request.template.slots:
        for index, (text, is_slot) in enumerate(parts):
            if is_slot:
                kept.append((text, True))
            elif index + 1 < len(parts) and parts[index + 1][1]:
                kept.append((" ".join(text.split()[-2:]), False))
    elif len(parts[0][0].split()) > 5:
        kept.append((" ".join(parts[0][0].split()[-4:]), False))
    if not any(not is_slot for _, is_slot in kept) or _template_text(tuple(kept)) == request.template.text:
        return None
    return Request(request.intent, derived_template(request.template, tuple(kept)), request.slots)


def with_lead_in(request: Request, lead_in: str) -> Request:
    """The request said after ``lead_in`` ("i said", "no i said")."""
    parts = ((lead_in, False), *request.template.parts)
    return Request(request.intent, derived_template(request.template, parts), request.slots)


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    """Cumulative Zipf weights over ranks 1..n, normalised to end at 1."""
    weights = 1.0 / np.power(np.arange(1, n + 1, dtype=np.float64), exponent)
    cdf: np.ndarray = np.cumsum(weights)
    normalised: np.ndarray = cdf / cdf[-1]
    return normalised


def sample_cdf(cdf: np.ndarray, rng: np.random.Generator) -> int:
    """Draw an index from a cumulative distribution (one scalar draw: fast and reproducible)."""
    return min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1)


@dataclass
class World:
    """Templates, vocabularies, catalog and the fixed defects of one seed."""

    templates: dict[str, list[Template]]
    template_cdf: dict[str, np.ndarray]
    vocab: dict[tuple[str, str], list[str]]
    vocab_cdf: dict[tuple[str, str], np.ndarray]
    paraphrases: dict[tuple[str, tuple[str, ...]], list[Template]]
    corpus: Corpus
    catalog: list[Request] = field(default_factory=list)
    catalog_cdf: np.ndarray = field(default_factory=lambda: np.ones(1))
    confusions: dict[str, str] = field(default_factory=dict)
    ambiguous: dict[tuple[str, int], str] = field(default_factory=dict)
    unsupported_values: tuple[str, ...] = ()

    def draw_value(self, intent: str, slot: str, rng: np.random.Generator) -> str:
        """A slot value with a Zipf preference for the corpus' frequent values."""
        values = self.vocab[(intent, slot)]
        return values[sample_cdf(self.vocab_cdf[(intent, slot)], rng)]

    def draw_template(self, intent: str, rng: np.random.Generator) -> Template:
        """A wording of ``intent`` weighted by how often the corpus uses it."""
        return self.templates[intent][sample_cdf(self.template_cdf[intent], rng)]

    def draw_catalog(self, rng: np.random.Generator) -> Request:
        """A popular request (Zipf over the catalog ranks)."""
        return self.catalog[sample_cdf(self.catalog_cdf, rng)]

    def switched_phrasing(self, request: Request, rng: np.random.Generator) -> Request | None:
        """Another phrasing of the intent that keeps only some of the slots ("weather in X" for
        "will it rain in X tomorrow"), or None when the corpus has none."""
        names = {slot for slot, _ in request.slots}
        options = [
            t
            for t in self.templates[request.intent]
            if t.slots and set(t.slots) < names and len(set(t.slots)) == len(t.slots)
        ]
        if not options:
            return None
        template = options[int(rng.integers(len(options)))]
        kept = tuple((slot, value) for slot, value in request.slots if slot in template.slots)
        return Request(request.intent, template, kept)

    def paraphrase_of(self, request: Request, rng: np.random.Generator) -> Request | None:
        """Another wording with the same slots, or None when the corpus has none."""
        options = [
            t
            for t in self.paraphrases[(request.intent, request.template.signature)]
            if t.index != request.template.index
        ]
        if not options:
            return None
        weights = np.array([t.weight for t in options], dtype=np.float64)
        cdf = np.cumsum(weights) / weights.sum()
        return request.with_template(options[sample_cdf(cdf, rng)])


@dataclass(frozen=True)
class VocabularySplit:
    """Which part of the corpus a simulation uses (why: an evaluation set of unseen intents and values).

    ``all``: everything. ``train``: every intent but ``heldout_intents``, and in each slot with at least
    ``HELDOUT_MIN_VALUES`` values only those outside the held-out share. ``heldout``: only the held-out
    intents and, in such slots, only the held-out values. Values are assigned by a hash of the text, not
    by the seed, so a train and a heldout simulation with different seeds never share them. Empty
    ``heldout_intents`` stand for the corpus's own (``Corpus.heldout_intents``, see ``for_corpus``).
    """

    vocabulary: str = "all"
    heldout_intents: tuple[str, ...] = ()
    heldout_value_share: float = 0.3

    def __post_init__(self) -> None:
        if self.vocabulary not in ("all", "train", "heldout"):
            raise ValueError(f"vocabulary must be all, train or heldout, got {self.vocabulary!r}")
        if not 0.0 < self.heldout_value_share < 1.0:
            raise ValueError(f"heldout_value_share must be in (0, 1), got {self.heldout_value_share}")

    def for_corpus(self, corpus: Corpus) -> VocabularySplit:
        """This split with its held-out intents checked against ``corpus`` (empty: the corpus's own)."""
        heldout = self.heldout_intents or corpus.heldout_intents
        unknown = [i for i in heldout if i not in corpus.intents]
        if unknown:
            raise ValueError(f"heldout_intents has intents unknown to {corpus.name} {unknown}; known: {corpus.intents}")
        if self.vocabulary != "all" and not 0 < len(heldout) < len(corpus.intents):
            raise ValueError("heldout_intents must name at least one intent and leave at least one for training")
        return VocabularySplit(self.vocabulary, tuple(heldout), self.heldout_value_share)

    def keeps_intent(self, intent: str) -> bool:
        if self.vocabulary == "all":
            return True
        return (intent in self.heldout_intents) == (self.vocabulary == "heldout")

    def keeps_values(self, values: list[str]) -> list[str]:
        """``values`` restricted to this split (order kept, so Zipf ranks stay meaningful)."""
        if self.vocabulary == "all" or len(values) < HELDOUT_MIN_VALUES:
            return values
        cut = int(self.heldout_value_share * 10_000)
        want_heldout = self.vocabulary == "heldout"
        return [v for v in values if (zlib.crc32(v.lower().encode("utf-8")) % 10_000 < cut) == want_heldout]


def _build_vocab(corpus: Corpus, split: VocabularySplit) -> tuple[
    dict[str, list[Template]],
    dict[str, np.ndarray],
    dict[tuple[str, str], list[str]],
    dict[tuple[str, str], np.ndarray],
    dict[tuple[str, tuple[str, ...]], list[Template]],
]:
    """Templates and vocabularies of the vendored corpus as typed structures."""
    templates: dict[str, list[Template]] = {}
    template_cdf: dict[str, np.ndarray] = {}
    vocab: dict[tuple[str, str], list[str]] = {}
    vocab_cdf: dict[tuple[str, str], np.ndarray] = {}
    paraphrases: dict[tuple[str, tuple[str, ...]], list[Template]] = {}
    data: Any = corpus.data
    for intent in corpus.intents:
        body = data["intents"][intent]
        parsed = [
            parse_template(intent, i, str(text), float(count))
            for i, (text, count) in enumerate(body["templates"])
        ]
        templates[intent] = parsed
        weights = np.power(np.array([t.weight for t in parsed], dtype=np.float64), 0.8)
        template_cdf[intent] = np.cumsum(weights) / weights.sum()
        for template in parsed:
            paraphrases.setdefault((intent, template.signature), []).append(template)
        for slot, values in body["slots"].items():
            kept = split.keeps_values([str(v) for v, _ in values])
            vocab[(intent, slot)] = kept
            vocab_cdf[(intent, slot)] = _zipf_cdf(len(kept), VALUE_ZIPF_EXPONENT)
    return templates, template_cdf, vocab, vocab_cdf, paraphrases


def _build_catalog(world: World, rng: np.random.Generator, split: VocabularySplit) -> None:
    """Compose the catalog and rank it so that simple, common wordings lead the Zipf head.

    Why a weighted random permutation: the head should be "what's the weather in {city}"-like
    requests rather than four-slot restaurant bookings, without being the same for every seed.
    """
    popularity = world.corpus.popularity
    intents = [intent for intent in popularity if split.keeps_intent(intent)]
    shares = np.array([popularity[i] for i in intents], dtype=np.float64)
    intent_cdf = np.cumsum(shares) / shares.sum()
    seen: dict[tuple[str, str], int] = {}
    requests: list[Request] = []
    keys: list[float] = []
    attempts = 0
    while len(requests) < CATALOG_SIZE and attempts < CATALOG_SIZE * 5:
        attempts += 1
        intent = intents[sample_cdf(intent_cdf, rng)]
        template = world.draw_template(intent, rng)
        slots = tuple((slot, world.draw_value(intent, slot, rng)) for slot in template.slots)
        request = Request(intent, template, slots)
        identity = (intent, request.text())
        if identity in seen:
            continue
        seen[identity] = len(requests)
        requests.append(request)
        value_chars = sum(len(value) for _, value in slots)
        weight = np.sqrt(template.weight) / (1.0 + 0.7 * len(template.slots)) / (1.0 + value_chars / 20.0)
        keys.append(float(-np.log(rng.random() + 1e-12) / weight))
    order = np.argsort(np.array(keys), kind="stable")
    world.catalog = [requests[int(i)] for i in order]
    world.catalog_cdf = _zipf_cdf(len(world.catalog), ZIPF_EXPONENT)


def corpus_lexicon(corpus: Corpus) -> PhoneticLexicon:
    """Every word the corpus's wordings and slot values use, grouped by sound."""
    texts: list[str] = []
    for body in corpus.data["intents"].values():
        texts.extend(_SLOT_RE.sub(" ", str(text)) for text, _ in body["templates"])
        texts.extend(str(value) for values in body["slots"].values() for value, _ in values)
    return build_lexicon(texts)


def _build_confusions(world: World, rng: np.random.Generator, asr_confusions: str) -> None:
    """Pick ~20% of the popular entity values and give each one fixed misrecognition.

    ``asr_confusions``: ``rules`` derives it from phonetic spelling rules and a list of
    homophones; ``lexicon`` first looks for a word of the corpus that sounds the same.
    """
    lexicon = corpus_lexicon(world.corpus) if asr_confusions == "lexicon" else None
    popular: list[str] = []
    known: dict[str, bool] = {}
    for request in world.catalog[:POPULAR_REQUESTS]:
        for slot, value in request.slots:
            if slot in world.corpus.entity_slots and value not in known:
                known[value] = True
                popular.append(value)
    for value in popular:
        if rng.random() >= CONFUSABLE_SHARE:
            continue
        confused = lexicon_confusion(value, lexicon, rng) if lexicon is not None else None
        confused = confused or confusion_for(value, rng)
        if confused is not None:
            world.confusions[value] = confused


def _build_ambiguous(world: World, rng: np.random.Generator) -> None:
    """Mark a few wordings that the NLU routes to a fixed wrong intent.

    Only wordings with a paraphrase qualify, so a rephrase can find the wording that succeeds.
    """
    for intent in world.corpus.intents:
        targets = world.corpus.misroute_targets[intent]
        for template in world.templates[intent]:
            has_paraphrase = len(world.paraphrases[(intent, template.signature)]) > 1
            if has_paraphrase and rng.random() < AMBIGUOUS_TEMPLATE_SHARE:
                world.ambiguous[(intent, template.index)] = targets[int(rng.integers(len(targets)))]


def _build_unsupported(world: World, rng: np.random.Generator) -> None:
    """Pick the services the assistant cannot use (failures no rephrase can fix), if the corpus names any."""
    if world.corpus.unsupported_slot is None:
        return
    services = list(world.vocab.get(world.corpus.unsupported_slot, []))
    if not services:
        return
    chosen = rng.choice(len(services), size=min(UNSUPPORTED_SERVICES, len(services)), replace=False)
    world.unsupported_values = tuple(services[int(i)] for i in sorted(chosen))


def build_world(seed: int, split: VocabularySplit | None = None, corpus: str = "snips", asr_confusions: str = "rules") -> World:
    """Build the world of ``seed`` (deterministic: its own numpy Generator stream) on ``split``'s
    vocabulary of ``corpus`` (``snips`` or ``sgd``), its misrecognitions from ``asr_confusions``
    (``rules`` or ``lexicon``, see ``_build_confusions``)."""
    if asr_confusions not in ("rules", "lexicon"):
        raise ValueError(f"asr_confusions must be rules or lexicon, got {asr_confusions!r}")
    chosen = load_corpus(corpus)
    split = (split or VocabularySplit()).for_corpus(chosen)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED, 0]))
    templates, template_cdf, vocab, vocab_cdf, paraphrases = _build_vocab(chosen, split)
    world = World(templates, template_cdf, vocab, vocab_cdf, paraphrases, chosen)
    _build_catalog(world, rng, split)
    _build_confusions(world, rng, asr_confusions)
    _build_ambiguous(world, rng)
    _build_unsupported(world, rng)
    return world
