"""Landing files written by hand for the stream tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def event(event_id: str, ts: str, user_id: str = "u1", utterance: str = "play some jazz", device_id: str = "d1") -> str:
    """One valid contract-v1 line."""
    return json.dumps(
        {
            "event_id": event_id,
            "schema_version": 1,
            "ts": ts,
            "user_id": user_id,
            "device_id": device_id,
            "utterance": utterance,
            "status": "success",
        }
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` as a landing file (gzip when the name ends in .gz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(body) if path.name.endswith(".gz") else body)
    return path
