"""A real multi-node Spark standalone cluster on this machine, from the installed pyspark.

``make cluster-up`` / ``cluster-demo`` / ``cluster-down`` and ``tests/integration/test_cluster.py`` all go
through this module, so the test exercises exactly what the Makefile runs:

    python -m feedback.ops.cluster up [--root .cluster] [--port 7077] [--webui-port 8080] [--workers 2]
    python -m feedback.ops.cluster wheel [--out dist]
    python -m feedback.ops.cluster submit [--root .cluster] --py-files dist/feedback-*.zip JOB [JOB ARGS...]
    python -m feedback.ops.cluster down [--root .cluster]

pyspark's wheel has no ``sbin/start-master.sh``, but it has ``bin/spark-class`` and
``sbin/spark-daemon.sh``: the master and each worker are started as daemons, with logs, pid
files, worker directories and a ``conf/spark-env.sh`` under ``--root``. The daemons, and so the
executors and their Python workers, run this venv's interpreter with
``TOKENIZERS_PARALLELISM=false``. Nothing is downloaded: ``submit`` passes the cached Delta jars
(``feedback.core.jars``) with ``--jars``.

Why the package goes to the executors as a ``.zip``: PySpark puts only ``.zip``, ``.egg`` and
``.jar`` files of ``--py-files`` on the executors' Python path (``SparkContext.PACKAGE_EXTENSIONS``),
and a ``.whl`` would be shipped but never imported. A pure-Python wheel is a zip archive, so
``wheel`` builds the wheel and writes the same bytes under a ``.zip`` name next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from feedback.ops.processes import free_port as any_free_port
from feedback.ops.processes import process_alive

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
IDENT = "feedback"
STATE_FILE = "cluster.json"
DAEMON_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYARROW_IGNORE_TIMEZONE": "1",
}
_HOST = re.compile(r"[A-Za-z0-9:][A-Za-z0-9.:-]{0,252}")
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_host(host: str) -> str:
    """``host`` if it is a hostname or an IP address (letters, digits, dots, hyphens, colons).

    The host reaches a shell (``spark-env.sh``), the daemons' command lines and URLs, so
    anything else (spaces, ``;``, ``$``, a leading ``-`` read as an option) is refused here.

    Raises:
        TypeError: ``host`` is not a string.
        ValueError: ``host`` is not such a name or address.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a string, got {type(host).__name__}")
    if _HOST.fullmatch(host) is None:
        raise ValueError(f"host must be a hostname or an IP address (letters, digits, '.', '-', ':'), got {host!r}")
    return host


@dataclass(frozen=True)
class ClusterSpec:
    """One standalone cluster: a master and ``workers`` workers on ``host``, state under ``root``."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 7077
    webui_port: int = 8080
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    daemon_memory: str = "512m"

    def __post_init__(self) -> None:
        if not isinstance(self.root, Path):
            raise TypeError(f"root must be a Path, got {type(self.root).__name__}")
        check_host(self.host)
        for name in ("port", "webui_port"):
            value = getattr(self, name)
            if not 0 < value < 65536:
                raise ValueError(f"{name} must be a TCP port (1-65535), got {value}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.worker_cores < 1:
            raise ValueError(f"worker_cores must be >= 1, got {self.worker_cores}")
        for name in ("worker_memory", "daemon_memory"):
            value = getattr(self, name)
            if not value or not value[:-1].isdigit() or value[-1] not in "mg":
                raise ValueError(f"{name} must look like 512m or 1g, got {value!r}")

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"


def spark_home() -> Path:
    """The installed pyspark package, which is a Spark distribution without ``sbin/start-*.sh``."""
    import pyspark

    home = Path(pyspark.__file__).resolve().parent
    for needed in ("bin/spark-class", "bin/spark-submit", "sbin/spark-daemon.sh"):
        if not (home / needed).is_file():
            raise FileNotFoundError(f"{home / needed} is missing: is pyspark installed in this venv?")
    return home


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it), on a checked host."""
    return any_free_port(check_host(host))


def daemon_env(spec: ClusterSpec, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of ``spark-daemon.sh``: where its logs, pids and conf go, and the workers' Python."""
    root = spec.root.resolve()
    env = dict(os.environ if base is None else base)
    env.update(DAEMON_ENV)
    env.update(
        {
            "SPARK_HOME": str(spark_home()),
            "SPARK_CONF_DIR": str(root / "conf"),
            "SPARK_LOG_DIR": str(root / "logs"),
            "SPARK_PID_DIR": str(root / "pids"),
            "SPARK_IDENT_STRING": IDENT,
            "SPARK_LOCAL_IP": spec.host,
            "SPARK_DAEMON_MEMORY": spec.daemon_memory,
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }
    )
    return env


def render_spark_env(host: str, python: str, extra: Mapping[str, str] | None = None) -> str:
    """The text of ``conf/spark-env.sh``, every value shell-quoted.

    ``load-spark-env.sh`` sources the file as shell for every daemon, so an unquoted value
    holding a space, ``$(...)`` or a backquote would be split or run as a command.

    Args:
        host: the address the daemons bind (``SPARK_LOCAL_IP``); see ``check_host``.
        python: the interpreter of the executors' Python workers (``PYSPARK_PYTHON``).
        extra: more variables to export; ``DAEMON_ENV`` when None.

    Raises:
        ValueError: ``host`` is not a hostname or an IP address, ``python`` is empty or holds a
            NUL byte, or a name of ``extra`` is not a shell variable name.
    """
    check_host(host)
    variables = {"PYSPARK_PYTHON": python, "SPARK_LOCAL_IP": host, **(DAEMON_ENV if extra is None else extra)}
    if not python:
        raise ValueError("python must be a non-empty path")
    lines = ["# Written by `python -m feedback.ops.cluster up`; sourced by spark-daemon.sh for the master and workers."]
    for name, value in variables.items():
        if _SHELL_NAME.fullmatch(name) is None:
            raise ValueError(f"extra: {name!r} is not a shell variable name")
        if "\0" in value:
            raise ValueError(f"{name}: a value cannot hold a NUL byte, got {value!r}")
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def _write_conf(spec: ClusterSpec) -> None:
    """``conf/spark-env.sh``: ``load-spark-env.sh`` sources it for every daemon (kept for inspection)."""
    conf = spec.root.resolve() / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "spark-env.sh").write_text(render_spark_env(spec.host, sys.executable))


def _daemon(env: Mapping[str, str], action: str, command: str, instance: int, *args: str) -> str:
    script = Path(env["SPARK_HOME"]) / "sbin" / "spark-daemon.sh"
    done = subprocess.run(
        ["bash", str(script), action, command, str(instance), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 or "failed to launch" in output:
        raise RuntimeError(f"spark-daemon.sh {action} {command} {instance} failed ({done.returncode}):\n{output}")
    return output


def master_state(spec: ClusterSpec, timeout_s: float = 5.0) -> dict[str, object]:
    """The master's JSON status (``/json/``): workers, running and completed applications."""
    with urllib.request.urlopen(f"{spec.webui_url}/json/", timeout=timeout_s) as response:
        state: dict[str, object] = json.loads(response.read())
    return state


def alive_workers(state: Mapping[str, object]) -> list[dict[str, object]]:
    workers = state.get("workers", [])
    if not isinstance(workers, list):
        raise TypeError(f"state['workers'] must be a list, got {type(workers).__name__}")
    return [w for w in workers if isinstance(w, dict) and w.get("state") == "ALIVE"]


def _wait_for_workers(spec: ClusterSpec, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        try:
            state = master_state(spec)
            if len(alive_workers(state)) >= spec.workers:
                return state
            last_error = f"{len(alive_workers(state))} of {spec.workers} workers alive"
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as error:
            last_error = str(error)
        time.sleep(0.5)
    raise TimeoutError(f"cluster at {spec.master_url} not ready after {timeout_s:.0f}s: {last_error} (logs: {spec.root / 'logs'})")


def _pid_files(root: Path) -> list[Path]:
    return sorted((root / "pids").glob(f"spark-{IDENT}-*.pid"))


def _read_pid(pid_file: Path) -> int:
    text = pid_file.read_text().strip()
    return int(text) if text.isdigit() else 0


def up(spec: ClusterSpec, timeout_s: float = 120.0) -> dict[str, object]:
    """Start the master and the workers, wait until every worker registered; returns the saved state.

    Raises:
        RuntimeError: a cluster is already running under ``spec.root`` or a daemon failed to start.
        TimeoutError: the workers did not register in time (the daemons are stopped again).
    """
    root = spec.root.resolve()
    running = [p for p in _pid_files(root) if process_alive(_read_pid(p))]
    if running:
        raise RuntimeError(f"a cluster is already running under {root} ({', '.join(p.name for p in running)}); run `down` first")
    for sub in ("logs", "pids", "work"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    _write_conf(spec)
    env = daemon_env(spec)
    worker_ports = [free_port(spec.host) for _ in range(spec.workers)]
    try:
        _daemon(env, "start", MASTER_CLASS, 1, "--host", spec.host, "--port", str(spec.port), "--webui-port", str(spec.webui_port))
        for instance, webui in enumerate(worker_ports, start=1):
            _daemon(
                env,
                "start",
                WORKER_CLASS,
                instance,
                spec.master_url,
                "--host", spec.host,
                "--cores", str(spec.worker_cores),
                "--memory", spec.worker_memory,
                "--webui-port", str(webui),
                "--work-dir", str(root / "work" / f"worker-{instance}"),
            )  # fmt: skip
        _wait_for_workers(spec, timeout_s)
    except (RuntimeError, TimeoutError):
        down(root)
        raise
    state: dict[str, object] = {
        "spec": {**asdict(spec), "root": str(root)},
        "master_url": spec.master_url,
        "webui_url": spec.webui_url,
        "worker_webui_ports": worker_ports,
    }
    (root / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    return state


def load_state(root: Path) -> dict[str, object]:
    """What ``up`` saved under ``root``.

    Raises:
        FileNotFoundError: no cluster was started there.
    """
    path = root.resolve() / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no cluster under {root.resolve()}: run `python -m feedback.ops.cluster up --root {root}` first")
    state: dict[str, object] = json.loads(path.read_text())
    return state


def down(root: Path, timeout_s: float = 60.0) -> list[str]:
    """Stop every daemon started under ``root`` (workers first), waiting for each to exit; idempotent.

    The workers kill their executors when they stop. A daemon still alive after ``timeout_s``
    gets SIGKILL (by its own pid, from its pid file). Returns what was stopped.
    """
    root = root.resolve()
    pid_files = _pid_files(root)
    if not pid_files:
        return []
    state = load_state(root) if (root / STATE_FILE).is_file() else None
    spec_fields = dict(state["spec"]) if state is not None and isinstance(state.get("spec"), dict) else {"root": str(root)}
    spec = ClusterSpec(**{**spec_fields, "root": root})
    env = daemon_env(spec)
    stopped: list[str] = []
    ordered = sorted(pid_files, key=lambda p: (MASTER_CLASS in p.name, p.name))  # workers before the master
    for pid_file in ordered:
        pid = _read_pid(pid_file)
        command, _, instance = pid_file.name.removeprefix(f"spark-{IDENT}-").removesuffix(".pid").rpartition("-")
        if process_alive(pid):
            _daemon(env, "stop", command, int(instance))
            deadline = time.monotonic() + timeout_s
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
            stopped.append(f"{command.rsplit('.', 1)[-1]} {instance} (pid {pid})")
        pid_file.unlink(missing_ok=True)
    (root / STATE_FILE).unlink(missing_ok=True)
    return stopped


def build_wheel(project: Path, out: Path) -> tuple[Path, Path]:
    """Build the package's wheel into ``out`` and its ``.zip`` twin for --py-files.

    Offline (no build isolation: the venv's setuptools) and from a clean copy of ``pyproject.toml``,
    ``README.md`` and ``src/``, so no stale ``build/`` folder of an earlier build leaks into it.

    Returns:
        (wheel, zip): the same archive under both names.
    """
    project = project.resolve()
    if not (project / "pyproject.toml").is_file():
        raise ValueError(f"project: {project} has no pyproject.toml")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("feedback-*"):
        stale.unlink()
    with tempfile.TemporaryDirectory(prefix="feedback-wheel-") as scratch:
        source = Path(scratch) / "project"
        shutil.copytree(project / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(project / name, source / name)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(source)],
            check=True,
            timeout=600,
        )
    wheels = sorted(out.glob("feedback-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one feedback wheel in {out}, found {[w.name for w in wheels]}")
    archive = wheels[0].with_suffix(".zip")
    shutil.copyfile(wheels[0], archive)
    return wheels[0], archive


def submit_command(
    master_url: str,
    job: Path,
    job_args: Sequence[str],
    py_files: Sequence[Path],
    jars: Sequence[Path],
    driver_host: str = "127.0.0.1",
    extra_conf: Mapping[str, str] | None = None,
) -> list[str]:
    """The spark-submit command line that runs ``job`` on ``master_url`` (client mode).

    Only what must exist before the driver's JVM starts is here: the master, the Delta jars, the
    Python files and the interpreter; ``feedback.core.spark.build_spark`` adds the rest in the driver.
    """
    if not master_url.startswith(("spark://", "local", "yarn", "k8s://")):
        raise ValueError(f"master_url must be a Spark master URL, got {master_url!r}")
    if not job.is_file():
        raise FileNotFoundError(f"job: {job} does not exist")
    command = [
        str(spark_home() / "bin" / "spark-submit"),
        "--master", master_url,
        "--deploy-mode", "client",
        "--conf", f"spark.driver.host={driver_host}",
        "--conf", f"spark.pyspark.python={sys.executable}",
        "--conf", f"spark.pyspark.driver.python={sys.executable}",
        *[item for key, value in DAEMON_ENV.items() for item in ("--conf", f"spark.executorEnv.{key}={value}")],
    ]  # fmt: skip
    for key, value in (extra_conf or {}).items():
        command += ["--conf", f"{key}={value}"]
    if jars:
        command += ["--jars", ",".join(str(Path(j).resolve()) for j in jars)]
    if py_files:
        command += ["--py-files", ",".join(str(Path(p).resolve()) for p in py_files)]
    return [*command, str(job.resolve()), *job_args]


def submit_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's environment: this venv's Python for the driver and (through it) the executors."""
    env = dict(os.environ if base is None else base)
    env.update(DAEMON_ENV)
    env.update({"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_HOME": str(spark_home())})
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m feedback.ops.cluster", description="a Spark standalone cluster on 127.0.0.1")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start a master and workers")
    start.add_argument("--root", type=Path, default=Path(".cluster"), help="logs, pids, conf and worker dirs")
    start.add_argument("--host", default="127.0.0.1")
    start.add_argument("--port", type=int, default=7077, help="master port (0: a free one)")
    start.add_argument("--webui-port", type=int, default=8080, help="master web UI port (0: a free one)")
    start.add_argument("--workers", type=int, default=2)
    start.add_argument("--cores", type=int, default=1, help="cores per worker")
    start.add_argument("--memory", default="1g", help="memory per worker")
    start.add_argument("--timeout", type=float, default=120.0)
    stop = commands.add_parser("down", help="stop the daemons started under --root")
    stop.add_argument("--root", type=Path, default=Path(".cluster"))
    wheel = commands.add_parser("wheel", help="build the package's wheel and its .zip twin for --py-files")
    wheel.add_argument("--project", type=Path, default=Path("."))
    wheel.add_argument("--out", type=Path, default=Path("dist"))
    run = commands.add_parser("submit", help="spark-submit a job to the cluster under --root")
    run.add_argument("--root", type=Path, default=Path(".cluster"))
    run.add_argument("--master", default=None, help="default: the master saved by `up`")
    run.add_argument("--py-files", type=Path, action="append", default=[], help="the package archive (see `wheel`)")
    run.add_argument("--spark-conf", type=Path, default=None, help="YAML whose spark section gives the jars dir (default: the defaults)")
    run.add_argument("job", type=Path, help="entry point, e.g. jobs/pipeline.py")
    run.add_argument("job_args", nargs=argparse.REMAINDER, help="the job's own arguments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        spec = ClusterSpec(
            root=args.root,
            host=args.host,
            port=args.port or free_port(args.host),
            webui_port=args.webui_port or free_port(args.host),
            workers=args.workers,
            worker_cores=args.cores,
            worker_memory=args.memory,
        )
        state = up(spec, args.timeout)
        print(f"master {state['master_url']} (web UI {state['webui_url']}), {spec.workers} workers x {spec.worker_cores} core")
    elif args.command == "down":
        stopped = down(args.root)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.command == "wheel":
        wheel_path, archive = build_wheel(args.project, args.out)
        print(f"{wheel_path}\n{archive}")
    else:
        from feedback.config import load_config
        from feedback.core.spark import spark_conf

        master = args.master or str(load_state(args.root)["master_url"])
        spark_config = load_config(args.spark_conf).spark
        jars = [Path(p) for p in spark_conf(spark_config)["spark.jars"].split(",")]
        command = submit_command(master, args.job, args.job_args, args.py_files, jars, extra_conf={"spark.log.level": spark_config.log_level})
        print(" ".join(command), flush=True)
        return subprocess.run(command, env=submit_env(), check=False).returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
