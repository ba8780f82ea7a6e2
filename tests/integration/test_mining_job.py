"""The mining job on a real lake: the Delta MERGE by source, its history, vetoes, and the refusal to empty the table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from feedback.config import AppConfig, MiningConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.schema import REWRITE_VETOES_SCHEMA, SILVER_PARTITION_COLUMNS
from feedback.rewrites.mine import (
    MiningRefused,
    add_veto,
    run,
)

from support.mining_data import HAND_CHAINS, Chain, silver_frame


def write_silver(spark: SparkSession, lake: LakePaths, chains: list[Chain]) -> None:
    silver_frame(spark, chains).write.format("delta").mode("overwrite").partitionBy(*SILVER_PARTITION_COLUMNS).save(
        lake.silver_turns
    )


def test_run_merges_by_source_and_keeps_the_history(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    lake = LakePaths.at(tmp_path / "lake")
    config = replace_section(app_config, mining=dataclasses.replace(MiningConfig(), register=False))
    with pytest.raises(ValueError, match="run `feedback pipeline` into this lake first"):
        run(spark, config, lake)
    d_chains = [Chain(f"w{i}", ("d", "e"), True) for i in range(2)]
    write_silver(spark, lake, HAND_CHAINS + d_chains)

    first = run(spark, config, lake)
    assert (first.rewrites, first.states, first.components) == (2, 5, 2)
    history = DeltaTable.forPath(spark, lake.rewrites)
    assert [r["operation"] for r in history.history().orderBy("version").collect()] == ["CREATE TABLE", "MERGE"]
    vetoes_table = spark.read.format("delta").load(lake.rewrite_vetoes)
    assert vetoes_table.count() == 0 and vetoes_table.schema == REWRITE_VETOES_SCHEMA

    # New chains f -> e, and a veto on d -> e (typed as a user would; stored normalized):
    # a is unchanged and keeps its first run id, d is deleted, f is inserted.
    f_chains = [Chain(f"x{i}", ("f", "e"), True) for i in range(2)]
    write_silver(spark, lake, HAND_CHAINS + d_chains + f_chains)
    add_veto(spark, lake, "  D!", "E", "sounds wrong")
    second = run(spark, config, lake)
    assert second.table_version == first.table_version + 1
    metrics = history.history(1).first()["operationMetrics"]
    assert (metrics["numTargetRowsUpdated"], metrics["numTargetRowsInserted"], metrics["numTargetRowsDeleted"]) == ("0", "1", "1")
    current = spark.read.format("delta").load(lake.rewrites)
    assert sorted((r["source_utterance"], r["rewrite_utterance"], r["run_id"]) for r in current.collect()) == [
        ("a", "b", first.run_id),
        ("f", "e", second.run_id),
    ]
    before = spark.read.format("delta").option("versionAsOf", first.table_version).load(lake.rewrites)
    assert sorted(r["source_utterance"] for r in before.collect()) == ["a", "d"]
    stored = spark.read.format("delta").load(lake.rewrite_vetoes).collect()
    assert [(r["source_utterance"], r["rewrite_utterance"], r["reason"]) for r in stored] == [("d", "e", "sounds wrong")]


# Four independent rephrase pairs, each taken by two users who then succeeded: four rewrites.
FOUR_PAIRS = [("k", "kk"), ("l", "ll"), ("m", "mm"), ("n", "nn")]


FOUR_CHAINS = [Chain(f"p{source}{i}", (source, target), True) for source, target in FOUR_PAIRS for i in range(2)]


def live_rewrites(spark: SparkSession, lake: LakePaths) -> DataFrame:
    """The live table without ``mined_at`` (wall-clock time of the run that wrote it)."""
    return spark.read.format("delta").load(lake.rewrites).drop("mined_at")


def test_a_run_that_would_empty_the_table_is_refused(spark: SparkSession, app_config: AppConfig, tmp_path: Path) -> None:
    lake = LakePaths.at(tmp_path / "lake")
    config = replace_section(app_config, mining=dataclasses.replace(MiningConfig(), register=False))
    write_silver(spark, lake, FOUR_CHAINS)
    first = run(spark, config, lake)
    expected = spark.createDataFrame(
        [(source, target, 1.0, 2, 2, 0.0, 1.0, first.run_id) for source, target in FOUR_PAIRS],
        "source_utterance string, rewrite_utterance string, probability double, support_users long, "
        "support_chains long, source_success_rate double, target_success_rate double, run_id string",
    )
    assertDataFrameEqual(live_rewrites(spark, lake), expected)
    history = DeltaTable.forPath(spark, lake.rewrites)

    # An empty silver mines no chains: deleting 4 of 4 live rewrites is above the default 0.5.
    write_silver(spark, lake, [])
    with pytest.raises(MiningRefused, match=r"delete 4 of the 4 live rewrites .*max_delete_share=0\.5") as refused:
        run(spark, config, lake)
    assert (refused.value.deleted, refused.value.live) == (4, 4)
    assertDataFrameEqual(live_rewrites(spark, lake), expected)
    assert history.history(1).first()["version"] == first.table_version

    # One pair left: 3 of 4 (0.75) is still too many.
    write_silver(spark, lake, [c for c in FOUR_CHAINS if c.utterances[0] == "k"])
    with pytest.raises(MiningRefused, match="delete 3 of the 4"):
        run(spark, config, lake)
    assertDataFrameEqual(live_rewrites(spark, lake), expected)

    # Allowed to delete everything, the same empty run goes through.
    write_silver(spark, lake, [])
    emptied = run(spark, replace_section(config, mining=dataclasses.replace(config.mining, max_delete_share=1.0)), lake)
    assert (emptied.rewrites, emptied.table_version) == (0, first.table_version + 1)
    assert spark.read.format("delta").load(lake.rewrites).count() == 0
    metrics = history.history(1).first()["operationMetrics"]
    assert metrics["numTargetRowsDeleted"] == "4"
