"""The simulator's corpora: the vendored SGD copy, the facts derived from it, and traffic composed from it."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from feedback.config import ConfigError, SimulationConfig
from feedback.simulate import run
from feedback.simulate.corpus import derive_misroute_targets, load_corpus
from feedback.simulate.responses import composed_content
from feedback.simulate.world import VocabularySplit, build_world

from support.paths import REPO

SGD_DOMAINS = {
    "alarm", "banks", "buses", "calendar", "events", "flights", "homes", "hotels", "media", "messaging",
    "movies", "music", "payment", "rentalcars", "restaurants", "ridesharing", "services", "trains", "travel", "weather",
}


def test_vendored_sgd_resources_are_compact_and_attributed() -> None:
    corpus = load_corpus("sgd")
    assert len(corpus.intents) == 46
    assert set(corpus.domains.values()) == SGD_DOMAINS
    assert corpus.domains["FindMovies"] == "movies"
    for intent, body in corpus.data["intents"].items():
        assert 0 < len(body["templates"]) <= 300
        for template, count in body["templates"]:
            assert count >= 1
            assert template == template.lower() and not re.search(r"[.,!?]", template), template
            assert set(re.findall(r"\{([a-z_]+)\}", template)) <= set(body["slots"]), (intent, template)
    folder = REPO / "src" / "feedback" / "resources" / "sgd"
    assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) < 1_500_000
    notice = (folder / "NOTICE.md").read_text("utf-8")
    assert "Attribution-ShareAlike 4.0" in notice and "Rastogi" in notice and "dstc8-schema-guided-dialogue" in notice


def test_sgd_facts_follow_the_stated_rules() -> None:
    corpus = load_corpus("sgd")
    assert sum(corpus.popularity.values()) == pytest.approx(1.0)
    # the listed shares sum to 1: music's 0.16 split over its four intents, weather's 0.12 on its one
    assert corpus.popularity["PlaySong"] == pytest.approx(0.04)
    assert corpus.popularity["GetWeather"] == pytest.approx(0.12)
    assert corpus.misroute_targets["FindRestaurants"] == ("ReserveRestaurant",)
    assert corpus.misroute_targets["LookupMusic"] == ("LookupSong", "PlayMedia", "PlaySong")
    assert {"city", "artist", "song_name", "restaurant_name"} <= corpus.entity_slots
    assert not {"date", "time", "amount", "rating", "stay_length", "number_of_days"} & corpus.entity_slots
    assert corpus.primary_slot["GetWeather"] in ("city", "date")
    assert corpus.media_intents == frozenset({"PlaySong", "PlayMedia", "PlayMovie"})


def test_misroute_targets_same_domain_then_shared_slots_then_by_name() -> None:
    domains = {"A": "d1", "B": "d1", "C": "d2", "D": "d3", "E": "d4"}
    slots = {"A": {"city"}, "B": set(), "C": {"city", "date"}, "D": {"city", "date"}, "E": set()}
    assert derive_misroute_targets(domains, slots) == {
        "A": ("B",),
        "B": ("A",),
        "C": ("D", "A"),  # D shares two slots, A one
        "D": ("C", "A"),
        "E": ("A", "B"),  # shares nothing: the first two by name
    }


def test_composed_responses_echo_what_was_understood() -> None:
    rng = np.random.default_rng(0)
    assert composed_content("PlaySong", "music", {"song_name": "only love", "artist": "ben platt"}, True, rng) == (
        "media",
        "Playing Only Love by Ben Platt now.",
    )
    kind, text = composed_content("FindRestaurants", "restaurants", {"city": "san jose"}, False, rng)
    assert kind == "speech" and "restaurants" in text and "for San Jose" in text
    kind, text = composed_content("ReserveRestaurant", "restaurants", {}, False, rng)
    assert kind == "action" and "I will reserve restaurant" in text and " for " not in text


def test_sgd_simulation_uses_only_sgd_intents_and_is_reproducible(tmp_path: Path) -> None:
    config = SimulationConfig(users=12, days=2, seed=5, corpus="sgd")
    first = run(config, tmp_path / "a", progress=False)
    run(config, tmp_path / "b", progress=False)
    assert (tmp_path / "a" / "ground_truth.jsonl").read_bytes() == (tmp_path / "b" / "ground_truth.jsonl").read_bytes()
    truth = [json.loads(line) for line in (tmp_path / "a" / "ground_truth.jsonl").read_text("utf-8").splitlines()]
    corpus = load_corpus("sgd")
    requests = [t for t in truth if not t["is_system_command"]]
    assert {t["intended_intent"] for t in requests} <= set(corpus.intents)
    assert all(t["intended_domain"] == corpus.domains[t["intended_intent"]] for t in requests)
    assert first.corpus == "sgd" and json.loads((tmp_path / "a" / "manifest.json").read_text())["corpus"] == "sgd"
    assert first.events == len(truth) > 100
    assert Counter(t["intended_domain"] for t in requests).most_common(1)[0][0] == "music"


def test_sgd_heldout_split_defaults_to_the_corpus_own_intents() -> None:
    heldout = build_world(4, VocabularySplit("heldout"), "sgd")
    train = build_world(3, VocabularySplit("train"), "sgd")
    assert {r.intent for r in heldout.catalog} == {"FindAttractions", "GetTimesForMovie", "ReserveCar"}
    assert not {r.intent for r in train.catalog} & {"FindAttractions", "GetTimesForMovie", "ReserveCar"}
    with pytest.raises(ValueError, match="unknown to sgd"):
        build_world(3, VocabularySplit("train", heldout_intents=("RateBook",)), "sgd")


def test_corpus_name_is_validated() -> None:
    with pytest.raises(ConfigError, match="simulation.corpus"):
        SimulationConfig(corpus="atis")
    with pytest.raises(ValueError, match="name must be one of"):
        load_corpus("atis")
