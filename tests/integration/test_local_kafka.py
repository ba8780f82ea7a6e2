"""A real local Kafka broker: up, a Spark round trip through a topic, down, and up again with its data."""

from __future__ import annotations

import json
from pathlib import Path

from pyspark.sql import SparkSession

from feedback.ops.kafka import accepts_connections, running_broker, start_broker, stop_broker


def test_the_broker_serves_spark_and_keeps_its_topics_across_a_restart(spark: SparkSession, tmp_path: Path) -> None:
    root = tmp_path / "kafka"
    broker = start_broker(root)
    try:
        assert start_broker(root) == broker  # already up: the same broker
        rows = [(f"e{i}", json.dumps({"event_id": f"e{i}"})) for i in range(300)]
        (
            spark.createDataFrame(rows, "key string, value string")
            .write.format("kafka")
            .option("kafka.bootstrap.servers", broker.bootstrap_servers)
            .option("topic", "events")
            .save()
        )
        assert stop_broker(root) is True
        assert running_broker(root) is None and not accepts_connections(broker.port)
        again = start_broker(root)
        assert (again.port, again.controller_port) == (broker.port, broker.controller_port)
        read = spark.read.format("kafka").option("kafka.bootstrap.servers", again.bootstrap_servers).option("subscribe", "events").load()
        assert sorted(r["key"].decode() for r in read.collect()) == sorted(key for key, _ in rows)
    finally:
        stop_broker(root)
    assert stop_broker(root) is False
