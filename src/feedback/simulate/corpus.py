"""The corpora the simulator composes requests from, and what it needs to know about each.

A ``Corpus`` bundles the vendored templates and slot values with the facts that make traffic
from them behave like an assistant's: each intent's domain and popularity, which intents an
ambiguous wording is misrouted to, which slots hold names a recogniser can mishear, and what
cannot be served. SNIPS's facts are hand-written (``feedback.simulate.constants``); the
Schema-Guided Dialogue corpus has 46 intents, so its facts follow from a few stated rules over
its data, with hand-written shares only for how popular each domain is.

Two corpora, so that a detector tuned on one can be judged on wording it never saw.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from feedback.simulate.constants import (
    ENTITY_SLOTS,
    INTENT_DOMAINS,
    INTENT_POPULARITY,
    MISROUTE_TARGETS,
    PRIMARY_SLOT,
    UNSUPPORTED_ON_DEVICE,
)

CORPORA: tuple[str, ...] = ("snips", "sgd")

SNIPS_HELDOUT_INTENTS: tuple[str, ...] = ("RateBook", "SearchScreeningEvent")
SGD_HELDOUT_INTENTS: tuple[str, ...] = ("FindAttractions", "GetTimesForMovie", "ReserveCar")
"""Held out from training by default: intents of three different domains, each with slot values."""

SGD_DOMAIN_SHARES: Mapping[str, float] = {
    "music": 0.16,
    "weather": 0.12,
    "alarm": 0.09,
    "media": 0.07,
    "calendar": 0.07,
    "restaurants": 0.06,
    "movies": 0.05,
    "events": 0.04,
    "ridesharing": 0.04,
    "messaging": 0.03,
    "travel": 0.03,
    "flights": 0.03,
    "hotels": 0.03,
    "payment": 0.03,
    "banks": 0.03,
    "services": 0.03,
    "buses": 0.02,
    "trains": 0.02,
    "rentalcars": 0.02,
    "homes": 0.03,
}
"""Share of fresh requests per SGD domain (music, weather and alarms lead on voice assistants),
split evenly between the domain's intents. A domain not listed gets 0.02."""
SGD_MEDIA_INTENTS: frozenset[str] = frozenset({"PlaySong", "PlayMedia", "PlayMovie"})
SGD_UNSUPPORTED_ON_DEVICE: tuple[tuple[str, str], ...] = (
    ("PlayMovie", "car"),
    ("TransferMoney", "tv"),
    ("ScheduleVisit", "car"),
)
_NOT_A_NAME = re.compile(r"date|time|amount|rating|length|number|days")
"""Slots whose values are dates, times, amounts or counts: read by rules, not misheard as names."""


@dataclass(frozen=True)
class Corpus:
    """Templates and slot values of one corpus, with the facts the simulator needs about them.

    Attributes:
        name: ``snips`` or ``sgd``.
        data: the vendored ``templates.json.gz`` (``intents`` -> templates and slot values).
        intents: every intent, sorted.
        domains: intent -> domain.
        popularity: intent -> share of fresh requests (sums to 1).
        misroute_targets: intent -> the intents its ambiguous wordings are routed to.
        primary_slot: intent -> the slot a misrouted request's first value lands in (None: no slots).
        entity_slots: slots whose values are names a recogniser can mishear.
        unsupported_on_device: (intent, device type) pairs the assistant cannot serve.
        unsupported_slot: (intent, slot) whose values include services the assistant cannot use.
        media_intents: intents whose success starts media playback.
        scripted_responses: whether ``feedback.simulate.responses.success_content`` words the
            responses (SNIPS); otherwise they are composed from the domain and slot values.
        heldout_intents: the default held-out intents of ``simulation.vocabulary``.
    """

    name: str
    data: Mapping[str, Any]
    intents: tuple[str, ...]
    domains: Mapping[str, str]
    popularity: Mapping[str, float]
    misroute_targets: Mapping[str, tuple[str, ...]]
    primary_slot: Mapping[str, str | None]
    entity_slots: frozenset[str]
    unsupported_on_device: tuple[tuple[str, str], ...]
    unsupported_slot: tuple[str, str] | None
    media_intents: frozenset[str]
    scripted_responses: bool
    heldout_intents: tuple[str, ...]


def _read_resource(package: str) -> dict[str, Any]:
    blob = resources.files(package).joinpath("templates.json.gz").read_bytes()
    data: dict[str, Any] = json.loads(gzip.decompress(blob).decode("utf-8"))
    return data


def _snips() -> Corpus:
    data = _read_resource("feedback.resources.snips")
    return Corpus(
        name="snips",
        data=data,
        intents=tuple(sorted(INTENT_DOMAINS)),
        domains=INTENT_DOMAINS,
        popularity=INTENT_POPULARITY,
        misroute_targets=MISROUTE_TARGETS,
        primary_slot=PRIMARY_SLOT,
        entity_slots=frozenset(ENTITY_SLOTS),
        unsupported_on_device=UNSUPPORTED_ON_DEVICE,
        unsupported_slot=("PlayMusic", "service"),
        media_intents=frozenset({"PlayMusic"}),
        scripted_responses=True,
        heldout_intents=SNIPS_HELDOUT_INTENTS,
    )


def slot_sizes(body: Mapping[str, Any]) -> dict[str, int]:
    """Slot -> how many value occurrences the intent's data holds."""
    return {slot: sum(int(count) for _, count in values) for slot, values in body["slots"].items()}


def derive_misroute_targets(domains: Mapping[str, str], slots: Mapping[str, set[str]]) -> dict[str, tuple[str, ...]]:
    """Where an ambiguous wording of each intent is routed: the intents an NLU confuses it with.

    Rule: the other intents of its domain (FindRestaurants vs ReserveRestaurant); for an intent
    alone in its domain, the intents of other domains that share a slot with it (up to two,
    most shared slots first); failing that, the first two other intents by name.
    """
    targets: dict[str, tuple[str, ...]] = {}
    for intent in sorted(domains):
        same_domain = [i for i in sorted(domains) if i != intent and domains[i] == domains[intent]]
        if same_domain:
            targets[intent] = tuple(same_domain)
            continue
        sharing = sorted(
            (i for i in domains if i != intent and slots[i] & slots[intent]),
            key=lambda i: (-len(slots[i] & slots[intent]), i),
        )
        others = [i for i in sorted(domains) if i != intent]
        targets[intent] = tuple(sharing[:2] or others[:2])
    return targets


def _sgd() -> Corpus:
    data = _read_resource("feedback.resources.sgd")
    bodies: Mapping[str, Any] = data["intents"]
    intents = tuple(sorted(bodies))
    domains = {intent: str(bodies[intent]["domain"]) for intent in intents}
    per_domain: dict[str, int] = {}
    for domain in domains.values():
        per_domain[domain] = per_domain.get(domain, 0) + 1
    raw = {intent: SGD_DOMAIN_SHARES.get(domains[intent], 0.02) / per_domain[domains[intent]] for intent in intents}
    total = sum(raw.values())
    sizes = {intent: slot_sizes(bodies[intent]) for intent in intents}
    primary = {
        intent: (sorted(sizes[intent].items(), key=lambda kv: (-kv[1], kv[0]))[0][0] if sizes[intent] else None)
        for intent in intents
    }
    all_slots = {slot for intent in intents for slot in sizes[intent]}
    return Corpus(
        name="sgd",
        data=data,
        intents=intents,
        domains=domains,
        popularity={intent: share / total for intent, share in raw.items()},
        misroute_targets=derive_misroute_targets(domains, {i: set(sizes[i]) for i in intents}),
        primary_slot=primary,
        entity_slots=frozenset(slot for slot in all_slots if not _NOT_A_NAME.search(slot)),
        unsupported_on_device=SGD_UNSUPPORTED_ON_DEVICE,
        unsupported_slot=None,
        media_intents=SGD_MEDIA_INTENTS,
        scripted_responses=False,
        heldout_intents=SGD_HELDOUT_INTENTS,
    )


@lru_cache(maxsize=None)
def load_corpus(name: str) -> Corpus:
    """The corpus called ``name`` (``snips`` or ``sgd``), read once per process."""
    if name == "snips":
        return _snips()
    if name == "sgd":
        return _sgd()
    raise ValueError(f"name must be one of {CORPORA}, got {name!r}")
