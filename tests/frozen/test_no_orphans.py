"""The frozen sidecar leaves nothing behind: no process, no ``_MEI*`` directory, no lost work.

Runs against each binary in ``TASKMILL_FROZEN_BINARY`` (see conftest.py). A onefile binary is
two processes, the bootloader the host spawned and its Python child; every test collects the
whole tree with psutil before the blow, then requires all of it gone. Each sidecar gets a
private ``TMPDIR``, so the ``_MEI*`` directory a onefile build unpacks into can be watched.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.sidecar.client import Sidecar

from .conftest import Frozen
from .processes import process_tree, task_state, wait_gone

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process trees"),
]

HERE = Path(__file__).resolve().parent
PLUGIN = "tests.frozen.sample_plugin"
GONE_WITHIN_S = 2.0


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> dict[str, str]:
    private = tmp_path / "tmp"
    private.mkdir()
    return {"TMPDIR": str(private)}


@pytest.fixture
def sidecar_cmd(frozen: Frozen, monkeypatch: pytest.MonkeyPatch) -> Frozen:
    monkeypatch.setenv("TASKMILL_SIDECAR_CMD", shlex.quote(str(frozen.path)))
    return frozen


def mei_dirs(env: dict[str, str]) -> list[str]:
    return sorted(p.name for p in Path(env["TMPDIR"]).glob("_MEI*"))


def expect_tree(frozen: Frozen, procs: list[psutil.Process]) -> None:
    """onefile: the bootloader and its Python child, both the binary; onedir: one process."""
    assert len(procs) == (2 if frozen.mode == "onefile" else 1), procs
    for proc in procs:
        assert os.path.samefile(proc.exe(), frozen.path)


def start_long_task(sc: Sidecar) -> int:
    sc.ready()
    task: dict[str, Any] = sc.result("task.submit", {"type": "sleep", "payload": {"ms": 60_000}})
    sc.event("task.started", id=task["id"])
    return int(task["id"])


def test_parent_sigkill_takes_every_sidecar_process(
    frozen: Frozen, tmp_path: Path, tmpdir_env: dict[str, str]
) -> None:
    """The Tauri app SIGKILLed: the sidecar tree is gone within 2 s, its work is pending."""
    db, log = tmp_path / "tasks.db", tmp_path / "sidecar.log"
    app = subprocess.Popen(
        [
            *(sys.executable, str(HERE / "fake_app.py"), "--parent-pid", f"--stderr-log={log}"),
            *(str(db), "--", str(frozen.path)),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, **tmpdir_env},
        cwd=tmp_path,
    )
    try:
        assert app.stdout is not None
        started = json.loads(app.stdout.readline())
        procs = process_tree(started["sidecar"])
        expect_tree(frozen, procs)
        app.send_signal(signal.SIGKILL)
        app.wait(10)
        took = wait_gone(procs, GONE_WITHIN_S)
    finally:
        app.kill()
        app.wait(10)
        if app.stdout is not None:
            app.stdout.close()
    assert task_state(db, started["task"]) == ("pending", 0)
    assert '"reason": "parentExited"' in log.read_text(), log.read_text()
    assert mei_dirs(tmpdir_env) == []
    print(f"{frozen.mode}: every sidecar process gone {took:.2f} s after the parent's SIGKILL")


def test_sigkill_of_the_bootloader_takes_the_python_child(
    sidecar_cmd: Frozen, tmp_path: Path, tmpdir_env: dict[str, str]
) -> None:
    """``kill()`` of the pid the host holds (the onefile bootloader) takes the child too."""
    if sidecar_cmd.mode != "onefile":
        pytest.skip("onedir is one process: SIGKILL takes all of it")
    db = tmp_path / "tasks.db"
    sc = Sidecar(db=db, env=tmpdir_env)
    try:
        start_long_task(sc)
        procs = process_tree(sc.proc.pid)
        expect_tree(sidecar_cmd, procs)
        assert len(mei_dirs(tmpdir_env)) == 1
        sc.proc.kill()
        sc.proc.wait(10)
        took = wait_gone(procs, GONE_WITHIN_S)
    finally:
        sc.close()
    assert mei_dirs(tmpdir_env) == []  # the child removed what its bootloader could not
    again = Sidecar(db=db, env=tmpdir_env)  # the database lock is free: a new start works
    try:
        assert again.ready()["recovered"] == {"requeued": 1}  # as after a SIGKILL: recovered
    finally:
        again.close()
    print(f"onefile: the Python child gone {took:.2f} s after the bootloader's SIGKILL")


def test_stdin_closed_is_a_clean_exit(
    sidecar_cmd: Frozen, tmp_path: Path, tmpdir_env: dict[str, str]
) -> None:
    db = tmp_path / "tasks.db"
    sc = Sidecar(db=db, env=tmpdir_env)
    try:
        task = start_long_task(sc)
        procs = process_tree(sc.proc.pid)
        expect_tree(sidecar_cmd, procs)
        sc.close_stdin()
        assert sc.event("sidecar.exiting") == {"reason": "stdinClosed"}
        assert sc.wait_exit() == 0
        wait_gone(procs, GONE_WITHIN_S)
    finally:
        sc.close()
    assert sc.bad_lines == []
    assert task_state(db, task) == ("pending", 0)
    assert mei_dirs(tmpdir_env) == []


def test_sigterm_is_forwarded_and_clean(
    sidecar_cmd: Frozen, tmp_path: Path, tmpdir_env: dict[str, str]
) -> None:
    """SIGTERM to the spawned pid (onefile: the bootloader forwards it) is a graceful exit 0."""
    db = tmp_path / "tasks.db"
    sc = Sidecar(db=db, env=tmpdir_env)
    try:
        task = start_long_task(sc)
        procs = process_tree(sc.proc.pid)
        sc.proc.send_signal(signal.SIGTERM)
        assert sc.event("sidecar.exiting") == {"reason": "signal"}
        assert sc.wait_exit() == 0
        wait_gone(procs, GONE_WITHIN_S)
    finally:
        sc.close()
    assert task_state(db, task) == ("pending", 0)
    assert mei_dirs(tmpdir_env) == []


def test_no_mei_directories_after_many_clean_exits(
    sidecar_cmd: Frozen, tmp_path: Path, tmpdir_env: dict[str, str]
) -> None:
    for _ in range(3):
        sc = Sidecar(db=tmp_path / "tasks.db", env=tmpdir_env)
        try:
            sc.ready()
            if sidecar_cmd.mode == "onefile":
                assert len(mei_dirs(tmpdir_env)) == 1  # it does unpack here
            sc.close_stdin()
            assert sc.wait_exit() == 0
        finally:
            sc.close()
        assert mei_dirs(tmpdir_env) == []


def test_a_bundled_plugin_loads(sidecar_cmd: Frozen, tmp_path: Path) -> None:
    """Built with ``--plugin tests.frozen.sample_plugin`` (as CI does): the binary runs it."""
    sc = Sidecar(f"--plugin={PLUGIN}", db=tmp_path / "tasks.db")
    try:
        assert "sample.double" in sc.ready()["executors"], sc.stderr_text
        task = sc.result("task.submit", {"type": "sample.double", "payload": {"n": 21}})
        done = sc.event("task.completed", id=task["id"])
        assert done["result"] == {"value": 42}
    finally:
        sc.close()
