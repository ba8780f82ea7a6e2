"""Bronze from a real Kafka topic: the same parse, quarantine and accounting as landing files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.bronze.stream import start_bronze_stream
from feedback.config import AppConfig, KafkaConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.ops.kafka import Broker

from support.landing_data import event


def publish(spark: SparkSession, broker: Broker, topic: str, values: list[bytes | None]) -> None:
    """Write ``values`` to partition 0 of ``topic`` in order (offsets 0, 1, ...), through Spark's Kafka sink."""
    (
        spark.createDataFrame([(value,) for value in values], "value binary")
        .coalesce(1)
        .withColumn("partition", F.lit(0))
        .write.format("kafka")
        .option("kafka.bootstrap.servers", broker.bootstrap_servers)
        .option("kafka.max.request.size", str(2 * 1024 * 1024))
        .option("topic", topic)
        .save()
    )


def kafka_config(app_config: AppConfig, broker: Broker, topic: str) -> AppConfig:
    kafka = KafkaConfig(bootstrap_servers=broker.bootstrap_servers, topic=topic, max_offsets_per_trigger=100)
    return replace_section(app_config, ingest=dataclasses.replace(app_config.ingest, source="kafka", kafka=kafka))


def test_poison_messages_are_quarantined_and_the_good_ones_land(
    spark: SparkSession, app_config: AppConfig, kafka_broker: Broker, tmp_path: Path
) -> None:
    good = [event(f"g{i}", f"2026-11-05T10:{i:02d}:00Z").encode() for i in range(10)]
    wrong_version = json.loads(event("v2", "2026-11-05T11:00:00Z"))
    wrong_version["schema_version"] = 2
    poison: list[bytes | None] = [b"\xff\xfe not utf-8", None, json.dumps(wrong_version).encode(), b"x" * (1024 * 1024)]
    # Offsets 0-4 good, 5-8 poison, 9-13 good.
    publish(spark, kafka_broker, "poison", good[:5] + poison + good[5:])
    lake = LakePaths.at(tmp_path / "lake")
    start_bronze_stream(spark, kafka_config(app_config, kafka_broker, "poison"), None, lake, available_now=True).awaitTermination()

    bronze = spark.read.format("delta").load(lake.bronze)
    assert sorted((r["event_id"], r["source_file"], r["source_offset"]) for r in bronze.collect()) == sorted(
        [(f"g{i}", "kafka://poison/0", i) for i in range(5)] + [(f"g{i}", "kafka://poison/0", i + 4) for i in range(5, 10)]
    )
    quarantine = spark.read.format("delta").load(lake.quarantine)
    assert sorted((r["source_offset"], r["reasons"], r["source_file"]) for r in quarantine.collect()) == [
        (5, ["invalid_utf8"], "kafka://poison/0"),
        (6, ["null_value"], "kafka://poison/0"),
        (7, ["unknown_schema_version"], "kafka://poison/0"),
        (8, ["too_long:line"], "kafka://poison/0"),
    ]
    totals = spark.read.format("delta").load(lake.ingest_batches).agg(
        F.sum("lines_read"), F.sum("bronze_inserted"), F.sum("quarantined"), F.sum("duplicates_in_batch")
    ).first()
    assert tuple(totals) == (14, 10, 4, 0)
    offsets = [r["source_offsets"] for r in spark.read.format("delta").load(lake.ingest_batches).collect()]
    assert offsets == ['{"kafka://poison/0": [0, 13]}']
