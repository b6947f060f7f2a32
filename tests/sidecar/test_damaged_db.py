"""A damaged or wrong database file, over the real sidecar process: exit 4, one sentence on
stderr that names the way out, and nothing created or changed beside the file (PROTOCOL.md
"Lifecycle"); damage met while serving ends the sidecar the way a fatal error does.

Set ``TASKMILL_SIDECAR_CMD`` to run this suite against another build (the frozen binary).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..damage import (
    a_page_of_tasks,
    build_database,
    overwrite_a_page,
    overwrite_page,
    readable_tasks,
)
from .client import Sidecar

pytestmark = pytest.mark.timeout(60)


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every entry of a folder with its content (None for a directory)."""
    return {p.name: None if p.is_dir() else p.read_bytes() for p in folder.iterdir()}


def refused(db: Path) -> str:
    """Run the sidecar on ``db``; it must exit 4 without a word on stdout. Returns the
    sentence, which must be the last line of stderr and the only one that is not a log."""
    sc = Sidecar(db=db)
    try:
        assert sc.wait_exit() == 4
        sc.close()
        assert sc.messages.qsize() == 1  # only the EOF marker: nothing on stdout
        lines = [ln for ln in sc.stderr_text.splitlines() if ln.strip()]
        plain = [ln for ln in lines if not ln.startswith("{")]
        assert plain == [lines[-1]], sc.stderr_text
        assert "Traceback" not in sc.stderr_text and "ExceptionGroup" not in sc.stderr_text
        return lines[-1]
    finally:
        sc.close()


def test_a_directory_as_the_database_exits_4_with_one_sentence(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    db.mkdir()
    before = listing(tmp_path)
    sentence = refused(db)
    assert sentence == f"{db} is a directory, not a database file; the file was left untouched."
    assert listing(tmp_path) == before  # not even a lock file


def test_a_page_overwritten_by_random_bytes_exits_4_naming_repair(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    build_database(db)
    overwrite_a_page(db)
    before = listing(tmp_path)
    sentence = refused(db)
    assert "database disk image is malformed" in sentence
    assert f"run `taskmill repair --db {db}`" in sentence
    assert listing(tmp_path) == before  # the file unchanged; no -wal, -shm or lock file


def test_a_truncated_file_is_refused_without_creating_files_beside_it(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    build_database(db, tasks=1000)
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    before = listing(tmp_path)
    sentence = refused(db)
    assert listing(tmp_path) == before  # no -wal and -shm from the read-only check
    assert f"the file is damaged and was left untouched; run `taskmill repair --db {db}`" in (
        sentence
    )


def test_damage_met_while_serving_ends_the_sidecar_naming_repair(tmp_path: Path) -> None:
    """The damage lies where start-up does not look (recovery reads the tasks at start, so
    the page is spoiled once the sidecar runs, beyond its page cache): the request that meets
    it fails, and the sidecar ends as on a fatal error, exit 4 (a restart would meet it too)."""
    db = tmp_path / "tasks.db"
    build_database(db, tasks=40_000)  # more pages than the connections' caches hold
    healthy = readable_tasks(db)
    page = a_page_of_tasks(db, first=20)
    sc = Sidecar(db=db)
    try:
        sc.ready()
        sc.result("ping")
        # Spoil a page of early tasks (the first leaves of the table, long out of cache).
        overwrite_page(db, page)
        lost = sorted(set(healthy) - set(readable_tasks(db)))
        error = sc.call("task.get", {"id": lost[0]})["error"]
        assert (error["code"], error["data"]["kind"]) == (-32006, "storage")
        assert error["message"] == (
            "the database file is damaged (database disk image is malformed); "
            "the sidecar is stopping"
        )
        assert sc.event("sidecar.exiting") == {"reason": "fatal"}
        assert sc.wait_exit() == 4
        sc.close()
        last = sc.stderr_text.strip().splitlines()[-1]
        assert "database disk image is malformed" in last
        assert f"run `taskmill repair --db {db}`" in last
        assert not sc.bad_lines
    finally:
        sc.close()


PLUGIN = '''
import sqlite3

from taskmill_core.executors import executor
from taskmill_core.store import SqliteStore


@executor("test.spoil")
async def spoil_the_next_step(ctx, payload):
    """The scheduler's next dispatch step meets a damaged page (as SQLite reports one)."""

    def damaged(*args, **kwargs):
        exc = sqlite3.DatabaseError("database disk image is malformed")
        exc.sqlite_errorcode = 11  # SQLITE_CORRUPT
        raise exc

    SqliteStore.complete_standalone = damaged
'''


def test_damage_met_by_the_dispatcher_ends_the_sidecar_naming_repair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler stops on the damage (its fatal path): ``sidecar.exiting`` with reason
    ``fatal``, exit 4 and the repair command, where another internal error exits 1."""
    monkeypatch.delenv("TASKMILL_SIDECAR_CMD", raising=False)  # a plugin: from source
    (tmp_path / "tm_spoil_plugin.py").write_text(PLUGIN)
    db = tmp_path / "tasks.db"
    sc = Sidecar("--plugin=tm_spoil_plugin", db=db, env={"PYTHONPATH": str(tmp_path)})
    try:
        sc.ready()
        sc.result("task.submit", {"type": "test.spoil"})
        assert sc.event("sidecar.exiting") == {"reason": "fatal"}
        assert sc.wait_exit() == 4
        sc.close()
        last = sc.stderr_text.strip().splitlines()[-1]
        assert last == (
            f"taskmill-sidecar stopped: {db} cannot be read: database disk image is malformed; "
            f"the file is damaged; run `taskmill repair --db {db}` to save what is still "
            "readable into a fresh database."
        )
    finally:
        sc.close()
