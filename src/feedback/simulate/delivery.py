"""How the fleet's uploads land: hourly files, late files, duplicate and malformed lines.

Files are written in arrival order and named ``events-<arrival seq>-<content hour>.jsonl`` so
that both lexical order and modification times follow arrival. A late file keeps its content
hour in the name but gets an arrival seq 2-72 files later; a duplicate is the identical line
again in the same file or one of the next few (on-time) files; malformed lines are extra lines.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from feedback.simulate.constants import MS_PER_HOUR, SCHEMA_VERSION
from feedback.simulate.malformed import MalformedLine, make_malformed
from feedback.simulate.sessions import Turn

_EPOCH = datetime(1970, 1, 1)
DUPLICATE_SPREAD_FILES = 3
MAX_LATE_HOURS = 72
WITHIN_FILE_JITTER_MS = 20_000.0


def format_ts(ts_ms: int, offset_min: int | None) -> str:
    """ISO-8601 with milliseconds and ``Z`` (offset None) or ``+HH:MM``; exact integer maths."""
    shift = 0 if offset_min is None else offset_min * 60_000
    local = _EPOCH + timedelta(milliseconds=ts_ms + shift)
    if offset_min is None:
        suffix = "Z"
    else:
        sign = "+" if offset_min >= 0 else "-"
        hours, minutes = divmod(abs(offset_min), 60)
        suffix = f"{sign}{hours:02d}:{minutes:02d}"
    return f"{local:%Y-%m-%dT%H:%M:%S}.{ts_ms % 1000:03d}{suffix}"


def event_dict(turn: Turn) -> dict[str, Any]:
    """The contract-v1 event of ``turn`` (optional fields omitted when absent)."""
    event: dict[str, Any] = {
        "event_id": turn.event_id,
        "schema_version": SCHEMA_VERSION,
        "ts": turn.ts,
        "user_id": turn.household.user_id,
        "device_id": turn.device.device_id,
    }
    if not turn.omit_device_type:
        event["device_type"] = turn.device.device_type
    if not turn.omit_locale:
        event["locale"] = turn.household.locale
    event["utterance"] = turn.utterance
    if turn.asr_confidence is not None:
        event["asr_confidence"] = turn.asr_confidence
    if turn.nlu_confidence is not None:
        event["nlu_confidence"] = turn.nlu_confidence
    if turn.domain is not None:
        event["domain"] = turn.domain
    if turn.intent is not None:
        event["intent"] = turn.intent
    if turn.slots:
        event["slots"] = dict(turn.slots)
    event["response_type"] = turn.response.response_type
    if turn.response.text:
        event["response_text"] = turn.response.text
    event["status"] = turn.status
    event["response_latency_ms"] = turn.response.latency_ms
    event["response_duration_ms"] = turn.response.duration_ms
    if turn.explicit_feedback is not None:
        event["explicit_feedback"] = turn.explicit_feedback
    if turn.device.app_version is not None:
        event["app_version"] = turn.device.app_version
    return event


def truth_dict(turn: Turn) -> dict[str, Any]:
    """The ground-truth record of ``turn`` (keys in the documented order)."""
    return {
        "event_id": turn.event_id,
        "user_id": turn.household.user_id,
        "device_id": turn.device.device_id,
        "ts": turn.ts,
        "session_key": turn.session_key,
        "intended_intent": turn.intended_intent,
        "intended_domain": turn.intended_domain,
        "intended_slots": dict(turn.intended_slots),
        "intended_text": turn.intended_text,
        "utterance": turn.utterance,
        "is_system_command": turn.is_system,
        "defective": bool(turn.causes),
        "defect_causes": list(turn.causes),
        "failure_point": turn.failure_point,
        "barge_in": turn.barge_in,
        "terminated": turn.terminated,
        "rephrase_of": turn.rephrase_of,
        "rephrase_style": turn.rephrase_style,
        "abandoned": turn.abandoned,
        "explicit_feedback": turn.explicit_feedback,
        "late": turn.late,
        "delivery_copies": turn.copies,
        "rewrite": turn.rewrite.text if turn.rewrite is not None else None,
        "rewrite_layer": turn.rewrite.layer if turn.rewrite is not None else None,
        "defective_as_heard": turn.rewrite.defective_as_heard if turn.rewrite is not None else None,
    }


def dumps(obj: Any) -> str:
    """Compact UTF-8 JSON, the one serialisation used for every line."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass
class HourFile:
    """One hourly upload file being assembled: (sort key, tie-break, line, malformed, duplicate)."""

    hour: int
    seq: int = 0
    late: bool = False
    lines: list[tuple[float, int, str, MalformedLine | None, bool]] = field(default_factory=list)


@dataclass(frozen=True)
class DeliveryStats:
    """Counts of what was written."""

    files: int
    lines: int
    duplicate_lines: int
    malformed_lines: int
    late_files: int


def _arrival_order(hours: int, late_file_rate: float, rng: np.random.Generator) -> tuple[list[int], list[bool]]:
    """The content hour of each arrival seq, and which hours arrive late.

    Why "at least one": a run with late files enabled must show the phenomenon even when small.
    """
    eligible = [h for h in range(hours) if h <= hours - 3]
    late = [False] * hours
    position = [float(h) for h in range(hours)]
    if late_file_rate > 0 and eligible:
        count = min(len(eligible), max(1, int(round(late_file_rate * hours))))
        chosen = sorted(eligible[int(i)] for i in rng.choice(len(eligible), size=count, replace=False))
        for hour in chosen:
            late[hour] = True
        for hour in chosen:
            # Land right after an on-time file 2..72 hours later, so a later hour always precedes.
            anchors = [k for k in range(hour + 2, min(hour + MAX_LATE_HOURS, hours - 1) + 1) if not late[k]]
            if not anchors:
                late[hour] = False
                continue
            position[hour] = anchors[int(rng.integers(len(anchors)))] + 0.5
    order = sorted(range(hours), key=lambda h: (position[h], h))
    return order, late


def plan_files(
    turns: list[Turn],
    start_ms: int,
    hours: int,
    rates: tuple[float, float, float],
    rng: np.random.Generator,
) -> list[HourFile]:
    """Assign every delivery (events, duplicates, malformed lines) to its file, in arrival order.

    Args:
        turns: unique valid events, any order (sorted here by time then id).
        start_ms: start of the first content hour (UTC ms).
        hours: number of hourly files.
        rates: (duplicate_rate, late_file_rate, malformed_rate).
        rng: the delivery random stream.
    """
    duplicate_rate, late_file_rate, malformed_rate = rates
    order, late = _arrival_order(hours, late_file_rate, rng)
    files = [HourFile(hour=h, late=late[h]) for h in range(hours)]
    by_seq: list[HourFile] = []
    for seq, hour in enumerate(order):
        files[hour].seq = seq
        by_seq.append(files[hour])
    ordered = sorted(turns, key=lambda t: (t.ts_ms, t.event_id))
    counter = 0
    for turn in ordered:
        home = files[(turn.ts_ms - start_ms) // MS_PER_HOUR]
        turn.late = home.late
        line = dumps(event_dict(turn))
        key = turn.ts_ms + float(rng.normal(0.0, WITHIN_FILE_JITTER_MS))
        home.lines.append((key, counter, line, None, False))
        counter += 1
        if rng.random() < duplicate_rate:
            later = by_seq[home.seq + 1 : home.seq + 1 + DUPLICATE_SPREAD_FILES]
            candidates = [home] + [f for f in later if not f.late]
            target = candidates[int(rng.integers(len(candidates)))]
            dup_key = key + float(rng.uniform(1.0, 600_000.0)) if target is home else _random_key(target, start_ms, rng)
            target.lines.append((dup_key, counter, line, None, True))
            counter += 1
            turn.copies += 1
    if ordered and malformed_rate > 0:
        for _ in range(int(rng.binomial(len(ordered), malformed_rate))):
            index = int(rng.integers(len(ordered)))
            home = files[(ordered[index].ts_ms - start_ms) // MS_PER_HOUR]
            bad = make_malformed(event_dict(ordered[index]), rng)
            home.lines.append((_random_key(home, start_ms, rng), counter, bad.raw, bad, False))
            counter += 1
    return by_seq


def _random_key(target: HourFile, start_ms: int, rng: np.random.Generator) -> float:
    """A sort key somewhere inside ``target``'s content hour."""
    return float(start_ms + target.hour * MS_PER_HOUR + rng.uniform(0.0, MS_PER_HOUR))


def file_name(seq: int, hour_start: datetime) -> str:
    """``events-<seq, 6 digits>-<YYYYmmddHH>.jsonl``: lexical order = arrival order."""
    return f"events-{seq:06d}-{hour_start:%Y%m%d%H}.jsonl"


def write_files(files: list[HourFile], start: datetime, out_dir: Path) -> tuple[DeliveryStats, list[dict[str, Any]]]:
    """Write the event files in arrival order; return stats and the malformed-line records.

    Why the utime: some file systems stamp whole seconds; nudging each file 1 ms past the
    previous one keeps modification times strictly in arrival order (Spark reads by mtime).
    """
    events_dir = out_dir / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    malformed_records: list[dict[str, Any]] = []
    total_lines = 0
    previous_mtime = -1
    duplicates = 0
    for hour_file in files:
        name = file_name(hour_file.seq, start + timedelta(hours=hour_file.hour))
        hour_file.lines.sort(key=lambda item: (item[0], item[1]))
        texts: list[str] = []
        for number, (_, _, line, bad, duplicate) in enumerate(hour_file.lines, start=1):
            texts.append(line)
            duplicates += int(duplicate)
            if bad is not None:
                malformed_records.append(
                    {"file": name, "line": number, "expected_reasons": list(bad.reasons), "raw": bad.raw}
                )
        path = events_dir / name
        with path.open("w", encoding="utf-8", newline="\n") as handle:
            handle.write("".join(text + "\n" for text in texts))
        mtime = path.stat().st_mtime_ns
        if mtime <= previous_mtime:
            mtime = previous_mtime + 1_000_000
            os.utime(path, ns=(mtime, mtime))
        previous_mtime = mtime
        total_lines += len(texts)
    stats = DeliveryStats(
        files=len(files),
        lines=total_lines,
        duplicate_lines=duplicates,
        malformed_lines=len(malformed_records),
        late_files=sum(1 for f in files if f.late),
    )
    return stats, malformed_records
