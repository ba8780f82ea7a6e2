"""The same simulated traffic through Kafka and through landing files gives the same lake."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig, KafkaConfig, SimulationConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.ops.kafka import Broker
from feedback.ops.replay import replay
from feedback.pipeline import run_pipeline
from feedback.simulate import run as simulate

from support.kafka_lakes import comparable


def test_a_simulated_week_through_kafka_equals_the_same_week_through_files(
    spark: SparkSession, app_config: AppConfig, kafka_broker: Broker, tmp_path: Path
) -> None:
    simulation = SimulationConfig(users=6, days=2, seed=11)
    simulate(simulation, tmp_path / "traffic")
    events = tmp_path / "traffic" / "events"
    report = replay(events, kafka_broker.bootstrap_servers, "round-trip", rate=0.0, progress=False)
    lines = sum(1 for path in events.glob("*.jsonl") for line in path.read_bytes().split(b"\n") if line)
    assert report.messages == lines

    from_files = LakePaths.at(tmp_path / "files")
    run_pipeline(spark, app_config, events, from_files)
    kafka = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers, topic="round-trip", max_offsets_per_trigger=2000)
    config = replace_section(app_config, ingest=dataclasses.replace(app_config.ingest, source="kafka", kafka=kafka))
    from_kafka = LakePaths.at(tmp_path / "kafka")
    run_pipeline(spark, config, None, from_kafka)

    expected = comparable(spark, from_files)
    for name, frame in comparable(spark, from_kafka).items():
        assertDataFrameEqual(frame, expected[name], checkRowOrder=False)
