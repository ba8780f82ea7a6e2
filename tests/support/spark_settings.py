"""The Spark settings of the suite: the ``spark`` fixture and tests that start their own Spark use the same."""

from __future__ import annotations

from feedback.config import SparkConfig

TEST_SPARK = SparkConfig(
    master="local[2]",
    app_name="feedback-tests",
    shuffle_partitions=2,
    extra={"spark.ui.enabled": "false", "spark.sql.warehouse.dir": ""},
)
