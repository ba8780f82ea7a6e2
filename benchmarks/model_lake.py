"""What the model-tuning scripts share: the champion of the lake ``feedback train-rephrase`` ran in."""

from __future__ import annotations

import os
from pathlib import Path

from feedback.config import SparkConfig
from feedback.core.lake import LakePaths
from feedback.rephrase.spark import champion_detector_dir

LOCAL_SPARK = SparkConfig(master="local[2]", shuffle_partitions=2, extra={"spark.ui.enabled": "false"})


def champion_or_exit(model_lake: Path, threads: int) -> tuple[str, Path]:
    """``rephrase-detector@champion``'s version and folder in ``model_lake``'s own store, torch on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the lake's own store, not the caller's
    found = champion_detector_dir(LakePaths.at(model_lake))
    if found is None:
        raise SystemExit(f"no rephrase-detector@champion in {model_lake}/mlflow: run `make train-rephrase` first")
    return found
