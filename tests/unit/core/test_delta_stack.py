"""The pinned stack works together: a real Delta write, append and time travel on the test Spark."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual


def test_delta_round_trip_with_time_travel(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    ts = dt.datetime(2026, 11, 2, 10, 0, 0)
    first = spark.createDataFrame([("e1", ts, "play jazz"), ("e2", ts, "stop")], "event_id string, ts timestamp, utterance string")
    first.write.format("delta").save(path)
    first.limit(1).write.format("delta").mode("append").save(path)
    assert spark.read.format("delta").load(path).count() == 3
    assertDataFrameEqual(spark.read.format("delta").option("versionAsOf", 0).load(path), first)
