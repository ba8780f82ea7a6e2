"""Simulated traffic through the real pipeline: accounting, exactly-once, and a SIGKILLed driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.stream import BRONZE_QUERY_NAME
from feedback.config import AppConfig, SimulationConfig, load_config
from feedback.core.lake import LakePaths
from feedback.pipeline import run_pipeline
from feedback.silver.stream import SILVER_QUERY_NAME
from feedback.simulate import run as simulate

from support.drivers import KILLED, batch_in_flight, kill_driver_when

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("traffic")
    simulate(SimulationConfig(users=30, days=2, seed=3, malformed_rate=0.02, duplicate_rate=0.03), out, progress=False)
    return out


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def landing_lines(traffic: Path) -> list[tuple[str, str]]:
    """(file name, line) of every line in the landing files, as Spark's text source splits them."""
    return [
        (path.name, line)
        for path in sorted((traffic / "events").glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def check_lake(spark: SparkSession, traffic: Path, lake: Path, summary: dict[str, int]) -> None:
    """Every valid event exactly once, every malformed line quarantined with its reasons, counts adding up."""
    truth = read_jsonl(traffic / "ground_truth.jsonl")
    malformed = read_jsonl(traffic / "malformed.jsonl")
    lines = landing_lines(traffic)
    paths = LakePaths.at(lake)

    bronze = spark.read.format("delta").load(paths.bronze)
    assertDataFrameEqual(
        bronze.groupBy("event_id").count(),
        spark.createDataFrame([(str(t["event_id"]), 1) for t in truth], "event_id string, count long"),
    )
    quarantine = spark.read.format("delta").load(paths.quarantine).select(
        F.element_at(F.split("source_file", "/"), -1).alias("file"), "raw", F.array_sort("reasons").alias("reasons")
    )
    expected = spark.createDataFrame(
        [(str(m["file"]), str(m["raw"]), sorted(m["expected_reasons"])) for m in malformed],  # type: ignore[arg-type]
        "file string, raw string, reasons array<string>",
    )
    assertDataFrameEqual(quarantine, expected)

    duplicate_lines = sum(int(t["delivery_copies"]) - 1 for t in truth)  # type: ignore[arg-type]
    assert summary["lines_read"] == len(lines)
    assert summary["bronze_inserted"] == summary["bronze_rows"] == len(truth)
    assert summary["quarantined"] == summary["quarantine_rows"] == len(malformed)
    assert summary["duplicates"] == duplicate_lines
    assert summary["lines_read"] == summary["bronze_inserted"] + summary["quarantined"] + summary["duplicates"]


def test_simulated_week_lands_exactly_once_with_every_reject_explained(
    spark: SparkSession, app_config: AppConfig, traffic: Path, tmp_path: Path
) -> None:
    manifest = json.loads((traffic / "manifest.json").read_text())
    assert manifest["late_files"] >= 1 and manifest["duplicate_lines"] >= 1 and manifest["malformed_lines"] >= 1
    summary = run_pipeline(spark, app_config, traffic / "events", LakePaths.at(tmp_path / "lake")).ingest
    check_lake(spark, traffic, tmp_path / "lake", summary)
    assert summary["failed_validations"] == 0


def test_sigkill_of_the_driver_mid_stream_loses_and_duplicates_nothing(
    spark: SparkSession, app_config: AppConfig, traffic: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    conf = tmp_path / "stream.yaml"
    conf.write_text(
        yaml.safe_dump(
            {
                "spark": {"master": "local[2]", "shuffle_partitions": 2, "extra": {"spark.ui.enabled": "false"}},
                "ingest": {"max_files_per_trigger": 1, "trigger_interval": "0 seconds"},
            }
        )
    )
    # Three micro-batches committed, kill inside a later one (its offsets written, its commit not).
    outcome = kill_driver_when(
        ["stream", "--events", str(traffic / "events"), "--lake", str(lake), "--conf", str(conf)],
        lambda: batch_in_flight(LakePaths.at(lake).checkpoint(BRONZE_QUERY_NAME), 3),
        timeout_s=240,
    )
    assert outcome == KILLED, f"inside the fourth bronze batch: {outcome}"

    batches_before = spark.read.format("delta").load(LakePaths.at(lake).ingest_batches).count()
    files = len(list((traffic / "events").glob("*.jsonl")))
    assert 3 <= batches_before < files  # killed part-way: the restart has work left

    summary = run_pipeline(spark, app_config, traffic / "events", LakePaths.at(lake))
    check_lake(spark, traffic, lake, summary.ingest)
    # The silver query was killed too: after its restart every turn is there once, and only real events.
    silver = spark.read.format("delta").load(LakePaths.at(lake).silver_turns)
    assert silver.groupBy("event_id").count().filter("count > 1").count() == 0
    bronze = spark.read.format("delta").load(LakePaths.at(lake).bronze)
    assert silver.join(bronze, "event_id", "left_anti").count() == 0
    assert summary.silver["silver_rows"] == silver.count() > 0


BOUNDED = {
    "spark": {"master": "local[2]", "shuffle_partitions": 2, "extra": {"spark.ui.enabled": "false"}},
    "ingest": {"max_files_per_trigger": 200, "max_rows_per_file": 40},
    "sessionize": {"max_rows_per_batch": 80},
    "rephrase_model": {"use_champion": False},
}
"""One bronze commit of files of at most 40 rows; silver admits 2 files (at most 80 rows) per micro-batch."""


def lake_tables(spark: SparkSession, lake: Path) -> dict[str, DataFrame]:
    """Every table of the lake without the columns that record when or by which run a row was written."""
    paths = LakePaths.at(lake)
    return {
        "bronze": spark.read.format("delta").load(paths.bronze).drop("ingest_time", "ingest_batch"),
        "quarantine": spark.read.format("delta").load(paths.quarantine).drop("ingest_time", "ingest_batch"),
        "silver": spark.read.format("delta").load(paths.silver_turns).drop("processed_at"),
        "defect_metrics": spark.read.format("delta").load(paths.defect_metrics).drop("users_sketch"),
        "utterance_defects": spark.read.format("delta").load(paths.utterance_defects).drop("users_sketch"),
        "rephrase_pairs": spark.read.format("delta").load(paths.rephrase_pairs).drop("users_sketch"),
        "silver_batches": spark.read.format("delta").load(paths.silver_batches).drop("app_id", "processed_at", "batch_seconds"),
    }


def test_a_backlog_drains_in_bounded_batches_and_a_killed_driver_resumes_where_it_stopped(
    spark: SparkSession, traffic: Path, tmp_path: Path
) -> None:
    conf = tmp_path / "bounded.yaml"
    conf.write_text(yaml.safe_dump(BOUNDED))
    config = load_config(conf)
    events = traffic / "events"

    clean = tmp_path / "clean"
    run_pipeline(spark, config, events, LakePaths.at(clean))
    batches = spark.read.format("delta").load(LakePaths.at(clean).silver_batches)
    bronze_rows = spark.read.format("delta").load(LakePaths.at(clean).bronze).count()
    with_turns = batches.filter("turns > 0").count()
    assert with_turns >= max(4, bronze_rows // 80)  # the backlog drained in bounded batches
    # Bronze files are capped and follow event time, so no batch saw events behind the watermark of the one before:
    # the bounded run holds exactly the turns of one unbounded batch.
    unbounded = tmp_path / "unbounded"
    run_pipeline(spark, load_config(None, {**BOUNDED, "sessionize": {"max_rows_per_batch": 1_000_000}}), events, LakePaths.at(unbounded))
    assert spark.read.format("delta").load(LakePaths.at(unbounded).silver_batches).filter("turns > 0").count() == 1
    assertDataFrameEqual(lake_tables(spark, clean)["silver"], lake_tables(spark, unbounded)["silver"])

    killed = tmp_path / "killed"
    # Two silver batches committed, kill the driver inside a later one.
    outcome = kill_driver_when(
        ["pipeline", "--events", str(events), "--lake", str(killed), "--conf", str(conf)],
        lambda: batch_in_flight(LakePaths.at(killed).checkpoint(SILVER_QUERY_NAME), 2),
        timeout_s=300,
    )
    assert outcome == KILLED, f"inside the third silver batch: {outcome}"
    assert 2 <= spark.read.format("delta").load(LakePaths.at(killed).silver_batches).count() < with_turns

    run_pipeline(spark, config, events, LakePaths.at(killed))
    expected = lake_tables(spark, clean)
    for name, frame in lake_tables(spark, killed).items():
        assertDataFrameEqual(frame, expected[name])
