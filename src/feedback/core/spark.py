"""The one place that builds a SparkSession.

Everything else receives ``spark`` (or uses ``df.sparkSession`` inside ``foreachBatch``).
The session gets Delta's extension and catalog, the jars from the local cache (no Ivy,
no network), the venv's interpreter for Python workers and UTC as its time zone, so event
dates and hours mean the same on every machine.

Under ``spark-submit`` (or a scheduler that launches the driver the same way) the JVM already
exists with the submitter's ``--master`` and ``--jars``: the session then keeps those instead of
``spark.master`` and the local jar cache, which could no longer reach the driver's classpath.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from feedback.config import SparkConfig
from feedback.core.jars import jar_paths

ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
HDFS_PROVIDER = "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"

WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYARROW_IGNORE_TIMEZONE": "1",
}


def submitted_driver() -> bool:
    """True when spark-submit started this Python driver (its JVM, master and jars already exist).

    PySpark's own launcher sets ``PYSPARK_GATEWAY_PORT`` for the Python process it starts, and
    ``pyspark.java_gateway`` connects to that JVM instead of launching one.
    """
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


def spark_conf(config: SparkConfig, *, include_jars: bool = True) -> dict[str, str]:
    """The Spark settings ``build_spark`` applies, as a plain mapping (also used by spark-submit recipes).

    Args:
        config: the ``spark`` section of the application configuration.
        include_jars: add ``spark.jars`` from the local Delta jar cache (raises when it is empty);
            False when the submitter or the cluster provides Delta.
    """
    if not isinstance(config, SparkConfig):
        raise TypeError(f"config must be a SparkConfig, got {type(config).__name__}")
    jars_dir = Path(config.jars_dir) if config.jars_dir else None
    conf = {"spark.app.name": config.app_name}
    if include_jars:
        conf["spark.jars"] = ",".join(str(p) for p in jar_paths(jars_dir))
    conf |= {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": config.driver_memory,
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
        # HotSpot does not JIT-compile a method over 8,000 bytes of bytecode: whole-stage code
        # that large (the contract checks of every field in one projection) ran interpreted.
        # Spark's default (65,535) keeps it; at 8,000 Spark splits it into compiled pieces.
        "spark.sql.codegen.hugeMethodLimit": "8000",
        # Generated classes are cached by their code, 100 by default. One bronze batch's writes
        # and checks generate more than that, so the next batch's parse was compiled again and
        # ran cold (interpreted until the JIT caught up): 2.7 s against 4.5-6.5 s per 218k lines.
        "spark.sql.codegen.cache.maxEntries": "1000",
    }
    for key, value in WORKER_ENV.items():
        conf[f"spark.executorEnv.{key}"] = value
    conf.update(config.extra)
    return conf


def build_spark(config: SparkConfig) -> SparkSession:
    """Build (or return the running) SparkSession configured by ``config``.

    Under spark-submit (``submitted_driver``) the submitter's ``--master`` and ``--jars`` win
    over ``config.master`` and ``config.jars_dir``; every other setting still applies.

    Args:
        config: the ``spark`` section of the application configuration.

    Raises:
        FileNotFoundError: the Delta jars are not in the local cache (run ``make setup``).
    """
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    submitted = submitted_driver()
    builder = SparkSession.builder if submitted else SparkSession.builder.master(config.master)
    for key, value in spark_conf(config, include_jars=not submitted).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.log_level)
    # feedback.core.checkpoints.release frees each local checkpoint when its stage is done, and Spark
    # warns on every such unpersist that the lineage cannot be recomputed (by design here).
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.rdd.MapPartitionsRDD", jvm.org.apache.logging.log4j.Level.ERROR
    )
    return spark
