"""The ``failure-point-classifier`` as an MLflow pyfunc: ``INPUTS_SCHEMA`` rows in, a failure point and its probability out.

Registry consumers (and the champion rule, which re-scores the current champion) load it with
``mlflow.pyfunc.load_model``; the stream loads the same saved folder directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from feedback.isolation.model import FailurePointModel

CLASSIFIER_ARTIFACT = "classifier"


def predictions_frame(model: FailurePointModel, inputs: pd.DataFrame) -> pd.DataFrame:
    """``event_id``, ``failure_point`` and ``failure_point_score`` for each row of ``inputs``."""
    points, scores = model.predict(inputs)
    return pd.DataFrame({"event_id": inputs["event_id"].to_numpy(), "failure_point": points, "failure_point_score": scores})


class FailurePointClassifierModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Wraps a saved ``FailurePointModel`` folder (the ``classifier`` artifact)."""

    def load_context(self, context: Any) -> None:
        self.model = FailurePointModel.load(Path(context.artifacts[CLASSIFIER_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predictions_frame(self.model, model_input)
