"""Tests of the traffic simulator: exact facts of the files it writes (pure Python, no Spark)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from feedback.config import ConfigError, SimulationConfig
from feedback.simulate import (
    DEFECT_CAUSES,
    MEDIA_BARGE_IN_WINDOW_S,
    SESSION_GAP_S,
    STOP_LIKE_INTENTS,
    TERMINATION_WINDOW_S,
    SimulationSummary,
    run,
)
from feedback.simulate.corpus import load_corpus
from feedback.simulate.world import HELDOUT_MIN_VALUES, VocabularySplit, build_world

from support.paths import REPO

SMALL = SimulationConfig(
    users=30,
    days=2,
    seed=11,
    duplicate_rate=0.05,
    late_file_rate=0.05,
    malformed_rate=0.05,
)
FILE_RE = re.compile(r"^events-(\d{6})-(\d{10})\.jsonl$")
REQUIRED = ("event_id", "schema_version", "ts", "user_id", "device_id", "utterance", "status")
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$")
OPTIONAL_STRINGS = ("device_type", "locale", "domain", "intent", "response_text")
SYSTEM_INTENTS = ("Stop", "Cancel", "Pause", "Next")


# ----- a strict, independent contract-v1 checker -------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_ts(value: str) -> datetime | None:
    """An aware datetime, or None when unparsable or without an offset."""
    if not ISO_WITH_OFFSET.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def contract_reasons(line: str) -> list[str]:
    """The sorted reason codes contract v1 implies for ``line`` ([] = a valid event)."""
    try:
        obj = json.loads(line, parse_constant=_reject_constant)
    except ValueError:
        return ["truncated_json"] if line.startswith('{"') else ["not_json"]
    if not isinstance(obj, dict):
        return ["not_object"]
    reasons: set[str] = set()
    for name in REQUIRED:
        if obj.get(name) is None:
            reasons.add(f"missing_field:{name}")
    version = obj.get("schema_version")
    if version is not None:
        if not _is_int(version):
            reasons.add("wrong_type:schema_version")
        elif version != 1:
            reasons.add("unknown_schema_version")
    for name in ("event_id", "user_id", "device_id"):
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            reasons.add(f"wrong_type:{name}")
        elif value == "":
            reasons.add(f"empty_field:{name}")
        elif len(value) > 128:
            reasons.add(f"too_long:{name}")
    ts = obj.get("ts")
    if ts is not None:
        if not isinstance(ts, str):
            reasons.add("wrong_type:ts")
        elif parse_ts(ts) is None:
            reasons.add("bad_timestamp")
    utterance = obj.get("utterance")
    if utterance is not None:
        if not isinstance(utterance, str):
            reasons.add("wrong_type:utterance")
        elif not utterance.strip():
            reasons.add("blank_utterance")
        elif len(utterance) > 1000:
            reasons.add("too_long:utterance")
    for name in ("asr_confidence", "nlu_confidence"):
        value = obj.get(name)
        if value is None:
            continue
        if not _is_number(value):
            reasons.add(f"wrong_type:{name}")
        elif not 0.0 <= value <= 1.0:
            reasons.add(f"out_of_range:{name}")
    for name in OPTIONAL_STRINGS:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            reasons.add(f"wrong_type:{name}")
    slots = obj.get("slots")
    if slots is not None and (
        not isinstance(slots, dict) or not all(isinstance(v, str) for v in slots.values())
    ):
        reasons.add("wrong_type:slots")
    for name, allowed in (
        ("response_type", ("speech", "media", "action", "none")),
        ("status", ("success", "unhandled", "error")),
        ("explicit_feedback", ("positive", "negative")),
    ):
        value = obj.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            reasons.add(f"wrong_type:{name}")
        elif value not in allowed:
            reasons.add(f"bad_value:{name}")
    for name in ("response_latency_ms", "response_duration_ms"):
        value = obj.get(name)
        if value is None:
            continue
        if not _is_int(value):
            reasons.add(f"wrong_type:{name}")
        elif value < 0:
            reasons.add(f"out_of_range:{name}")
    return sorted(reasons)


# ----- loading a run -------------------------------------------------------------------------------


@dataclass
class Output:
    """Everything one run wrote, parsed."""

    summary: SimulationSummary
    files: list[str]
    lines: dict[str, list[str]]
    events: dict[str, dict[str, Any]]
    deliveries: Counter[str]
    first_file: dict[str, str]
    truth: list[dict[str, Any]]
    malformed: list[dict[str, Any]]
    manifest: dict[str, Any]


def load(out: Path, summary: SimulationSummary) -> Output:
    """Parse the files of a run (valid lines by the independent checker above)."""
    files = sorted(p.name for p in (out / "events").iterdir())
    malformed = [json.loads(x) for x in (out / "malformed.jsonl").read_text("utf-8").splitlines()]
    listed = {(m["file"], m["line"]) for m in malformed}
    lines: dict[str, list[str]] = {}
    events: dict[str, dict[str, Any]] = {}
    deliveries: Counter[str] = Counter()
    first_file: dict[str, str] = {}
    for name in files:
        text = (out / "events" / name).read_text("utf-8")
        assert text == "" or text.endswith("\n")
        lines[name] = text.split("\n")[:-1] if text else []
        for number, line in enumerate(lines[name], start=1):
            if (name, number) in listed:
                continue
            assert contract_reasons(line) == [], (name, number, line)
            event = json.loads(line)
            if event["event_id"] in events:
                assert events[event["event_id"]] == event
            events[event["event_id"]] = event
            first_file.setdefault(event["event_id"], name)
            deliveries[event["event_id"]] += 1
    truth = [json.loads(x) for x in (out / "ground_truth.jsonl").read_text("utf-8").splitlines()]
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    return Output(summary, files, lines, events, deliveries, first_file, truth, malformed, manifest)


@pytest.fixture(scope="module", params=["snips", "sgd"])
def small(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Output:
    """The small simulation on each corpus: every property below holds whatever the wording."""
    out = tmp_path_factory.mktemp(f"sim-{request.param}")
    # SGD has fewer media requests: more households give every case the checks below need
    users = SMALL.users if request.param == "snips" else 3 * SMALL.users
    return load(out, run(replace(SMALL, corpus=request.param, users=users), out, progress=False))


def _ms(ts: str) -> int:
    parsed = parse_ts(ts)
    assert parsed is not None
    return int(round(parsed.timestamp() * 1000))


def _by_device(output: Output) -> dict[str, list[dict[str, Any]]]:
    """Unique events per device, in time order."""
    devices: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in output.events.values():
        devices[event["device_id"]].append(event)
    for events in devices.values():
        events.sort(key=lambda e: _ms(e["ts"]))
    return devices


# ----- tests ---------------------------------------------------------------------------------------


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    config = SimulationConfig(users=20, days=2, seed=3)
    run(config, tmp_path / "a", progress=False)
    run(config, tmp_path / "b", progress=False)
    run(SimulationConfig(users=20, days=2, seed=4), tmp_path / "c", progress=False)
    first, second, other = (_snapshot(tmp_path / d) for d in ("a", "b", "c"))
    assert first == second
    assert len(first) > 40
    assert other["ground_truth.jsonl"] != first["ground_truth.jsonl"]
    assert other != first


def test_every_line_is_valid_or_listed_as_malformed(small: Output) -> None:
    assert small.malformed, "the small config injects malformed lines"
    for record in small.malformed:
        raw = small.lines[record["file"]][record["line"] - 1]
        assert raw == record["raw"]
        assert record["expected_reasons"] == sorted(set(record["expected_reasons"]))
        assert contract_reasons(raw) == record["expected_reasons"], raw
        structural = {"not_json", "truncated_json", "not_object"}
        if structural & set(record["expected_reasons"]):
            assert len(record["expected_reasons"]) == 1
    kinds = Counter(len(r["expected_reasons"]) for r in small.malformed)
    assert kinds[1] > 0 and sum(v for k, v in kinds.items() if k > 1) > 0


def test_ground_truth_ids_unique_and_delivered_delivery_copies_times(small: Output) -> None:
    ids = [t["event_id"] for t in small.truth]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(small.events)
    for record in small.truth:
        assert small.deliveries[record["event_id"]] == record["delivery_copies"] >= 1
        event = small.events[record["event_id"]]
        assert record["ts"] == event["ts"]
        assert record["utterance"] == event["utterance"]
        assert record["user_id"] == event["user_id"] and record["device_id"] == event["device_id"]
    assert any(t["delivery_copies"] > 1 for t in small.truth)


def test_manifest_equals_recount(small: Output) -> None:
    manifest = small.manifest
    total_lines = sum(len(v) for v in small.lines.values())
    valid_lines = sum(small.deliveries.values())
    late = [f for i, f in enumerate(small.files) if _late(small.files, i)]
    recount = {
        "seed": SMALL.seed,
        "users": small.summary.users,
        "days": SMALL.days,
        "start_date": SMALL.start_date,
        "files": len(small.files),
        "lines": total_lines,
        "events": len(small.truth),
        "duplicate_lines": valid_lines - len(small.truth),
        "malformed_lines": len(small.malformed),
        "late_files": len(late),
        "defective": sum(t["defective"] for t in small.truth),
        "barge_ins": sum(t["barge_in"] for t in small.truth),
        "terminated": sum(t["terminated"] for t in small.truth),
        "rephrases": sum(t["rephrase_of"] is not None for t in small.truth),
        "abandoned": sum(t["abandoned"] for t in small.truth),
        "system_commands": sum(t["is_system_command"] for t in small.truth),
        "sessions": len({t["session_key"] for t in small.truth}),
        "defect_causes": {c: sum(c in t["defect_causes"] for t in small.truth) for c in DEFECT_CAUSES},
        "vocabulary": "all",
        "corpus": small.summary.corpus,
        "profile": "a",
        "rewriter": None,
        "rewritten": sum(t["rewrite"] is not None for t in small.truth),
    }
    assert manifest == recount
    assert total_lines == len(small.truth) + recount["duplicate_lines"] + len(small.malformed)
    assert small.summary.manifest() == manifest
    assert small.summary.out_dir.is_dir() and hash(small.summary)
    assert len(small.files) == SMALL.days * 24


def _hour(name: str) -> str:
    match = FILE_RE.match(name)
    assert match is not None, name
    return match.group(2)


def _late(files: list[str], index: int) -> bool:
    """A file whose content hour is earlier than some file that arrived before it."""
    return any(_hour(files[j]) > _hour(files[index]) for j in range(index))


def test_files_named_in_arrival_order_with_their_content_hour(small: Output, tmp_path: Path) -> None:
    seqs = [int(FILE_RE.match(f).group(1)) for f in small.files]  # type: ignore[union-attr]
    assert seqs == list(range(len(small.files)))
    for name, lines in small.lines.items():
        hour = datetime.strptime(_hour(name), "%Y%m%d%H").replace(tzinfo=timezone.utc)
        for event_id, first in small.first_file.items():
            if first == name:
                ts = parse_ts(small.events[event_id]["ts"])
                assert ts is not None and hour <= ts < hour + timedelta(hours=1)
    out = small.summary.out_dir / "events"
    mtimes = [(out / f).stat().st_mtime_ns for f in small.files]
    assert mtimes == sorted(mtimes) and len(set(mtimes)) == len(mtimes)


def test_late_files_arrive_after_later_hours(small: Output) -> None:
    late = [i for i in range(len(small.files)) if _late(small.files, i)]
    assert late and len(late) == small.manifest["late_files"]
    late_names = {small.files[i] for i in late}
    for record in small.truth:
        assert record["late"] == (small.first_file[record["event_id"]] in late_names)
    assert any(r["late"] for r in small.truth)


def test_barge_in_and_terminated_follow_the_definitions(small: Output) -> None:
    truth = {t["event_id"]: t for t in small.truth}
    checked: Counter[tuple[bool, bool, bool]] = Counter()
    for events in _by_device(small).values():
        for current, following in zip(events, events[1:] + [None]):
            start = _ms(current["ts"]) + current["response_latency_ms"]
            duration = current["response_duration_ms"]
            barge_in = terminated = False
            if following is not None:
                nxt = _ms(following["ts"])
                follow_truth = truth[following["event_id"]]
                stop_like = follow_truth["is_system_command"] and follow_truth["intended_intent"] in STOP_LIKE_INTENTS
                if duration is None:
                    barge_in = nxt < start + MEDIA_BARGE_IN_WINDOW_S * 1000
                    terminated = stop_like and barge_in
                else:
                    barge_in = nxt < start + duration
                    terminated = stop_like and nxt < start + duration + TERMINATION_WINDOW_S * 1000
            record = truth[current["event_id"]]
            assert record["barge_in"] == barge_in, current
            assert record["terminated"] == terminated, current
            checked[(barge_in, terminated, duration is None)] += 1
    assert checked[(True, False, False)] and checked[(True, False, True)] and checked[(True, True, True)]
    noise = [t for t in small.truth if t["barge_in"] and not t["defective"] and not t["is_system_command"]]
    assert noise, "some correct responses are interrupted too (detector noise)"


def test_rephrases_link_to_an_earlier_request_of_the_same_user_and_device(small: Output) -> None:
    truth = {t["event_id"]: t for t in small.truth}
    rephrases = [t for t in small.truth if t["rephrase_of"] is not None]
    assert rephrases
    for record in rephrases:
        earlier = truth[record["rephrase_of"]]
        assert not earlier["is_system_command"] and not record["is_system_command"]
        assert earlier["user_id"] == record["user_id"] and earlier["device_id"] == record["device_id"]
        assert _ms(earlier["ts"]) < _ms(record["ts"])
        assert earlier["session_key"] == record["session_key"]
        assert earlier["intended_intent"] == record["intended_intent"]
        assert earlier["intended_slots"] == record["intended_slots"]
    assert any(truth[r["rephrase_of"]]["defective"] and not r["defective"] for r in rephrases)
    stop_between = 0
    for events in _by_device(small).values():
        for a, b, c in zip(events, events[1:], events[2:]):
            if truth[c["event_id"]]["rephrase_of"] == a["event_id"] and truth[b["event_id"]]["is_system_command"]:
                stop_between += 1
    assert stop_between > 0


def test_ground_truth_is_internally_consistent(small: Output) -> None:
    for record in small.truth:
        assert record["defective"] == bool(record["defect_causes"])
        assert set(record["defect_causes"]) <= set(DEFECT_CAUSES)
        assert record["defect_causes"] == [c for c in DEFECT_CAUSES if c in record["defect_causes"]]
        assert (record["failure_point"] == "none") == (not record["defective"])
        asr_cause = any(c.startswith("asr_") for c in record["defect_causes"])
        assert (record["failure_point"] == "asr") == asr_cause
        if record["is_system_command"]:
            assert record["intended_domain"] == "system" and record["intended_intent"] in SYSTEM_INTENTS
            assert not record["defective"] and record["rephrase_of"] is None
        if record["abandoned"]:
            assert record["defective"]
        if record["explicit_feedback"] is not None:
            assert small.events[record["event_id"]]["explicit_feedback"] == record["explicit_feedback"]
        if "asr_systematic" in record["defect_causes"]:
            assert record["utterance"] != record["intended_text"]


def test_hard_negatives_quick_follow_ups_are_not_rephrases(small: Output) -> None:
    truth = {t["event_id"]: t for t in small.truth}
    quick = 0
    for events in _by_device(small).values():
        for current, following in zip(events, events[1:]):
            a, b = truth[current["event_id"]], truth[following["event_id"]]
            if a["is_system_command"] or b["is_system_command"] or a["defective"] or current["response_duration_ms"] is None:
                continue
            end = _ms(current["ts"]) + current["response_latency_ms"] + current["response_duration_ms"]
            if 0 <= _ms(following["ts"]) - end <= 10_000 and b["rephrase_of"] is None:
                quick += 1
    assert quick > 0


def test_sessions_of_a_device_are_separated_by_silence(small: Output) -> None:
    truth = {t["event_id"]: t for t in small.truth}
    for events in _by_device(small).values():
        for current, following in zip(events, events[1:]):
            if truth[current["event_id"]]["session_key"] != truth[following["event_id"]]["session_key"]:
                assert _ms(following["ts"]) - _ms(current["ts"]) >= SESSION_GAP_S * 1000


def test_systematic_confusions_recur_across_users(small: Output) -> None:
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in small.truth:
        if record["defect_causes"] == ["asr_systematic"]:
            users[(record["intended_text"], record["utterance"])].add(record["user_id"])
    assert max(len(v) for v in users.values()) >= 2


def test_timestamps_mix_utc_and_offsets_and_optional_fields_vary(small: Output) -> None:
    stamps = [e["ts"] for e in small.events.values()]
    assert any(s.endswith("Z") for s in stamps)
    assert any(re.search(r"[+-]\d\d:\d\d$", s) for s in stamps)
    assert all(re.search(r"\.\d{3}(Z|[+-]\d\d:\d\d)$", s) for s in stamps)
    assert any("locale" not in e for e in small.events.values())
    always = ("response_type", "response_latency_ms", "response_duration_ms")
    assert all(all(k in e for k in always) for e in small.events.values())
    assert any(e["response_duration_ms"] is None for e in small.events.values())
    assert {e["status"] for e in small.events.values()} == {"success", "unhandled", "error"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("users", 0),
        ("days", 0),
        ("duplicate_rate", 1.5),
        ("abandon_rate", -0.1),
        ("noise_barge_in_rate", 2.0),
        ("max_attempts", 0),
        ("start_date", "2026-13-01"),
    ],
)
def test_config_validation_names_the_key(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"simulation.{field}"):
        SimulationConfig(**{field: value})  # type: ignore[arg-type]


def test_run_rejects_wrong_argument_types(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="config"):
        run({"users": 2}, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="out_dir"):
        run(SimulationConfig(users=1, days=1), 42)  # type: ignore[arg-type]


def test_vendored_snips_resources_are_compact_and_attributed() -> None:
    data = load_corpus("snips").data
    assert sorted(data["intents"]) == [
        "AddToPlaylist",
        "BookRestaurant",
        "GetWeather",
        "PlayMusic",
        "RateBook",
        "SearchCreativeWork",
        "SearchScreeningEvent",
    ]
    for body in data["intents"].values():
        assert 0 < len(body["templates"]) <= 300
        assert all(0 < len(values) <= 300 for values in body["slots"].values())
        for template, _ in body["templates"]:
            assert set(re.findall(r"\{([A-Za-z_]+)\}", template)) <= set(body["slots"])
    folder = REPO / "src" / "feedback" / "resources" / "snips"
    assert sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) < 1_500_000
    notice = (folder / "NOTICE.md").read_text("utf-8")
    assert "CC0 1.0" in notice and "arXiv:1805.10190" in notice and "sonos/nlu-benchmark" in notice


def test_vocabulary_split_shares_no_intent_and_no_open_slot_value() -> None:
    """A held-out simulation uses only intents and (open-class) slot values a train simulation never sees."""
    split = {"heldout_intents": ("RateBook", "SearchScreeningEvent"), "heldout_value_share": 0.3}
    train = build_world(3, VocabularySplit("train", **split))
    heldout = build_world(4, VocabularySplit("heldout", **split))
    assert {r.intent for r in train.catalog} == {
        "AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "SearchCreativeWork"
    }
    assert {r.intent for r in heldout.catalog} == {"RateBook", "SearchScreeningEvent"}
    for (intent, slot), values in train.vocab.items():
        full = build_world(3).vocab[(intent, slot)]
        held = heldout.vocab[(intent, slot)]
        if len(full) >= HELDOUT_MIN_VALUES:
            assert set(values).isdisjoint(held), (intent, slot)
            assert len(values) + len(held) == len(full), (intent, slot)
        else:
            assert values == held == full, (intent, slot)
    with pytest.raises(ValueError, match="heldout_intents has intents unknown to snips"):
        build_world(3, VocabularySplit("train", heldout_intents=("NoSuchIntent",)))


@pytest.mark.parametrize(
    ("causes", "point"),
    [
        ([], "none"),
        (["asr_systematic"], "asr"),
        (["asr_random", "unhandled"], "asr"),  # the misheard value made the request unhandled: ASR failed first
        (["asr_systematic", "error"], "asr"),
        (["nlu_misroute"], "nlu"),
        (["nlu_misroute", "error"], "nlu"),
        (["unhandled"], "nlu"),  # heard right, not understood
        (["unsupported"], "result"),
        (["error"], "result"),
    ],
)
def test_the_failure_point_is_the_first_component_that_failed(causes: list[str], point: str) -> None:
    from feedback.simulate.sessions import failure_point_of

    assert failure_point_of(causes) == point


def test_default_traffic_has_no_false_wakes_and_no_entity_errors(small: Output) -> None:
    points = Counter(record["failure_point"] for record in small.truth)
    assert points["false_wake"] == 0 and points["entity"] == 0
    assert {"asr", "nlu", "result", "none"} <= set(points)


@pytest.mark.parametrize("corpus", ["snips", "sgd"])
def test_false_wakes_and_entity_errors_when_their_rates_are_set(corpus: str, tmp_path: Path) -> None:
    config = replace(SMALL, corpus=corpus, users=20, false_wake_rate=0.3, entity_error_rate=0.3)
    output = load(tmp_path, run(config, tmp_path, progress=False))
    wakes = [r for r in output.truth if r["failure_point"] == "false_wake"]
    entities = [r for r in output.truth if r["failure_point"] == "entity"]
    assert len(wakes) > 0 and len(entities) > 0
    for record in wakes:
        event = output.events[record["event_id"]]
        assert record["defect_causes"] == ["false_wake"] and record["intended_intent"] == "none"
        assert len(event["utterance"].split()) <= 2
        assert event.get("asr_confidence") is None or event["asr_confidence"] < 0.95
        assert record["rephrase_of"] is None
    for record in entities:
        event = output.events[record["event_id"]]
        # every value heard right (no ASR cause) and the intent understood, but one value resolved to another entity
        assert event["intent"] == record["intended_intent"]
        changed = [name for name, value in record["intended_slots"].items() if event["slots"].get(name) != value]
        assert len(changed) == 1
