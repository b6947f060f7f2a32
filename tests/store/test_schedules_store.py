"""The store's contract for recurring schedules (store/schedules.py), on a real SQLite file."""

from __future__ import annotations

import sqlite3

import pytest

from taskmill_core.errors import ScheduleNotFound
from taskmill_core.store import SqliteStore
from taskmill_core.types import Schedule, TaskSpec

pytestmark = pytest.mark.anyio

T0 = 1_000_000


def new(next_at: int | None, name: str | None = None) -> Schedule:
    return Schedule(
        id=0,
        task=TaskSpec(type="t", payload={"k": 1}),
        runs=0,
        paused=False,
        name=name,
        every_ms=1000,
        start_at=next_at,
        next_at=next_at,
    )


def insert(store: SqliteStore, s: Schedule) -> int:
    with store.transaction() as tx:
        return store.insert_schedule(tx, s, T0)


async def test_a_schedule_reads_back_as_written(store: SqliteStore) -> None:
    sid = insert(store, new(T0 + 1000, "backup"))
    got = store.get_schedule(sid)
    assert got == Schedule(
        id=sid,
        task=TaskSpec(type="t", payload={"k": 1}),
        runs=0,
        paused=False,
        name="backup",
        every_ms=1000,
        start_at=T0 + 1000,
        next_at=T0 + 1000,
    )
    assert store.find_schedule("backup") == got
    assert store.find_schedule("other") is None
    assert store.list_schedules() == [got]


async def test_due_and_next_come_from_the_index_in_time_order(store: SqliteStore) -> None:
    late = insert(store, new(T0 + 3000))
    early = insert(store, new(T0 + 1000))
    insert(store, new(None))  # paused or ended: never due
    assert store.next_schedule_at() == T0 + 1000
    assert [s.id for s in store.due_schedules(T0 + 5000, 10)] == [early, late]
    assert [s.id for s in store.due_schedules(T0 + 5000, 1)] == [early]
    assert store.due_schedules(T0 + 999, 10) == []
    plan = " ".join(
        str(row)
        for row in sqlite3.connect(store.path).execute(
            "EXPLAIN QUERY PLAN SELECT min(next_at) FROM schedules WHERE next_at IS NOT NULL"
        )
    )
    assert "schedules_due" in plan  # no scan of the table


async def test_a_firing_moves_next_and_counts_only_a_submitted_task(store: SqliteStore) -> None:
    sid = insert(store, new(T0 + 1000))
    with store.transaction() as tx:
        store.record_firing(tx, sid, T0 + 2000, None, T0 + 1000)  # skipped
    s = store.get_schedule(sid)
    assert (s.next_at, s.runs, s.last_at, s.last_task_id) == (T0 + 2000, 0, None, None)
    with store.transaction() as tx:
        store.record_firing(tx, sid, T0 + 3000, 42, T0 + 2000)
    s = store.get_schedule(sid)
    assert (s.next_at, s.runs, s.last_at, s.last_task_id) == (T0 + 3000, 1, T0 + 2000, 42)


async def test_a_rolled_back_firing_leaves_the_schedule_as_it_was(store: SqliteStore) -> None:
    sid = insert(store, new(T0 + 1000))
    with pytest.raises(RuntimeError), store.transaction() as tx:
        store.record_firing(tx, sid, T0 + 2000, 7, T0 + 1000)
        raise RuntimeError("the tick failed")
    s = store.get_schedule(sid)
    assert (s.next_at, s.runs) == (T0 + 1000, 0)


async def test_pause_resume_and_delete(store: SqliteStore) -> None:
    sid = insert(store, new(T0 + 1000))
    with store.transaction() as tx:
        store.set_schedule_next(tx, sid, None, paused=True)
    assert (store.get_schedule(sid).paused, store.next_schedule_at()) == (True, None)
    with store.transaction() as tx:
        store.set_schedule_next(tx, sid, T0 + 5000, paused=False)
    assert store.next_schedule_at() == T0 + 5000
    with store.transaction() as tx:
        assert store.delete_schedule(tx, sid)
        assert not store.delete_schedule(tx, sid)
    with pytest.raises(ScheduleNotFound):
        store.get_schedule(sid)


async def test_names_are_unique_and_ids_are_not_reused(store: SqliteStore) -> None:
    first = insert(store, new(T0, "a"))
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as tx:
        store.insert_schedule(tx, new(T0, "a"), T0)
    second = insert(store, new(T0, "b"))
    with store.transaction() as tx:
        store.delete_schedule(tx, second)
    assert insert(store, new(T0)) > second > first
