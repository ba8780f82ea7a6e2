"""The query rewriter: ``gold/rewrites`` as the MLflow pyfunc model ``query-rewriter``.

A consumer (the assistant's request path, or ``mlflow models serve``) sends a DataFrame with an
``utterance`` column and gets, per row, the rewrite or the original, the rewrite's absorption
probability and whether it was rewritten. Lookups use the same normalisation as silver's
``normalized_utterance`` (``feedback.silver.sessionize.normalize_utterance``), re-implemented here in
plain Python because the model must not need Spark at serving time.

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
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema
from pyspark.sql import SparkSession

from feedback.config import AppConfig, MiningConfig
from feedback.core.registry import (
    QUERY_REWRITER,
    apply_champion_rule,
    champion_version,
    configure_mlflow,
    ensure_experiment,
)
from feedback.core.schema import LakePaths

LOG = logging.getLogger("feedback.rewrites.register")

ARTIFACT_KEY = "rewrites"
ARTIFACT_FILE = "rewrites.json"
MODEL_NAME_IN_RUN = "query-rewriter"
MODEL_CODE = str(Path(__file__).with_name("model.py"))
"""The model-from-code file MLflow logs and runs at load time (it builds a ``QueryRewriter``)."""
CHAMPION_METRIC = "net_fixed_share"
"""(wins - losses) / defective requests, by traffic: what rewriting would change, net, per defect seen."""
IDENTITY_REWRITER = "the identity rewriter"
IDENTITY_SCORE = 0.0
"""``net_fixed_share`` of rewriting nothing (no wins, no losses): a rewriter must score above it to serve."""

_NOT_WORD = re.compile(r"[^\w']|_")
_SPACES = re.compile(r" +")

RewriteTable = dict[str, tuple[str, float]]
"""normalized source utterance -> (rewrite utterance, probability)."""


def normalize_text(text: str) -> str:
    """Python twin of ``sessionize.normalize_utterance``: lower case, non letters/digits/apostrophes to spaces, collapsed.

    ``\\w`` minus ``_`` is exactly Unicode letters and numbers (``str.isalnum``), which is what
    Java's ``[\\p{L}\\p{N}]`` matches in Spark.

    Example:
        >>> normalize_text("  Play THE Beatles!! don't_stop ")
        "play the beatles don't stop"
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", text.lower())).strip(" ")


def table_from_frame(frame: pd.DataFrame) -> RewriteTable:
    """A ``RewriteTable`` from rows with ``source_utterance``, ``rewrite_utterance`` and ``probability``."""
    missing = {"source_utterance", "rewrite_utterance", "probability"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame is missing columns {sorted(missing)}")
    return {
        str(source): (str(rewrite), float(probability))
        for source, rewrite, probability in zip(frame["source_utterance"], frame["rewrite_utterance"], frame["probability"])
    }


def rewrite_frame(table: Mapping[str, tuple[str, float]], utterances: pd.Series) -> pd.DataFrame:
    """Apply ``table`` to ``utterances``: columns ``utterance``, ``rewrite``, ``probability``, ``rewritten``.

    A row not in the table keeps its original text (not the normalized one), probability 0.
    Missing values (None/NaN) pass through unchanged as empty strings are not requests.
    """
    originals = utterances.astype(object).where(utterances.notna(), "").astype(str)
    hits = [table.get(normalize_text(text)) for text in originals]
    return pd.DataFrame(
        {
            "utterance": originals.to_numpy(),
            "rewrite": [hit[0] if hit else text for hit, text in zip(hits, originals)],
            "probability": [hit[1] if hit else 0.0 for hit in hits],
            "rewritten": [hit is not None for hit in hits],
        }
    )


class QueryRewriter(mlflow.pyfunc.PythonModel):
    """The pyfunc model: a dictionary lookup loaded from the logged rewrite table."""

    def __init__(self, table: Mapping[str, tuple[str, float]] | None = None) -> None:
        self._table: RewriteTable = dict(table or {})

    @property
    def table(self) -> RewriteTable:
        """The rewrite table this model applies."""
        return dict(self._table)

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Read the rewrite table artifact (JSON records) logged with the model."""
        path = Path(context.artifacts[ARTIFACT_KEY])
        records = json.loads(path.read_text(encoding="utf-8"))
        self._table = table_from_frame(pd.DataFrame.from_records(records, columns=["source_utterance", "rewrite_utterance", "probability"]))

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext | None, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Rewrite the ``utterance`` column (see ``rewrite_frame``)."""
        if not isinstance(model_input, pd.DataFrame):
            raise TypeError(f"model_input must be a pandas DataFrame, got {type(model_input).__name__}")
        if "utterance" not in model_input.columns:
            raise ValueError(f"model_input needs an 'utterance' column, got {list(model_input.columns)}")
        return rewrite_frame(self._table, model_input["utterance"])


def model_signature() -> ModelSignature:
    """Input: ``utterance``; output: ``utterance``, ``rewrite``, ``probability``, ``rewritten``."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", "utterance")]),
        outputs=Schema(
            [
                ColSpec("string", "utterance"),
                ColSpec("string", "rewrite"),
                ColSpec("double", "probability"),
                ColSpec("boolean", "rewritten"),
            ]
        ),
    )


def read_rewrites(spark: SparkSession, path: str, version: int | None = None) -> pd.DataFrame:
    """The rewrite table (at Delta ``version`` when given) as pandas, sorted by source."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    frame = reader.load(path).select("source_utterance", "rewrite_utterance", "probability").toPandas()
    return frame.sort_values("source_utterance", kind="stable").reset_index(drop=True)


def load_table(model_uri: str) -> RewriteTable:
    """The rewrite table inside a logged or registered ``query-rewriter`` (e.g. ``models:/query-rewriter@champion``)."""
    model = mlflow.pyfunc.load_model(model_uri)
    inner = model.unwrap_python_model()
    if not isinstance(inner, QueryRewriter):
        raise TypeError(f"{model_uri} is not a query rewriter, it wraps {type(inner).__name__}")
    return inner.table


@contextmanager
def start_mining_run(lake: LakePaths, mining: MiningConfig) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in the lake's store under ``mining.experiment``; its id becomes the rows' ``run_id``."""
    configure_mlflow(lake.root)
    ensure_experiment(lake.root, mining.experiment)
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
    from feedback.rewrites import evaluate as rewrite_eval

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

