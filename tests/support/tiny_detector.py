"""Register a tiny random-weights rephrase detector as ``rephrase-detector@champion``, without training.

``feedback train-rephrase`` would simulate and run the pipeline twice before training; tests that
only need *a* champion in a lake's registry (the notebooks, the cluster run) log the same pyfunc,
with the same artifact layout, registered name and champion rule, around a 2-layer random BERT.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from feedback.core.lake import LakePaths
from feedback.core.registry import REPHRASE_DETECTOR, apply_champion_rule, configure_mlflow, ensure_experiment
from feedback.rephrase.model import DetectorSettings, SpanRephraseDetector, base_model_dir
from feedback.rephrase.pyfunc import DETECTOR_ARTIFACT, RephraseDetectorModel
from feedback.rephrase.train import EXPERIMENT

from support.tiny_bert import tiny_bert_config


def tiny_detector(parent: Path) -> tuple[SpanRephraseDetector, Path]:
    """A 2-layer, 32-wide BERT span model with the real MiniLM tokenizer (seed 0), saved in ``parent/detector``.

    MLflow names an artifact folder after the local folder, and the stream looks for ``detector``.
    """
    import torch
    from transformers import AutoTokenizer, BertForQuestionAnswering

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir()))
    detector = SpanRephraseDetector(BertForQuestionAnswering(tiny_bert_config(tokenizer.vocab_size)), tokenizer, DetectorSettings(max_length=96))
    folder = detector.save(parent / DETECTOR_ARTIFACT)
    return detector, folder


def register_tiny_detector(lake: LakePaths, detector_dir: Path, link_f1: float, metrics: Mapping[str, float]) -> str:
    """Log ``detector_dir`` as a new ``rephrase-detector`` version in ``lake``'s MLflow store and apply the champion rule.

    Args:
        lake: the lake whose store (``LAKE/mlflow``, or ``$MLFLOW_TRACKING_URI``) gets the model.
        detector_dir: a saved ``SpanRephraseDetector`` (``tiny_detector``).
        link_f1: the candidate's score for the champion rule (no baseline gate).
        metrics: logged to the run, as train-rephrase logs its evaluation.

    Returns:
        The champion decision in words.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if detector_dir.name != DETECTOR_ARTIFACT:
        raise ValueError(f"detector_dir must be named {DETECTOR_ARTIFACT!r} (MLflow keeps the folder name), got {detector_dir}")
    configure_mlflow(lake)
    ensure_experiment(lake, EXPERIMENT)
    with mlflow.start_run(run_name="tiny-detector"):
        mlflow.log_metrics(dict(metrics))
        info = mlflow.pyfunc.log_model(
            name="rephrase-detector",
            python_model=RephraseDetectorModel(),
            artifacts={DETECTOR_ARTIFACT: str(detector_dir)},
            pip_requirements=[f"{name}=={metadata.version(name)}" for name in ("mlflow", "torch", "transformers", "pandas")],
            registered_model_name=REPHRASE_DETECTOR,
        )
        decision = apply_champion_rule(
            MlflowClient(), REPHRASE_DETECTOR, str(info.registered_model_version), "link_f1", link_f1, None, allow_equal=False
        )
    return decision.describe()
