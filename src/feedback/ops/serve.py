"""The ``query-rewriter`` champion behind ``mlflow models serve`` on this machine, as a runtime calls it.

Used by ``make demo`` to show one rewrite over HTTP, and by the serving test. The server runs in
its own process group (it forks uvicorn workers), from this venv (``--env-manager local``), against
the lake's MLflow store, bound to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from feedback.core.lake import LakePaths
from feedback.core.registry import QUERY_REWRITER, champion_uri, tracking_uri_for
from feedback.ops.processes import free_port

HOST = "127.0.0.1"


def wait_for_ping(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; fail early when the server process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@contextmanager
def served_rewriter(lake: LakePaths, log_path: Path, model_uri: str | None = None, timeout_s: float = 120.0) -> Iterator[str]:
    """Serve ``model_uri`` (default ``models:/query-rewriter@champion``) of ``lake``'s store; yields the base URL.

    The server's output goes to ``log_path``; it is stopped when the block ends.
    """
    port = free_port(HOST)
    bin_dir = str(Path(sys.executable).parent)  # the server runs `uvicorn` from PATH: this venv's
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri_for(lake), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "models", "serve", "-m", model_uri or champion_uri(QUERY_REWRITER), "--env-manager", "local",
        "-h", HOST, "-p", str(port), "--workers", "1",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://{HOST}:{port}"
            wait_for_ping(f"{url}/ping", process, timeout_s)
            yield url
        finally:
            stop_server(process)


def invoke(url: str, utterances: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST ``utterances`` to ``url``'s ``/invocations``; returns the request body and the answer."""
    body = {"dataframe_records": [{"utterance": text} for text in utterances]}
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return body, json.loads(response.read())
