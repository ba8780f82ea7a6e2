"""Ground-truth interaction flags computed from the generated timings.

``barge_in`` and ``terminated`` are not decided when a reaction is generated but recomputed here
from the final timestamps, so they are exactly true of the data whatever the generator intended:

* ``barge_in`` of E: the next event on the same device starts before E's response ends
  (``ts + response_latency_ms + response_duration_ms``); for media (duration null) when the next
  event on the device comes within ``MEDIA_BARGE_IN_WINDOW_S`` of playback start (``ts + latency``).
* ``terminated`` of E: the next event on the device is a stop/cancel command while E's response
  plays or within ``TERMINATION_WINDOW_S`` of its end; for media that keeps playing, within
  ``MEDIA_BARGE_IN_WINDOW_S`` of playback start (a stop after minutes of music is the user being
  done, not a failure).
"""

from __future__ import annotations

from collections.abc import Iterable

from feedback.simulate.constants import MEDIA_BARGE_IN_WINDOW_S, STOP_LIKE_INTENTS, TERMINATION_WINDOW_S
from feedback.simulate.sessions import Turn


def flags_for(current: Turn, following: Turn | None) -> tuple[bool, bool]:
    """(barge_in, terminated) of ``current`` given the next event on its device."""
    if following is None:
        return False, False
    start = current.ts_ms + current.response.latency_ms
    stop_like = following.is_system and following.intended_intent in STOP_LIKE_INTENTS
    if current.response.duration_ms is None:
        within_window = following.ts_ms < start + MEDIA_BARGE_IN_WINDOW_S * 1000
        return within_window, stop_like and within_window
    end = start + current.response.duration_ms
    barge_in = following.ts_ms < end
    terminated = stop_like and following.ts_ms < end + TERMINATION_WINDOW_S * 1000
    return barge_in, terminated


def assign_interaction_flags(turns: Iterable[Turn]) -> None:
    """Set ``barge_in`` and ``terminated`` on every turn, device by device in time order."""
    by_device: dict[str, list[Turn]] = {}
    for turn in turns:
        by_device.setdefault(turn.device.device_id, []).append(turn)
    for device_turns in by_device.values():
        device_turns.sort(key=lambda t: t.ts_ms)
        for index, turn in enumerate(device_turns):
            following = device_turns[index + 1] if index + 1 < len(device_turns) else None
            turn.barge_in, turn.terminated = flags_for(turn, following)
