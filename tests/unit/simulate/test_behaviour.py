"""Behaviour profiles: the wordings users rephrase with, and each profile's timing and reactions."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from feedback.config import BehaviourConfig, ConfigError, RephraseMix, SimulationConfig, load_config
from feedback.simulate import run
from feedback.simulate.asr import build_lexicon, lexicon_confusion
from feedback.simulate.sessions import LEAD_INS, _pick_style
from feedback.simulate.world import Request, parse_template, shortened, with_lead_in

from support.paths import REPO

WEATHER = parse_template("GetWeather", 4, "tell me the weather in {city} on {date}", 3.0)
PLAY = parse_template("PlayMusic", 2, "i want to listen to {track} by {artist} please", 1.0)
BOOK = parse_template("ReserveRestaurant", 9, "i want to make a reservation at a restaurant", 1.0)


def test_shortened_keeps_each_value_with_two_words_before_it() -> None:
    weather = shortened(Request("GetWeather", WEATHER, (("city", "paris"), ("date", "monday"))))
    assert weather is not None and weather.text() == "weather in paris on monday"
    assert weather.template.index == -5 and weather.slots == (("city", "paris"), ("date", "monday"))
    play = shortened(Request("PlayMusic", PLAY, (("track", "yesterday"), ("artist", "the beatles"))))
    assert play is not None and play.text() == "listen to yesterday by the beatles"
    book = shortened(Request("ReserveRestaurant", BOOK, ()))
    assert book is not None and book.text() == "reservation at a restaurant"
    terse = parse_template("GetWeather", 0, "weather in {city}", 1.0)
    assert shortened(Request("GetWeather", terse, (("city", "paris"),))) is None


def test_lead_in_goes_before_the_request() -> None:
    said = with_lead_in(Request("GetWeather", WEATHER, (("city", "paris"), ("date", "monday"))), "no i said")
    assert said.text() == "no i said tell me the weather in paris on monday"
    assert said.template.slots == ("city", "date")


@pytest.mark.parametrize(
    ("draw", "style"), [(0.0, "repeat"), (0.29, "repeat"), (0.3, "reword"), (0.549, "reword"), (0.55, "careful"), (0.999, "careful")]
)
def test_style_is_drawn_by_cumulative_share(draw: float, style: str) -> None:
    assert _pick_style(RephraseMix(repeat=0.3, reword=0.25, careful=0.45), draw) == style


def test_style_weights_are_normalised() -> None:
    mix = RephraseMix(shorten=2.0 / 10, switch=2.0 / 10)
    assert [_pick_style(mix, d) for d in (0.0, 0.49, 0.5, 0.99)] == ["shorten", "shorten", "switch", "switch"]


def test_profile_files_load_and_a_equals_the_defaults() -> None:
    profile_a = load_config(REPO / "conf" / "behaviour-a.yaml").simulation
    profile_b = load_config(REPO / "conf" / "behaviour-b.yaml").simulation
    assert profile_a == SimulationConfig()
    assert profile_b.behaviour.name == "b"
    a, b = profile_a.behaviour, profile_b.behaviour
    for name in (
        "retry_delay_s", "barge_in_point", "media_reaction_s", "speech_barge_in_rate", "stop_first_share",
        "media_stop_share", "media_skip_share", "give_up_stop_share", "asr_confusions", "rephrase_misheard", "rephrase_misunderstood",
    ):
        assert getattr(a, name) != getattr(b, name), name
    assert (profile_a.abandon_rate, profile_a.silent_give_up_rate) != (profile_b.abandon_rate, profile_b.silent_give_up_rate)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"retry_delay_s": (5.0, 1.0)}, "simulation.behaviour.retry_delay_s"),
        ({"barge_in_point": (0.5, 1.5)}, "simulation.behaviour.barge_in_point"),
        ({"media_reaction_s": (1.0, 40.0)}, "simulation.behaviour.media_reaction_s"),
        ({"media_stop_share": 0.7, "media_skip_share": 0.4}, "simulation.behaviour.media_skip_share"),
        ({"rephrase_misheard": RephraseMix()}, "simulation.behaviour.rephrase_misheard"),
        ({"rephrase_misunderstood": RephraseMix(repeat=1.5)}, "simulation.behaviour.rephrase_misunderstood.repeat"),
        ({"name": "Profile B"}, "simulation.behaviour.name"),
    ],
)
def test_behaviour_validation_names_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        replace(BehaviourConfig(), **changes)


def _simulate(tmp_path: Path, profile: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Ground truth and events (by id) of a tiny, fault-free simulation under ``profile``."""
    base = load_config(REPO / "conf" / f"behaviour-{profile}.yaml").simulation
    config = replace(base, users=60, days=2, seed=13, duplicate_rate=0.0, late_file_rate=0.0, malformed_rate=0.0)
    out = tmp_path / profile
    summary = run(config, out, progress=False)
    assert summary.profile == profile
    truth = [json.loads(line) for line in (out / "ground_truth.jsonl").read_text("utf-8").splitlines()]
    events = {}
    for path in sorted((out / "events").glob("*.jsonl")):
        for line in path.read_text("utf-8").splitlines():
            event = json.loads(line)
            events[event["event_id"]] = event
    return truth, events


def _ms(ts: str) -> int:
    return int(round(datetime.fromisoformat(ts).timestamp() * 1000))


def _reactions(truth: list[dict[str, Any]], events: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """Per rephrase that follows its request directly on the device: when it came.

    ``after_end``: seconds after the request's spoken answer ended (rephrases said after it);
    ``into_speech``: the share of the answer played when the rephrase talked over it.
    """
    by_device: dict[str, list[dict[str, Any]]] = {}
    for row in truth:
        by_device.setdefault(row["device_id"], []).append(row)
    found: dict[str, list[float]] = {"after_end": [], "into_speech": []}
    for rows in by_device.values():
        rows.sort(key=lambda r: _ms(r["ts"]))
        for earlier, later in zip(rows, rows[1:]):
            if later["rephrase_of"] != earlier["event_id"] or later["rephrase_style"] is None:
                continue
            request = events[earlier["event_id"]]
            duration = request.get("response_duration_ms")
            if request.get("response_type") == "media" or not duration or earlier["defect_causes"] == []:
                continue
            start = _ms(request["ts"]) + request["response_latency_ms"]
            gap_ms = _ms(later["ts"]) - start
            if gap_ms >= duration:
                found["after_end"].append((gap_ms - duration) / 1000.0)
            else:
                found["into_speech"].append(gap_ms / duration)
    return found


@pytest.mark.parametrize("profile", ["a", "b"])
def test_each_profile_produces_the_behaviour_it_names(tmp_path: Path, profile: str) -> None:
    truth, events = _simulate(tmp_path, profile)
    behaviour = load_config(REPO / "conf" / f"behaviour-{profile}.yaml").simulation.behaviour
    styles = Counter(row["rephrase_style"] for row in truth if row["rephrase_of"] is not None)
    assert None not in styles
    named = {name for name in ("repeat", "reword", "careful", "shorten", "add_words", "correct_slot", "switch")
             if getattr(behaviour.rephrase_misheard, name) or getattr(behaviour.rephrase_misunderstood, name)}
    assert set(styles) <= named
    reactions = _reactions(truth, events)
    low, high = behaviour.retry_delay_s
    assert len(reactions["after_end"]) >= 10
    assert all(low <= delay <= high for delay in reactions["after_end"]), reactions["after_end"]
    low, high = behaviour.barge_in_point
    assert len(reactions["into_speech"]) >= 10
    assert all(low - 0.01 <= share <= high + 0.01 for share in reactions["into_speech"]), reactions["into_speech"]
    for row in truth:
        utterance = events[row["event_id"]]["utterance"]
        if row["rephrase_style"] == "correct_slot":
            assert utterance.startswith("no i said "), utterance
        elif row["rephrase_style"] == "add_words":
            assert utterance.startswith(tuple(f"{lead} " for lead in LEAD_INS)), utterance
    if profile == "a":
        assert set(styles) == {"repeat", "reword", "careful"}
    else:
        assert {"shorten", "add_words", "correct_slot", "switch"} <= set(styles)


def test_lexicon_confusions_land_on_a_word_of_the_corpus_that_sounds_the_same() -> None:
    lexicon = build_lexicon(["weather in seattle", "settle the bill", "paris", "parris island", "a cat"])
    assert lexicon.sound_alikes("seattle") == ("settle",)
    assert lexicon.sound_alikes("parris") == ("paris",)
    assert lexicon.sound_alikes("cat") == ()  # alone with its sound (and "a" is too short to count)
    rng = np.random.default_rng(0)
    assert lexicon_confusion("seattle wa", lexicon, rng) == "settle wa"
    assert lexicon_confusion("the bronx", lexicon, rng) is None
