"""Publish landing files to a Kafka topic at a steady rate: for demos, tests and the soak benchmark.

The files are read in name order, which for the simulator's output is arrival order, and each
line becomes one message, so late files become late messages and duplicate lines duplicate
messages. A message is keyed by its ``user_id`` when the line has one, so one user's events
stay in one partition, in order; a line that is not JSON goes unkeyed.
"""

from __future__ import annotations

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


def message_key(line: bytes) -> bytes | None:
    """The line's ``user_id`` as the message key; None when the line is no JSON object with a string user_id."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    user = record.get("user_id") if isinstance(record, dict) else None
    return user.encode("utf-8") if isinstance(user, str) and user else None


def paced(count: int, rate: float, started: float) -> float:
    """How long to wait before message ``count`` (0-based) so that ``rate`` messages/s are sent from ``started``.

    >>> paced(10, 5.0, 100.0) - 100.0  # the 11th message is due 2 s after the start
    2.0
    """
    if rate <= 0:
        return started
    return started + count / rate


def replay(events_dir: Path, bootstrap_servers: str, topic: str, rate: float = 0.0, progress: bool = True) -> ReplayReport:
    """Publish every line of ``events_dir`` to ``topic``, ``rate`` messages per second (0: as fast as possible).

    Waits until the broker acknowledged every message (``acks=all``) before returning.
    """
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}")
    if not topic:
        raise ValueError("topic must be non-empty")
    files = landing_files(events_dir)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", linger_ms=5, max_request_size=MAX_MESSAGE_BYTES, retries=5
    )
    sent = 0
    started = time.monotonic()
    try:
        with tqdm(desc=f"replay to {topic}", unit="msg", disable=not progress) as bar:
            for path in files:
                for line in file_lines(path):
                    due = paced(sent, rate, started)
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    producer.send(topic, value=line, key=message_key(line))
                    sent += 1
                    bar.update(1)
        producer.flush()
    finally:
        producer.close()
    return ReplayReport(topic, sent, len(files), time.monotonic() - started)
