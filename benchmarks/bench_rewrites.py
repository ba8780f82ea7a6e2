"""Benchmark: rewrite mining on synthetic rephrase graphs of growing size, wall time and peak memory.

For each size N, generates silver-like request turns whose utterances form a rephrase graph of
about N states: component sizes follow a power law (P(k) ~ k^-2.5, 2 <= k <= 5000, so most
components are pairs and triples and a few have thousands of states), about 2.5 N chains of
1-3 turns by N/2 users; in each component one wording mostly succeeds and the others mostly
fail, and rephrases lean towards the good wording. The turns are written to Parquet first (not
timed); then ``feedback.rewrites.mine.mine_rewrites`` runs end to end (transitions, label-propagation
components, the per-component sparse solves with ``applyInPandas``, thresholds) and the rows
are MERGEd into a fresh ``gold/rewrites`` Delta table. Peak memory is the largest resident set
of this process and all its children (the Spark JVM and its Python workers) sampled every 0.2 s.

    .venv/bin/python benchmarks/bench_rewrites.py --states 10000 100000 1000000 --workdir bench/rewrites
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from feedback.config import MiningConfig, SparkConfig
from feedback.core.lake import LakePaths
from feedback.core.schema import REWRITE_VETOES_SCHEMA
from feedback.core.spark import build_spark
from feedback.rewrites.mine import ensure_rewrite_tables, merge_rewrites, mine_rewrites

LOG = logging.getLogger("bench_rewrites")
MAX_COMPONENT = 5000
SIZE_EXPONENT = 2.5


def component_sizes(states: int, rng: np.random.Generator) -> np.ndarray:
    """Power-law component sizes summing to ``states``."""
    support = np.arange(2, MAX_COMPONENT + 1)
    pmf = support.astype(float) ** -SIZE_EXPONENT
    pmf /= pmf.sum()
    sizes = rng.choice(support, size=int(states / float((support * pmf).sum()) * 1.2) + 10, p=pmf)
    cumulative = np.cumsum(sizes)
    cut = int(np.searchsorted(cumulative, states))
    sizes = sizes[: cut + 1].copy()
    sizes[-1] -= int(cumulative[cut] - states)
    return sizes[sizes >= 2] if sizes[-1] < 2 else sizes


def synthetic_turns(states: int, seed: int) -> pd.DataFrame:
    """Silver-like request turns (the columns mining reads) over a graph of about ``states`` utterances."""
    rng = np.random.default_rng(seed)
    sizes = component_sizes(states, rng)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    chains = int(2.5 * sizes.sum())
    component = rng.choice(len(sizes), size=chains, p=sizes / sizes.sum())
    length = rng.choice([1, 2, 3], size=chains, p=[0.4, 0.4, 0.2])
    chain_of_turn = np.repeat(np.arange(chains), length)
    first_turn = np.r_[0, np.cumsum(length)[:-1]]
    position = np.arange(len(chain_of_turn)) - np.repeat(first_turn, length)
    size = sizes[component][chain_of_turn]
    uniform = (rng.random(len(chain_of_turn)) * size).astype(np.int64)
    to_good = rng.random(len(chain_of_turn)) < 0.5
    local = np.where(position == 0, uniform, np.where(to_good, 0, uniform))
    state = starts[component][chain_of_turn] + local
    last = position == np.repeat(length, length) - 1
    succeeded = rng.random(len(chain_of_turn)) < np.where(local == 0, 0.9, 0.25)
    chain_success = np.zeros(chains, dtype=bool)
    chain_success[chain_of_turn[last]] = succeeded[last]
    turn_ids = np.char.add("e", np.arange(len(chain_of_turn)).astype(str))
    in_chain = np.repeat(length > 1, length)
    return pd.DataFrame(
        {
            "event_id": turn_ids,
            "user_id": np.char.add("u", rng.integers(0, max(1, states // 2), size=chains).astype(str))[chain_of_turn],
            "normalized_utterance": np.char.add("s", state.astype(str)),
            "is_system_command": False,
            "defect": ~(last & succeeded),
            "rephrase_of": np.where(position > 0, np.roll(turn_ids, 1), None),
            "chain_id": np.where(in_chain, turn_ids[np.repeat(first_turn, length)], None),
            "chain_success": pd.Series(chain_success[chain_of_turn], dtype="boolean").where(in_chain),
            "turn_index": position.astype(np.int32),
        }
    )


class PeakMemory:
    """Samples the resident set of this process tree (this Python, the JVM, Python workers)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss_mb(self) -> float:
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
                rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                continue
        tree = {os.getpid()}
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return sum(rss.get(pid, 0) for pid in tree) / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, self._tree_rss_mb())

    def __enter__(self) -> "PeakMemory":
        self.peak_mb = self._tree_rss_mb()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class SizeResult:
    requested_states: int
    states: int
    turns: int
    components: int
    largest_component: int
    label_rounds: int
    rewrites: int
    mine_seconds: float
    merge_seconds: float
    peak_rss_mb: float


def run_size(spark: object, workdir: Path, states: int, seed: int, config: MiningConfig) -> SizeResult:
    data = workdir / f"turns-{states}"
    if not data.exists():
        frame = synthetic_turns(states, seed)
        spark.createDataFrame(frame).write.mode("overwrite").parquet(str(data))  # type: ignore[attr-defined]
    turns = spark.read.parquet(str(data)).cache()  # type: ignore[attr-defined]
    turn_count = turns.count()
    lake = LakePaths.at(workdir / f"lake-{states}")
    if Path(lake.root).exists():
        shutil.rmtree(lake.root)
    ensure_rewrite_tables(spark, lake)  # type: ignore[arg-type]
    vetoes = spark.createDataFrame([], REWRITE_VETOES_SCHEMA)  # type: ignore[attr-defined]
    with PeakMemory() as memory:
        started = time.perf_counter()
        outcome = mine_rewrites(turns, vetoes, config, f"bench-{states}", dt.datetime(2026, 11, 24))
        rows = outcome.rewrites.localCheckpoint(eager=True)
        rewrites = rows.count()
        mined = time.perf_counter()
        merge_rewrites(spark, lake.rewrites, rows)  # type: ignore[arg-type]
        merged = time.perf_counter()
    largest = outcome.candidates.agg({"component_states": "max"}).first()[0] or 0
    turns.unpersist()
    return SizeResult(
        requested_states=states,
        states=outcome.states,
        turns=turn_count,
        components=outcome.components,
        largest_component=int(largest),
        label_rounds=outcome.label_rounds,
        rewrites=rewrites,
        mine_seconds=round(mined - started, 1),
        merge_seconds=round(merged - mined, 1),
        peak_rss_mb=round(memory.peak_mb),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--states", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path("bench/rewrites"))
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    spark = build_spark(
        SparkConfig(
            master="local[2]",
            app_name="bench-rewrites",
            shuffle_partitions=4,
            extra={"spark.ui.enabled": "false", "spark.driver.memory": args.driver_memory},
        )
    )
    config = MiningConfig()
    results = []
    try:
        for states in args.states:
            LOG.info("size %d states", states)
            result = run_size(spark, args.workdir, states, args.seed, config)
            LOG.info("%s", result)
            results.append(result)
    finally:
        spark.stop()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, local[2], driver memory {args.driver_memory}")
    print("| states | turns | components | largest | label rounds | rewrites | mine s | merge s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.states:,} | {r.turns:,} | {r.components:,} | {r.largest_component:,} | {r.label_rounds} | "
            f"{r.rewrites:,} | {r.mine_seconds} | {r.merge_seconds} | {r.peak_rss_mb:,.0f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
