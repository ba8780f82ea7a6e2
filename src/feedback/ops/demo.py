"""``make demo``: the whole product on a simulated week, from landing files to a rewrite served over HTTP.

Simulate → pipeline (bronze, silver, gold) → mine rewrites and register ``query-rewriter`` →
serve its champion with ``mlflow models serve`` on 127.0.0.1, send it the best supported misfire
and one request it does not know, print both, stop the server.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import QUERY_REWRITER, champion_version, configure_mlflow
from feedback.ops.kafka import running_broker, start_broker, stop_broker
from feedback.ops.replay import replay
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


DEMO_TOPIC = "demo-interactions"


def run_kafka(spark: SparkSession, config: AppConfig, workdir: Path, lake: LakePaths, broker_root: Path) -> str:
    """The same week through Kafka: replay into a fresh topic, the pipeline from the topic, the tables.

    A broker already running under ``broker_root`` (``make kafka-up``) is used and left running;
    otherwise one is started there and always stopped at the end. Each run publishes to a topic
    of its own, so a rerun never reads an earlier run's messages into its fresh ``lake``.
    """
    traffic = workdir / "traffic"
    for stale in (traffic, Path(lake.root)):
        if stale.exists():
            shutil.rmtree(stale)
    simulation = simulate(config.simulation, traffic)
    broker = running_broker(broker_root)
    started_here = broker is None
    if broker is None:
        broker = start_broker(broker_root)
    topic = f"{DEMO_TOPIC}-{time.strftime('%Y%m%d%H%M%S')}"
    try:
        replayed = replay(traffic / "events", broker.bootstrap_servers, topic)
        kafka = dataclasses.replace(config.ingest.kafka, bootstrap_servers=broker.bootstrap_servers, topic=topic)
        from_kafka = replace_section(config, ingest=dataclasses.replace(config.ingest, source="kafka", kafka=kafka))
        summary = run_pipeline(spark, from_kafka, None, lake)
        tables = describe_lake(spark, lake, config.privacy.min_users)
    finally:
        if started_here:
            stop_broker(broker_root)
    ending = "kafka broker stopped" if started_here else f"kafka broker left running at {broker.bootstrap_servers}"
    return "\n\n".join([f"simulated: {simulation}", replayed.render(), summary.render(), tables, ending])
