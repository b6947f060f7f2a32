"""Tasks per state, kept as tasks change (``SqliteStore.state_counts``): after every kind of
change, committed or rolled back, the counts equal a full recount of the file; after a
SIGKILL in the middle of a batch, the reopened store's counts equal a recount too."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskmill_core.errors import DuplicateRejected
from taskmill_core.store import Follow, SqliteStore, prepare
from taskmill_core.types import ErrorInfo, TaskSpec

pytestmark = pytest.mark.anyio

T0 = 1_000_000
REPO = Path(__file__).resolve().parents[2]


def recount(path: Path) -> dict[str, int]:
    """Every state's tasks, counted from the file by another connection."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall()
    return {str(s): int(n) for s, n in rows}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {s: n for s, n in counts.items() if n}


def check(store: SqliteStore) -> dict[str, int]:
    counts = store.state_counts()
    assert nonzero(counts) == recount(store.path)
    return nonzero(counts)


def submit(store: SqliteStore, now: int = T0, **fields: Any) -> int:
    fields.setdefault("type", "t")
    (res,) = store.submit([prepare(TaskSpec(**fields), now)], now, Follow())
    return res.id


def run(store: SqliteStore, task_id: int, now: int = T0) -> None:
    with store.transaction() as tx:
        assert [s.id for s in store.start(tx, [task_id], now)] == [task_id]


def complete(store: SqliteStore, task_id: int, now: int = T0) -> str:
    with store.transaction() as tx:
        return store.complete(
            tx, task_id, now, result=b"{}", duration_ms=5, io_actual=None, follow=Follow()
        )


def fail(store: SqliteStore, task_id: int, *, retry_at: int | None, final: str = "failed") -> str:
    with store.transaction() as tx:
        return store.fail(
            tx,
            task_id,
            T0,
            error=ErrorInfo("boom", "executor", retry_at is not None),
            retry_at=retry_at,
            final_state=final,
            duration_ms=1,
            io_actual=None,
            follow=Follow(),
        )


async def test_counts_start_with_every_state_at_zero(store: SqliteStore) -> None:
    counts = store.state_counts()
    assert set(counts) >= {"pending", "running", "completed", "failed", "expired", "blocked"}
    assert not any(counts.values())
    assert await store.counts() == counts


async def test_submits_of_every_kind_are_counted(store: SqliteStore) -> None:
    submit(store)  # a lone standalone submit, committed by SQLite itself
    store.submit([prepare(TaskSpec(type="t"), T0) for _ in range(5)], T0, Follow())
    parent = submit(store, dedup_key="k")
    submit(store, parent_id=parent)
    submit(store, depends_on=[parent])  # blocked
    assert check(store) == {"pending": 8, "blocked": 1}
    # The parent ends superseded, and its dependent fails with it.
    submit(store, dedup_key="k", on_duplicate="supersede")
    assert check(store) == {"pending": 8, "superseded": 1, "failed": 1}


async def test_a_batch_that_fails_counts_nothing(store: SqliteStore) -> None:
    submit(store, dedup_key="held")
    batch = [prepare(TaskSpec(type="t"), T0) for _ in range(3)]
    batch.append(prepare(TaskSpec(type="t", dedup_key="held", on_duplicate="reject"), T0))
    with pytest.raises(DuplicateRejected):
        store.submit(batch, T0, Follow())
    assert check(store) == {"pending": 1}


async def test_a_rolled_back_savepoint_drops_only_its_own_moves(store: SqliteStore) -> None:
    submit(store, dedup_key="held")
    good = prepare(TaskSpec(type="t"), T0)
    bad = prepare(TaskSpec(type="t", dedup_key="held", on_duplicate="reject"), T0)
    with store.transaction() as tx:
        store.submit_in(tx, [good], T0, Follow())
        with pytest.raises(DuplicateRejected):
            store.submit_in(tx, [good, bad], T0, Follow())
        store.submit_in(tx, [good], T0, Follow())
        assert check(store) == {"pending": 1}  # nothing counts before the commit
    assert check(store) == {"pending": 3}


async def test_a_transaction_that_raises_counts_nothing(store: SqliteStore) -> None:
    task = submit(store)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.start(tx, [task], T0)
        raise RuntimeError("planted")
    assert check(store) == {"pending": 1}


async def test_every_transition_is_counted(store: SqliteStore) -> None:
    a, b, c, d = (submit(store) for _ in range(4))
    run(store, a)
    assert check(store) == {"pending": 3, "running": 1}
    assert complete(store, a) == "completed"
    run(store, b)
    assert fail(store, b, retry_at=T0 + 10) == "pending"
    run(store, b)
    assert fail(store, b, retry_at=None, final="deadLetter") == "deadLetter"
    assert check(store) == {"pending": 2, "completed": 1, "deadLetter": 1}
    with store.transaction() as tx:
        store.retry(tx, b)
        store.pause_pending(tx, c)
    assert check(store) == {"pending": 2, "paused": 1, "completed": 1}
    with store.transaction() as tx:
        store.resume(tx, c)
    run(store, d)
    with store.transaction() as tx:
        store.interrupt(tx, d, "paused")
    with store.transaction() as tx:
        store.cancel(tx, d, T0, Follow())
    assert check(store) == {"pending": 2, "completed": 1, "cancelled": 1}
    run(store, c)
    with store.transaction() as tx:
        assert store.recover(tx) == 1
    assert check(store) == {"pending": 2, "completed": 1, "cancelled": 1}
    with store.transaction() as tx:
        assert store.delete_final(tx, [a, d, b]) == 2
    assert check(store) == {"pending": 2}


async def test_requeues_parents_dependents_and_expiry_are_counted(store: SqliteStore) -> None:
    parent = submit(store, dedup_key="p")
    run(store, parent)
    submit(store, dedup_key="p")  # a duplicate of a running task: requeued
    assert complete(store, parent) == "pending"
    run(store, parent)
    child = submit(store, parent_id=parent)
    dependent = submit(store, depends_on=[child])
    doomed = submit(store, depends_on=[dependent])
    assert complete(store, parent) == "waiting"
    assert check(store) == {"waiting": 1, "pending": 1, "blocked": 2}
    run(store, child)
    assert complete(store, child) == "completed"  # the parent completes, the dependent unblocks
    assert check(store) == {"completed": 2, "pending": 1, "blocked": 1}
    run(store, dependent)
    assert fail(store, dependent, retry_at=None) == "failed"  # its own dependent fails too
    assert check(store) == {"completed": 2, "failed": 2}
    assert doomed
    submit(store, ttl_ms=10)
    submit(store, ttl_ms=10, depends_on=[parent])
    paused = submit(store, ttl_ms=10)
    with store.transaction() as tx:
        store.pause_pending(tx, paused)
    with store.transaction() as tx:
        assert len(store.expire_due(tx, T0 + 20, Follow())) == 3
    assert check(store) == {"completed": 2, "failed": 2, "expired": 3}


async def test_cancelling_a_parent_counts_its_descendants(store: SqliteStore) -> None:
    parent = submit(store)
    child = submit(store, parent_id=parent)
    submit(store, parent_id=child)
    run(store, child)
    with store.transaction() as tx:
        _, cancelled = store.cancel(tx, parent, T0, Follow())
    assert len(cancelled) == 3
    assert check(store) == {"cancelled": 3}


async def test_reopening_counts_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    store = SqliteStore(path)
    await store.open()
    ids = [submit(store) for _ in range(4)]
    run(store, ids[0])
    await store.close()
    again = SqliteStore(path)
    await again.open()
    try:
        assert check(again) == {"pending": 3, "running": 1}
    finally:
        await again.close()


# A child that submits batches forever, each committed in its own transaction, and tells the
# test (a marker file) once the first batches are in; the test kills it mid-batch.
CHILD = r"""
import sys
import anyio
from pathlib import Path
from taskmill_core.store import Follow, SqliteStore, prepare
from taskmill_core.types import TaskSpec

async def main() -> None:
    store = SqliteStore(sys.argv[1])
    await store.open()
    n = 0
    while True:
        batch = [prepare(TaskSpec(type="t", payload={"n": n + k}), n) for k in range(2000)]
        store.submit(batch, n, Follow())
        with store.transaction() as tx:  # claim and finish a few, so states differ
            started = store.start(tx, [n + 1, n + 2, n + 3], n)
            for s in started[:2]:
                store.complete(tx, s.id, n, result=b"{}", duration_ms=1, io_actual=None,
                               follow=Follow())
        n += 2000
        if n == 10000:
            Path(sys.argv[2]).touch()

anyio.run(main)
"""


def kill_mid_batch(path: Path, marker: Path) -> None:
    """Run the child until it has written some batches, then SIGKILL it mid-batch."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(marker)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, "the child exited"
            assert time.monotonic() < deadline, "the child never got going"
            time.sleep(0.01)
        time.sleep(0.05)  # in the middle of some later batch
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
async def test_counts_after_a_sigkill_mid_batch_equal_a_recount(tmp_path: Path) -> None:
    path, marker = tmp_path / "tasks.db", tmp_path / "ready"
    await anyio.to_thread.run_sync(kill_mid_batch, path, marker)
    store = SqliteStore(path)
    await store.open()
    try:
        counts = check(store)
        assert counts["pending"] >= 10000 - 5 * 3
        assert counts["running"] >= 5 and counts["completed"] >= 10
    finally:
        await store.close()


async def test_check_counts_names_a_write_that_went_around_the_counts(store: SqliteStore) -> None:
    task = submit(store)
    assert store.check_counts() is None
    with closing(sqlite3.connect(store.path)) as other:  # a write the store did not make
        other.execute("UPDATE tasks SET state='failed' WHERE id=?", (task,))
        other.commit()
        assert store.check_counts() == "kept {'pending': 1}, counted {'failed': 1}"
        other.execute("UPDATE tasks SET state='pending' WHERE id=?", (task,))
        other.commit()
    assert store.check_counts() is None
