"""The simulated assistant reading a rewritten text: hand-worked wordings of one SNIPS world."""

from __future__ import annotations

import pytest

from feedback.simulate.interpret import TextInterpreter, normalized, same_meaning
from feedback.simulate.world import Request, World, build_world


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(7, corpus="snips")


@pytest.fixture(scope="module")
def interpreter(world: World) -> TextInterpreter:
    return TextInterpreter(world)


def weather(world: World, text: str, city: str) -> Request:
    template = next(t for t in world.templates["GetWeather"] if t.text == text)
    return Request("GetWeather", template, (("city", city),))


def test_normalized_keeps_apostrophes_and_drops_punctuation() -> None:
    assert normalized("  What's the  Weather, in PARIS?! ") == "what's the weather in paris"


def test_a_wording_of_the_intended_request_means_it(world: World, interpreter: TextInterpreter) -> None:
    intended = weather(world, "what's the weather in {city}", "paris")
    understood = interpreter.interpret("What is the weather forecast for Paris", intended)
    assert understood is not None
    assert (understood.intent, understood.slots, understood.template.text) == (
        "GetWeather",
        (("city", "paris"),),
        "what is the weather forecast for {city}",
    )
    assert same_meaning(intended, understood)


def test_a_short_form_and_a_lead_in_still_mean_it(world: World, interpreter: TextInterpreter) -> None:
    intended = weather(world, "what's the weather like in {city}", "paris")
    short = interpreter.interpret("like in paris", intended)  # the two words before each value
    said_again = interpreter.interpret("i said what's the weather in paris", intended)
    assert short is not None and short.template.text == "like in {city}" and short.template.index < 0
    assert said_again is not None and same_meaning(intended, said_again)


def test_a_misheard_value_means_another_request(world: World, interpreter: TextInterpreter) -> None:
    intended = weather(world, "what's the weather in {city}", "paris")
    understood = interpreter.interpret("what's the weather in parish", intended)
    assert understood is not None
    assert (understood.intent, understood.slots) == ("GetWeather", (("city", "parish"),))
    assert not same_meaning(intended, understood)


def test_known_values_decide_between_wordings(interpreter: TextInterpreter) -> None:
    understood = interpreter.interpret("what's the weather in paris")
    assert understood is not None
    assert (understood.intent, understood.slots) == ("GetWeather", (("city", "paris"),))


def test_words_no_wording_fits_are_not_understood(interpreter: TextInterpreter) -> None:
    assert interpreter.interpret("zzz qqq") is None
    assert interpreter.interpret("") is None
    with pytest.raises(TypeError, match="text must be a string"):
        interpreter.interpret(None)  # type: ignore[arg-type]


def test_same_meaning_compares_intent_and_normalized_values(world: World) -> None:
    one = weather(world, "what's the weather in {city}", "São Paulo")
    other = weather(world, "what is the weather forecast for {city}", "são paulo")
    assert same_meaning(one, other)
    assert not same_meaning(one, weather(world, "what's the weather in {city}", "sao paulo"))
    assert not same_meaning(one, Request("SearchCreativeWork", one.template, one.slots))
