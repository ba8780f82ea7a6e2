"""``feedback ab``: the closed-loop A/B of a rewriter, out of time, from nothing but a seed.

Both arms simulate ``history_days + judged_days`` of the same world. Without a rewriter URI,
the control arm's history (the days before ``history_days``) is written as landing files, run
through the pipeline into ``LAKE/_training/ab-<corpus>-<seed>/lake`` and mined there; the new
``query-rewriter`` version of that lake is the treatment. The rewriter never sees the judged
days, so the A/B measures it out of time. The report is logged as a run of the lake's
``closed-loop-ab`` experiment.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from feedback.config import AppConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import QUERY_REWRITER, configure_mlflow, ensure_experiment
from feedback.pipeline import run_pipeline
from feedback.rewrites.closed_loop import ABReport, load_rewriter, run_arms
from feedback.rewrites.mine import run as mine_rewrites
from feedback.simulate.constants import MS_PER_DAY
from feedback.simulate.runner import simulate_turns, window_start_ms, write_simulation
from feedback.simulate.sessions import Turn

LOG = logging.getLogger(__name__)

EXPERIMENT = "closed-loop-ab"


def history_name(corpus: str, seed: int) -> str:
    """The folder under ``LAKE/_training`` that holds the mined history of one A/B world."""
    return f"ab-{corpus}-{seed}"


def rewriter_from_history(spark: SparkSession, config: AppConfig, lake: LakePaths, control: list[Turn], history_days: int) -> tuple[str, LakePaths]:
    """Write the first ``history_days`` of ``control``, run the pipeline, mine and register; the version's URI and its lake."""
    simulation = dataclasses.replace(config.simulation, days=history_days, rewriter=None, rewrite_from_day=0)
    end_ms = window_start_ms(simulation) + history_days * MS_PER_DAY
    history = [turn for turn in control if turn.ts_ms < end_ms]
    name = history_name(simulation.corpus, simulation.seed)
    base = Path(lake.training) / name
    if base.exists():
        shutil.rmtree(base)  # a history of another size or code would mix with this one
    traffic = base / "traffic"
    summary = write_simulation(simulation, history, len({turn.session_key for turn in history}), traffic)
    LOG.info("history: %d events over %d days written to %s", summary.events, history_days, traffic)
    history_lake = lake.training_lake(name)
    run_pipeline(spark, config, traffic / "events", history_lake)
    mining = mine_rewrites(spark, config, history_lake, truth_path=traffic / "ground_truth.jsonl", register=True)
    LOG.info("%s", mining.render())
    configure_mlflow(history_lake)
    versions = MlflowClient().search_model_versions(f"name = '{QUERY_REWRITER}'")
    if not versions:
        raise RuntimeError(f"mining registered no {QUERY_REWRITER} version in {history_lake.root}")
    latest = max(int(version.version) for version in versions)
    return f"models:/{QUERY_REWRITER}/{latest}", history_lake


def run(
    spark: SparkSession,
    config: AppConfig,
    lake: LakePaths,
    rewriter_uri: str | None,
    history_days: int,
    judged_days: int,
    json_out: Path | None = None,
) -> ABReport:
    """Run both arms of ``config.simulation``'s world over ``history_days + judged_days`` and compare the judged days.

    ``rewriter_uri``: the treatment (resolved against ``lake``'s registry); None mines one
    from the history first (see the module doc).
    """
    if history_days < 1 or judged_days < 1:
        raise ValueError(f"history_days and judged_days must be >= 1, got {history_days} and {judged_days}")
    simulation = dataclasses.replace(
        config.simulation, days=history_days + judged_days, rewriter=None, rewrite_from_day=0, paired_sessions=True
    )
    config = replace_section(config, simulation=simulation)
    control, _ = simulate_turns(simulation, progress=True)
    source_lake = lake
    if rewriter_uri is None:
        rewriter_uri, source_lake = rewriter_from_history(spark, config, lake, control, history_days)
    configure_mlflow(source_lake)
    rewriter = load_rewriter(rewriter_uri)
    report = run_arms(simulation, rewriter_uri, rewriter, history_days, control=control)
    configure_mlflow(lake)
    with mlflow.start_run(experiment_id=ensure_experiment(lake, EXPERIMENT), run_name=f"ab-{simulation.corpus}-{simulation.seed}"):
        mlflow.log_params(
            {
                "rewriter": rewriter_uri,
                "rewriter_lake": source_lake.root,
                "seed": simulation.seed,
                "users": simulation.users,
                "corpus": simulation.corpus,
                "profile": simulation.behaviour.name,
                "history_days": history_days,
                "judged_days": judged_days,
            }
        )
        mlflow.log_metrics(report.metrics())
        mlflow.log_dict(report.as_dict(), "ab.json")
    if json_out is not None:
        Path(json_out).write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report
