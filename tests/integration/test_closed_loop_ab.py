"""``feedback ab`` end to end: the history mined through the real pipeline, both arms judged out of time.

Real simulator, pipeline, miner and MLflow (SQLite under tmp_path). Then ``feedback simulate
--rewriter`` serves the mined version to a treatment arm through the command line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from feedback.cli import main
from feedback.config import AppConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import configure_mlflow
from feedback.ops.ab import EXPERIMENT
from feedback.ops.ab import run as run_ab

HISTORY_DAYS = 3
JUDGED_DAYS = 2


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_ab_mines_the_history_and_judges_the_days_after(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = replace_section(app_config, simulation=dataclasses.replace(app_config.simulation, users=60, seed=31))
    lake = LakePaths.at(tmp_path / "lake")

    report = run_ab(spark, config, lake, None, HISTORY_DAYS, JUDGED_DAYS, tmp_path / "ab.json")

    traffic = Path(lake.training) / "ab-snips-31" / "traffic"
    manifest = json.loads((traffic / "manifest.json").read_text())
    assert (manifest["days"], manifest["users"], manifest["seed"], manifest["rewriter"], manifest["rewritten"]) == (3, 60, 31, None, 0)
    judged_from = dt.datetime.fromisoformat(config.simulation.start_date) + dt.timedelta(days=HISTORY_DAYS)
    history_ts = [dt.datetime.fromisoformat(str(r["ts"])).astimezone(dt.timezone.utc).replace(tzinfo=None) for r in read_jsonl(traffic / "ground_truth.jsonl")]
    assert len(history_ts) == manifest["events"] and max(history_ts) < judged_from

    assert (report.rewriter, report.history_days, report.judged_days, report.users) == ("models:/query-rewriter/1", 3, 2, 60)
    assert [layer.layer for layer in report.layers] == ["precomputed"]
    layer = report.layers[0]
    assert layer.rewritten >= layer.fixed + layer.broken + layer.still_defective and layer.fixed > layer.broken
    assert report.treatment.defective < report.control.defective
    assert json.loads((tmp_path / "ab.json").read_text()) == json.loads(json.dumps(report.as_dict()))

    configure_mlflow(lake)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.params["rewriter"] == "models:/query-rewriter/1"
    assert logged.data.metrics["treatment_defective"] == report.treatment.defective
    assert logged.data.metrics["precomputed_fixed"] == layer.fixed

    out = tmp_path / "treated"
    history_lake = lake.training_lake("ab-snips-31")
    argv = ["simulate", "--out", str(out), "--users", "60", "--days", "5", "--seed", "31"]
    argv += ["--rewriter", "models:/query-rewriter/1", "--rewrite-from-day", "3", "--lake", history_lake.root]
    assert main(argv) == 0
    capsys.readouterr()
    treated = json.loads((out / "manifest.json").read_text())
    truth = read_jsonl(out / "ground_truth.jsonl")
    rewritten = [r for r in truth if r["rewrite"] is not None]
    assert treated["rewriter"] == "models:/query-rewriter/1"
    assert treated["rewritten"] == len(rewritten) > 0
    assert {r["rewrite_layer"] for r in rewritten} == {"precomputed"}
    assert min(dt.datetime.fromisoformat(str(r["ts"])).astimezone(dt.timezone.utc).replace(tzinfo=None) for r in rewritten) >= judged_from
    assert all(r["rewrite"] is None and r["defective_as_heard"] is None for r in truth if r["rewrite_layer"] is None)
