"""Constants shared by the simulator modules and by consumers of its ground truth.

The two windows below are part of the ground-truth definitions (see ``feedback.simulate``):
detectors and tests import them instead of repeating the numbers.
"""

from __future__ import annotations

from typing import Final

MEDIA_BARGE_IN_WINDOW_S: Final[int] = 30
"""A request on the same device within this many seconds of playback start barges into media."""

TERMINATION_WINDOW_S: Final[int] = 10
"""A stop/cancel within this many seconds of a response's end (or while it plays) terminates it."""

SESSION_GAP_S: Final[int] = 30 * 60
"""Minimum silence between two sessions of one device."""

SCHEMA_VERSION: Final[int] = 1
MS_PER_CHAR: Final[float] = 65.0
MS_PER_HOUR: Final[int] = 3_600_000
MS_PER_DAY: Final[int] = 24 * MS_PER_HOUR

DEFECT_CAUSES: Final[tuple[str, ...]] = (
    "false_wake",
    "asr_systematic",
    "asr_random",
    "nlu_misroute",
    "rewrite",
    "entity_resolution",
    "unhandled",
    "error",
    "unsupported",
)

FALSE_WAKE_INTENT: Final[str] = "none"
"""``intended_intent`` and ``intended_domain`` of a false wake in the ground truth: the user asked for nothing."""

FAILURE_POINTS: Final[tuple[str, ...]] = ("none", "false_wake", "asr", "nlu", "entity", "result")
"""Where a turn failed first and for good, in the order a request flows through the assistant
(``none``: no defect). ``false_wake`` and ``entity`` come only with ``simulation.false_wake_rate``
and ``simulation.entity_error_rate`` above 0."""

CAUSE_FAILURE_POINTS: Final[dict[str, str]] = {
    "false_wake": "false_wake",
    "asr_systematic": "asr",
    "asr_random": "asr",  # only slot-value errors are causes: a misheard carrier word does no harm
    "nlu_misroute": "nlu",
    "rewrite": "nlu",  # a rewriter (before the NLU) replaced the request with one of another meaning
    "entity_resolution": "entity",  # heard and understood right, a slot value resolved to another entity
    "unhandled": "nlu",  # correctly heard words the NLU could not interpret (after an ASR error, ASR comes first)
    "error": "result",
    "unsupported": "result",
}

INTENT_DOMAINS: Final[dict[str, str]] = {
    "PlayMusic": "music",
    "AddToPlaylist": "music",
    "GetWeather": "weather",
    "BookRestaurant": "restaurant",
    "RateBook": "books",
    "SearchCreativeWork": "creative_work",
    "SearchScreeningEvent": "movies",
}
SNIPS_INTENTS: Final[tuple[str, ...]] = tuple(sorted(INTENT_DOMAINS))

# Share of fresh requests per intent: music and weather dominate real assistant traffic.
INTENT_POPULARITY: Final[dict[str, float]] = {
    "PlayMusic": 0.34,
    "GetWeather": 0.24,
    "AddToPlaylist": 0.08,
    "SearchCreativeWork": 0.09,
    "SearchScreeningEvent": 0.10,
    "BookRestaurant": 0.08,
    "RateBook": 0.07,
}

SYSTEM_DOMAIN: Final[str] = "system"
# intent -> the wordings users say for it (first one is the most common).
SYSTEM_COMMANDS: Final[dict[str, tuple[str, ...]]] = {
    "Stop": ("stop", "stop it", "stop stop", "shut up", "stop the music"),
    "Cancel": ("cancel", "never mind", "forget it", "cancel that"),
    "Pause": ("pause", "pause the music", "pause it"),
    "Next": ("next", "skip", "next song", "skip this song", "skip this"),
}
STOP_LIKE_INTENTS: Final[tuple[str, ...]] = ("Stop", "Cancel")
"""System intents that end a response (``terminated``)."""
MEDIA_CONTROL_INTENTS: Final[tuple[str, ...]] = ("Stop", "Cancel", "Pause", "Next")

RESPONSE_TYPES: Final[tuple[str, ...]] = ("speech", "media", "action", "none")
STATUSES: Final[tuple[str, ...]] = ("success", "unhandled", "error")
DEVICE_TYPES: Final[tuple[str, ...]] = ("speaker", "display", "phone", "tv", "car")

# Slots whose values are names a recogniser can mishear (not closed classes like "sort").
ENTITY_SLOTS: Final[tuple[str, ...]] = (
    "album",
    "artist",
    "city",
    "country",
    "cuisine",
    "entity_name",
    "genre",
    "geographic_poi",
    "location_name",
    "movie_name",
    "object_name",
    "playlist",
    "poi",
    "restaurant_name",
    "served_dish",
    "service",
    "state",
    "track",
)

# The slot a misrouted request's main value lands in, per wrongly chosen intent.
PRIMARY_SLOT: Final[dict[str, str]] = {
    "PlayMusic": "track",
    "AddToPlaylist": "entity_name",
    "GetWeather": "city",
    "BookRestaurant": "restaurant_name",
    "RateBook": "object_name",
    "SearchCreativeWork": "object_name",
    "SearchScreeningEvent": "movie_name",
}

# Plausible NLU confusions: intent -> intents its ambiguous wordings are routed to.
MISROUTE_TARGETS: Final[dict[str, tuple[str, ...]]] = {
    "PlayMusic": ("SearchCreativeWork", "AddToPlaylist"),
    "AddToPlaylist": ("PlayMusic",),
    "GetWeather": ("SearchScreeningEvent", "BookRestaurant"),
    "BookRestaurant": ("GetWeather", "SearchScreeningEvent"),
    "RateBook": ("SearchCreativeWork",),
    "SearchCreativeWork": ("PlayMusic", "SearchScreeningEvent"),
    "SearchScreeningEvent": ("SearchCreativeWork", "PlayMusic"),
}

# (intent, device type) pairs the assistant does not support: failures no rephrase can fix.
UNSUPPORTED_ON_DEVICE: Final[tuple[tuple[str, str], ...]] = (
    ("BookRestaurant", "tv"),
    ("RateBook", "car"),
    ("AddToPlaylist", "tv"),
)

# locale, UTC offsets in minutes its households live in, share of households.
LOCALES: Final[tuple[tuple[str, tuple[int, ...], float], ...]] = (
    ("en-US", (-300, -360, -420, -480), 0.52),
    ("en-GB", (0, 0, 60), 0.18),
    ("en-CA", (-300, -480), 0.07),
    ("en-AU", (600, 660), 0.07),
    ("en-IN", (330,), 0.08),
    ("en-IE", (0,), 0.04),
    ("en-NZ", (780,), 0.04),
)

# Relative session starts per local hour (0..23): morning and evening peaks.
DIURNAL: Final[tuple[float, ...]] = (
    0.25, 0.12, 0.06, 0.05, 0.06, 0.15, 0.55, 1.15, 1.10, 0.80, 0.70, 0.80,
    0.95, 0.85, 0.70, 0.70, 0.90, 1.20, 1.50, 1.60, 1.45, 1.10, 0.75, 0.45,
)

APP_VERSIONS: Final[tuple[str, ...]] = ("4.12.0", "4.12.3", "4.13.1", "5.0.0-beta")

LEAD_INS: Final[tuple[str, ...]] = ("i said", "i want", "please", "can you")
"""What a user who adds words puts before the request."""
CORRECTION_LEAD_IN: Final[str] = "no i said"
"""What a user correcting one slot puts before the request."""
