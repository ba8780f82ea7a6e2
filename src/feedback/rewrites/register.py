"""Registration of ``gold/rewrites`` as the MLflow pyfunc model ``query-rewriter``
(served by ``feedback.rewrites.pyfunc``, logged from code: ``feedback/rewrites/model.py``).

Registration logs the rewrite table's Delta version as the run's input dataset, the mining
thresholds as parameters and the offline evaluation as metrics of the logged model; the alias
``champion`` moves to the new version only when it beats the identity rewriter (no rewrite at
all: ``net_fixed_share`` 0) and is no worse than the current champion on the same evaluation
(``feedback.core.registry.apply_champion_rule`` with ``allow_equal=True`` and the identity as floor).
A version refused the alias stays registered, tagged ``champion_refused`` with the reason.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from feedback.config import AppConfig, MiningConfig
from feedback.core.lake import LakePaths
from feedback.core.registry import (
    QUERY_REWRITER,
    apply_champion_rule,
    champion_version,
    configure_mlflow,
    ensure_experiment,
)
from feedback.rewrites import evaluate as rewrite_eval
from feedback.rewrites.pyfunc import ARTIFACT_KEY, load_table, model_signature, table_from_frame

LOG = logging.getLogger("feedback.rewrites.register")

ARTIFACT_FILE = "rewrites.json"
MODEL_NAME_IN_RUN = "query-rewriter"
MODEL_CODE = str(Path(__file__).with_name("model.py"))
"""The model-from-code file MLflow logs and runs at load time (it builds a ``QueryRewriter``)."""
CHAMPION_METRIC = "net_fixed_share"
"""(wins - losses) / defective requests, by traffic: what rewriting would change, net, per defect seen."""
IDENTITY_REWRITER = "the identity rewriter"
IDENTITY_SCORE = 0.0
"""``net_fixed_share`` of rewriting nothing (no wins, no losses): a rewriter must score above it to serve."""

def read_rewrites(spark: SparkSession, path: str, version: int | None = None) -> pd.DataFrame:
    """The rewrite table (at Delta ``version`` when given) as pandas, sorted by source."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    frame = reader.load(path).select("source_utterance", "rewrite_utterance", "probability").toPandas()
    return frame.sort_values("source_utterance", kind="stable").reset_index(drop=True)


@contextmanager
def start_mining_run(lake: LakePaths, mining: MiningConfig) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in the lake's store under ``mining.experiment``; its id becomes the rows' ``run_id``."""
    configure_mlflow(lake)
    ensure_experiment(lake, mining.experiment)
    with mlflow.start_run(run_name="mine-rewrites") as active:
        yield active


def _mining_params(mining: MiningConfig) -> dict[str, Any]:
    return {f"mining.{key}": value for key, value in asdict(mining).items()}


def register_rewriter(
    spark: SparkSession,
    lake: LakePaths,
    config: AppConfig,
    table_version: int,
    truth_path: str | Path | None = None,
) -> str:
    """Log ``gold/rewrites@table_version`` as a new version of ``query-rewriter`` and apply the champion rule.

    Call inside an active run (``start_mining_run``). Both the new version and the current
    champion are scored on the same evaluation: the simulator's ground truth when
    ``truth_path`` is given, else the implicit evaluation from ``silver/turns``. Every version,
    the first included, must beat the identity rewriter, because a table that breaks as much as
    it fixes should not be served even when nothing else is. Returns the decision in words.
    """
    if mlflow.active_run() is None:
        raise ValueError("register_rewriter needs an active MLflow run (use start_mining_run)")
    frame = read_rewrites(spark, lake.rewrites, table_version)
    with warnings.catch_warnings():
        # The dataset's schema hint about integer columns concerns model signatures, not a logged input.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
        # An int, as load_delta stores when it infers the version itself.
        dataset = mlflow.data.load_delta(path=lake.rewrites, version=table_version, name=f"gold/rewrites@v{table_version}")  # type: ignore[arg-type]
        mlflow.log_input(dataset, context="rewrites")
    mlflow.log_params(_mining_params(config.mining) | {"rewrites.delta_version": table_version, "rewrites.rows": len(frame)})
    with tempfile.TemporaryDirectory(prefix="query-rewriter-") as scratch:
        artifact = Path(scratch) / ARTIFACT_FILE
        artifact.write_text(json.dumps(frame.to_dict(orient="records"), ensure_ascii=False), encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=MODEL_CODE,
            artifacts={ARTIFACT_KEY: str(artifact)},
            signature=model_signature(),
            input_example=pd.DataFrame({"utterance": frame["source_utterance"].head(2).tolist() or ["play the beatles"]}),
            registered_model_name=QUERY_REWRITER,
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"pandas=={pd.__version__}"],
        )
    version = str(info.registered_model_version)
    traffic = rewrite_eval.evaluation_traffic(spark, lake, truth_path)
    candidate = rewrite_eval.evaluate_rewrites(rewrite_eval.rewrites_frame(spark, table_from_frame(frame)), traffic)
    mlflow.log_metrics(candidate.metrics(), model_id=info.model_id)
    mlflow.set_tag("evaluation", "ground truth" if truth_path is not None else "implicit (silver)")
    client = MlflowClient()
    current = champion_version(client, QUERY_REWRITER)
    champion_score: float | None = None
    if current is not None:
        champion_table = load_table(f"models:/{QUERY_REWRITER}/{current.version}")
        champion = rewrite_eval.evaluate_rewrites(rewrite_eval.rewrites_frame(spark, champion_table), traffic)
        champion_score = champion.metrics()[CHAMPION_METRIC]
    decision = apply_champion_rule(
        client,
        QUERY_REWRITER,
        version,
        CHAMPION_METRIC,
        candidate.net_fixed_share,
        champion_score,
        allow_equal=True,
        floor=(IDENTITY_REWRITER, IDENTITY_SCORE),
    )
    return decision.describe()

