"""Malformed lines with the exact reason codes a contract-v1 validator must report.

Each line is derived from a real event of the same file (so it looks like the fleet's traffic)
but carries a fresh event id; it is injected as an *extra* line, never replacing an event.
Field mutations touch distinct fields, so the expected reasons are exactly the union of the
mutations' reasons; structural faults (``not_json``, ``truncated_json``, ``not_object``) are
always alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

Mutation = Callable[[dict[str, Any], np.random.Generator], None]


@dataclass(frozen=True)
class MalformedLine:
    """One injected line and the reasons a validator must give for it (sorted)."""

    raw: str
    reasons: tuple[str, ...]


def _set(name: str, value: Any) -> Mutation:
    """A mutation setting ``name`` to ``value``."""

    def apply(event: dict[str, Any], rng: np.random.Generator) -> None:
        event[name] = value

    return apply


def _drop(name: str) -> Mutation:
    """A mutation removing ``name``."""

    def apply(event: dict[str, Any], rng: np.random.Generator) -> None:
        event.pop(name, None)

    return apply


def _long_utterance(event: dict[str, Any], rng: np.random.Generator) -> None:
    """An utterance over 1000 characters (a stuck microphone transcribing a TV)."""
    base = str(event.get("utterance") or "play music")
    words: list[str] = []
    target = int(rng.integers(1001, 1500))
    while len(" ".join(words)) <= target:
        words.append(base)
    event["utterance"] = " ".join(words)


def _long_event_id(event: dict[str, Any], rng: np.random.Generator) -> None:
    """An event id over 128 characters."""
    event["event_id"] = rng.bytes(int(rng.integers(65, 100))).hex()


def _naive_ts(event: dict[str, Any], rng: np.random.Generator) -> None:
    """The event's own timestamp with its offset stripped (and sometimes a space separator)."""
    ts = str(event.get("ts", "2026-11-02T10:00:00.000Z"))
    naive = ts[:23]
    event["ts"] = naive.replace("T", " ") if rng.random() < 0.5 else naive


def _choice(name: str, values: tuple[Any, ...]) -> Mutation:
    """A mutation setting ``name`` to one of ``values``."""

    def apply(event: dict[str, Any], rng: np.random.Generator) -> None:
        event[name] = values[int(rng.integers(len(values)))]

    return apply


# field -> the mutations of that field and the reason each implies. Required fields (a missing or
# null value is ``missing_field``) are those of ``feedback.core.schema.EVENT_FIELDS``: event_id,
# schema_version, ts, user_id, device_id, utterance, status.
FIELD_MUTATIONS: dict[str, tuple[tuple[str, Mutation], ...]] = {
    "event_id": (
        ("missing_field:event_id", _drop("event_id")),
        ("missing_field:event_id", _set("event_id", None)),
        ("empty_field:event_id", _set("event_id", "")),
        ("too_long:event_id", _long_event_id),
        ("wrong_type:event_id", _choice("event_id", (123456789, ["a1b2"]))),
    ),
    "schema_version": (
        ("missing_field:schema_version", _drop("schema_version")),
        ("wrong_type:schema_version", _choice("schema_version", ("1", "v1", 1.5))),
        ("unknown_schema_version", _choice("schema_version", (2, 3, 0))),
    ),
    "ts": (
        ("missing_field:ts", _drop("ts")),
        ("missing_field:ts", _set("ts", None)),
        ("bad_timestamp", _naive_ts),
        ("bad_timestamp", _choice("ts", ("yesterday", "2026-13-45T10:00:00Z", "02/11/2026 10:00", "now"))),
    ),
    "user_id": (
        ("missing_field:user_id", _drop("user_id")),
        ("empty_field:user_id", _set("user_id", "")),
        ("wrong_type:user_id", _set("user_id", 40412)),
    ),
    "device_id": (
        ("missing_field:device_id", _set("device_id", None)),
        ("empty_field:device_id", _set("device_id", "")),
        ("wrong_type:device_id", _set("device_id", {"id": "dev-1"})),
    ),
    "utterance": (
        ("missing_field:utterance", _drop("utterance")),
        ("blank_utterance", _choice("utterance", ("", "   ", "\t"))),
        ("too_long:utterance", _long_utterance),
        ("wrong_type:utterance", _set("utterance", ["play", "music"])),
    ),
    "asr_confidence": (
        ("wrong_type:asr_confidence", _choice("asr_confidence", ("high", "0.93"))),
        ("out_of_range:asr_confidence", _choice("asr_confidence", (1.7, -0.2, 93.5))),
    ),
    "nlu_confidence": (
        ("wrong_type:nlu_confidence", _choice("nlu_confidence", ("low", [0.4]))),
        ("out_of_range:nlu_confidence", _choice("nlu_confidence", (1.3, -1.0))),
    ),
    "slots": (("wrong_type:slots", _choice("slots", (["artist", "adele"], {"party_size_number": 4}, "city=paris"))),),
    "intent": (("wrong_type:intent", _set("intent", 7)),),
    "response_type": (("bad_value:response_type", _choice("response_type", ("video", "text", "SPEECH"))),),
    "status": (
        ("missing_field:status", _set("status", None)),
        ("bad_value:status", _choice("status", ("ok", "done", "failed"))),
        ("wrong_type:status", _set("status", 200)),
    ),
    "response_latency_ms": (
        ("wrong_type:response_latency_ms", _choice("response_latency_ms", (12.5, "120", 800.25))),
        ("out_of_range:response_latency_ms", _choice("response_latency_ms", (-5, -1200))),
    ),
    "response_duration_ms": (
        ("wrong_type:response_duration_ms", _choice("response_duration_ms", ("long", 1.5))),
        ("out_of_range:response_duration_ms", _set("response_duration_ms", -120)),
    ),
    "explicit_feedback": (("bad_value:explicit_feedback", _choice("explicit_feedback", ("meh", "thumbs_up", "NEGATIVE"))),),
}
_FIELDS: tuple[str, ...] = tuple(FIELD_MUTATIONS)


def _not_json(event: dict[str, Any], rng: np.random.Generator) -> str:
    """A line that is not JSON at all: a log line, an HTML error page, a Python repr.

    None starts with ``{``, so a validator can tell these from truncated JSON objects.
    """
    options = (
        f"{event.get('ts', '')} WARN uploader[{int(rng.integers(100, 9999))}]: retry 3/5 for batch {rng.bytes(4).hex()}",
        "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>",
        f"event_id={rng.bytes(8).hex()} user={event.get('user_id', '')} status=success",
        "Traceback (most recent call last): File \"uploader.py\", line 88, in flush",
        "DEBUG payload={'event_id': '" + rng.bytes(8).hex() + "', 'utterance': 'play music'}",
        "--boundary-" + rng.bytes(6).hex(),
    )
    return options[int(rng.integers(len(options)))]


def _truncated(event: dict[str, Any], rng: np.random.Generator) -> str:
    """A JSON object cut off mid-way (an upload interrupted by a lost connection)."""
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    cut = int(rng.integers(max(2, len(text) // 5), len(text) - 1))
    return text[:cut].rstrip() or text[:2]


def _not_object(event: dict[str, Any], rng: np.random.Generator) -> str:
    """Valid JSON that is not an object."""
    options = (
        "[1,2]",
        "null",
        '"play music"',
        "42",
        "true",
        "[" + json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "]",
    )
    return options[int(rng.integers(len(options)))]


def _is_json(raw: str) -> bool:
    """Whether ``raw`` parses as JSON (strictly: no NaN/Infinity)."""
    try:
        json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return False
    return True


def _reject_constant(name: str) -> float:
    """Refuse NaN/Infinity, which are not JSON."""
    raise ValueError(f"not JSON: {name}")


def _structural(kind: str, event: dict[str, Any], rng: np.random.Generator) -> MalformedLine:
    """A not-JSON, truncated or non-object line (always a single reason)."""
    if kind == "not_json":
        raw = _not_json(event, rng)
    elif kind == "truncated_json":
        raw = _truncated(event, rng)
    else:
        raw = _not_object(event, rng)
    consistent = (kind == "not_object") == _is_json(raw) and bool(raw.strip())
    consistent = consistent and (kind != "not_json" or not raw.startswith("{"))
    consistent = consistent and (kind != "truncated_json" or raw.startswith('{"'))
    if not consistent:
        raise RuntimeError(f"malformed generator produced an inconsistent {kind} line: {raw[:80]!r}")
    return MalformedLine(raw, (kind,))


def make_malformed(base: dict[str, Any], rng: np.random.Generator) -> MalformedLine:
    """One malformed line derived from ``base`` (a valid event dict, copied, fresh id)."""
    event = dict(base)
    event["event_id"] = rng.bytes(16).hex()
    draw = rng.random()
    if draw < 0.14:
        return _structural("not_json", event, rng)
    if draw < 0.28:
        return _structural("truncated_json", event, rng)
    if draw < 0.36:
        return _structural("not_object", event, rng)
    count = 1 if draw < 0.7 else 2 if draw < 0.9 else 3
    fields = rng.choice(len(_FIELDS), size=count, replace=False)
    reasons: list[str] = []
    for index in sorted(int(i) for i in fields):
        options = FIELD_MUTATIONS[_FIELDS[index]]
        reason, mutation = options[int(rng.integers(len(options)))]
        mutation(event, rng)
        if reason not in reasons:
            reasons.append(reason)
    raw = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return MalformedLine(raw, tuple(sorted(reasons)))
