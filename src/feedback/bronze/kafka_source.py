"""A Kafka topic as the bronze source: each message value is one contract-v1 event, read like a landing line.

The message becomes the same columns the landing source gives (``value``, ``source_file``,
``source_modified``), plus its offset, so it goes through the same parse, quarantine,
deduplication, gate and accounting. ``source_file`` is ``kafka://<topic>/<partition>`` and
``source_offset`` the message's offset: a quarantine row names the message exactly. The
message timestamp stands in for a file's landing time (the future-skew and staleness checks).

Guarantees: the offsets live in the query's checkpoint and every bronze write is guarded by its
batch id, so what is in the topic lands in bronze exactly once; a producer that retries can
still write a message twice (at least once), and those copies are told apart by ``event_id``.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from feedback.config import KafkaConfig

KAFKA_SCHEME = "kafka://"


def read_kafka(spark: SparkSession, kafka: KafkaConfig) -> DataFrame:
    """The streaming source over ``kafka.topic``: one row per message, in the landing source's columns.

    A value that is not UTF-8 keeps its bytes (the cast does not replace them), so the parse
    quarantines it as ``invalid_utf8`` with its exact bytes; a message without a value (a
    tombstone) stays null and is quarantined as ``null_value``.
    """
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka.bootstrap_servers)
        .option("subscribe", kafka.topic)
        .option("startingOffsets", kafka.starting_offsets)
        .option("maxOffsetsPerTrigger", kafka.max_offsets_per_trigger)
    )
    for key, value in kafka.options.items():
        reader = reader.option(key, value)
    return message_lines(reader.load())


def message_lines(messages: DataFrame) -> DataFrame:
    """Kafka records (``topic``, ``partition``, ``offset``, ``timestamp``, ``value``) as landing-source rows."""
    return messages.select(
        F.col("value").cast("string").alias("value"),
        F.concat(F.lit(KAFKA_SCHEME), F.col("topic"), F.lit("/"), F.col("partition").cast("string")).alias("source_file"),
        F.col("timestamp").alias("source_modified"),
        F.col("offset").alias("source_offset"),
    )
