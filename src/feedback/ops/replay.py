"""Publish landing files to a Kafka topic at a steady rate: for demos, tests and the soak benchmark.

The files are read in name order, which for the simulator's output is arrival order, and each
line becomes one message, so late files become late messages and duplicate lines duplicate
messages. A message is keyed by its ``user_id`` when the line has one, so one user's events
stay in one partition, in order; a line that is not JSON goes unkeyed.

In event time (``in_event_time=True``) a message is sent when its ``ts`` falls due, counted from
the first event's ``ts``, and its ``ts`` is shifted by the same amount to the wall clock: the
traffic arrives as if it were happening now, with its gaps, bursts and late events kept. This
is what latency is measured against (event ``ts`` to the row in silver).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer
from tqdm import tqdm

MAX_MESSAGE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class ReplayReport:
    """What a replay published."""

    topic: str
    messages: int
    files: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    def render(self) -> str:
        return f"replayed {self.messages} messages from {self.files} files to {self.topic} in {self.seconds:.1f}s ({self.rate:.0f}/s)"


def landing_files(events_dir: Path) -> list[Path]:
    """The landing files of ``events_dir`` (``*.jsonl``, ``*.jsonl.gz``, any depth) in name order."""
    if not events_dir.is_dir():
        raise ValueError(f"events_dir: {events_dir} is not a directory")
    return sorted(
        (p for p in events_dir.rglob("*") if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz"))),
        key=lambda p: p.relative_to(events_dir).as_posix(),
    )


def file_lines(path: Path) -> Iterator[bytes]:
    """The lines of one landing file as bytes, without their line ends (gzip decompressed)."""
    data = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    for line in data.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            yield line


def json_object(line: bytes) -> dict[str, object] | None:
    """The line as a JSON object; None for anything else (malformed lines are sent as they are)."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def message_key(record: dict[str, object] | None) -> bytes | None:
    """The record's ``user_id`` as the message key; None without a non-empty string user_id."""
    user = record.get("user_id") if record is not None else None
    return user.encode("utf-8") if isinstance(user, str) and user else None


def event_time(record: dict[str, object] | None) -> dt.datetime | None:
    """The record's ``ts`` as an aware datetime; None when it has none that parses."""
    ts = record.get("ts") if record is not None else None
    if not isinstance(ts, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.timezone.utc)


def iso_utc(moment: dt.datetime) -> str:
    """``moment`` as the contract writes a ``ts``: ISO 8601 UTC with milliseconds and ``Z``.

    >>> iso_utc(dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc))
    '2026-01-02T03:04:05.678Z'
    """
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def paced(count: int, rate: float, started: float) -> float:
    """How long to wait before message ``count`` (0-based) so that ``rate`` messages/s are sent from ``started``.

    >>> paced(10, 5.0, 100.0) - 100.0  # the 11th message is due 2 s after the start
    2.0
    """
    if rate <= 0:
        return started
    return started + count / rate


def replay(
    events_dir: Path, bootstrap_servers: str, topic: str, rate: float = 0.0, progress: bool = True, in_event_time: bool = False
) -> ReplayReport:
    """Publish every line of ``events_dir`` to ``topic``, ``rate`` messages per second (0: as fast as possible).

    ``in_event_time``: each event is sent when its ``ts`` falls due and stamped with that moment
    (see the module's docstring); ``rate`` must then be 0. Lines without a ``ts`` go out at once.
    Waits until the broker acknowledged every message (``acks=all``) before returning.
    """
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}")
    if in_event_time and rate:
        raise ValueError(f"rate must be 0 with in_event_time (the events' ts set the pace), got {rate}")
    if not topic:
        raise ValueError("topic must be non-empty")
    files = landing_files(events_dir)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, max_request_size=MAX_MESSAGE_BYTES, retries=5
    )
    sent = 0
    started = time.monotonic()
    wall_started = dt.datetime.now(dt.timezone.utc)
    first_event: dt.datetime | None = None
    try:
        with tqdm(desc=f"replay to {topic}", unit="msg", disable=not progress, mininterval=1.0) as bar:
            for path in files:
                for line in file_lines(path):
                    record = json_object(line)
                    due = paced(sent, rate, started)
                    moment = event_time(record) if in_event_time else None
                    if moment is not None and record is not None:
                        first_event = first_event or moment
                        offset = moment - first_event
                        due = started + offset.total_seconds()
                        record["ts"] = iso_utc(wall_started + offset)
                        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    producer.send(topic, value=line, key=message_key(record))
                    sent += 1
                    bar.update(1)
        producer.flush()
    finally:
        producer.close()
    return ReplayReport(topic, sent, len(files), time.monotonic() - started)
