"""The one place that builds a SparkSession.

Everything else receives ``spark`` (or uses ``df.sparkSession`` inside ``foreachBatch``).
The session gets Delta's extension and catalog, the jars from the local cache (no Ivy,
no network), the venv's interpreter for Python workers and UTC as its time zone, so event
dates and hours mean the same on every machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from feedback.config import SparkConfig
from feedback.jars import jar_paths

ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
HDFS_PROVIDER = "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"

WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYARROW_IGNORE_TIMEZONE": "1",
}


def spark_conf(config: SparkConfig) -> dict[str, str]:
    """The Spark settings ``build_spark`` applies, as a plain mapping (also used by spark-submit recipes)."""
    if not isinstance(config, SparkConfig):
        raise TypeError(f"config must be a SparkConfig, got {type(config).__name__}")
    jars_dir = Path(config.jars_dir) if config.jars_dir else None
    conf = {
        "spark.app.name": config.app_name,
        "spark.jars": ",".join(str(p) for p in jar_paths(jars_dir)),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(config.shuffle_partitions),
        "spark.default.parallelism": str(config.shuffle_partitions),
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.streaming.stateStore.providerClass": (
            ROCKSDB_PROVIDER if config.state_store == "rocksdb" else HDFS_PROVIDER
        ),
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    for key, value in WORKER_ENV.items():
        conf[f"spark.executorEnv.{key}"] = value
    conf.update(config.extra)
    return conf


def build_spark(config: SparkConfig) -> SparkSession:
    """Build (or return the running) SparkSession configured by ``config``.

    Args:
        config: the ``spark`` section of the application configuration.

    Raises:
        FileNotFoundError: the Delta jars are not in the local cache (run ``make setup``).
    """
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    builder = SparkSession.builder.master(config.master)
    for key, value in spark_conf(config).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.log_level)
    return spark
