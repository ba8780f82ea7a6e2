"""bronze -> silver -> gold as streams: late data and backfill, replay, incremental gold = rebuilt gold."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig
from feedback.core.lake import LakePaths
from feedback.gold.aggregate import fold_into_gold, rebuild_gold
from feedback.pipeline import backfill_days, run_pipeline
from feedback.silver.sessionize import aggregate_sessions
from feedback.silver.stream import SilverBatchWriter, ensure_silver_tables

from support.turn_data import DAY, Event, events_frame, stop


def landing_line(event: Event) -> str:
    row = dict(zip(
        ("user_id", "device_id", "ts", "event_id", "event_date", "device_type", "locale", "utterance", "domain", "intent",
         "slots", "status", "response_type", "response_text", "response_latency_ms", "response_duration_ms",
         "asr_confidence", "nlu_confidence", "explicit_feedback"),
        event.row(),
    ))
    row["ts"] = row["ts"].isoformat(timespec="milliseconds") + "Z"  # type: ignore[union-attr]
    del row["event_date"]
    body = {k: v for k, v in row.items() if v is not None or k == "response_duration_ms"}
    return json.dumps({"schema_version": 1, **body})


def land(directory: Path, name: str, events: list[Event]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text("".join(landing_line(e) + "\n" for e in events))


def silver_ids(spark: SparkSession, lake: Path) -> list[str]:
    return sorted(r["event_id"] for r in spark.read.format("delta").load(LakePaths.at(lake).silver_turns).collect())


def test_late_events_wait_for_backfill_and_gold_matches_a_rebuild(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    paths = LakePaths.at(lake)
    # 10:00 a failed request, a stop and its rephrase; 12:00 another session (moves the watermark to 11:50).
    land(landing, "events-1.jsonl", [
        Event("a1", 0, "play songs by the beetles", status="unhandled", domain="music", intent="PlayMusic"),
        stop("a2", 1.5),
        Event("a3", 4, "play songs by the beatles", domain="music", intent="PlayMusic"),
        Event("c1", 7200, "what's the weather"),
    ])
    run_pipeline(spark, app_config, landing, paths)
    assert silver_ids(spark, lake) == ["a1", "a2", "a3"]  # c1's session is still open

    # A file arrives with an event from 09:00 (behind the watermark) and one at 14:00.
    land(landing, "events-2.jsonl", [Event("late", -3600, "set an alarm"), Event("d1", 14400, "what's the time")])
    summary = run_pipeline(spark, app_config, landing, paths)
    assert silver_ids(spark, lake) == ["a1", "a2", "a3", "c1"]  # the late event is in bronze only
    assert summary.ingest["bronze_rows"] == 6

    assert_gold_is_rebuilt_gold(spark, paths)

    written = backfill_days(spark, app_config, paths, DAY.date(), DAY.date())
    assert written == 6  # the whole day from bronze, the late event and d1's open session included
    assert silver_ids(spark, lake) == ["a1", "a2", "a3", "c1", "d1", "late"]
    links = spark.read.format("delta").load(paths.silver_turns).filter("rephrase_of IS NOT NULL").select("event_id", "rephrase_of")
    assertDataFrameEqual(links, spark.createDataFrame([("a3", "a1")], "event_id string, rephrase_of string"))
    pairs = spark.read.format("delta").load(paths.rephrase_pairs).select("utterance", "rephrase", "chains", "successful_chains", "users")
    assertDataFrameEqual(
        pairs,
        spark.createDataFrame(
            [("play songs by the beetles", "play songs by the beatles", 1, 1, 1)],
            "utterance string, rephrase string, chains long, successful_chains long, users long",
        ),
    )
    utterances = spark.read.format("delta").load(paths.utterance_defects).filter("normalized_utterance LIKE 'play songs%'")
    assertDataFrameEqual(
        utterances.select("normalized_utterance", "traffic", "defects", "defect_rate", "top_rephrase"),
        spark.createDataFrame(
            [("play songs by the beetles", 1, 1, 1.0, "play songs by the beatles"), ("play songs by the beatles", 1, 0, 0.0, None)],
            "normalized_utterance string, traffic long, defects long, defect_rate double, top_rephrase string",
        ),
    )


def test_gold_equals_a_rebuild_after_stream_backfill_and_checkpoint_reset(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path
) -> None:
    """A backfill writes sessions the stream still holds open; the stream emits them later; a reset
    checkpoint makes the stream emit everything again. Gold never counts a turn twice."""
    import shutil

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    paths = LakePaths.at(lake)
    land(landing, "events-1.jsonl", [
        Event("a1", 0, "play songs by the beetles", status="unhandled", domain="music", intent="PlayMusic"),
        Event("a2", 4, "play songs by the beatles", domain="music", intent="PlayMusic"),
        Event("b1", 600, "weather in pariss", status="unhandled", user_id="u2", device_id="d2"),
        Event("b2", 606, "weather in paris", user_id="u2", device_id="d2"),
        Event("c1", 7200, "play songs by the beetles", status="unhandled", domain="music", intent="PlayMusic"),
        Event("c2", 7205, "play songs by the beatles", domain="music", intent="PlayMusic"),
    ])
    run_pipeline(spark, app_config, landing, paths)  # c1, c2: still open in the stream's state
    assert silver_ids(spark, lake) == ["a1", "a2", "b1", "b2"]
    assert_gold_is_rebuilt_gold(spark, paths)

    backfill_days(spark, app_config, paths, DAY.date(), DAY.date())  # writes c1, c2 from bronze
    assert silver_ids(spark, lake) == ["a1", "a2", "b1", "b2", "c1", "c2"]
    land(landing, "events-2.jsonl", [Event("d1", 14400, "what's the time")])
    run_pipeline(spark, app_config, landing, paths)  # the stream now emits c1, c2 as well
    assert_gold_is_rebuilt_gold(spark, paths)
    pairs = spark.read.format("delta").load(paths.rephrase_pairs).select("utterance", "rephrase", "chains", "users")
    expected_pairs = spark.createDataFrame(
        [("play songs by the beetles", "play songs by the beatles", 2, 1), ("weather in pariss", "weather in paris", 1, 1)],
        "utterance string, rephrase string, chains long, users long",
    )
    assertDataFrameEqual(pairs, expected_pairs)

    shutil.rmtree(paths.checkpoint("silver_turns"))  # a reset silver checkpoint: every session again
    land(landing, "events-3.jsonl", [Event("e1", 21600, "what's the time")])
    run_pipeline(spark, app_config, landing, paths)
    assert_gold_is_rebuilt_gold(spark, paths)
    assertDataFrameEqual(spark.read.format("delta").load(paths.rephrase_pairs).select(*expected_pairs.columns), expected_pairs)
    turns = spark.read.format("delta").load(paths.defect_metrics).groupBy().agg(F.sum("turns")).first()[0]
    assert turns == spark.read.format("delta").load(paths.silver_turns).count() == 7  # e1: still open


def assert_gold_is_rebuilt_gold(spark: SparkSession, paths: LakePaths) -> None:
    """The gold tables as they are equal ``rebuild_gold`` over today's silver (sketches compared by estimate)."""
    current = {name: gold_snapshot(spark, path).collect() for name, path in gold_tables(paths)}
    rebuild_gold(spark, paths)
    for name, path in gold_tables(paths):
        assertDataFrameEqual(gold_snapshot(spark, path), spark.createDataFrame(current[name], gold_snapshot(spark, path).schema))


def gold_tables(paths: LakePaths) -> list[tuple[str, str]]:
    return [("defect_metrics", paths.defect_metrics), ("utterance_defects", paths.utterance_defects), ("rephrase_pairs", paths.rephrase_pairs)]


def gold_snapshot(spark: SparkSession, path: str) -> DataFrame:
    frame = spark.read.format("delta").load(path)
    return frame.drop("users_sketch") if "users_sketch" in frame.columns else frame


def test_a_replayed_silver_batch_changes_nothing(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    paths = LakePaths.at(tmp_path / "lake")
    ensure_silver_tables(spark, paths)
    events = [
        Event("a1", 0, "weather in pariss", status="unhandled"),
        Event("a2", 5, "weather in paris"),
        Event("b1", 0, "play jazz", user_id="u2", device_id="d9", response_type="media", duration_ms=None, domain="music", intent="PlayMusic"),
    ]
    sessions = aggregate_sessions(events_frame(spark, events), app_config.sessionize)
    writer = SilverBatchWriter(paths, "test-app", app_config, fold_gold=fold_into_gold)
    writer(sessions, 0)
    first = {name: gold_snapshot(spark, path).collect() for name, path in [*gold_tables(paths), ("silver", paths.silver_turns)]}
    writer(sessions, 0)  # Spark replays a batch with the same id after a crash
    for name, path in [*gold_tables(paths), ("silver", paths.silver_turns)]:
        assertDataFrameEqual(gold_snapshot(spark, path), first[name])
    metrics = spark.read.format("delta").load(paths.defect_metrics).groupBy().agg(F.sum("turns"), F.sum("defects")).first()
    assert tuple(metrics) == (3, 1)
    assert spark.read.format("delta").load(paths.silver_batches).count() == 1
    writer(sessions, 1)  # the same sessions under a new batch id (a reset checkpoint): silver and gold stay as they are
    assert spark.read.format("delta").load(paths.silver_turns).count() == 3
    assert spark.read.format("delta").load(paths.defect_metrics).groupBy().agg(F.sum("turns")).first()[0] == 3
    assert dt.date(2026, 11, 2) == spark.read.format("delta").load(paths.silver_turns).select(F.min("event_date")).first()[0]
