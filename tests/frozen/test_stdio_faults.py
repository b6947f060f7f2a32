"""Whatever happens to the host or to the sidecar's pipes, the sidecar keeps serving or leaves:
it is never left behind, holding the database, with nobody to talk to.

Every test runs over real processes and real pipes against the sidecar from source and then
against each frozen binary in ``TASKMILL_FROZEN_BINARY`` (see conftest.py). Each collects the
sidecar's whole process tree first (a onefile build is the bootloader and its Python child)
and requires all of it gone within 2 s of the moment nobody is left to serve.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.sidecar.client import ROOT, Sidecar

from .conftest import Build
from .processes import kill_all, process_tree, task_state, wait_gone

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process trees"),
]

HERE = Path(__file__).resolve().parent
PLUGIN = "tests.frozen.sample_plugin"
GONE_WITHIN_S = 2.0


def completions(messages: list[Any]) -> int:
    return sum(1 for m in messages if m.get("method") == "task.completed")


@pytest.mark.parametrize("parent_pid", [True, False], ids=["parent-pid", "no-parent-pid"])
def test_a_sigkilled_host_with_three_pipes_takes_the_sidecar_along(
    build: Build, parent_pid: bool, tmp_path: Path
) -> None:
    """The app dies outright while a task runs: its pipes close, and with them the sidecar's
    stdin, stdout and stderr. The sidecar (every process of it) is gone within 2 s, the task
    is back to ``pending`` and the database lock is free for the next start."""
    db = tmp_path / "tasks.db"
    app = subprocess.Popen(
        [
            *(sys.executable, str(HERE / "fake_app.py")),
            *(["--parent-pid"] if parent_pid else []),
            *(str(db), "--", *build.command),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    procs: list[psutil.Process] = []
    try:
        assert app.stdout is not None
        started = json.loads(app.stdout.readline())
        procs = process_tree(started["sidecar"])
        assert len(procs) == build.processes, procs
        app.send_signal(signal.SIGKILL)
        app.wait(10)
        took = wait_gone(procs, GONE_WITHIN_S)
    finally:
        app.kill()
        app.wait(10)
        if app.stdout is not None:
            app.stdout.close()
        kill_all(procs)  # what a failure left behind
    assert task_state(db, started["task"]) == ("pending", 0)
    again = Sidecar(db=db, command=build.command)
    try:
        assert again.ready()["recovered"] == {"requeued": 0}  # it was shut down, not lost
    finally:
        again.close()
    print(f"{build}: every sidecar process gone {took:.2f} s after the host's SIGKILL")


def test_a_client_closing_stderr_changes_nothing(build: Build, tmp_path: Path) -> None:
    """Logs have nowhere to go, so they are dropped: requests are answered as before (here
    after a line that is logged), and stdin EOF is the usual clean exit."""
    sc = Sidecar(db=tmp_path / "tasks.db", command=build.command, read_stderr=False)
    procs: list[psutil.Process] = []
    try:
        sc.ready()
        procs = process_tree(sc.proc.pid)
        assert sc.proc.stderr is not None
        sc.proc.stderr.close()
        sc.send_raw(b'garbage\n{"jsonrpc":"2.0","id":1,"method":"ping"}\n')
        assert sc.next_message()["error"]["code"] == -32700  # logged: "unparsable message"
        assert "now" in sc.response(1)["result"]
        task = sc.result("task.submit", {"type": "noop"})
        sc.event("task.completed", id=task["id"])
        sc.close_stdin()
        start = time.monotonic()
        assert sc.event("sidecar.exiting") == {"reason": "stdinClosed"}
        assert sc.wait_exit(GONE_WITHIN_S) == 0
        wait_gone(procs, GONE_WITHIN_S - (time.monotonic() - start))
    finally:
        kill_all(procs)  # a onefile child left behind would keep the client's pipes open
        sc.close()


def test_stderr_never_read_stalls_nothing(build: Build, tmp_path: Path) -> None:
    """A host that never reads stderr: 10,000 tasks that log at debug level (megabytes, far
    beyond a pipe's 64 KiB) all run, requests are answered, and the exit is prompt."""
    sc = Sidecar(
        "--log-level=debug",
        f"--plugin={PLUGIN}",
        db=tmp_path / "tasks.db",
        command=build.command,
        read_stderr=False,
    )
    procs: list[psutil.Process] = []
    try:
        sc.ready()
        procs = process_tree(sc.proc.pid)
        tasks = [{"type": "sample.log", "payload": {"n": n}} for n in range(10_000)]
        sc.result("task.submitBatch", {"tasks": tasks}, timeout=30)
        done = completions(sc.seen)  # those that came before the answer
        while done < len(tasks):
            done += completions([sc.next_message(timeout=30)])
        assert "now" in sc.result("ping", timeout=2)
        sc.close_stdin()
        start = time.monotonic()
        assert sc.event("sidecar.exiting") == {"reason": "stdinClosed"}
        assert sc.wait_exit(GONE_WITHIN_S) == 0
        wait_gone(procs, GONE_WITHIN_S - (time.monotonic() - start))
    finally:
        kill_all(procs)  # a onefile child left behind would keep the client's pipes open
        sc.close()
