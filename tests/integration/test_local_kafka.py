"""A real local Kafka broker: up, a Spark round trip through a topic, down, and up again with its data."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from kafka import KafkaConsumer
from pyspark.sql import SparkSession

from feedback.ops.kafka import Broker, accepts_connections, ensure_topic, running_broker, serves_metadata, start_broker, stop_broker
from feedback.ops.replay import replay


def test_the_broker_serves_spark_and_keeps_its_topics_across_a_restart(spark: SparkSession, tmp_path: Path) -> None:
    root = tmp_path / "kafka"
    broker = start_broker(root)
    try:
        assert start_broker(root) == broker  # already up: the same broker
        assert serves_metadata(broker.bootstrap_servers) is True  # registered, not only listening
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
        assert serves_metadata(broker.bootstrap_servers, timeout_s=2.0) is False
        again = start_broker(root)
        assert (again.port, again.controller_port) == (broker.port, broker.controller_port)
        read = spark.read.format("kafka").option("kafka.bootstrap.servers", again.bootstrap_servers).option("subscribe", "events").load()
        assert sorted(r["key"].decode() for r in read.collect()) == sorted(key for key, _ in rows)
    finally:
        stop_broker(root)
    assert stop_broker(root) is False


def test_replay_in_event_time_keeps_the_gaps_and_stamps_the_send_time(kafka_broker: Broker, tmp_path: Path) -> None:
    events = tmp_path / "events"
    events.mkdir()
    lines = [
        {"event_id": "a", "user_id": "u1", "ts": "2026-11-03T02:00:00.000Z"},
        {"event_id": "b", "user_id": "u1", "ts": "2026-11-03T02:00:01.500Z"},
        {"event_id": "late", "user_id": "u2", "ts": "2026-11-03T01:59:58.250Z"},
    ]
    (events / "0001.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n", encoding="utf-8")
    before = dt.datetime.now(dt.timezone.utc)
    report = replay(events, kafka_broker.bootstrap_servers, "event-time", progress=False, in_event_time=True)
    after = dt.datetime.now(dt.timezone.utc)
    assert report.messages == 4

    consumer = KafkaConsumer(
        "event-time", bootstrap_servers=kafka_broker.bootstrap_servers, auto_offset_reset="earliest", consumer_timeout_ms=10000
    )
    received = sorted((message.offset, message.partition, message.value) for message in consumer)
    consumer.close()
    values = [value for _, _, value in received]
    assert b"not json" in values
    stamped = {record["event_id"]: record for record in (json.loads(v) for v in values if v != b"not json")}
    assert set(stamped) == {"a", "b", "late"}
    ts = {key: dt.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")) for key, record in stamped.items()}
    assert before - dt.timedelta(milliseconds=1) <= ts["a"] <= after
    assert ts["b"] - ts["a"] == dt.timedelta(milliseconds=1500)
    assert ts["a"] - ts["late"] == dt.timedelta(milliseconds=1750)
    assert {key: record["user_id"] for key, record in stamped.items()} == {"a": "u1", "b": "u1", "late": "u2"}


def test_ensure_topic_creates_a_topic_once(kafka_broker: Broker) -> None:
    assert ensure_topic(kafka_broker.bootstrap_servers, "ensured", partitions=3) is True
    assert ensure_topic(kafka_broker.bootstrap_servers, "ensured", partitions=3) is False
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers)
    assert consumer.partitions_for_topic("ensured") == {0, 1, 2}
    consumer.close()
