"""Replay's pure parts: keys, event times and the ts it stamps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from feedback.ops.replay import event_time, file_lines, iso_utc, json_object, message_key, paced, replay

UTC = dt.timezone.utc


def test_a_line_is_keyed_by_its_user_and_malformed_lines_go_unkeyed() -> None:
    assert message_key(json_object(b'{"user_id": "hh-1", "ts": "x"}')) == b"hh-1"
    assert message_key(json_object(b'{"user_id": ""}')) is None
    assert message_key(json_object(b'{"user_id": 7}')) is None
    assert message_key(json_object(b"[1, 2]")) is None
    assert message_key(json_object(b"not json")) is None
    assert message_key(json_object(b"\xff\xfe")) is None


def test_event_time_reads_the_contract_ts_and_nothing_else() -> None:
    assert event_time({"ts": "2026-11-03T02:32:10.146Z"}) == dt.datetime(2026, 11, 3, 2, 32, 10, 146000, tzinfo=UTC)
    assert event_time({"ts": "2026-11-03T02:32:10"}) == dt.datetime(2026, 11, 3, 2, 32, 10, tzinfo=UTC)
    assert event_time({"ts": "yesterday"}) is None
    assert event_time({"ts": 1700000000}) is None
    assert event_time({}) is None
    assert event_time(None) is None


def test_the_stamped_ts_has_milliseconds_and_z() -> None:
    assert iso_utc(dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)) == "2026-01-02T03:04:05.678Z"
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert iso_utc(dt.datetime(2026, 1, 2, 5, 4, 5, 0, tzinfo=plus_two)) == "2026-01-02T03:04:05.000Z"


def test_paced_spreads_messages_evenly_and_rate_zero_sends_at_once() -> None:
    assert [paced(n, 4.0, 10.0) for n in range(3)] == [10.0, 10.25, 10.5]
    assert paced(1000, 0.0, 10.0) == 10.0


def test_file_lines_drop_line_ends_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a":1}\r\n\n{"b":2}\n')
    assert list(file_lines(path)) == [b'{"a":1}', b'{"b":2}']


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": -1.0}, "rate must be >= 0"), ({"rate": 5.0, "in_event_time": True}, "rate must be 0 with in_event_time")],
)
def test_replay_refuses_a_bad_rate_before_connecting(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replay(tmp_path, "127.0.0.1:1", "topic", **kwargs)  # type: ignore[arg-type]
