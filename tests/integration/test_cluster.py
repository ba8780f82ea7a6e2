"""A real multi-node run: the pipeline spark-submitted to a 2-worker standalone cluster writes the tables a local run writes.

The cluster is started and stopped with ``python -m feedback.ops.cluster`` (what ``make cluster-up`` /
``cluster-down`` run) on free ports, one core per worker; the package goes to the executors as the
archive ``python -m feedback.ops.cluster wheel`` builds (``make cluster-demo``), the Delta jars come
from the local cache, and the rephrase detector from a shared MLflow registry
(``MLFLOW_TRACKING_URI``), so the champion's folder reaches the executors as an archive
(``SparkContext.addArchive``). The same traffic then goes through the pipeline in this process
(``local[2]``) and every bronze, silver and gold table must be equal, except the columns that
record when and in which micro-batch run a row was written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from feedback.config import SimulationConfig, load_config, replace_section
from feedback.core.lake import LakePaths
from feedback.core.registry import REPHRASE_DETECTOR, tracking_uri_for
from feedback.ops.cluster import ClusterSpec, down, free_port, master_state
from feedback.pipeline import run_pipeline
from feedback.simulate import run as simulate

from support.paths import REPO
from support.spark_settings import TEST_SPARK
from support.tiny_detector import register_tiny_detector, tiny_detector

pytestmark = pytest.mark.slow


# Columns a rerun of the same traffic legitimately changes: when a row was written and the tag of
# the micro-batch run that wrote it (its checkpoint's app id). Everything else must match.
RUN_DEPENDENT = {
    "bronze": ("ingest_time", "ingest_batch"),
    "quarantine": ("ingest_time", "ingest_date", "ingest_batch"),
    "silver_turns": ("processed_at",),
    "defect_metrics": (),
    "utterance_defects": (),
    "rephrase_pairs": (),
}
# A HyperLogLog sketch's bytes list its coupons in the order they arrived, which partitioning
# changes; the set they stand for must not change, so the sketch is compared by its estimate.
SKETCHES = ("users_sketch",)


def cluster_cli(*args: str | Path, log: Path) -> None:
    """``python -m feedback.ops.cluster ARGS`` from the repository root, as the Makefile runs it."""
    with log.open("a") as out:
        done = subprocess.run([sys.executable, "-m", "feedback.ops.cluster", *map(str, args)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"python -m feedback.ops.cluster {' '.join(map(str, args))} exited {done.returncode}; see {log}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSpec]:
    """Two workers with one core each on free ports; stopped at the end even when the test fails."""
    root = tmp_path_factory.mktemp("cluster")
    spec = ClusterSpec(root=root, port=free_port(), webui_port=free_port(), workers=2, worker_cores=1, worker_memory="1g")
    log = root / "cluster-cli.log"
    try:
        cluster_cli("up", "--root", root, "--port", str(spec.port), "--webui-port", str(spec.webui_port), "--workers", "2", "--cores", "1", log=log)
        yield spec
    finally:
        try:
            cluster_cli("down", "--root", root, log=log)
        finally:
            down(root)  # no-op when the CLI stopped everything; stops what is left otherwise


def table(spark: SparkSession, path: str, drop: tuple[str, ...]) -> DataFrame:
    """The Delta table at ``path`` without the ``drop`` columns, each sketch replaced by its estimate."""
    frame = spark.read.format("delta").load(path)
    missing = set(drop) - set(frame.columns)
    if missing:
        raise ValueError(f"drop: {sorted(missing)} are not columns of {path}")
    for sketch in SKETCHES:
        if sketch in frame.columns:
            frame = frame.withColumn(sketch, F.hll_sketch_estimate(sketch))
    return frame.drop(*drop)


def test_pipeline_on_a_standalone_cluster_equals_a_local_run(
    spark: SparkSession, cluster: ClusterSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    simulate(SimulationConfig(users=20, days=2, seed=5), tmp_path / "traffic", progress=False)
    events = tmp_path / "traffic" / "events"

    # One registry for both runs, holding a tiny champion detector.
    registry = tmp_path / "registry"
    _, detector_dir = tiny_detector(tmp_path / "tiny")
    decision = register_tiny_detector(LakePaths.at(registry), detector_dir, 0.5, {"eval_f1": 0.5})
    assert "promoted to champion" in decision
    tracking_uri = tracking_uri_for(LakePaths.at(registry))

    conf = tmp_path / "cluster-test.yaml"
    conf.write_text(
        json.dumps(
            {
                # Every executor is on 127.0.0.1: waiting for a "more local" one only adds 3 s per task set.
                "spark": {"shuffle_partitions": 2, "extra": {"spark.ui.enabled": "false", "spark.locality.wait": "0s"}},
                "ingest": {"max_files_per_trigger": 24},
            }
        )
    )
    log = tmp_path / "cluster-run.log"
    cluster_cli("wheel", "--out", tmp_path / "dist", log=log)
    archive = tmp_path / "dist" / "feedback-0.1.0-py3-none-any.zip"
    assert archive.is_file() and archive.read_bytes() == archive.with_suffix(".whl").read_bytes()

    cluster_lake = LakePaths.at(tmp_path / "cluster-lake")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    cluster_cli(
        "submit", "--root", cluster.root, "--py-files", archive,
        REPO / "jobs" / "pipeline.py", "--events", events, "--lake", cluster_lake.root, "--conf", conf,
        log=log,
    )  # fmt: skip

    # It ran on the cluster: one finished application, with an executor on each worker.
    state = master_state(cluster)
    apps = state["completedapps"]
    assert isinstance(apps, list) and [(a["name"], a["state"]) for a in apps] == [("feedback", "FINISHED")]
    app_id = apps[0]["id"]
    executors = sorted(p.relative_to(cluster.root / "work") for p in (cluster.root / "work").glob(f"worker-*/{app_id}/*/stderr"))
    assert [p.parts[0] for p in executors] == ["worker-1", "worker-2"]
    cluster_cli("down", "--root", cluster.root, log=log)  # free the cores before the local run

    local_lake = LakePaths.at(tmp_path / "local-lake")
    config = replace_section(load_config(conf), spark=TEST_SPARK)
    run_pipeline(spark, config, events, local_lake)

    for name, drop in RUN_DEPENDENT.items():
        on_cluster = table(spark, getattr(cluster_lake, name), drop)
        local = table(spark, getattr(local_lake, name), drop)
        assert on_cluster.count() == local.count() > 0, name
        assertDataFrameEqual(on_cluster, local, checkRowOrder=False)

    # Both runs scored rephrases with the registry's champion (on the cluster: unpacked from its archive).
    for lake in (cluster_lake, local_lake):
        scored = spark.read.format("delta").load(lake.silver_turns).filter("rephrase_score IS NOT NULL")
        assert {r["rephrase_detector"] for r in scored.select("rephrase_detector").distinct().collect()} == {f"{REPHRASE_DETECTOR}/1+int8"}
        assert (Path(lake.root) / "_models" / REPHRASE_DETECTOR / "1").is_dir()
