"""Process-tree helpers shared by the frozen suites: what a sidecar is made of, and its end."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import psutil
import pytest


def process_tree(pid: int) -> list[psutil.Process]:
    """``pid`` and every process below it (a onefile build: the bootloader and its child)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def running(proc: psutil.Process) -> bool:
    """Still there (a zombie only waits for its new parent to reap it: it holds nothing)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float) -> float:
    """Seconds until every process in ``procs`` is gone; fails after ``timeout``."""
    start = time.monotonic()
    while any(running(p) for p in procs):
        if time.monotonic() - start > timeout:
            alive = [p for p in procs if running(p)]
            pytest.fail(f"still running after {timeout} s: {alive}")
        time.sleep(0.02)
    return time.monotonic() - start


def kill_all(procs: list[psutil.Process]) -> None:
    """SIGKILL whatever of ``procs`` still runs (the clean-up after a failed test)."""
    for proc in procs:
        if running(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def task_state(db: Path, task_id: int) -> tuple[str, int]:
    """A task's ``(state, attempt)`` read straight from the database file."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT state, attempt FROM tasks WHERE id=?", (task_id,)).fetchone()
    finally:
        conn.close()
    return row[0], row[1]
