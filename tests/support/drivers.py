"""A `feedback` driver as its own process, killed with SIGKILL at a chosen point (a crash, not a shutdown)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

KILLED = "killed"
FINISHED_FIRST = "finished first"
NOT_REACHED = "not reached"


def kill_driver_when(arguments: list[str], ready: Callable[[], bool], timeout_s: float, delay_s: float = 0.0) -> str:
    """Run ``feedback ARGUMENTS`` in its own process group and SIGKILL it ``delay_s`` after ``ready()`` holds.

    Returns ``KILLED``, ``FINISHED_FIRST`` (the driver exited on its own before the kill) or
    ``NOT_REACHED`` (``ready()`` did not hold within ``timeout_s``; the driver is killed anyway).
    """
    driver = subprocess.Popen(
        [sys.executable, "-m", "feedback.cli", *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if driver.poll() is not None:
                return FINISHED_FIRST
            if time.monotonic() > deadline:
                return NOT_REACHED
            time.sleep(0.05)
        time.sleep(delay_s)
        return KILLED if driver.poll() is None else FINISHED_FIRST
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def batch_in_flight(checkpoint: str, first: int) -> bool:
    """Whether the query of ``checkpoint`` has planned a micro-batch ``>= first`` (its offsets are
    written) that it has not committed yet: the driver is inside that batch."""
    offsets, commits = Path(checkpoint) / "offsets", Path(checkpoint) / "commits"
    planned = {int(p.name) for p in offsets.glob("[0-9]*")} if offsets.is_dir() else set()
    done = {int(p.name) for p in commits.glob("[0-9]*")} if commits.is_dir() else set()
    return any(batch >= first for batch in planned - done)


def committed_batches(checkpoint: str) -> int:
    """How many micro-batches the query of ``checkpoint`` has committed."""
    commits = Path(checkpoint) / "commits"
    return len(list(commits.glob("[0-9]*"))) if commits.is_dir() else 0
