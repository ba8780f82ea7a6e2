"""One session-scoped local SparkSession with real Delta for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from feedback.config import AppConfig, IngestConfig, SparkConfig, ValidationConfig, replace_section
from feedback.core.spark import build_spark
from feedback.ops.kafka import Broker, start_broker, stop_broker

from support.spark_settings import TEST_SPARK


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    warehouse = tmp_path_factory.mktemp("warehouse")
    config = SparkConfig(
        master=TEST_SPARK.master,
        app_name=TEST_SPARK.app_name,
        shuffle_partitions=TEST_SPARK.shuffle_partitions,
        extra={**TEST_SPARK.extra, "spark.sql.warehouse.dir": str(warehouse)},
    )
    session = build_spark(config)
    yield session
    session.stop()


@pytest.fixture()
def app_config() -> AppConfig:
    """Defaults with the test Spark settings and small micro-batches."""
    return replace_section(
        AppConfig(),
        spark=TEST_SPARK,
        ingest=IngestConfig(max_files_per_trigger=8, validation=ValidationConfig(enabled=True)),
    )


@pytest.fixture()
def lake_dir(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real single-node Kafka broker on free ports for the whole session, always stopped at the end."""
    root = tmp_path_factory.mktemp("kafka")
    try:
        yield start_broker(root)
    finally:
        stop_broker(root)
