"""Chaos: SIGKILL the driver of `feedback stream` and `feedback mine-rewrites` again and again.

A simulated week goes through a stream that is killed inside bronze, quarantine, silver and
gold commits, and mining is killed part-way; after each kill the job is simply started again.
At the end every table must equal a clean run's: bronze and quarantine exactly once, silver by
event id (both lakes after ``backfill --late``: which events a micro-batch finds behind the
watermark depends on when bronze commits, and the killed stream commits at other times), gold
equal to ``rebuild_gold``, and the rewrites equal to what mining the same silver gives. The kill points and the
outcome are written to ``$FEEDBACK_CHAOS_REPORT`` when set (docs/quality.md quotes them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig, SimulationConfig, load_config
from feedback.core.lake import LakePaths
from feedback.gold.aggregate import rebuild_gold
from feedback.gold.late_events import closed_before, late_dates
from feedback.pipeline import backfill_late_events, run_pipeline
from feedback.rewrites.mine import mine_rewrites
from feedback.rewrites.mine import run as mine
from feedback.simulate import run as simulate

from support.drivers import KILLED, kill_driver_when

# About 20 minutes on 2 cores (a dozen driver starts): `make test-chaos`, not part of `make test`.
pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(3000)]

CHAOS = {
    "spark": {"master": "local[2]", "shuffle_partitions": 2, "extra": {"spark.ui.enabled": "false"}},
    "ingest": {"max_files_per_trigger": 12, "trigger_interval": "0 seconds", "max_rows_per_file": 40},
    "sessionize": {"max_rows_per_batch": 80},
    "rephrase_model": {"use_champion": False},
    "mining": {"register": False},
}


@dataclass(frozen=True)
class KillPoint:
    """Kill the driver ``delay_s`` after the first new commit of ``table`` (``None``: after ``delay_s`` from start)."""

    stage: str
    table: str | None
    delay_s: float


def commits(table: str) -> int:
    log = Path(table) / "_delta_log"
    return len(list(log.glob("*.json"))) if log.is_dir() else 0


def kill_at(arguments: list[str], point: KillPoint, paths: LakePaths, timeout_s: float = 120.0) -> str:
    """Start ``feedback ARGUMENTS``, SIGKILL it at ``point``; returns what happened (``support.drivers``)."""
    table = getattr(paths, point.table) if point.table else None
    before = commits(table) if table else 0
    return kill_driver_when(
        arguments, lambda: table is None or commits(table) > before, timeout_s=timeout_s, delay_s=point.delay_s
    )


def kill_points(seed: int) -> list[KillPoint]:
    """Inside bronze batches first (while landing files remain), then silver and gold, then mining."""
    rng = random.Random(seed)
    stages = [
        ("bronze", "bronze"), ("quarantine", "quarantine"), ("bronze bookkeeping", "ingest_batches"),
        ("bronze", "bronze"), ("silver", "silver_turns"), ("gold", "defect_metrics"), ("gold", "utterance_defects"),
        ("gold", "rephrase_pairs"), ("silver", "silver_turns"), ("silver bookkeeping", "silver_batches"),
        ("gold", "utterance_defects"),
    ]
    points = [KillPoint(stage, table, round(rng.uniform(0.0, 0.8), 2)) for stage, table in stages]
    points += [KillPoint("mining", None, round(rng.uniform(12.0, 30.0), 1)) for _ in range(2)]
    return points


def comparable(spark: SparkSession, lake: Path) -> dict[str, DataFrame]:
    """The tables without the columns that record when or by which run a row was written."""
    paths = LakePaths.at(lake)
    load = lambda path: spark.read.format("delta").load(path)  # noqa: E731
    return {
        "bronze": load(paths.bronze).drop("ingest_time", "ingest_batch"),
        "quarantine": load(paths.quarantine).drop("ingest_time", "ingest_batch"),
        "silver": load(paths.silver_turns).drop("processed_at"),
        "defect_metrics": load(paths.defect_metrics),
        "utterance_defects": load(paths.utterance_defects).drop("users_sketch"),
        "rephrase_pairs": load(paths.rephrase_pairs).drop("users_sketch"),
    }


def test_a_driver_killed_again_and_again_ends_with_the_clean_run_tables(spark: SparkSession, tmp_path: Path) -> None:
    traffic = tmp_path / "traffic"
    simulate(SimulationConfig(users=8, days=7, seed=5, malformed_rate=0.02, duplicate_rate=0.03), traffic, progress=False)
    conf = tmp_path / "chaos.yaml"
    conf.write_text(yaml.safe_dump(CHAOS))
    config = load_config(conf)
    events = traffic / "events"

    clean = tmp_path / "clean"
    run_pipeline(spark, config, events, LakePaths.at(clean))
    backfill_late_events(spark, config, LakePaths.at(clean))

    chaotic = tmp_path / "chaotic"
    paths = LakePaths.at(chaotic)
    stream = ["stream", "--events", str(events), "--lake", str(chaotic), "--conf", str(conf)]
    outcomes: list[dict[str, object]] = []
    for point in kill_points(seed=11):
        if point.stage == "mining":
            run_pipeline(spark, config, events, paths)  # the stream's work done, as before a nightly mining run
            outcome = kill_at(["mine-rewrites", "--lake", str(chaotic), "--conf", str(conf)], point, paths)
        else:
            outcome = kill_at(stream, point, paths)
        outcomes.append({**asdict(point), "outcome": outcome})
    # Restart once more after the last kill, and let everything finish.
    run_pipeline(spark, config, events, paths)
    backfill_late_events(spark, config, paths)
    mine(spark, config, paths)

    killed = [o for o in outcomes if o["outcome"] == KILLED]
    report = os.environ.get("FEEDBACK_CHAOS_REPORT")
    if report:
        Path(report).write_text(json.dumps({"kills": outcomes}, indent=2))
    assert len(killed) >= 10, outcomes
    assert {str(o["stage"]).split()[0] for o in killed} >= {"bronze", "silver", "gold", "mining"}, outcomes

    check_against_clean(spark, config, clean, chaotic)


def check_against_clean(spark: SparkSession, config: AppConfig, clean: Path, chaotic: Path) -> None:
    """Every table of ``chaotic`` as it must be after the kills, compared with the clean run's."""
    paths = LakePaths.at(chaotic)
    expected, actual = comparable(spark, clean), comparable(spark, chaotic)
    assert actual["bronze"].groupBy("event_id").count().filter("count > 1").count() == 0
    for name in ("bronze", "quarantine"):
        assertDataFrameEqual(actual[name], expected[name])
    # Silver: each turn once; no closed-session event missing (nothing late left after backfill --late);
    # and the events of sessions closed in both lakes are the same.
    assert actual["silver"].groupBy("event_id").count().filter("count > 1").count() == 0
    assert late_dates(spark, paths, config.sessionize) == []
    both = actual["silver"].groupBy().agg(F.max("ts").alias("ts")).unionByName(expected["silver"].groupBy().agg(F.max("ts").alias("ts")))
    horizon = both.agg(F.min("ts").alias("ts")).select(closed_before(F.col("ts"), config.sessionize)).first()[0]
    closed = lambda frame: frame.filter(F.col("ts") < F.lit(horizon)).select("event_id")  # noqa: E731
    assert closed(expected["silver"]).count() > 0.8 * expected["silver"].count()
    assertDataFrameEqual(closed(actual["silver"]), closed(expected["silver"]))
    assertDataFrameEqual(closed(actual["silver"]), closed(expected["bronze"]))
    # The killed mining runs left nothing behind: the table is what mining today's silver gives.
    vetoes = spark.read.format("delta").load(paths.rewrite_vetoes)
    fresh = mine_rewrites(spark.read.format("delta").load(paths.silver_turns), vetoes, config.mining, "check", dt.datetime(2026, 1, 1))
    assertDataFrameEqual(
        spark.read.format("delta").load(paths.rewrites).drop("mined_at", "run_id"), fresh.rewrites.drop("mined_at", "run_id")
    )
    gold = {name: actual[name].collect() for name in ("defect_metrics", "utterance_defects", "rephrase_pairs")}
    rebuild_gold(spark, paths)
    rebuilt = comparable(spark, chaotic)
    for name, rows in gold.items():
        assertDataFrameEqual(rebuilt[name].drop("users_sketch"), spark.createDataFrame(rows, actual[name].schema).drop("users_sketch"))
    assert spark.read.format("delta").load(paths.rewrites).count() > 0
