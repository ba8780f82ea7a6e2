"""Faults with a real broker: a driver SIGKILLed mid-batch, then the broker itself killed and restarted mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.bronze.stream import BRONZE_QUERY_NAME
from feedback.config import AppConfig, SimulationConfig, load_config
from feedback.core.lake import LakePaths
from feedback.ops.kafka import start_broker, stop_broker
from feedback.ops.replay import replay
from feedback.pipeline import backfill_late_events, run_pipeline
from feedback.simulate import run as simulate

from support.drivers import KILLED, batch_in_flight, committed_batches, kill_driver_when
from support.kafka_lakes import comparable

TOPIC = "faults"


def test_a_killed_driver_and_a_killed_broker_lose_and_duplicate_nothing(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path
) -> None:
    simulate(SimulationConfig(users=6, days=2, seed=11), tmp_path / "traffic")
    events = tmp_path / "traffic" / "events"
    root = tmp_path / "kafka"
    broker = start_broker(root)
    try:
        messages = replay(events, broker.bootstrap_servers, TOPIC, progress=False).messages
        conf = tmp_path / "kafka.yaml"
        conf.write_text(
            yaml.safe_dump(
                {
                    "spark": {"master": "local[2]", "shuffle_partitions": 2, "extra": {"spark.ui.enabled": "false"}},
                    "ingest": {
                        "source": "kafka",
                        "trigger_interval": "0 seconds",
                        "kafka": {"bootstrap_servers": broker.bootstrap_servers, "topic": TOPIC, "max_offsets_per_trigger": 25},
                    },
                }
            )
        )
        lake = LakePaths.at(tmp_path / "lake")
        checkpoint = lake.checkpoint(BRONZE_QUERY_NAME)
        stream = ["stream", "--lake", lake.root, "--conf", str(conf)]

        # 1. SIGKILL the driver inside its third bronze batch.
        assert kill_driver_when(stream, lambda: batch_in_flight(checkpoint, 2), timeout_s=240) == KILLED

        # 2. Restart it; once two more batches are committed, SIGKILL the broker, restart it 5 s later.
        driver = subprocess.Popen(
            [sys.executable, "-m", "feedback.cli", *stream], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            resumed_from = committed_batches(checkpoint)
            deadline = time.monotonic() + 240
            while committed_batches(checkpoint) < resumed_from + 2 and time.monotonic() < deadline and driver.poll() is None:
                time.sleep(0.1)
            stop_broker(root, kill=True)
            time.sleep(5)
            start_broker(root)
            # Until the stream has read every message (or gave up while the broker was away).
            deadline = time.monotonic() + 300
            while driver.poll() is None and time.monotonic() < deadline:
                read = spark.read.format("delta").load(lake.ingest_batches).agg(F.sum("lines_read")).first()[0] or 0
                if read >= messages:
                    break
                time.sleep(1)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGTERM)
            driver.wait(timeout=120)

        # 3. Whatever is left, in one run from the same checkpoints.
        run_pipeline(spark, load_config(conf), None, lake)
    finally:
        stop_broker(root)

    totals = spark.read.format("delta").load(lake.ingest_batches).agg(
        F.sum("lines_read").alias("read"),
        F.sum(
            F.col("bronze_inserted") + F.col("quarantined") + F.col("duplicates_in_batch") + F.col("duplicates_existing")
        ).alias("accounted"),
    ).first()
    assert (totals["read"], totals["accounted"]) == (messages, messages)

    # Exactly once into Delta: every table equals the same traffic read once from files, once the
    # events that fell behind the watermark (which ones depends on where the batches were cut)
    # have gone through `feedback backfill --late` in both lakes.
    from_files = LakePaths.at(tmp_path / "files")
    run_pipeline(spark, app_config, events, from_files)
    backfill_late_events(spark, app_config, from_files)
    backfill_late_events(spark, load_config(conf), lake)
    expected = comparable(spark, from_files)
    for name, frame in comparable(spark, lake).items():
        assertDataFrameEqual(frame, expected[name], checkRowOrder=False)
