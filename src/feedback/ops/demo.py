"""``make demo``: the whole product on a simulated week, from landing files to a rewrite served over HTTP.

Simulate → pipeline (bronze, silver, gold) → mine rewrites and register ``query-rewriter`` →
serve its champion with ``mlflow models serve`` on 127.0.0.1, send it the best supported misfire
and one request it does not know, print both, stop the server.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig
from feedback.core.lake import LakePaths
from feedback.core.registry import QUERY_REWRITER, champion_version, configure_mlflow
from feedback.ops.serve import invoke, served_rewriter
from feedback.pipeline import describe_lake, run_pipeline
from feedback.rewrites.mine import run as mine_rewrites
from feedback.simulate import run as simulate

UNKNOWN_REQUEST = "what's the weather like on mars"
"""A request no rewrite covers: the model hands it back unchanged."""


def serve_one_rewrite(spark: SparkSession, lake: LakePaths, log_path: Path) -> str:
    """Serve the lake's ``query-rewriter`` champion and ask it for its best supported rewrite."""
    configure_mlflow(lake)
    if champion_version(MlflowClient(), QUERY_REWRITER) is None:
        return "serving: no query-rewriter champion in this lake (no rewrite table beat rewriting nothing)"
    best = (
        spark.read.format("delta")
        .load(lake.rewrites)
        .orderBy(F.desc("support_users"), F.desc("probability"), F.asc("source_utterance"))
        .select("source_utterance")
        .first()
    )
    utterances = ([best["source_utterance"]] if best is not None else []) + [UNKNOWN_REQUEST]
    with served_rewriter(lake, log_path) as url:
        request, answer = invoke(url, utterances)
    return "\n".join(
        [
            f"serving {QUERY_REWRITER}@champion with `mlflow models serve` at {url} (stopped)",
            f"POST {url}/invocations {json.dumps(request)}",
            f"-> {json.dumps(answer)}",
        ]
    )


def run(spark: SparkSession, config: AppConfig, workdir: Path, lake: LakePaths) -> str:
    """Simulate into ``workdir/traffic``, run everything into ``lake`` (both replaced); the report."""
    traffic = workdir / "traffic"
    for stale in (traffic, Path(lake.root)):
        if stale.exists():
            shutil.rmtree(stale)
    simulation = simulate(config.simulation, traffic)
    summary = run_pipeline(spark, config, traffic / "events", lake)
    mining = mine_rewrites(spark, config, lake, register=True)
    served = serve_one_rewrite(spark, lake, workdir / "serve.log")
    return "\n\n".join(
        [f"simulated: {simulation}", summary.render(), describe_lake(spark, lake, config.privacy.min_users), mining.render(), served]
    )
