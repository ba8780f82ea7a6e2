"""The query-rewriter in the MLflow registry: the champion rule on real registrations, and serving the champion over HTTP."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from delta.tables import DeltaTable
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from feedback.config import AppConfig, MiningConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import CHAMPION_ALIAS, QUERY_REWRITER, champion_uri, configure_mlflow
from feedback.core.schema import SILVER_PARTITION_COLUMNS
from feedback.ops.serve import invoke, served_rewriter
from feedback.rewrites.mine import MiningResult
from feedback.rewrites.mine import run as mine
from feedback.rewrites.register import register_rewriter, start_mining_run

from support.mining_data import HAND_CHAINS, silver_frame
from support.rewrite_truth import LONDON, PARIS, truth_record


@pytest.fixture(scope="module")
def registered(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LakePaths, MiningResult]]:
    """The hand example's lake, mined once with registration (version 1 of query-rewriter, the champion)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        lake = LakePaths.at(tmp_path_factory.mktemp("registered") / "lake")
        silver_frame(spark, HAND_CHAINS).write.format("delta").partitionBy(*SILVER_PARTITION_COLUMNS).save(lake.silver_turns)
        config = replace_section(AppConfig(), mining=dataclasses.replace(MiningConfig(), register=True))
        yield lake, mine(spark, config, lake)


def register_version(spark: SparkSession, lake: LakePaths, table_version: int) -> str:
    """Register ``gold/rewrites@table_version`` as a new version through the mining run's own code path."""
    configure_mlflow(lake)
    with start_mining_run(lake, MiningConfig()):
        return register_rewriter(spark, lake, AppConfig(), table_version)


def champion_number() -> str:
    return str(MlflowClient().get_model_version_by_alias(QUERY_REWRITER, CHAMPION_ALIAS).version)


def test_champion_moves_only_when_no_worse(spark: SparkSession, registered: tuple[LakePaths, MiningResult]) -> None:
    lake, first = registered
    configure_mlflow(lake)
    assert first.rewrites == 1 and "v1" in str(first.registration) and "promoted" in str(first.registration)
    assert champion_number() == "1"

    # The consumer path: the champion by alias, through pyfunc.
    model = mlflow.pyfunc.load_model(champion_uri(QUERY_REWRITER))
    result = model.predict(pd.DataFrame({"utterance": [" A!", "b"]}))
    assert result.to_dict(orient="list") == {
        "utterance": [" A!", "b"],
        "rewrite": ["b", "b"],
        "probability": [round(3 / 7, 12), 0.0],
        "rewritten": [True, False],
        "layer": ["precomputed", "none"],
    }

    # Lineage: the run's input is the rewrite table at the version the model holds; metrics sit on the model.
    client = MlflowClient()
    source = json.loads(client.get_run(first.run_id).inputs.dataset_inputs[0].dataset.source)
    assert (source["path"], source["delta_table_version"]) == (lake.rewrites, first.table_version)
    model_id = client.get_run(first.run_id).outputs.model_outputs[0].model_id
    assert client.get_model_version(QUERY_REWRITER, "1").source == f"models:/{model_id}"
    logged = mlflow.get_logged_model(model_id)
    metrics = {m.key: m.value for m in logged.metrics}
    assert (metrics["wins"], metrics["losses"], metrics["net_fixed_share"]) == (2.0, 1.0, pytest.approx(1 / 6))

    # An emptied table fixes nothing: version 2 does no better than the identity and stays a challenger.
    DeltaTable.forPath(spark, lake.rewrites).delete()
    emptied = int(DeltaTable.forPath(spark, lake.rewrites).history(1).first()["version"])
    assert "kept as challenger" in register_version(spark, lake, emptied)
    assert champion_number() == "1"
    tags = client.get_model_version(QUERY_REWRITER, "2").tags
    assert (tags["champion_decision"], tags["champion_refused"]) == (
        "rejected",
        "net_fixed_share=0.000000 does not beat the identity rewriter (0.000000)",
    )

    # The first table again: no worse than the champion (equal), so version 3 takes the alias.
    assert "promoted" in register_version(spark, lake, first.table_version)
    assert champion_number() == "3"
    assert client.get_model_version(QUERY_REWRITER, "3").tags["compared_with_version"] == "1"


def identity_truth(path: Path, a_means: tuple[str, dict[str, str]]) -> Path:
    """Ground truth in which ``a`` (defective twice) means ``a_means`` and ``b`` is served as Paris."""
    records = [
        truth_record("a1", "a", *a_means, defective=True),
        truth_record("a2", "a", *a_means, defective=True),
        truth_record("b1", "b", *PARIS, defective=False),
        truth_record("b2", "b", *PARIS, defective=False),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_only_a_version_that_beats_the_identity_becomes_champion(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake = LakePaths.at(tmp_path / "lake")
    silver_frame(spark, HAND_CHAINS).write.format("delta").partitionBy(*SILVER_PARTITION_COLUMNS).save(lake.silver_turns)
    config = replace_section(AppConfig(), mining=dataclasses.replace(MiningConfig(), register=True))
    # The mined a -> b (Paris) on traffic where a means London: 0 wins, 2 losses, net_fixed_share -1.
    losing = identity_truth(tmp_path / "losing.jsonl", LONDON)
    winning = identity_truth(tmp_path / "winning.jsonl", PARIS)

    first = mine(spark, config, lake, losing)
    configure_mlflow(lake)
    client = MlflowClient()
    assert client.get_registered_model(QUERY_REWRITER).aliases == {}
    refused = "net_fixed_share=-1.000000 does not beat the identity rewriter (0.000000)"
    assert client.get_model_version(QUERY_REWRITER, "1").tags["champion_refused"] == refused
    assert client.get_run(first.run_id).data.tags["champion_refused"] == refused
    assert f"kept as challenger, champion refused: {refused}" in first.render()

    # The same table where a means Paris: 2 wins, net_fixed_share 1 -> champion.
    second = mine(spark, config, lake, winning)
    configure_mlflow(lake)
    assert "promoted to champion" in str(second.registration)
    assert client.get_registered_model(QUERY_REWRITER).aliases == {CHAMPION_ALIAS: 2}
    assert "champion_refused" not in client.get_model_version(QUERY_REWRITER, "2").tags

    # Back on the losing traffic, version 3 ties the champion (the same table, -1 each): no worse
    # than the champion, yet no better than rewriting nothing, so the alias stays.
    third = mine(spark, config, lake, losing)
    configure_mlflow(lake)
    assert "kept as challenger" in str(third.registration)
    assert client.get_registered_model(QUERY_REWRITER).aliases == {CHAMPION_ALIAS: 2}
    assert client.get_model_version(QUERY_REWRITER, "3").tags["champion_refused"] == refused


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(registered: tuple[LakePaths, MiningResult], tmp_path: Path) -> None:
    lake, _ = registered
    with served_rewriter(lake, tmp_path / "serve.log") as url:
        _, answer = invoke(url, ["A", "hello there"])
        assert answer == {
            "predictions": [
                {"utterance": "A", "rewrite": "b", "probability": round(3 / 7, 12), "rewritten": True, "layer": "precomputed"},
                {"utterance": "hello there", "rewrite": "hello there", "probability": 0.0, "rewritten": False, "layer": "none"},
            ]
        }
