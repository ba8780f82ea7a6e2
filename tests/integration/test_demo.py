"""``feedback demo`` shows the whole product: traffic to tables to a rewrite served over HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from feedback.config import AppConfig, SimulationConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.ops.demo import UNKNOWN_REQUEST
from feedback.ops.demo import run as demo


@pytest.mark.slow
def test_the_demo_goes_from_simulated_traffic_to_a_served_rewrite(
    spark: SparkSession, app_config: AppConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = replace_section(app_config, simulation=SimulationConfig(users=40, days=3, seed=11))
    report = demo(spark, config, tmp_path / "demo", LakePaths.at(tmp_path / "demo" / "lake"))
    lake = tmp_path / "demo" / "lake"
    rewrites = spark.read.format("delta").load(str(lake / "gold" / "rewrites"))
    best = rewrites.orderBy(rewrites.support_users.desc(), rewrites.probability.desc(), rewrites.source_utterance).first()
    request = re.search(r"^POST http://127\.0\.0\.1:\d+/invocations (.*)$", report, re.MULTILINE)
    answer = re.search(r"^-> (.*)$", report, re.MULTILINE)
    assert request is not None and answer is not None, report[-2000:]
    assert json.loads(request.group(1)) == {
        "dataframe_records": [{"utterance": best["source_utterance"]}, {"utterance": UNKNOWN_REQUEST}]
    }
    assert json.loads(answer.group(1)) == {
        "predictions": [
            {
                "utterance": best["source_utterance"],
                "rewrite": best["rewrite_utterance"],
                "probability": pytest.approx(best["probability"]),
                "rewritten": True,
                "layer": "precomputed",
            },
            {"utterance": UNKNOWN_REQUEST, "rewrite": UNKNOWN_REQUEST, "probability": 0.0, "rewritten": False, "layer": "none"},
        ]
    }
    assert "(stopped)" in report
