"""The sidecar on a user's machine: which database it opens, and what its logs look like.

Every test runs the real process (``tests/sidecar/client.py``) and is bounded by the client's
timeouts.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog
import structlog.testing

from sidecar.dbpath import app_id, db_for_app
from sidecar.logfile import FileLogHandler
from tests.sidecar.client import ROOT, Sidecar, sidecar_command

TIMEOUT_S = 30


def run_sidecar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*sidecar_command(), *args],
        input="",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=TIMEOUT_S,
    )


# --- no shared default database ----------------------------------------------------------


def test_without_db_or_app_id_the_sidecar_exits_2_saying_what_to_pass() -> None:
    done = run_sidecar()
    assert done.returncode == 2
    assert done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        "taskmill-sidecar: bad command line: no database given: pass --db PATH, or --app-id "
        "ID (your app's identifier, e.g. --app-id com.example.photos) to use tasks.db in "
        "that app's data directory."
    )


@pytest.mark.parametrize(
    "bad", ["photos", "../com.example", "com/example.photos", "com..x", ".a.b"]
)
def test_an_app_id_must_be_reverse_dns_without_path_separators(bad: str) -> None:
    done = run_sidecar("--app-id", bad)
    assert done.returncode == 2
    assert "is not an app id" in done.stderr.splitlines()[-1]


@pytest.mark.parametrize("good", ["com.example.photos", "dev.taskmill.example", "org.a-b.c_2"])
def test_reverse_dns_app_ids_are_accepted(good: str) -> None:
    assert app_id(good) == good
    assert db_for_app(good).parent.name == good and db_for_app(good).name == "tasks.db"


def test_db_and_app_id_together_are_a_bad_command_line(tmp_path: Path) -> None:
    done = run_sidecar("--db", str(tmp_path / "t.db"), "--app-id", "com.example.photos")
    assert done.returncode == 2
    assert "not allowed with argument" in done.stderr


def test_app_id_opens_tasks_db_in_that_apps_own_data_directory(tmp_path: Path) -> None:
    # platformdirs follows XDG_DATA_HOME on Linux (elsewhere: the platform's own place).
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_DATA_HOME steers platformdirs on Linux only")
    env = {"XDG_DATA_HOME": str(tmp_path)}
    photos = Sidecar("--app-id=com.example.photos", env=env)
    music = Sidecar("--app-id=com.example.music", env=env)
    try:
        assert photos.ready()["db"] == str(tmp_path / "com.example.photos" / "tasks.db")
        assert music.ready()["db"] == str(tmp_path / "com.example.music" / "tasks.db")
        # Two apps, two files: neither sidecar found the other's lock.
        assert photos.result("ping") and music.result("ping")
    finally:
        photos.close_stdin()
        music.close_stdin()
        assert photos.wait_exit() == 0 and music.wait_exit() == 0
        photos.close()
        music.close()


# --- logs --------------------------------------------------------------------------------


def test_every_stderr_line_is_json_including_stdlib_logging_and_the_log_file(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "logs" / "sidecar.log"  # its directory is created
    sc = Sidecar(
        "--plugin=tests.frozen.sample_plugin",
        "--log-level=debug",
        f"--log-file={log_file}",
        db=tmp_path / "t.db",
    )
    try:
        sc.ready()
        task = sc.result("task.submit", {"type": "sample.log", "payload": {"n": 7}})
        sc.event("task.completed", id=task["id"])
        sc.close_stdin()
        assert sc.wait_exit() == 0
    finally:
        sc.close()
    lines = [json.loads(line) for line in sc.stderr_text.splitlines()]  # each one JSON
    stdlib = [r for r in lines if r.get("logger") == "sample"]
    assert stdlib and stdlib[0]["event"].startswith("sample.log ran n=7")
    assert stdlib[0]["level"] == "debug" and "timestamp" in stdlib[0]
    assert any(r["event"] == "sample.log ran" and r["n"] == 7 for r in lines)  # structlog
    kept = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [r["event"] for r in kept] == [r["event"] for r in lines]


def test_a_log_file_that_cannot_be_opened_is_dropped_with_one_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sc = Sidecar(f"--log-file={blocker / 'sidecar.log'}", db=tmp_path / "t.db")
    try:
        sc.ready()
        assert sc.result("ping")
        sc.close_stdin()
        assert sc.wait_exit() == 0
    finally:
        sc.close()
    lines = [json.loads(line) for line in sc.stderr_text.splitlines()]
    assert [r["event"] for r in lines].count("log file not opened") == 1


def test_the_log_file_rotates_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.log"
    handler = FileLogHandler(path, max_bytes=4096, backups=3)
    logger = logging.getLogger("taskmill.test.rotation")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(2000):  # ~100 KB: the file rotates many times
            logger.warning("line %d %s", i, "x" * 40)
        assert handler.drain(10)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == [f"sidecar.log{s}" for s in ("", ".1", ".2", ".3")]
    assert all(f.stat().st_size <= 4096 for f in files)
    assert "line 1999 " in path.read_text().splitlines()[-1]  # the newest line is kept
    assert handler.dropped == 0 and handler.broken is None


def test_a_log_file_that_fails_later_is_dropped_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "sidecar.log"
    (tmp_path / "sidecar.log.1").mkdir()  # rotating onto a directory fails
    (tmp_path / "sidecar.log.1" / "keep").write_text("")
    handler = FileLogHandler(path, max_bytes=1024, backups=1)
    logger = logging.getLogger("taskmill.test.failing")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with structlog.testing.capture_logs() as warnings:
            for i in range(100):  # the first rotation fails; every later call is a no-op
                logger.warning("line %d %s", i, "x" * 40)
            deadline = time.monotonic() + 10
            while handler.broken is None and time.monotonic() < deadline:
                time.sleep(0.01)
            for i in range(100):
                logger.warning("after %d", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert handler.broken is not None
    assert [w["event"] for w in warnings] == ["log file dropped"]
    assert path.stat().st_size <= 1024 and "after" not in path.read_text()
