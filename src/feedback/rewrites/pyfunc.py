"""The ``query-rewriter`` model as served: a dictionary lookup, with no Spark.

A consumer (the assistant's request path, or ``mlflow models serve``) sends a DataFrame with an
``utterance`` column and gets, per row, the rewrite or the original, the rewrite's absorption
probability, whether it was rewritten and by which layer (``precomputed``, or ``none``). Lookups use the same normalisation as silver's
``normalized_utterance`` (``feedback.silver.sessionize.normalize_utterance``), re-implemented here in
plain Python: the model loads and serves with mlflow and pandas only (its ``pip_requirements``),
and this module imports nothing else (``tests/unit/rewrites/test_rewriter.py`` checks that pyspark stays out).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

ARTIFACT_KEY = "rewrites"
"""The logged artifact that holds the rewrite table (JSON records)."""

_NOT_WORD = re.compile(r"[^\w']|_")
_SPACES = re.compile(r" +")

RewriteTable = dict[str, tuple[str, float]]
"""normalized source utterance -> (rewrite utterance, probability)."""

PRECOMPUTED = "precomputed"
"""The ``layer`` of a rewrite found in the mined table (an exact lookup)."""
NO_LAYER = "none"
"""The ``layer`` of a request handed back as it came."""


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
    """Apply ``table`` to ``utterances``: columns ``utterance``, ``rewrite``, ``probability``, ``rewritten``, ``layer``.

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
            "layer": [PRECOMPUTED if hit else NO_LAYER for hit in hits],
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
    """Input: ``utterance``; output: ``utterance``, ``rewrite``, ``probability``, ``rewritten``, ``layer``."""
    return ModelSignature(
        inputs=Schema([ColSpec("string", "utterance")]),
        outputs=Schema(
            [
                ColSpec("string", "utterance"),
                ColSpec("string", "rewrite"),
                ColSpec("double", "probability"),
                ColSpec("boolean", "rewritten"),
                ColSpec("string", "layer"),
            ]
        ),
    )


def load_table(model_uri: str) -> RewriteTable:
    """The rewrite table inside a logged or registered ``query-rewriter`` (e.g. ``models:/query-rewriter@champion``)."""
    model = mlflow.pyfunc.load_model(model_uri)
    inner = model.unwrap_python_model()
    if not isinstance(inner, QueryRewriter):
        raise TypeError(f"{model_uri} is not a query rewriter, it wraps {type(inner).__name__}")
    return inner.table
