"""What the assistant answers: response type, spoken text, latency and duration.

Responses are built from what the NLU *understood* (possibly misheard or misrouted slots), so a
defective turn carries visibly wrong content ("Playing the beetles") that the user reacts to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from feedback.simulate.constants import MS_PER_CHAR

_CONDITIONS = ("sunny", "cloudy", "light rain", "showers", "clear skies", "fog", "snow", "wind")
_TIMES = ("4:10 pm", "6:30 pm", "7:15 pm", "8 pm", "9:45 pm", "10:20 pm")
_THEATRES = ("the Regal", "Cineworld", "AMC 16", "the Odeon", "Vue Central", "the Roxy")


@dataclass(frozen=True)
class Response:
    """One response of the assistant (``duration_ms`` is None for media that keeps playing)."""

    response_type: str
    text: str | None
    latency_ms: int
    duration_ms: int | None


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    """One option, uniformly (a scalar draw keeps the stream reproducible)."""
    return options[int(rng.integers(len(options)))]


def _first(slots: dict[str, str], names: tuple[str, ...], default: str) -> str:
    """The first present slot among ``names``, else ``default``."""
    for name in names:
        value = slots.get(name)
        if value:
            return value
    return default


def _name(value: str) -> str:
    """A slot value as a display name ("paul smith" -> "Paul Smith")."""
    return " ".join(w[:1].upper() + w[1:] for w in value.split())


def _music_text(slots: dict[str, str]) -> str:
    """'Playing <what> by <artist> on <service>'."""
    named = ("track", "album", "playlist", "artist")
    what_slot = next((s for s in named + ("genre", "music_item", "year") if slots.get(s)), None)
    if what_slot is None:
        text = "Playing some music"
    else:
        what = _name(slots[what_slot]) if what_slot in named else slots[what_slot]
        text = f"Playing {what}"
    artist = slots.get("artist")
    if artist and what_slot != "artist":
        text += f" by {_name(artist)}"
    if "service" in slots:
        text += f" on {_name(slots['service'])}"
    return text + "."


def _weather_text(slots: dict[str, str], rng: np.random.Generator) -> str:
    """A short forecast for the understood place and time."""
    place = _first(slots, ("city", "state", "country", "geographic_poi"), "")
    place = _name(place) if place else slots.get("current_location", "your area")
    when = slots.get("timeRange", "right now")
    temperature = int(rng.integers(-5, 34))
    return f"{when.capitalize()} in {place}, expect {_pick(_CONDITIONS, rng)} and {temperature} degrees."


def _restaurant_text(slots: dict[str, str]) -> str:
    """A booking confirmation."""
    size = _first(slots, ("party_size_number", "party_size_description"), "two")
    if slots.get("restaurant_name"):
        where = _name(slots["restaurant_name"])
    else:
        where = "a " + _first(slots, ("restaurant_type", "cuisine", "served_dish"), "restaurant")
    town = _first(slots, ("city", "state", "country", "poi"), "")
    place = f" in {_name(town)}" if town else " nearby"
    when = slots.get("timeRange", "tonight")
    return f"Done. I booked a table for {size} at {where}{place} {when}. You will get a confirmation by email."


def _rate_text(slots: dict[str, str]) -> str:
    """A rating confirmation."""
    name = _name(slots["object_name"]) if slots.get("object_name") else _first(slots, ("object_select",), "this") + " book"
    value = slots.get("rating_value", "five")
    unit = slots.get("rating_unit", "stars")
    return f"Thanks, I rated {name} {value} {unit}."


def _creative_text(slots: dict[str, str], rng: np.random.Generator) -> str:
    """A search result for a book, show, song or game."""
    name = _name(_first(slots, ("object_name", "movie_name", "track", "album"), "that"))
    kind = slots.get("object_type", "title")
    year = int(rng.integers(1960, 2026))
    return f"Here is {name}, a {kind} from {year}. Do you want to hear more about it?"


def _screening_text(slots: dict[str, str], rng: np.random.Generator) -> str:
    """Show times for the understood movie."""
    movie = _name(_first(slots, ("movie_name", "movie_type", "object_type"), "that movie"))
    where = _name(slots["location_name"]) if slots.get("location_name") else _pick(_THEATRES, rng)
    first, second = sorted(rng.choice(len(_TIMES), size=2, replace=False))
    return f"{movie} is showing at {where} at {_TIMES[int(first)]} and {_TIMES[int(second)]}."


def success_content(intent: str, slots: dict[str, str], rng: np.random.Generator) -> tuple[str, str]:
    """(response_type, text) of a served request of ``intent`` with the understood ``slots``."""
    if intent == "PlayMusic":
        return "media", _music_text(slots)
    if intent == "AddToPlaylist":
        thing = _name(_first(slots, ("entity_name", "artist"), "")) or "this " + slots.get("music_item", "song")
        owner = {"my": "your", "me": "your"}.get(slots.get("playlist_owner", "your"), slots.get("playlist_owner", "your"))
        playlist = _name(slots.get("playlist", "favourites"))
        return "action", f"Okay, I added {thing} to {owner} {playlist} playlist."
    if intent == "GetWeather":
        return "speech", _weather_text(slots, rng)
    if intent == "BookRestaurant":
        return "action", _restaurant_text(slots)
    if intent == "RateBook":
        return "action", _rate_text(slots)
    if intent == "SearchCreativeWork":
        return "speech", _creative_text(slots, rng)
    if intent == "SearchScreeningEvent":
        return "speech", _screening_text(slots, rng)
    raise ValueError(f"intent: unknown intent {intent!r}")


_LOOKUP_VERBS = ("Find", "Search", "Get", "Lookup", "Check")
_FOUND = ("I found {count} {domain} options{detail}. The first one looks good, want to hear more?",
          "Here is what I found{detail}: {count} {domain} results. Shall I read them out?",
          "There are {count} {domain} results{detail}. The top one is rated {stars} stars.")
_DONE = ("Okay, {action}{detail}. Anything else?",
         "All set: {action}{detail}.",
         "Done, {action}{detail}. I sent the details to your phone.")


def _words(intent: str) -> str:
    """``ReserveRestaurant`` -> ``reserve restaurant``."""
    return " ".join(part.lower() for part in re.findall(r"[A-Z][a-z]*", intent)) or intent.lower()


def composed_content(intent: str, domain: str, slots: dict[str, str], media: bool, rng: np.random.Generator) -> tuple[str, str]:
    """(response_type, text) of a served request of a corpus without scripted responses.

    Why composed from the intent's name, its domain and the understood values: the response
    still echoes what the NLU understood, so a misheard or misrouted request gets visibly wrong
    content, as with the scripted ones.
    """
    values = [_name(v) for v in slots.values() if v]
    detail = " for " + " and ".join(values[:2]) if values else ""
    if media:
        return "media", f"Playing {' by '.join(values[:2]) if values else 'that'} now."
    if intent.startswith(_LOOKUP_VERBS):
        template = _pick(_FOUND, rng)
        count = int(rng.integers(2, 11))
        return "speech", template.format(count=count, domain=domain, detail=detail, stars=_pick(("4", "4.5", "5"), rng))
    return "action", _pick(_DONE, rng).format(action=f"I will {_words(intent)}", detail=detail)


def unhandled_text(missing_value: str | None, rng: np.random.Generator) -> str:
    """What the assistant says when it cannot act on a request."""
    if missing_value:
        return f"Sorry, I couldn't find {missing_value}."
    return _pick(
        (
            "Sorry, I don't know how to help with that.",
            "Hmm, I'm not sure what you mean.",
            "Sorry, I didn't get that.",
        ),
        rng,
    )


def unsupported_text(value: str | None, rng: np.random.Generator) -> str:
    """What the assistant says about a feature it does not support."""
    if value:
        return f"Sorry, {value} isn't supported yet."
    return _pick(("Sorry, I can't do that on this device yet.", "That's not something I can do here yet."), rng)


ERROR_TEXT = "Sorry, something went wrong. Please try again in a moment."


def speech_duration(text: str | None, rng: np.random.Generator) -> int:
    """Length of the spoken response: about 65 ms per character."""
    if not text:
        return 0
    return int(round(len(text) * MS_PER_CHAR * rng.uniform(0.92, 1.08)))


def latency(kind: str, rng: np.random.Generator) -> int:
    """Time from the request to the start of the response (log-normal; errors can time out)."""
    if kind == "error" and rng.random() < 0.6:
        return int(rng.integers(3000, 8000))
    median = {"media": 900.0, "command": 350.0, "unhandled": 750.0}.get(kind, 650.0)
    return int(max(120.0, median * float(np.exp(rng.normal(0.0, 0.35)))))


def build_response(response_type: str, text: str | None, kind: str, rng: np.random.Generator) -> Response:
    """Assemble a Response with its latency and (for non-media) spoken duration."""
    duration = None if response_type == "media" else speech_duration(text, rng)
    return Response(response_type, text, latency(kind, rng), duration)
