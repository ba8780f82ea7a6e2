"""The scheduled jobs of ``conf/databricks.yml``: real entry points, loadable configurations, parameters the CLI accepts.

Nothing runs: each task's parameters (with the bundle's variables and ``${workspace.file_path}``
resolved to this checkout) are parsed by the same argparse parser the entry point calls.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from feedback.cli import build_parser
from feedback.config import AppConfig, load_config

from support.paths import REPO

BUNDLE = REPO / "conf" / "databricks.yml"
REFERENCE = re.compile(r"\$\{([a-z_.]+)\}")


def load_bundle() -> dict[str, Any]:
    document = yaml.safe_load(BUNDLE.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{BUNDLE} must hold a mapping")
    return document


def resolve(text: str, variables: dict[str, str]) -> str:
    """Replace ``${var.NAME}`` by the variable's default and ``${workspace.file_path}`` by the repository root."""
    values = {f"var.{name}": value for name, value in variables.items()} | {"workspace.file_path": str(REPO)}

    def lookup(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"{BUNDLE.name}: unknown reference ${{{match.group(1)}}}")
        return values[match.group(1)]

    return REFERENCE.sub(lookup, text)


def entry_command(job_file: Path) -> str:
    """The CLI subcommand a ``jobs/*.py`` entry point runs: the first item of the list it passes to ``main``."""
    for node in ast.walk(ast.parse(job_file.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "main" and node.args:
            first = node.args[0]
            if isinstance(first, ast.List) and first.elts and isinstance(first.elts[0], ast.Constant):
                return str(first.elts[0].value)
    raise ValueError(f"{job_file}: no main([COMMAND, ...]) call")


def tasks() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    jobs = load_bundle()["resources"]["jobs"]
    return [(key, job, task) for key, job in jobs.items() for task in job["tasks"]]


BUNDLE_VARIABLES = {name: str(spec["default"]) for name, spec in load_bundle()["variables"].items()}


def test_the_bundle_defines_the_six_scheduled_jobs() -> None:
    jobs = load_bundle()["resources"]["jobs"]
    triggers = {
        key: (job["schedule"]["quartz_cron_expression"] if "schedule" in job else f"continuous {job['continuous']['pause_status']}")
        for key, job in jobs.items()
    }
    assert triggers == {
        "feedback_pipeline_hourly": "0 5 * * * ?",
        "feedback_stream_continuous": "continuous PAUSED",
        "feedback_mine_rewrites_nightly": "0 30 2 * * ?",
        "feedback_backfill_late_nightly": "0 40 1 * * ?",
        "feedback_maintain_nightly": "0 15 3 * * ?",
        "feedback_train_rephrase_weekly": "0 0 4 ? * SUN",
    }
    entry_points: dict[str, list[str]] = {}
    for key, _, task in tasks():
        entry_points.setdefault(key, []).append(task["spark_python_task"]["python_file"])
    assert entry_points == {
        "feedback_pipeline_hourly": ["../jobs/pipeline.py"],
        "feedback_stream_continuous": ["../jobs/stream.py"],
        "feedback_mine_rewrites_nightly": ["../jobs/mine_rewrites.py", "../jobs/annotate.py"],
        "feedback_backfill_late_nightly": ["../jobs/backfill.py"],
        "feedback_maintain_nightly": ["../jobs/maintain.py"],
        "feedback_train_rephrase_weekly": ["../jobs/train_rephrase.py", "../jobs/train_failure_points.py"],
    }
    assert {job["max_concurrent_runs"] for job in jobs.values()} == {1}
    assert set(load_bundle()["targets"]) == {"dev", "prod"}


@pytest.mark.parametrize(("job", "definition", "task"), tasks(), ids=[f"{key}/{task['task_key']}" for key, _, task in tasks()])
def test_each_task_runs_an_existing_entry_point_with_parameters_the_cli_accepts(
    job: str, definition: dict[str, Any], task: dict[str, Any]
) -> None:
    spec = task["spark_python_task"]
    entry = (BUNDLE.parent / spec["python_file"]).resolve()
    assert entry.is_file() and entry.parent == REPO / "jobs"
    parameters = [resolve(str(p), BUNDLE_VARIABLES) for p in spec["parameters"]]

    confs = [Path(parameters[i + 1]) for i, p in enumerate(parameters) if p == "--conf"]
    assert len(confs) == 1
    assert type(load_config(confs[0])) is AppConfig

    command = entry_command(entry)
    args = build_parser().parse_args([command, *parameters])  # SystemExit (a failed test) on a bad parameter
    assert (args.command, args.lake, args.conf) == (command, Path(BUNDLE_VARIABLES["lake"]), confs[0])

    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in definition["job_clusters"]}
    assert task["job_cluster_key"] in clusters
    assert resolve(clusters[task["job_cluster_key"]]["spark_version"], BUNDLE_VARIABLES).startswith("18.")  # Spark 4.1
    wheels = [library["whl"] for library in task["libraries"] if "whl" in library]
    assert wheels == ["../dist/*.whl"]
    artifact = load_bundle()["artifacts"]["feedback_wheel"]
    assert (BUNDLE.parent / artifact["path"]).resolve() == REPO and "--wheel-dir dist" in artifact["build"]


def test_every_reference_in_the_bundle_is_defined() -> None:
    text = BUNDLE.read_text()
    known = {f"var.{name}" for name in BUNDLE_VARIABLES} | {"workspace.file_path", "bundle.name", "bundle.target"}
    assert set(REFERENCE.findall(text)) <= known
    with pytest.raises(KeyError, match=r"unknown reference \$\{var.nope\}"):
        resolve("${var.nope}", BUNDLE_VARIABLES)


def test_entry_command_reads_the_subcommand_of_each_job() -> None:
    assert {p.name: entry_command(p) for p in sorted((REPO / "jobs").glob("*.py"))} == {
        "annotate.py": "annotate",
        "backfill.py": "backfill",
        "maintain.py": "maintain",
        "mine_rewrites.py": "mine-rewrites",
        "pipeline.py": "pipeline",
        "simulate.py": "simulate",
        "stream.py": "stream",
        "train_failure_points.py": "train-failure-points",
        "train_rephrase.py": "train-rephrase",
    }
