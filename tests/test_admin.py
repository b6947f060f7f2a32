"""The admin command line (``taskmill``) against a database a running sidecar holds, and one
nobody holds: reading commands work in both cases, changing ones only in the second.

Each test runs the real command (``python -m sidecar.admin``) and, where it says so, the real
sidecar; every subprocess is bounded by a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sidecar.client import ROOT, Sidecar

READ_ONLY = (["status"], ["list"], ["list", "--state", "pending", "--type", "demo.a"],
             ["get", "1"], ["stats"], ["doctor"])  # fmt: skip


def admin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The admin command line as a user runs it (``taskmill`` is this module)."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar.admin", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def admin_json(*args: str) -> Any:
    done = admin(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fill(sc: Sidecar) -> None:
    """Three pending tasks nobody runs (no executor for their types), one cancelled."""
    for task_type in ("demo.a", "demo.a", "demo.b"):
        sc.result("task.submit", {"type": task_type, "payload": {}})
    sc.result("task.cancel", {"id": 3})


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, Sidecar]]:
    """A database a running sidecar holds."""
    db = tmp_path / "tasks.db"
    sc = Sidecar(db=db)
    try:
        sc.ready()
        fill(sc)
        yield db, sc
    finally:
        sc.close_stdin()
        sc.wait_exit()
        sc.close()


@pytest.fixture
def free(held: tuple[Path, Sidecar]) -> Path:
    """The same database once its sidecar has exited."""
    db, sc = held
    sc.close_stdin()
    assert sc.wait_exit() == 0
    return db


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_reading_commands_work_while_a_sidecar_holds_the_database(
    held: tuple[Path, Sidecar], command: list[str]
) -> None:
    db, sc = held
    human = admin(*command, "--db", str(db))
    assert human.returncode == 0, human.stderr
    assert human.stdout and human.stderr == ""
    machine = admin(*command, "--db", str(db), "--json")
    assert machine.returncode == 0, machine.stderr
    json.loads(machine.stdout)  # one JSON document
    assert sc.result("ping")  # the sidecar never noticed


def test_status_names_the_running_sidecar_and_counts_tasks(held: tuple[Path, Sidecar]) -> None:
    db, sc = held
    doc = admin_json("status", "--db", str(db))
    assert doc["sidecar"]["pid"] == sc.proc.pid
    assert doc["counts"]["pending"] == 2 and doc["counts"]["cancelled"] == 1
    assert f"in use by: pid {sc.proc.pid}" in admin("status", "--db", str(db)).stdout


def test_list_get_and_stats_show_what_the_sidecar_stored(held: tuple[Path, Sidecar]) -> None:
    db, _ = held
    listed = admin_json("list", "--db", str(db), "--state", "pending")["tasks"]
    assert [(t["id"], t["type"]) for t in listed] == [(2, "demo.a"), (1, "demo.a")]
    assert admin_json("get", "2", "--db", str(db))["state"] == "pending"
    types = admin_json("stats", "--db", str(db))["types"]
    assert types["demo.a"]["counts"] == {"pending": 2}
    assert types["demo.b"]["counts"] == {"cancelled": 1}
    missing = admin("get", "99", "--db", str(db))
    assert missing.returncode == 5 and "There is no task 99" in missing.stderr


def test_doctor_reports_integrity_schema_wal_and_the_lock_holder(
    held: tuple[Path, Sidecar],
) -> None:
    db, sc = held
    doc = admin_json("doctor", "--db", str(db))
    assert doc["problems"] == [] and doc["schemaVersion"] == doc["schemaVersionKnown"]
    assert doc["walBytes"] > 0  # the sidecar writes through the WAL
    assert doc["lock"] == {"pid": sc.proc.pid, "alive": True}
    text = admin("doctor", "--db", str(db)).stdout
    assert "integrity:  ok" in text and f"lock:       held by pid {sc.proc.pid}" in text


@pytest.mark.parametrize(
    "command", [["retry", "3"], ["cancel", "1"], ["prune", "--keep", "0"], ["vacuum"]], ids=" ".join
)
@pytest.mark.parametrize("mode", [[], ["--json"]], ids=["human", "json"])
def test_changing_commands_refuse_with_exit_3_while_a_sidecar_holds_the_database(
    held: tuple[Path, Sidecar], command: list[str], mode: list[str]
) -> None:
    db, sc = held
    done = admin(*command, "--db", str(db), *mode)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"A taskmill sidecar is using {db}; {command[0]} changes the database, so quit the "
        "app that runs it first (status, list, get, stats and doctor work meanwhile)."
    )
    assert sc.result("task.get", {"id": 1})["state"] == "pending"  # nothing changed


def test_changing_commands_work_once_no_sidecar_holds_the_database(free: Path) -> None:
    db = free
    assert admin_json("cancel", "1", "--db", str(db))["task"]["state"] == "cancelled"
    done = admin("cancel", "1", "--db", str(db))  # the scheduler's own rules apply
    assert done.returncode == 5 and "nothing was changed" in done.stderr
    refused = admin("retry", "3", "--db", str(db))  # cancelled: not failed or deadLetter
    assert refused.returncode == 5 and "can be retried" in refused.stderr
    human = admin("prune", "--keep", "0", "--db", str(db))
    assert human.returncode == 0 and human.stdout == "removed 2 finished tasks.\n"
    assert admin_json("vacuum", "--db", str(db))["afterBytes"] > 0
    assert admin_json("status", "--db", str(db))["counts"]["pending"] == 1
    assert admin_json("doctor", "--db", str(db))["lock"] == {"pid": None, "alive": False}
    assert not Path(f"{db}.lock").exists() or Path(f"{db}.lock").read_bytes() == b""


def test_status_names_no_sidecar_once_it_has_exited(free: Path) -> None:
    assert admin_json("status", "--db", str(free))["sidecar"] is None


def test_without_db_or_app_id_every_command_exits_2(tmp_path: Path) -> None:
    for command in ("status", "retry"):
        done = admin(command, *(["1"] if command == "retry" else []))
        assert done.returncode == 2
        assert "pass --db PATH, or --app-id ID" in done.stderr


def test_app_id_finds_the_apps_database(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_DATA_HOME steers platformdirs on Linux only")
    env = {"XDG_DATA_HOME": str(tmp_path)}
    sc = Sidecar("--app-id=com.example.photos", env=env)
    try:
        sc.ready()
        fill(sc)
        done = admin("status", "--app-id", "com.example.photos", "--json", env=env)
        assert json.loads(done.stdout)["db"] == str(tmp_path / "com.example.photos" / "tasks.db")
    finally:
        sc.close_stdin()
        sc.wait_exit()
        sc.close()


def test_help_documents_the_exit_codes() -> None:
    for command in ("status", "retry", "doctor"):
        text = admin(command, "--help").stdout
        assert "exit codes:" in text and "3  a running sidecar holds the database" in text


def test_after_a_sidecar_crash_the_lock_record_is_stale_and_changes_work(
    held: tuple[Path, Sidecar],
) -> None:
    db, sc = held
    sc.result("task.submit", {"type": "sleep", "payload": {"ms": 60_000}})  # running
    sc.wait_for(lambda m: isinstance(m, dict) and m.get("method") == "task.started")
    sc.kill()
    sc.wait_exit()
    assert admin_json("doctor", "--db", str(db))["lock"] == {"pid": sc.proc.pid, "alive": False}
    assert "(pid" in admin("doctor", "--db", str(db)).stdout  # "... held it and is gone"
    assert admin_json("status", "--db", str(db))["sidecar"] is None
    # The OS dropped the lock with the process: the admin opens the scheduler, which
    # requeues the interrupted task (logging nothing on stdout), and cancels it.
    assert admin_json("cancel", "4", "--db", str(db))["task"]["state"] == "cancelled"
