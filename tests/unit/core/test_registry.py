"""The champion rule on a real MLflow registry (SQLite under tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from feedback.core.lake import LakePaths
from feedback.core.registry import (
    CHAMPION_ALIAS,
    apply_champion_rule,
    beats_champion,
    champion_version,
    configure_mlflow,
    ensure_experiment,
    tracking_uri_for,
)

MODEL = "test-model"


@pytest.fixture()
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = configure_mlflow(LakePaths.at(tmp_path / "lake"))
    assert uri == f"sqlite:///{tmp_path / 'lake' / 'mlflow' / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # a later lake in this process must not inherit this store
    # The active experiment of an earlier test lives in another store; artifacts stay under the lake, not the cwd.
    mlflow.set_experiment(experiment_id=ensure_experiment(LakePaths.at(tmp_path / "lake"), "registry-test"))
    registry = MlflowClient()
    registry.create_registered_model(MODEL)
    source = tmp_path / "model"
    source.mkdir()
    for _ in range(4):
        registry.create_model_version(MODEL, source=source.as_uri())
    return registry


def test_tracking_uri_defaults_to_the_lake_and_honours_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri_for(LakePaths.at(tmp_path)) == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri_for(LakePaths.at(tmp_path)) == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("candidate", "champion", "allow_equal", "expected"),
    [(0.9, None, False, True), (0.9, 0.8, False, True), (0.8, 0.8, False, False), (0.8, 0.8, True, True), (0.7, 0.8, True, False)],
)
def test_beats_champion(candidate: float, champion: float | None, allow_equal: bool, expected: bool) -> None:
    assert beats_champion(candidate, champion, allow_equal=allow_equal) is expected


def test_alias_moves_only_to_a_better_version(client: MlflowClient) -> None:
    assert champion_version(client, MODEL) is None
    first = apply_champion_rule(client, MODEL, "1", "link_f1", 0.90, None, allow_equal=False)
    assert (first.promoted, first.champion_version) == (True, None)
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "1"

    worse = apply_champion_rule(client, MODEL, "2", "link_f1", 0.85, 0.90, allow_equal=False)
    tie = apply_champion_rule(client, MODEL, "3", "link_f1", 0.90, 0.90, allow_equal=False)
    assert (worse.promoted, tie.promoted) == (False, False)
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "1"
    assert client.get_model_version(MODEL, "2").tags == {
        "champion_decision": "rejected",
        "eval_link_f1": "0.850000",
        "compared_with_version": "1",
        "compared_with_link_f1": "0.900000",
        "champion_refused": "link_f1=0.850000 does not beat champion v1 (0.900000)",
    }

    with mlflow.start_run() as run:
        better = apply_champion_rule(client, MODEL, "4", "link_f1", 0.95, 0.90, allow_equal=False)
    assert better.promoted and better.champion_version == "1"
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "4"
    logged = client.get_run(run.info.run_id).data.metrics
    assert logged == {"candidate_link_f1": 0.95, "champion_link_f1": 0.90, "promoted": 1.0}


def test_champion_score_is_required_once_there_is_a_champion(client: MlflowClient) -> None:
    apply_champion_rule(client, MODEL, "1", "win_loss", 12.0, None, allow_equal=True)
    with pytest.raises(ValueError, match="champion_score"):
        apply_champion_rule(client, MODEL, "2", "win_loss", 13.0, None, allow_equal=True)
    equal = apply_champion_rule(client, MODEL, "2", "win_loss", 12.0, 12.0, allow_equal=True)
    assert equal.promoted


def test_first_version_must_beat_the_baseline_when_asked(client: MlflowClient) -> None:
    weak = apply_champion_rule(client, MODEL, "1", "link_f1", 0.81, None, allow_equal=False, baseline=("heuristic-v1", 0.90))
    assert (weak.promoted, weak.baseline, weak.baseline_score) == (False, "heuristic-v1", 0.90)
    assert champion_version(client, MODEL) is None
    assert client.get_model_version(MODEL, "1").tags["compared_with_version"] == "heuristic-v1"
    strong = apply_champion_rule(client, MODEL, "2", "link_f1", 0.95, None, allow_equal=False, baseline=("heuristic-v1", 0.90))
    assert strong.promoted
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION_ALIAS).version) == "2"


def test_no_version_takes_the_alias_without_beating_the_floor(client: MlflowClient) -> None:
    identity = ("identity", 0.0)
    with mlflow.start_run() as run:
        level = apply_champion_rule(client, MODEL, "1", "net", 0.0, None, allow_equal=True, floor=identity)
    assert (level.promoted, level.refused) == (False, "net=0.000000 does not beat identity (0.000000)")
    assert client.get_registered_model(MODEL).aliases == {}
    assert client.get_model_version(MODEL, "1").tags["champion_refused"] == level.refused
    assert client.get_run(run.info.run_id).data.tags["champion_refused"] == level.refused
    assert client.get_run(run.info.run_id).data.metrics == {"candidate_net": 0.0, "floor_net": 0.0, "promoted": 0.0}
    assert level.describe().endswith(f"kept as challenger, champion refused: {level.refused}")

    assert apply_champion_rule(client, MODEL, "2", "net", 0.1, None, allow_equal=True, floor=identity).promoted
    assert client.get_registered_model(MODEL).aliases == {CHAMPION_ALIAS: 2}
    # On a new evaluation set the champion scores -0.2 too: no worse than it is not enough.
    tie = apply_champion_rule(client, MODEL, "3", "net", -0.2, -0.2, allow_equal=True, floor=identity)
    assert (tie.promoted, tie.champion_version) == (False, "2")
    assert client.get_registered_model(MODEL).aliases == {CHAMPION_ALIAS: 2}
    below = apply_champion_rule(client, MODEL, "4", "net", 0.05, 0.1, allow_equal=True, floor=identity)
    assert below.refused == "net=0.050000 is below champion v2 (0.100000)"
    with pytest.raises(TypeError, match="floor"):
        apply_champion_rule(client, MODEL, "4", "net", 0.5, 0.1, allow_equal=True, floor=0.0)  # type: ignore[arg-type]
