"""``taskmill repair``: every readable row of a damaged database is saved into a fresh one the
sidecar opens, the damaged file is kept beside it, and the report says what was lost.

The damaged files are real: a database made through the scheduler, closed, then one page in
the middle overwritten with random bytes (see ``tests/damage.py``)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskmill_core import TaskSpec
from taskmill_core.store.repair import repair

from .damage import (
    UNRUN,
    build_database,
    build_dependencies,
    overwrite_a_page,
    overwrite_page,
    page_size,
    readable_dependencies,
    readable_tasks,
)
from .helpers import open_scheduler
from .sidecar.client import ROOT, Sidecar

pytestmark = pytest.mark.timeout(90)


def admin(*args: str) -> subprocess.CompletedProcess[str]:
    """The admin command line as a user runs it (``taskmill`` is this module)."""
    return subprocess.run(
        [sys.executable, "-m", "sidecar.admin", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def rows_of(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def test_repair_saves_every_readable_task_of_a_page_overwritten_by_random_bytes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "tasks.db"
    build_database(db)
    healthy = readable_tasks(db)
    overwrite_a_page(db)
    readable = readable_tasks(db)
    lost = sorted(set(healthy) - set(readable))
    assert 0 < len(lost) < 100  # one page of rows
    damaged = db.read_bytes()

    report = repair(db, now=datetime(2026, 12, 7, 3, 4, 5, tzinfo=UTC))

    assert not report.healthy and report.problems
    tasks = report.table("tasks")
    assert tasks.saved == len(readable) and tasks.rejected == 0
    assert tasks.lost_known == lost  # the indexes name every lost task
    assert tasks.lost_at_most == len(lost)  # ids are dense: the bound is exact
    assert report.kept == tmp_path / "tasks.db.corrupt-20261207T030405Z"
    assert report.kept.read_bytes() == damaged
    # The fresh file holds exactly the readable rows, column for column...
    assert {r[0]: r for r in rows_of(db, "SELECT * FROM tasks")} == readable
    # ...and the other tables whole: the dependency row and the persisted configuration.
    assert report.table("task_deps").saved == 2
    assert rows_of(db, "SELECT key FROM settings") == rows_of(
        report.kept, "SELECT key FROM settings"
    )

    async def reopen() -> None:
        async with open_scheduler(db) as (sched, _, _):
            assert sched.config.max_concurrency == 3
            again = await sched.submit(TaskSpec(type=UNRUN))
            assert again.id > max(healthy)  # ids are never reused, lost ones included
            assert (await sched.get(readable_id)).state == "pending"

    readable_id = max(readable)
    anyio.run(reopen)


def test_a_sound_database_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    build_database(db, tasks=100)
    before = db.read_bytes()
    report = repair(db)
    assert report.healthy and report.tables == [] and report.kept is None
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks.db"]


def test_a_lost_tail_keeps_its_ids_from_being_handed_out_again(tmp_path: Path) -> None:
    """A truncated file loses the newest tasks (their index pages too): their ids are unknown,
    so the next ids start above any the file could have held."""
    db = tmp_path / "tasks.db"
    build_database(db, tasks=1000)
    healthy = readable_tasks(db)
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    report = repair(db)
    tasks = report.table("tasks")
    assert 0 < tasks.saved < len(healthy)
    assert tasks.lost_ranges and tasks.lost_ranges[-1][1] is None  # to the end

    async def reopen() -> int:
        async with open_scheduler(db) as (sched, _, _):
            return (await sched.submit(TaskSpec(type=UNRUN))).id

    assert anyio.run(reopen) > max(healthy)


def test_a_table_without_rowid_loses_only_the_rows_of_its_damaged_page(tmp_path: Path) -> None:
    """``task_deps`` is keyed (WITHOUT ROWID): it is read forwards up to the damage, then
    backwards from its end down to it."""
    db = tmp_path / "tasks.db"
    build_dependencies(db)
    pairs = rows_of(db, "SELECT task_id, dep_id FROM task_deps")
    assert len(pairs) == 8000
    # The pages of task_deps are the ones whose loss makes some of its rows unreadable.
    data = db.read_bytes()
    size = page_size(db)
    spoiled = None
    for page in range(len(data) // size // 2, len(data) // size):
        overwrite_page(db, page)
        readable = readable_dependencies(db, pairs)  # type: ignore[arg-type]
        if 0 < len(readable) < len(pairs) and page_is_a_leaf(data, page, size):
            spoiled = page
            break
        db.write_bytes(data)
    assert spoiled is not None, "no leaf page of task_deps in the second half of the file"

    report = repair(db)
    deps = report.table("task_deps")
    saved = set(rows_of(db, "SELECT task_id, dep_id FROM task_deps"))
    # Every row a lookup reads is saved, and nothing is made up. (The scan reaches one row
    # more than the lookups here: the first key after the damage, whose seek passes through
    # the damaged page.)
    assert readable <= saved <= set(pairs)
    assert len(saved) - len(readable) <= 2
    assert deps.saved == len(saved) and deps.rejected == 0
    assert deps.lost_unknown and not deps.unreadable
    assert report.table("tasks").complete


def page_is_a_leaf(data: bytes, page: int, size: int) -> bool:
    """Whether a page was a b-tree leaf before it was spoiled (an interior page's loss takes
    a whole subtree: that is another test)."""
    return data[page * size] in (0x0A, 0x0D)


def test_taskmill_repair_leaves_a_database_the_sidecar_opens(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    build_database(db)
    overwrite_a_page(db)
    readable = readable_tasks(db)

    done = admin("repair", "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    tasks = next(t for t in doc["tables"] if t["table"] == "tasks")
    assert tasks["saved"] == len(readable)
    assert Path(doc["kept"]).exists() and doc["healthy"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks.db", Path(doc["kept"]).name]

    sc = Sidecar(db=db)
    try:
        sc.ready()
        some = max(readable)
        assert sc.result("task.get", {"id": some})["state"] == "pending"
        lost = tasks["lostKnownIds"][0]
        assert sc.call("task.get", {"id": lost})["error"]["code"] == -32001
    finally:
        sc.close()
    again = admin("repair", "--db", str(db))
    assert again.returncode == 0
    assert "nothing to repair" in again.stdout


def test_taskmill_repair_refuses_while_a_sidecar_holds_the_database(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    sc = Sidecar(db=db)
    try:
        sc.ready()
        done = admin("repair", "--db", str(db))
        assert done.returncode == 3
        assert done.stderr.strip() == (
            f"A taskmill sidecar is using {db}; quit the app that runs it, then repair."
        )
        assert done.stdout == ""
    finally:
        sc.close()


def test_taskmill_repair_refuses_what_is_not_a_taskmill_database(tmp_path: Path) -> None:
    other = tmp_path / "notes.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes(x)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    done = admin("repair", "--db", str(other))
    assert done.returncode == 4
    assert done.stderr.strip().endswith("is not a taskmill database; the file was left untouched.")
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]
    assert admin("repair", "--db", str(tmp_path)).returncode == 4  # a directory


def test_the_admin_help_documents_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "admin", "repair", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0
    assert "usage: taskmill-sidecar admin repair" in done.stdout
    for code in ("0  done", "2  bad command line", "3  a running sidecar", "4  not a taskmill"):
        assert code in done.stdout
