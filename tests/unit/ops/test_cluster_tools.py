"""The pieces of a cluster run that need no cluster: the spec, the spark-submit line, the session's submit mode, the detector archive."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from feedback.config import SparkConfig
from feedback.core.jars import jar_paths
from feedback.core.spark import spark_conf, submitted_driver
from feedback.ops.cluster import (
    ClusterSpec,
    daemon_env,
    down,
    free_port,
    render_spark_env,
    spark_home,
    submit_command,
    submit_env,
)
from feedback.rephrase.spark import detector_archive

from support.paths import REPO


def test_cluster_spec_validates_its_fields(tmp_path: Path) -> None:
    spec = ClusterSpec(root=tmp_path, port=7177, webui_port=8180)
    assert (spec.master_url, spec.webui_url) == ("spark://127.0.0.1:7177", "http://127.0.0.1:8180")
    with pytest.raises(ValueError, match="port must be a TCP port"):
        ClusterSpec(root=tmp_path, port=0)
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        ClusterSpec(root=tmp_path, workers=0)
    with pytest.raises(ValueError, match="worker_memory must look like 512m or 1g, got '1 GB'"):
        ClusterSpec(root=tmp_path, worker_memory="1 GB")
    with pytest.raises(TypeError, match="root must be a Path, got str"):
        ClusterSpec(root=str(tmp_path))  # type: ignore[arg-type]


def test_spark_env_sh_quotes_every_value(tmp_path: Path) -> None:
    python = f"{tmp_path}/my venv $(touch x) `touch y` it's/bin/python"
    env_file = tmp_path / "spark-env.sh"
    env_file.write_text(render_spark_env("127.0.0.1", python, {"NOTE": "a; touch z"}))
    sourced = subprocess.run(
        ["bash", "-c", 'source "$1"; printf %s "$PYSPARK_PYTHON"; printf "|%s|%s" "$SPARK_LOCAL_IP" "$NOTE"', "bash", str(env_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert sourced.stdout == f"{python}|127.0.0.1|a; touch z"
    assert sourced.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spark-env.sh"]
    defaults = render_spark_env("::1", sys.executable)
    names = ("TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYARROW_IGNORE_TIMEZONE")
    daemon_exports = [line for line in defaults.splitlines() if line.startswith(tuple(f"export {name}=" for name in names))]
    assert daemon_exports == [
        "export TOKENIZERS_PARALLELISM=false",
        "export HF_HUB_OFFLINE=1",
        "export TRANSFORMERS_OFFLINE=1",
        "export PYARROW_IGNORE_TIMEZONE=1",
    ]


@pytest.mark.parametrize("host", ["127.0.0.1; rm -rf /", "$(touch x)", "a b", "--help", "", "h`id`"])
def test_a_host_that_is_no_name_or_address_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="host must be a hostname or an IP address"):
        render_spark_env(host, sys.executable)
    with pytest.raises(ValueError, match="host must be a hostname or an IP address"):
        ClusterSpec(root=tmp_path, host=host)
    with pytest.raises(ValueError, match="host must be a hostname or an IP address"):
        free_port(host)
    for good in ("127.0.0.1", "::1", "fe80::1", "worker-1.example.org", "localhost"):
        assert ClusterSpec(root=tmp_path, host=good).host == good


def test_daemons_run_this_venvs_python_without_tokenizer_threads(tmp_path: Path) -> None:
    env = daemon_env(ClusterSpec(root=tmp_path), base={"PATH": "/usr/bin"})
    assert env["PYSPARK_PYTHON"] == sys.executable
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert (env["SPARK_PID_DIR"], env["SPARK_LOG_DIR"]) == (str(tmp_path / "pids"), str(tmp_path / "logs"))
    assert env["SPARK_HOME"] == str(spark_home()) and (spark_home() / "sbin" / "spark-daemon.sh").is_file()
    assert "PYSPARK_GATEWAY_PORT" not in submit_env({"PYSPARK_GATEWAY_PORT": "1"})


def test_down_without_a_cluster_stops_nothing(tmp_path: Path) -> None:
    assert down(tmp_path / "never-started") == []


def test_submit_command_ships_jars_archive_and_interpreter(tmp_path: Path) -> None:
    archive = tmp_path / "feedback-0.1.0-py3-none-any.zip"
    archive.write_bytes(b"PK")
    jars = jar_paths()
    command = submit_command("spark://127.0.0.1:7077", REPO / "jobs" / "pipeline.py", ["--lake", "x"], [archive], jars)
    assert command == [
        str(spark_home() / "bin" / "spark-submit"),
        "--master", "spark://127.0.0.1:7077",
        "--deploy-mode", "client",
        "--conf", "spark.driver.host=127.0.0.1",
        "--conf", f"spark.pyspark.python={sys.executable}",
        "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--conf", "spark.executorEnv.TOKENIZERS_PARALLELISM=false",
        "--conf", "spark.executorEnv.HF_HUB_OFFLINE=1",
        "--conf", "spark.executorEnv.TRANSFORMERS_OFFLINE=1",
        "--conf", "spark.executorEnv.PYARROW_IGNORE_TIMEZONE=1",
        "--jars", ",".join(str(j) for j in jars),
        "--py-files", str(archive),
        str(REPO / "jobs" / "pipeline.py"), "--lake", "x",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="master_url must be a Spark master URL, got '127.0.0.1:7077'"):
        submit_command("127.0.0.1:7077", REPO / "jobs" / "pipeline.py", [], [], [])
    with pytest.raises(FileNotFoundError, match="job: .*nope.py does not exist"):
        submit_command("spark://h:1", REPO / "jobs" / "nope.py", [], [], [])


def test_a_submitted_driver_keeps_the_submitters_master_and_jars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert submitted_driver() is False
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")
    assert submitted_driver() is True
    config = SparkConfig(jars_dir="/nowhere")  # no jar lookup at all when the submitter provides them
    assert "spark.jars" not in spark_conf(config, include_jars=False)
    with pytest.raises(FileNotFoundError, match="jars missing: .*delta-spark"):
        spark_conf(config)


def test_detector_archive_holds_the_folder_at_its_root(tmp_path: Path) -> None:
    folder = tmp_path / "artifacts" / "detector"
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).write_text(name)
    archive = detector_archive(folder, "rephrase-detector-3")
    assert archive == tmp_path / "artifacts" / "rephrase-detector-3.zip"
    with zipfile.ZipFile(archive) as opened:
        assert sorted(opened.namelist()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert detector_archive(folder, "rephrase-detector-3").stat().st_mtime_ns == archive.stat().st_mtime_ns  # built once
    with pytest.raises(ValueError, match="is not a saved model"):
        detector_archive(tmp_path, "x")
