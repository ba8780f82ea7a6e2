"""``make demo``: a week of simulated traffic through the whole pipeline into a local lake."""

from __future__ import annotations

import shutil
from pathlib import Path

from pyspark.sql import SparkSession

from feedback.config import AppConfig
from feedback.pipeline import describe_lake, run_pipeline
from feedback.simulate import run as simulate


def run(spark: SparkSession, config: AppConfig, workdir: Path) -> str:
    """Simulate into ``workdir/traffic``, run the pipeline into ``workdir/lake`` (both replaced), describe it."""
    traffic = workdir / "traffic"
    lake = workdir / "lake"
    for stale in (traffic, lake):
        if stale.exists():
            shutil.rmtree(stale)
    simulation = simulate(config.simulation, traffic)
    summary = run_pipeline(spark, config, traffic / "events", lake)
    return "\n\n".join([f"simulated: {simulation}", summary.render(), describe_lake(spark, lake, config.privacy.min_users)])
