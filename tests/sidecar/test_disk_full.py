"""A full disk, for real: the sidecar answers ``-32006 storage``, keeps serving, and resumes
by itself when space returns (PROTOCOL.md, error codes).

The database lives on a 3 MB tmpfs that the test mounts, which needs root (CI runs the
suite as root); elsewhere the test is skipped. Tasks are queued and running when a filler
file takes the last byte of the filesystem; then submits with a 2 KB payload (a row that
needs new pages) must fail with ``-32006``, reads must still answer, and once the filler is
deleted every acknowledged task completes exactly once, without a restart.
"""

from __future__ import annotations

import collections
import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .client import Sidecar

STORAGE = -32006


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs, unmounted after the test."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux (CI runs the suite as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)


def _completions(sc: Sidecar) -> collections.Counter[int]:
    return collections.Counter(
        m["params"]["id"]
        for m in sc.seen
        if isinstance(m, dict) and m.get("method") == "task.completed" and "id" not in m
    )


def _drain(sc: Sidecar, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            sc.next_message(left)
        except Exception:  # (queue.Empty: nothing more in this window)
            return


def test_a_full_disk_answers_storage_keeps_serving_and_resumes_when_space_returns(
    small_fs: Path,
) -> None:
    sc = Sidecar(db=small_fs / "tasks.db")
    try:
        sc.ready()
        acked: list[int] = []
        for _ in range(72):
            r = sc.result("task.submit", {"type": "sleep", "payload": {"ms": 100}})
            acked.append(r["id"])
        _fill(small_fs / "filler")

        errors: list[dict[str, Any]] = []
        for _ in range(200):  # a 2 KB payload overflows its page: the WAL has to grow
            r = sc.call("task.submit", {"type": "sleep", "payload": {"ms": 1, "pad": "x" * 2048}})
            if "result" in r:
                acked.append(r["result"]["id"])
            else:
                errors.append(r["error"])
                if len(errors) == 3:
                    break
        assert errors, "200 submits of 2 KB went through on a full filesystem"
        assert [e["code"] for e in errors] == [STORAGE] * len(errors), errors
        assert all(e["data"]["kind"] == "storage" for e in errors), errors

        # Still serving: reads answer, and the failed writes of finished runs (retried by the
        # dispatcher) do not end the process.
        _drain(sc, 3.0)
        assert sc.proc.poll() is None, sc.stderr_text
        assert sc.result("scheduler.status")["counts"]
        assert sc.result("task.list", {"limit": 5})["tasks"]
        assert (
            sc.call("task.submit", {"type": "sleep", "payload": {"pad": "y" * 2048}})["error"][
                "code"
            ]
            == STORAGE
        )

        (small_fs / "filler").unlink()  # space returns: the work goes on by itself
        deadline = time.monotonic() + 90
        while set(acked) - set(_completions(sc)) and time.monotonic() < deadline:
            _drain(sc, 1.0)
        done = _completions(sc)
        assert not set(acked) - set(done), f"never completed: {sorted(set(acked) - set(done))}"
        assert all(done[i] == 1 for i in acked), {i: done[i] for i in acked if done[i] != 1}
        assert sc.proc.poll() is None, sc.stderr_text
        assert not any(
            isinstance(m, dict) and m.get("method") == "sidecar.exiting" for m in sc.seen
        )
        states = {sc.result("task.get", {"id": i})["state"] for i in acked}
        assert states == {"completed"}
        assert not sc.bad_lines
    finally:
        sc.close()
