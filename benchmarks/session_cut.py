"""What cutting sessions at ``sessionize.max_session_duration`` costs, counted on the simulator's ground truth.

Sessions are cut at UTC boundaries of that length (``feedback.silver.sessionize``). A cut only loses
a signal when it falls between a request and the turn that judges it: its rephrase, the
request that barged in, or the stop that terminated it. This counts the true sessions cut and
the true signals whose two turns land in different spans.

    .venv/bin/python benchmarks/session_cut.py --users 300 --days 3 --seed 202 --workdir bench/session-cut
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from collections import defaultdict
from pathlib import Path

from feedback.config import SessionizeConfig, SimulationConfig, interval_seconds
from feedback.simulate import run as simulate


def span_of(ts: str, span_s: int) -> int:
    return int(dt.datetime.fromisoformat(ts).timestamp() // span_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=202)
    parser.add_argument("--max-session-duration", default=SessionizeConfig().max_session_duration)
    parser.add_argument("--workdir", type=Path, default=Path("bench/session-cut"))
    args = parser.parse_args()
    span_s = interval_seconds(args.max_session_duration)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    simulate(SimulationConfig(users=args.users, days=args.days, seed=args.seed), args.workdir, progress=False)
    truth = [json.loads(line) for line in (args.workdir / "ground_truth.jsonl").read_text().splitlines() if line.strip()]
    by_id = {row["event_id"]: row for row in truth}
    sessions: dict[str, list[dict[str, object]]] = defaultdict(list)
    for row in truth:
        sessions[str(row["session_key"])].append(row)
    cut_sessions = sum(1 for rows in sessions.values() if len({span_of(str(r["ts"]), span_s) for r in rows}) > 1)
    links = [row for row in truth if row["rephrase_of"]]
    cut_links = sum(
        1 for row in links if span_of(str(row["ts"]), span_s) != span_of(str(by_id[str(row["rephrase_of"])]["ts"]), span_s)
    )
    judged = {"barge_in": [0, 0], "terminated": [0, 0]}
    for rows in sessions.values():
        ordered = sorted(rows, key=lambda r: str(r["ts"]))
        for turn, following in zip(ordered, ordered[1:]):
            for signal, counts in judged.items():
                if turn[signal]:
                    counts[0] += 1
                    counts[1] += span_of(str(turn["ts"]), span_s) != span_of(str(following["ts"]), span_s)
    print(
        f"{len(truth)} events, {len(sessions)} sessions: {cut_sessions} cut at a {args.max_session_duration} boundary; "
        f"rephrase links {len(links)} ({cut_links} across a boundary); "
        + "; ".join(f"{signal} {total} ({cut} across)" for signal, (total, cut) in judged.items())
    )


if __name__ == "__main__":
    main()
