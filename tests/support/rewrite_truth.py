"""Ground-truth records of hand-written traffic for rewrite evaluations: what each request meant."""

from __future__ import annotations


def truth_record(
    event_id: str, utterance: str, intent: str, slots: dict[str, str], defective: bool, system: bool = False
) -> dict[str, object]:
    """One line of a simulator-style ``ground_truth.jsonl``."""
    return {
        "event_id": event_id,
        "user_id": "u",
        "ts": "2026-11-02T10:00:00.000Z",
        "utterance": utterance,
        "intended_intent": intent,
        "intended_slots": slots,
        "is_system_command": system,
        "defective": defective,
        "rephrase_of": None,
    }


# What a request meant: (intent, slots).
BEATLES = ("PlayMusic", {"artist": "the beatles"})
BEETLES = ("PlayMusic", {"artist": "the beetles"})
LONDON = ("GetWeather", {"city": "london"})
PARIS = ("GetWeather", {"city": "paris"})
