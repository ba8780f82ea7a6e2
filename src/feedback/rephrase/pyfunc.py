"""The ``rephrase-detector`` as an MLflow pyfunc: request groups in, one score per candidate pair out.

Registry consumers (and the champion rule, which re-scores the current champion) load it with
``mlflow.pyfunc.load_model``; the stream loads the same saved folder directly, without MLflow on
the workers.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from feedback.rephrase.model import SpanRephraseDetector, queries_from_pandas, scores_frame

DETECTOR_ARTIFACT = "detector"


class RephraseDetectorModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Wraps a saved ``SpanRephraseDetector`` folder (the ``detector`` artifact)."""

    def load_context(self, context: Any) -> None:
        self.detector = SpanRephraseDetector.load(context.artifacts[DETECTOR_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        queries = queries_from_pandas(model_input)
        batch_size = int((params or {}).get("batch_size", 64))
        return scores_frame(queries, self.detector.score(queries, batch_size))
