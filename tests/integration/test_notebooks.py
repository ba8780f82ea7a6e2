"""The analyst notebooks: committed without outputs, and run top to bottom on a small simulated lake.

The lake is built once for the module through the real code paths: 40 households x 3 days of
simulated traffic land in two parts; the first goes through the pipeline (heuristic detector) and
rewrite mining (``query-rewriter`` v1, ``gold/rewrites`` v1), then a tiny random-weights detector
is registered as ``rephrase-detector@champion``, the rest of the traffic lands and goes through
the pipeline (now scored by the champion) and mining again (v2 of both). Each notebook then runs
in its own Jupyter kernel (nbclient) with the lake injected after its ``parameters`` cell, as
papermill does.
"""

from __future__ import annotations

import ast
import base64
import html
import io
import json
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from pyspark.sql import SparkSession

from feedback.config import AppConfig, IngestConfig, SimulationConfig, ValidationConfig, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import CHAMPION_ALIAS, QUERY_REWRITER, REPHRASE_DETECTOR, configure_mlflow, tracking_uri_for
from feedback.ops.notebook_queries import (
    current_rewrites,
    diff_rewrites,
    read_version,
    registered_versions,
    top_defective_utterances,
    version_metrics,
)
from feedback.ops.notebooks import KERNEL, execute_notebook, inject_parameters, parameter_names, to_html, venv_kernel
from feedback.pipeline import run_pipeline
from feedback.rephrase.train import labelled_set, link_score, score_set
from feedback.rewrites.evaluate import RewriteEvaluation
from feedback.rewrites.mine import MiningResult
from feedback.rewrites.mine import run as mine
from feedback.silver.detect import HEURISTIC_DETECTOR
from feedback.simulate import run as simulate

from support.paths import REPO
from support.spark_settings import TEST_SPARK
from support.tiny_detector import register_tiny_detector, tiny_detector

NOTEBOOKS = REPO / "notebooks"
NAMES = ("defect_overview", "rewrite_review", "model_monitoring")


# ----- committed notebooks --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs_and_a_lake_parameter(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [(cell.id, cell.outputs, cell.execution_count) for cell in code] == [(cell.id, [], None) for cell in code]
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert 'lake = "lake"' in tagged[0].source.splitlines()[0]
    assert parameter_names(tagged[0].source)[:2] == ["lake", "conf"]
    for cell in code:  # valid Python once IPython's line magics are set aside
        ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith("%")))
    # One Spark builder for the whole project, fed by the same YAML as --conf.
    assert sum("build_spark(load_config(conf).spark)" in cell.source for cell in code) == 1
    assert notebook.metadata.kernelspec.name == "python3"


# ----- running them ---------------------------------------------------------------------------------


def execute(name: str, parameters: Mapping[str, object], workdir: Path) -> nbformat.NotebookNode:
    """Run ``notebooks/NAME.ipynb`` top to bottom in this venv's kernel; the executed copy is kept in ``workdir``."""
    return execute_notebook(NOTEBOOKS / f"{name}.ipynb", parameters, workdir, KERNEL)


def outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def stdout_lines(notebook: nbformat.NotebookNode) -> list[str]:
    text = "".join(o.text for o in outputs(notebook) if o.output_type == "stream" and o.name == "stdout")
    return text.splitlines()


def figures(notebook: nbformat.NotebookNode) -> list[Image.Image]:
    images = []
    for output in outputs(notebook):
        if output.output_type in ("display_data", "execute_result") and "image/png" in output.get("data", {}):
            images.append(Image.open(io.BytesIO(base64.b64decode(output.data["image/png"]))).convert("RGB"))
    return images


def drawn_pixels(image: Image.Image) -> int:
    """Pixels in colour (not white, grey or black): what a plotted line, bar or point leaves; axes and text do not."""
    return sum(1 for r, g, b in image.getdata() if max(r, g, b) - min(r, g, b) > 60)


def assert_ran_cleanly(notebook: nbformat.NotebookNode, expected_figures: int) -> None:
    errors = [f"{o.ename}: {o.evalue}" for o in outputs(notebook) if o.output_type == "error"]
    assert errors == []
    images = figures(notebook)
    assert len(images) == expected_figures
    for image in images:
        assert image.width >= 400 and image.height >= 200
        assert drawn_pixels(image) > 500


@dataclass(frozen=True)
class NotebookLake:
    workdir: Path
    paths: LakePaths
    conf: Path
    first_mining: MiningResult
    second_mining: MiningResult
    detector_decision: str
    detector_f1: float


def build_lake(spark: SparkSession, workdir: Path) -> NotebookLake:
    """Simulate, land in two parts, pipeline, mine, register a champion detector, pipeline, mine."""
    # Great Expectations checks bronze, which no notebook reads: off, to keep the set-up short.
    config = replace_section(AppConfig(), spark=TEST_SPARK, ingest=IngestConfig(validation=ValidationConfig(enabled=False)))
    traffic = workdir / "traffic"
    simulate(SimulationConfig(users=40, days=3, seed=11), traffic, progress=False)
    files = sorted((traffic / "events").glob("*.jsonl"))
    landing = workdir / "landing"
    landing.mkdir()
    lake = LakePaths.at(workdir / "lake")
    cut = len(files) * 2 // 3
    for path in files[:cut]:
        shutil.copy(path, landing / path.name)
    run_pipeline(spark, config, landing, lake)
    first = mine(spark, config, lake)

    detector, detector_dir = tiny_detector(workdir / "tiny")
    evaluation = labelled_set(spark, config, lake, traffic / "ground_truth.jsonl")
    scored, _ = score_set(detector, evaluation, 64)
    threshold = config.detect.rephrase_threshold
    model = link_score(scored, "model_score", evaluation.truth_links, threshold)
    heuristic = link_score(scored, "heuristic_score", evaluation.truth_links, threshold)
    metrics = {"eval_precision": model.precision, "eval_recall": model.recall, "eval_f1": model.f1, "eval_heuristic_f1": heuristic.f1}
    decision = register_tiny_detector(lake, detector_dir, model.f1, metrics)

    for path in files[cut:]:
        shutil.copy(path, landing / path.name)
    run_pipeline(spark, config, landing, lake)
    second = mine(spark, config, lake)

    conf = workdir / "notebook.yaml"
    settings = {
        "spark": {
            "master": "local[2]",
            "shuffle_partitions": 2,
            "extra": {"spark.ui.enabled": "false", "spark.sql.warehouse.dir": str(workdir / "warehouse")},
        }
    }
    conf.write_text(json.dumps(settings))  # JSON is YAML
    return NotebookLake(workdir, lake, conf, first, second, decision, model.f1)


@pytest.fixture(scope="module")
def notebook_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookLake]:
    """The lake, and a kernel spec for this venv's interpreter (so no other Python's kernel is picked)."""
    workdir = tmp_path_factory.mktemp("notebooks")
    with pytest.MonkeyPatch.context() as patch, venv_kernel(workdir):
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield build_lake(spark, workdir)


@pytest.mark.slow
def test_defect_overview(spark: SparkSession, notebook_lake: NotebookLake) -> None:
    paths = notebook_lake.paths
    notebook = execute("defect_overview", {"lake": paths.root, "conf": str(notebook_lake.conf)}, notebook_lake.workdir)
    assert_ran_cleanly(notebook, expected_figures=5)
    # The rendered page (make notebooks-html) carries the five plots inline (the fifth: where defects failed first).
    assert to_html(notebook).count('src="data:image/png;base64,') == 5
    worst = top_defective_utterances(
        spark.read.format("delta").load(paths.utterance_defects), spark.read.format("delta").load(paths.rephrase_pairs), n=10
    ).collect()
    assert len(worst) == 10
    # The last cell shows the same table, most defective first (its first column is the utterance).
    table = notebook.cells[-1].outputs[-1].data["text/html"]
    shown = re.findall(r"<tr>\s*<th>(\d+)</th>\s*<td>(.*?)</td>", table)
    assert shown == [(str(i), html.escape(row["normalized_utterance"], quote=False)) for i, row in enumerate(worst)]


@pytest.mark.slow
def test_rewrite_review_diffs_versions_and_flags_a_rewrite(spark: SparkSession, notebook_lake: NotebookLake) -> None:
    paths = notebook_lake.paths
    first, second = notebook_lake.first_mining, notebook_lake.second_mining
    current = current_rewrites(spark.read.format("delta").load(paths.rewrites)).collect()
    assert len(current) == second.rewrites > 0
    best = current[0]
    changes = diff_rewrites(read_version(spark, paths.rewrites, first.table_version), read_version(spark, paths.rewrites, second.table_version))
    counts = {row["change"]: row["count"] for row in changes.groupBy("change").count().collect()}
    summary = ", ".join(f"{counts[c]} {c}" for c in sorted(counts)) or "no change"

    parameters = {
        "lake": paths.root,
        "conf": str(notebook_lake.conf),
        "veto_source": best["source_utterance"],
        "veto_rewrite": best["rewrite_utterance"],
        "veto_reason": "test: wrong meaning",
    }
    notebook = execute("rewrite_review", parameters, notebook_lake.workdir)
    assert_ran_cleanly(notebook, expected_figures=2)
    assert stdout_lines(notebook) == [
        f"{second.rewrites} rewrites in gold/rewrites",
        f"gold/rewrites v{first.table_version} -> v{second.table_version}: {summary}",
        f"chains behind {best['source_utterance']!r} -> {best['rewrite_utterance']!r}",
        f"vetoed {best['rewrite_utterance']!r} of {best['source_utterance']!r}; the next `feedback mine-rewrites` leaves it out",
    ]
    vetoes = spark.read.format("delta").load(paths.rewrite_vetoes).select("source_utterance", "rewrite_utterance", "reason").collect()
    assert [tuple(v) for v in vetoes] == [(best["source_utterance"], best["rewrite_utterance"], "test: wrong meaning")]


@pytest.mark.slow
def test_model_monitoring(spark: SparkSession, notebook_lake: NotebookLake) -> None:
    paths = notebook_lake.paths
    notebook = execute("model_monitoring", {"lake": paths.root, "conf": str(notebook_lake.conf)}, notebook_lake.workdir)
    assert_ran_cleanly(notebook, expected_figures=2)
    assert stdout_lines(notebook) == [f"MLflow store: {tracking_uri_for(paths)}"]
    # The share figure's data: the heuristic scored the first part, the champion the rest.
    detectors = {
        row["rephrase_detector"]
        for row in spark.read.format("delta").load(paths.silver_turns).select("rephrase_detector").distinct().collect()
    }
    assert detectors == {None, HEURISTIC_DETECTOR, f"{REPHRASE_DETECTOR}/1+int8"}


@pytest.mark.slow
def test_registry_queries_list_both_models(notebook_lake: NotebookLake) -> None:
    configure_mlflow(notebook_lake.paths)
    client = MlflowClient()
    versions = registered_versions(client)
    # Whether the second table won is the rule's call on simulated data; MLflow itself says which did.
    rewriter_champion = int(client.get_model_version_by_alias(QUERY_REWRITER, CHAMPION_ALIAS).version)
    assert "promoted to champion" in notebook_lake.detector_decision
    assert "promoted to champion" in str(notebook_lake.first_mining.registration)
    assert ("promoted to champion" in str(notebook_lake.second_mining.registration)) == (rewriter_champion == 2)
    expected = {
        1: [
            (QUERY_REWRITER, 1, "champion", "promoted"),
            (QUERY_REWRITER, 2, "", "rejected"),
            (REPHRASE_DETECTOR, 1, "champion", "promoted"),
        ],
        2: [
            (QUERY_REWRITER, 1, "", "promoted"),
            (QUERY_REWRITER, 2, "champion", "promoted"),
            (REPHRASE_DETECTOR, 1, "champion", "promoted"),
        ],
    }[rewriter_champion]
    assert list(versions[["model", "version", "aliases", "champion_decision"]].itertuples(index=False, name=None)) == expected
    detector_run = client.get_model_version(REPHRASE_DETECTOR, "1").run_id
    assert list(versions["run_id"]) == [notebook_lake.first_mining.run_id, notebook_lake.second_mining.run_id, detector_run]

    metrics = version_metrics(client)
    detector = metrics[metrics["model"] == REPHRASE_DETECTOR]
    assert dict(zip(detector["metric"], detector["value"], strict=True))["eval_f1"] == pytest.approx(notebook_lake.detector_f1)
    rewriter = metrics[(metrics["model"] == QUERY_REWRITER) & (metrics["version"] == 1)]
    evaluation_keys = {f.name for f in RewriteEvaluation.__dataclass_fields__.values()}
    assert evaluation_keys <= set(rewriter["metric"])
    assert dict(zip(rewriter["metric"], rewriter["value"], strict=True))["promoted"] == 1.0
    assert set(metrics["champion"]) == {True, False} and re.fullmatch(r"[0-9a-f]{32}", versions["run_id"][2])


def test_inject_parameters_rejects_unknown_names() -> None:
    notebook = nbformat.read(NOTEBOOKS / "defect_overview.ipynb", as_version=4)
    with pytest.raises(ValueError, match=r"\['lakes'\] are not defined"):
        inject_parameters(notebook, {"lakes": "x"})
    inject_parameters(notebook, {"lake": "/data/lake", "top_n": 3})
    index = next(i for i, cell in enumerate(notebook.cells) if cell.id == "injected-parameters")
    assert notebook.cells[index - 1].id == "parameters"
    assert notebook.cells[index].source == "lake = '/data/lake'\ntop_n = 3"
