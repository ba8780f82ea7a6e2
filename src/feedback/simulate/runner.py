"""``run``: simulate the fleet and write events, ground truth, malformed-line list and manifest."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from feedback.config import SimulationConfig
from feedback.simulate.constants import DEFECT_CAUSES, MS_PER_DAY
from feedback.simulate.delivery import dumps, format_ts, plan_files, truth_dict, write_files
from feedback.simulate.interpret import RequestRewriter, TextInterpreter
from feedback.simulate.population import make_household
from feedback.simulate.sessions import SessionSimulator, Turn
from feedback.simulate.truth import assign_interaction_flags
from feedback.simulate.world import VocabularySplit, build_world

_STREAM_HOUSEHOLD = 1
_STREAM_DELIVERY = 2
_STREAM_SESSION = 3
_SEED_TAG = 0x5EED
OUTPUT_FILES = ("ground_truth.jsonl", "malformed.jsonl", "manifest.json")


@dataclass(frozen=True)
class SimulationSummary:
    """The manifest numbers of one run, plus where it was written."""

    out_dir: Path
    seed: int
    users: int
    days: int
    start_date: str
    files: int
    lines: int
    events: int
    duplicate_lines: int
    malformed_lines: int
    late_files: int
    sessions: int
    defective: int
    barge_ins: int
    terminated: int
    rephrases: int
    abandoned: int
    system_commands: int
    defect_causes: dict[str, int] = field(default_factory=dict, hash=False)
    vocabulary: str = "all"
    corpus: str = "snips"
    profile: str = "a"
    rewriter: str | None = None
    rewritten: int = 0

    def manifest(self) -> dict[str, Any]:
        """The manifest.json content (everything but ``out_dir``, so outputs are path-free)."""
        return {
            "seed": self.seed,
            "users": self.users,
            "days": self.days,
            "start_date": self.start_date,
            "files": self.files,
            "lines": self.lines,
            "events": self.events,
            "duplicate_lines": self.duplicate_lines,
            "malformed_lines": self.malformed_lines,
            "late_files": self.late_files,
            "sessions": self.sessions,
            "defective": self.defective,
            "barge_ins": self.barge_ins,
            "terminated": self.terminated,
            "rephrases": self.rephrases,
            "abandoned": self.abandoned,
            "system_commands": self.system_commands,
            "defect_causes": dict(self.defect_causes),
            "vocabulary": self.vocabulary,
            "corpus": self.corpus,
            "profile": self.profile,
            "rewriter": self.rewriter,
            "rewritten": self.rewritten,
        }


def _stream(seed: int, *path: int) -> np.random.Generator:
    """An independent random stream for one part of the simulation (seed + path)."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SEED_TAG, *path]))


def _prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and remove a previous run's outputs (only the simulator's own files)."""
    events_dir = out_dir / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    for stale in sorted(events_dir.glob("events-*.jsonl")):
        stale.unlink()
    for name in OUTPUT_FILES:
        (out_dir / name).unlink(missing_ok=True)


def window_start_ms(config: SimulationConfig) -> int:
    """The simulated window's start: midnight UTC of ``simulation.start_date``, in epoch milliseconds."""
    return (date.fromisoformat(config.start_date) - date(1970, 1, 1)).days * MS_PER_DAY


def _checked_rewriter(config: SimulationConfig, rewriter: RequestRewriter | None) -> RequestRewriter | None:
    """The rewriter to run: given exactly when ``simulation.rewriter`` names one."""
    if config.rewriter is not None and rewriter is None:
        raise ValueError(f"rewriter: simulation.rewriter is {config.rewriter!r}; load it and pass it in")
    if rewriter is not None and config.rewriter is None:
        raise ValueError("rewriter: given, but simulation.rewriter does not name it (the manifest would not say)")
    if rewriter is not None and not callable(getattr(rewriter, "rewrite", None)):
        raise TypeError(f"rewriter: expected an object with rewrite(utterance, user_id), got {type(rewriter).__name__}")
    return rewriter


def simulate_turns(config: SimulationConfig, progress: bool, rewriter: RequestRewriter | None = None) -> tuple[list[Turn], int]:
    """All turns of all households (with timestamps and interaction flags) and the session count.

    With a ``rewriter`` (the treatment arm), every request heard from day
    ``simulation.rewrite_from_day`` on goes through it before the NLU; each household's draws
    are the same as without one up to its first rewrite.
    """
    rewriter = _checked_rewriter(config, rewriter)
    split = VocabularySplit(config.vocabulary, config.heldout_intents, config.heldout_value_share)
    world = build_world(config.seed, split, config.corpus, config.behaviour.asr_confusions)
    interpreter = TextInterpreter(world) if rewriter is not None else None
    start_day = date.fromisoformat(config.start_date)
    start_ms = window_start_ms(config)
    window = (start_ms, start_ms + config.days * MS_PER_DAY)
    turns: list[Turn] = []
    sessions = 0
    users = tqdm(range(config.users), desc="simulating households", unit="user", disable=not progress)
    for index in users:
        rng = _stream(config.seed, _STREAM_HOUSEHOLD, index)
        household = make_household(index, world, rng)
        streams = partial(_stream, config.seed, _STREAM_SESSION, index) if config.paired_sessions else None
        simulator = SessionSimulator(config, world, household, rng, window, rewriter, interpreter, streams)
        household_turns, kept = simulator.all_sessions(start_day.weekday())
        turns.extend(household_turns)
        sessions += kept
    seen: dict[str, bool] = {}
    for turn in turns:
        if turn.event_id in seen:
            raise RuntimeError(f"event id collision: {turn.event_id}")
        seen[turn.event_id] = True
        turn.ts = format_ts(turn.ts_ms, turn.device.ts_offset_min)
    assign_interaction_flags(turns)
    return turns, sessions


def _write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """One compact JSON object per line, UTF-8, ``\\n`` line ends (streamed: memory stays flat)."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(dumps(record) + "\n")


def run(config: SimulationConfig, out_dir: Path, progress: bool = True, rewriter: RequestRewriter | None = None) -> SimulationSummary:
    """Simulate ``config`` and write the landing files and ground truth under ``out_dir``.

    Writes ``events/events-<seq>-<hour>.jsonl`` (arrival order), ``ground_truth.jsonl``,
    ``malformed.jsonl`` and ``manifest.json``. The same config gives byte-identical files.

    ``rewriter``: the loaded model ``simulation.rewriter`` names (see ``simulate_turns``).

    Raises:
        TypeError: ``config`` is not a SimulationConfig or ``out_dir`` is not a path.
        ValueError: ``rewriter`` is missing while ``simulation.rewriter`` names one, or the reverse.
    """
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"config: expected SimulationConfig, got {type(config).__name__}")
    if not isinstance(out_dir, (str, Path)):
        raise TypeError(f"out_dir: expected a path, got {type(out_dir).__name__}")
    _checked_rewriter(config, rewriter)
    turns, sessions = simulate_turns(config, progress, rewriter)
    return write_simulation(config, turns, sessions, Path(out_dir))


def write_simulation(config: SimulationConfig, turns: list[Turn], sessions: int, out_dir: Path) -> SimulationSummary:
    """Write ``turns`` (simulated with ``config``) as landing files, ground truth and manifest under ``out_dir``.

    The files cover ``config.days`` from ``config.start_date``; every turn must fall inside.
    """
    start_ms = window_start_ms(config)
    outside = sum(1 for t in turns if not start_ms <= t.ts_ms < start_ms + config.days * MS_PER_DAY)
    if outside:
        raise ValueError(f"turns: {outside} fall outside the {config.days}-day window of {config.start_date}")
    out_path = Path(out_dir)
    _prepare_out_dir(out_path)
    start_day = date.fromisoformat(config.start_date)
    rates = (config.duplicate_rate, config.late_file_rate, config.malformed_rate)
    files = plan_files(turns, start_ms, config.days * 24, rates, _stream(config.seed, _STREAM_DELIVERY))
    start = datetime(start_day.year, start_day.month, start_day.day)
    stats, malformed = write_files(files, start, out_path)
    ordered = sorted(turns, key=lambda t: (t.ts_ms, t.event_id))
    _write_jsonl(out_path / "ground_truth.jsonl", (truth_dict(t) for t in ordered))
    _write_jsonl(out_path / "malformed.jsonl", malformed)
    summary = SimulationSummary(
        out_dir=out_path,
        seed=config.seed,
        users=config.users,
        days=config.days,
        start_date=config.start_date,
        files=stats.files,
        lines=stats.lines,
        events=len(turns),
        duplicate_lines=stats.duplicate_lines,
        malformed_lines=stats.malformed_lines,
        late_files=stats.late_files,
        sessions=sessions,
        defective=sum(1 for t in turns if t.causes),
        barge_ins=sum(1 for t in turns if t.barge_in),
        terminated=sum(1 for t in turns if t.terminated),
        rephrases=sum(1 for t in turns if t.rephrase_of is not None),
        abandoned=sum(1 for t in turns if t.abandoned),
        system_commands=sum(1 for t in turns if t.is_system),
        defect_causes={cause: sum(1 for t in turns if cause in t.causes) for cause in DEFECT_CAUSES},
        vocabulary=config.vocabulary,
        corpus=config.corpus,
        profile=config.behaviour.name,
        rewriter=config.rewriter,
        rewritten=sum(1 for t in turns if t.rewrite is not None),
    )
    (out_path / "manifest.json").write_text(json.dumps(summary.manifest(), indent=2) + "\n", encoding="utf-8")
    return summary
