"""Local checkpoints are freed when released, unlike with ``DataFrame.unpersist``."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.core.checkpoints import checkpointed, persistent_rdd_ids, release


def test_checkpointed_holds_blocks_inside_the_block_only(spark: SparkSession) -> None:
    before = persistent_rdd_ids(spark)
    frame = spark.range(10).withColumn("twice", F.col("id") * 2)
    with checkpointed(frame) as materialized:
        assert len(persistent_rdd_ids(spark) - before) == 1
        assertDataFrameEqual(materialized, frame)
    assert persistent_rdd_ids(spark) - before == frozenset()


def test_unpersist_alone_keeps_a_checkpoint_held(spark: SparkSession) -> None:
    before = persistent_rdd_ids(spark)
    materialized = spark.range(5).localCheckpoint(eager=True)
    materialized.unpersist()
    assert len(persistent_rdd_ids(spark) - before) == 1
    release(materialized)
    assert persistent_rdd_ids(spark) - before == frozenset()


def test_release_refuses_a_frame_that_is_not_a_checkpoint(spark: SparkSession) -> None:
    with pytest.raises(ValueError, match="frame must be the result of localCheckpoint, got a plan of Range"):
        release(spark.range(3))
