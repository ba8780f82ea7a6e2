"""The failure-point classifier inside the silver batch: rules first, then the model on defective requests.

The rules (``feedback.silver.failure_points``) label every turn; ``classification_inputs`` keeps
the defective requests, and ``mapInPandas`` runs the classifier on them, loaded once per Python
worker (a module-level cache that survives across tasks). Its answer replaces the rules' for
those turns, and ``failure_point_classifier`` says which answered (``failure-point-classifier/<version>``
or ``rules-v1``). A batch the model fails on keeps the rules' answer, with a warning.
``resolve_classifier`` picks ``models:/failure-point-classifier@champion`` when the lake's
registry has one this code can serve (its ``FORMAT_VERSION``), else the rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from feedback.config import AppConfig, FailurePointsConfig
from feedback.core.lake import LakePaths
from feedback.core.registry import FAILURE_POINT_CLASSIFIER, champion_artifact_dir, champion_uri
from feedback.isolation.inputs import classification_inputs
from feedback.isolation.model import FORMAT_VERSION, SETTINGS_FILE, FailurePointModel, saved_format
from feedback.isolation.pyfunc import CLASSIFIER_ARTIFACT
from feedback.rephrase.model import resolve_device
from feedback.rephrase.spark import worker_path
from feedback.silver.failure_points import FailurePointClassifier, failure_points_by_rules

LOG = logging.getLogger(__name__)

PREDICTIONS_SCHEMA = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("model_failure_point", StringType(), True),
        StructField("model_failure_point_score", DoubleType(), True),
    ]
)
"""What the model returns per defective request; nulls where it failed on the batch."""

_MODELS: dict[tuple[str, str], FailurePointModel] = {}
"""Per Python worker: classifiers already loaded, by (folder, device)."""


@dataclass(frozen=True)
class ClassifierHandle:
    """Where a saved classifier is and how to run it; small and picklable, shipped to the workers."""

    path: str
    label: str
    device: str = "cpu"


def load_classifier(handle: ClassifierHandle) -> FailurePointModel:
    """The classifier of ``handle``, loaded once per process."""
    device = resolve_device(handle.device)
    key = (handle.path, device)
    if key not in _MODELS:
        path = handle.path
        if not os.path.isabs(path):
            from pyspark import SparkFiles

            path = SparkFiles.get(path)  # shipped with SparkContext.addArchive on a cluster, unpacked there
        _MODELS[key] = FailurePointModel.load(Path(path), device=device)
    return _MODELS[key]


def _partition_classifier(handle: ClassifierHandle):  # type: ignore[no-untyped-def]
    """The ``mapInPandas`` function: closes over ``handle`` (the model loads on the worker)."""

    def classify(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch
        from pyspark import TaskContext

        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        model = load_classifier(handle)
        context = TaskContext.get()
        torch.set_num_threads(max(1, context.cpus() if context is not None else 1))
        for inputs in batches:
            try:
                points, scores = model.predict(inputs)
            except Exception as error:  # noqa: BLE001 (any model failure: the rules answer for this batch)
                LOG.warning("failure-point classifier failed on %d requests, the rules answer: %s", len(inputs), error)
                points, scores = [None] * len(inputs), [None] * len(inputs)
            yield pd.DataFrame(
                {"event_id": inputs["event_id"].to_numpy(), "model_failure_point": points, "model_failure_point_score": scores}
            )

    return classify


class ModelClassifier:
    """A ``FailurePointClassifier``: the rules for every turn, then the model for the defective requests."""

    def __init__(self, handle: ClassifierHandle) -> None:
        self.handle = handle

    def __call__(self, turns: DataFrame, config: FailurePointsConfig) -> DataFrame:
        ruled = failure_points_by_rules(turns, config)
        predicted = classification_inputs(ruled).mapInPandas(_partition_classifier(self.handle), PREDICTIONS_SCHEMA)
        answered = F.col("model_failure_point").isNotNull()
        return (
            ruled.join(predicted, "event_id", "left")
            .withColumn("failure_point", F.when(answered, F.col("model_failure_point")).otherwise(F.col("failure_point")))
            .withColumn(
                "failure_point_score", F.when(answered, F.col("model_failure_point_score")).otherwise(F.col("failure_point_score"))
            )
            .withColumn(
                "failure_point_classifier", F.when(answered, F.lit(self.handle.label)).otherwise(F.col("failure_point_classifier"))
            )
            .drop("model_failure_point", "model_failure_point_score")
        )


def champion_classifier_dir(lake: LakePaths) -> tuple[str, Path] | None:
    """(version, local folder) of ``failure-point-classifier@champion``, downloaded once into ``LAKE/_models``."""
    return champion_artifact_dir(lake, FAILURE_POINT_CLASSIFIER, CLASSIFIER_ARTIFACT, SETTINGS_FILE)


def resolve_classifier(spark: SparkSession, config: AppConfig, lake: LakePaths) -> FailurePointClassifier:
    """The failure-point classifier for this run: the registered champion, or the rules."""
    if not config.failure_model.use_champion:
        LOG.info("failure_model.use_champion is false: failure points by the rules")
        return failure_points_by_rules
    found = champion_classifier_dir(lake)
    if found is None:
        LOG.info("no %s in the registry: failure points by the rules", champion_uri(FAILURE_POINT_CLASSIFIER))
        return failure_points_by_rules
    version, folder = found
    saved = saved_format(folder)
    if saved != FORMAT_VERSION:
        LOG.warning(
            "%s v%s is of format %s, this code serves %d: failure points by the rules until `feedback train-failure-points` "
            "registers a new champion",
            FAILURE_POINT_CLASSIFIER, version, saved, FORMAT_VERSION,
        )  # fmt: skip
        return failure_points_by_rules
    path = worker_path(spark, folder, f"{FAILURE_POINT_CLASSIFIER}-{version}", marker=SETTINGS_FILE)
    LOG.info("failure points of defective requests by %s v%s", FAILURE_POINT_CLASSIFIER, version)
    return ModelClassifier(ClassifierHandle(path, f"{FAILURE_POINT_CLASSIFIER}/{version}", config.failure_model.device))
