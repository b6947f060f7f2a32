"""The store's part of the scheduling policy: when a task became due (aging counts from it),
and the bounded reads aging and fair share add to a dispatch step — index seeks, never a scan
of the pending tasks."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from taskmill_core.store import Follow, SqliteStore, prepare
from taskmill_core.store.schema import DUE_SQL
from taskmill_core.types import ErrorInfo, TaskSpec

pytestmark = pytest.mark.anyio

T0 = 1_000_000


def submit(store: SqliteStore, now: int = T0, **fields: Any) -> int:
    fields.setdefault("type", "t")
    (res,) = store.submit([prepare(TaskSpec(**fields), now)], now, Follow())
    return res.id


def due(store: SqliteStore, task_id: int) -> int:
    return store.due_since_of([task_id])[task_id]


async def test_a_task_is_due_from_its_creation_or_run_at_and_again_when_runnable_again(
    store: SqliteStore,
) -> None:
    a = submit(store)
    b = submit(store, run_at=T0 + 500)
    assert (due(store, a), due(store, b)) == (T0, T0 + 500)
    with store.transaction() as tx:
        store.start(tx, [a], T0 + 10)
        store.fail(
            tx, a, T0 + 20, error=ErrorInfo("x", "error", True), retry_at=T0 + 900,
            final_state="failed", duration_ms=10, io_actual=None, follow=Follow(),
        )  # fmt: skip
    assert due(store, a) == T0 + 900  # a retry is due at its retry time
    with store.transaction() as tx:
        store.start(tx, [a], T0 + 900)
        store.interrupt(tx, a, "pending", T0 + 950)  # preempted
    assert due(store, a) == T0 + 950
    with store.transaction() as tx:
        store.pause_pending(tx, a)
    with store.transaction() as tx:
        store.resume(tx, a, T0 + 2000)
    assert due(store, a) == T0 + 2000


async def test_the_aging_read_takes_the_first_due_of_each_less_urgent_level(
    store: SqliteStore,
) -> None:
    l200 = [submit(store, now=T0 + i, priority=200) for i in range(4)]
    l150 = [submit(store, now=T0 + i, priority=150) for i in range(4)]
    submit(store, now=T0, priority=10)  # not above the limit: never aged, not read
    submit(store, now=T0, priority=200, run_at=T0 + 99_999)  # not due
    grouped = submit(store, now=T0, priority=200, group="paused")
    other = submit(store, now=T0, type="u", priority=255)
    rows = store.aged(T0 + 1000, ["t", "u"], ["paused"], above=64, limit=2)
    assert [r.id for r in rows] == [*l200[:2], *l150[:2], other]
    assert [r.due_since for r in rows] == [T0, T0 + 1, T0, T0 + 1, T0]
    assert grouped not in [r.id for r in rows]
    assert [r.id for r in store.aged(T0, ["t"], [], above=64, limit=1, max_levels=1)] == [l200[0]]


async def test_the_group_read_takes_each_groups_most_urgent_due_tasks(store: SqliteStore) -> None:
    a = [submit(store, group="a", priority=p) for p in (200, 100, 150)]
    b = submit(store, group="b")
    submit(store, group="a", run_at=T0 + 10_000)  # not due
    rows = store.group_ready(T0, ["a", "b"], 2)
    assert [r.id for r in rows] == [a[1], a[2], b]


async def test_the_policy_reads_are_index_seeks(store: SqliteStore) -> None:
    db = sqlite3.connect(store.path)  # a second connection to the same file
    plans = [
        db.execute(
            "EXPLAIN QUERY PLAN SELECT max(priority) FROM tasks INDEXED BY tasks_ready "
            "WHERE state='pending' AND type=? AND priority < ? AND priority > ?",
            ("t", 256, 64),
        ).fetchall(),
        db.execute(
            f"EXPLAIN QUERY PLAN SELECT id, {DUE_SQL} FROM tasks INDEXED BY tasks_ready WHERE "
            "state='pending' AND type=? AND priority=? ORDER BY id LIMIT ?",
            ("t", 200, 3),
        ).fetchall(),
        db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks INDEXED BY tasks_group_ready WHERE "
            "state='pending' AND grp=? ORDER BY priority, id LIMIT ?",
            ("g", 1),
        ).fetchall(),
    ]
    db.close()
    for plan in plans:
        text = " ".join(str(row[-1]) for row in plan)
        assert text.startswith("SEARCH tasks USING INDEX"), text
        assert "TEMP B-TREE" not in text, text
