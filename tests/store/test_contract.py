"""The store's contract, over a real SQLite file (in the spirit of huey's storage tests).

Every test talks to :class:`SqliteStore` through its public API: writes in a transaction it
hands out (``tx``), time passed in as ``now``. Covered: every transition, every dedup
outcome and the dedup races, parent/child and dependency propagation, ids never reused,
migrations from each earlier schema version, and storage failures (a full database).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskmill_core.errors import (
    DuplicateRejected,
    InvalidParams,
    InvalidState,
    NotATaskmillDatabase,
    StorageError,
    TaskNotFound,
)
from taskmill_core.store import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    Follow,
    SqliteStore,
    Started,
    Submitted,
    prepare,
)
from taskmill_core.store.submit import Dedup, Holder, decide_duplicate
from taskmill_core.types import ErrorInfo, IoBytes, TaskSpec

pytestmark = pytest.mark.anyio

T0 = 1_000_000  # "now" in these tests: milliseconds, any origin


def submit(store: SqliteStore, now: int = T0, **fields: Any) -> Submitted:
    fields.setdefault("type", "t")
    (res,) = store.submit([prepare(TaskSpec(**fields), now)], now, Follow())
    return res


def claim(store: SqliteStore, ids: list[int], now: int = T0) -> list[Started]:
    with store.transaction() as tx:
        return store.start(tx, ids, now)


def complete(store: SqliteStore, task_id: int, now: int, follow: Follow | None = None) -> str:
    with store.transaction() as tx:
        return store.complete(
            tx,
            task_id,
            now,
            result=b'{"ok":true}',
            duration_ms=5,
            io_actual=None,
            follow=follow or Follow(),
        )


def fail(
    store: SqliteStore,
    task_id: int,
    now: int,
    *,
    retry_at: int | None = None,
    final_state: str = "failed",
    follow: Follow | None = None,
) -> str:
    with store.transaction() as tx:
        return store.fail(
            tx,
            task_id,
            now,
            error=ErrorInfo("boom", "error", retry_at is not None),
            retry_at=retry_at,
            final_state=final_state,
            duration_ms=3,
            io_actual=None,
            follow=follow or Follow(),
        )


def state(store: SqliteStore, task_id: int) -> str:
    return store.state_of(task_id)


# --- the run lifecycle ---------------------------------------------------------------------


async def test_a_submit_is_pending_and_reads_back_as_given(store: SqliteStore) -> None:
    res = submit(store, payload={"a": 1}, priority=7, group="g", tags={"k": "v"}, label="L")
    assert res.outcome == "inserted" and res.info is not None
    info = store.get(res.id)
    assert (info.state, info.priority, info.payload, info.group) == ("pending", 7, {"a": 1}, "g")
    assert (info.tags, info.label, info.created_at, info.attempt) == ({"k": "v"}, "L", T0, 0)
    assert res.info == info


async def test_ready_is_priority_then_id_and_leaves_out_pauses_and_future_tasks(
    store: SqliteStore,
) -> None:
    a = submit(store, priority=50).id
    b = submit(store, priority=10).id
    c = submit(store, priority=50).id
    submit(store, priority=1, run_at=T0 + 1000)
    submit(store, priority=1, group="paused")
    submit(store, type="other", priority=1)
    ready = store.ready(T0, ["t", "other"], ["paused"], ["other"], 10)
    assert [r.id for r in ready] == [b, a, c]
    assert store.next_due(T0) == T0 + 1000
    assert [r.id for r in store.ready(T0, ["t"], ["paused"], [], 2)] == [b, a]


async def test_a_claim_starts_pending_tasks_once(store: SqliteStore) -> None:
    a = submit(store, payload={"n": 1}).id
    b = submit(store).id
    started = claim(store, [a, b], T0 + 1)
    assert [(s.id, s.payload, s.attempt) for s in started] == [(a, {"n": 1}, 0), (b, None, 0)]
    assert claim(store, [a, b], T0 + 2) == []  # no longer pending: not claimed again
    assert store.get(a).state == "running" and store.get(a).started_at == T0 + 1


async def test_running_to_completed_records_result_duration_and_io(store: SqliteStore) -> None:
    a, b = submit(store).id, submit(store).id
    claim(store, [a, b])
    with store.transaction() as tx:
        done = store.complete_standalone(tx, [(a, 40, b"1", IoBytes(disk_read=10))], T0 + 40)
    assert done == {a}
    assert complete(store, b, T0 + 50) == "completed"
    info = store.get(a)
    assert (info.state, info.result, info.duration_ms, info.finished_at) == (
        "completed",
        1,
        40,
        T0 + 40,
    )
    assert info.io_actual == IoBytes(disk_read=10)
    assert store.get(b).result == {"ok": True}
    assert store.recent_durations("t", 5) == [40, 5]
    assert store.average_io("t") == IoBytes(disk_read=10)


async def test_running_to_retry_consumes_an_attempt_and_waits_for_its_time(
    store: SqliteStore,
) -> None:
    a = submit(store).id
    claim(store, [a])
    assert fail(store, a, T0 + 5, retry_at=T0 + 100) == "pending"
    info = store.get(a)
    assert (info.state, info.attempt, info.run_at, info.error) == (
        "pending",
        1,
        T0 + 100,
        ErrorInfo("boom", "error", True),
    )
    assert store.ready(T0 + 99, ["t"], [], [], 5) == []
    assert [r.id for r in store.ready(T0 + 100, ["t"], [], [], 5)] == [a]


@pytest.mark.parametrize("final", ["failed", "deadLetter"])
async def test_running_to_failed_or_dead_letter_is_final(store: SqliteStore, final: str) -> None:
    a = submit(store).id
    claim(store, [a])
    assert fail(store, a, T0 + 5, final_state=final) == final
    info = store.get(a)
    assert (info.state, info.finished_at, info.duration_ms) == (final, T0 + 5, 3)


async def test_a_failed_task_is_retried_by_hand_with_its_id_and_attempt_zero(
    store: SqliteStore,
) -> None:
    a = submit(store, dedup_key="k").id
    claim(store, [a])
    fail(store, a, T0 + 1, retry_at=T0 + 2)
    claim(store, [a], T0 + 2)
    fail(store, a, T0 + 3, final_state="deadLetter")
    with store.transaction() as tx:
        assert store.retry(tx, a)[:2] == (a, "inserted")
    info = store.get(a)
    assert (info.state, info.attempt, info.error, info.finished_at) == ("pending", 0, None, None)
    with store.transaction() as tx, pytest.raises(InvalidState):
        store.retry(tx, a)  # pending: nothing to retry


async def test_a_manual_retry_answers_the_task_that_holds_its_key_now(store: SqliteStore) -> None:
    a = submit(store, dedup_key="k").id
    claim(store, [a])
    fail(store, a, T0 + 1)
    b = submit(store, dedup_key="k").id
    with store.transaction() as tx:
        assert store.retry(tx, a) == (b, "duplicate", None)
    assert state(store, a) == "failed"


async def test_pause_and_resume_a_pending_task(store: SqliteStore) -> None:
    a = submit(store).id
    with store.transaction() as tx:
        store.pause_pending(tx, a)
    assert state(store, a) == "paused"
    assert store.ready(T0, ["t"], [], [], 5) == []
    with store.transaction() as tx:
        assert store.resume(tx, a).state == "pending"
    with store.transaction() as tx, pytest.raises(InvalidState):
        store.resume(tx, a)


@pytest.mark.parametrize("to_state", ["pending", "paused"])
async def test_an_interrupted_run_goes_back_keeping_checkpoint_and_attempt(
    store: SqliteStore, to_state: str
) -> None:
    """Preemption, shutdown (back to pending) and a pause (paused): no retry consumed."""
    a = submit(store).id
    claim(store, [a])
    fail(store, a, T0 + 1, retry_at=T0 + 1)
    claim(store, [a], T0 + 2)
    with store.transaction() as tx:
        store.save_checkpoint(tx, a, {"at": 3})
        store.interrupt(tx, a, to_state)
    info = store.get(a)
    assert (info.state, info.attempt, info.started_at) == (to_state, 1, None)
    (again,) = claim(store, [a], T0 + 3) if to_state == "pending" else [None]
    if again is not None:
        assert again.checkpoint == {"at": 3} and again.attempt == 1


async def test_an_interrupt_leaves_a_task_that_is_not_running_alone(store: SqliteStore) -> None:
    a = submit(store).id
    claim(store, [a])
    complete(store, a, T0 + 1)
    with store.transaction() as tx:
        store.interrupt(tx, a, "pending")
    assert state(store, a) == "completed"


async def _in_state(store: SqliteStore, wanted: str) -> int:
    """A task in ``wanted`` (each active state, reached through the API)."""
    if wanted == "blocked":
        dep = submit(store).id
        return submit(store, depends_on=[dep]).id
    task = submit(store).id
    if wanted == "paused":
        with store.transaction() as tx:
            store.pause_pending(tx, task)
    elif wanted in ("running", "waiting"):
        claim(store, [task])
        if wanted == "waiting":
            submit(store, parent_id=task)
            assert complete(store, task, T0 + 1) == "waiting"
    assert state(store, task) == wanted
    return task


@pytest.mark.parametrize("active", ["pending", "running", "paused", "blocked", "waiting"])
async def test_cancel_ends_a_task_in_each_active_state(store: SqliteStore, active: str) -> None:
    task = await _in_state(store, active)
    with store.transaction() as tx:
        prev, cancelled = store.cancel(tx, task, T0 + 9, Follow())
    assert prev == active and cancelled[0] == (task, "t")
    assert (store.get(task).state, store.get(task).finished_at) == ("cancelled", T0 + 9)
    with store.transaction() as tx, pytest.raises(InvalidState):
        store.cancel(tx, task, T0 + 10, Follow())


async def test_cancel_takes_every_active_descendant_and_refuses_unknown_ids(
    store: SqliteStore,
) -> None:
    root = submit(store).id
    child = submit(store, parent_id=root).id
    grandchild = submit(store, parent_id=child).id
    done = submit(store, parent_id=root).id
    claim(store, [done])
    complete(store, done, T0 + 1)
    with store.transaction() as tx:
        _, cancelled = store.cancel(tx, root, T0 + 2, Follow())
    assert [c[0] for c in cancelled] == [root, child, grandchild]
    assert state(store, done) == "completed"
    with store.transaction() as tx, pytest.raises(TaskNotFound):
        store.cancel(tx, 10_000, T0, Follow())


async def test_expiry_ends_tasks_that_did_not_start_in_time(store: SqliteStore) -> None:
    waiting = submit(store, ttl_ms=100).id
    paused = submit(store, ttl_ms=100).id
    running = submit(store, ttl_ms=100).id
    later = submit(store, ttl_ms=500).id
    with store.transaction() as tx:
        store.pause_pending(tx, paused)
        store.start(tx, [running], T0 + 1)  # a claim drops the expiry
    assert store.next_expiry() == T0 + 100
    with store.transaction() as tx:
        expired = store.expire_due(tx, T0 + 100, Follow())
    assert sorted(expired) == [(waiting, "t"), (paused, "t")]
    assert state(store, waiting) == state(store, paused) == "expired"
    assert state(store, running) == "running" and state(store, later) == "pending"
    assert store.next_expiry() == T0 + 500


async def test_recovery_after_a_crash_requeues_runs_with_checkpoint_and_attempt(
    tmp_path: Path,
) -> None:
    path = tmp_path / "crash.db"
    s = SqliteStore(path)
    await s.open()
    a, b = submit(s).id, submit(s).id
    claim(s, [a])
    fail(s, a, T0 + 1, retry_at=T0 + 1)
    claim(s, [a, b], T0 + 2)
    with s.transaction() as tx:
        s.save_checkpoint(tx, a, [1, 2])
    await s.close()  # the process "dies" with both running
    again = SqliteStore(path)
    await again.open()
    try:
        with again.transaction() as tx:
            assert again.recover(tx) == 2
        info = again.get(a)
        assert (info.state, info.attempt, info.priority) == ("pending", 1, 128)
        started = claim(again, [a], T0 + 3)
        assert started[0].checkpoint == [1, 2]
        with again.transaction() as tx:
            assert again.recover(tx) == 1
    finally:
        await again.close()


async def test_set_priority_of_an_active_task_only(store: SqliteStore) -> None:
    a = submit(store).id
    with store.transaction() as tx:
        assert store.set_priority(tx, a, 3).priority == 3
    claim(store, [a])
    complete(store, a, T0 + 1)
    with store.transaction() as tx, pytest.raises(InvalidState):
        store.set_priority(tx, a, 4)


# --- the transaction contract ------------------------------------------------------------


async def test_a_transaction_that_raises_writes_nothing(store: SqliteStore) -> None:
    a = submit(store).id
    commits = store.commits
    with pytest.raises(KeyError), store.transaction() as tx:
        store.start(tx, [a], T0)
        store.put_setting(tx, "k", b"v")
        raise KeyError("the caller failed")
    assert state(store, a) == "pending" and store.get_setting("k") is None
    assert store.commits == commits
    with store.transaction() as tx:  # and the store takes the next one
        store.put_setting(tx, "k", b"v")
    assert store.get_setting("k") == b"v" and store.commits == commits + 1


async def test_transactions_do_not_nest_and_a_self_committing_submit_needs_none_open(
    store: SqliteStore,
) -> None:
    with store.transaction() as tx:
        with pytest.raises(RuntimeError), store.transaction():
            pass
        with pytest.raises(RuntimeError):
            submit(store)
        store.put_setting(tx, "still", b"open")
    assert store.get_setting("still") == b"open"


def _make_full(tx: Any) -> None:
    """Cap the database at its current size: the next page it needs is "disk full"."""
    pages = tx.execute("PRAGMA page_count").fetchone()[0]
    tx.execute(f"PRAGMA max_page_count={pages}")


def _make_room(store: SqliteStore) -> None:
    with store.transaction() as tx:
        tx.execute("PRAGMA max_page_count=1073741823")


async def test_a_full_database_fails_the_transaction_as_storage_and_the_store_goes_on(
    store: SqliteStore,
) -> None:
    """SQLite rolls the transaction back by itself on a full disk; the error is a
    StorageError (not "cannot rollback - no transaction is active"), nothing is written,
    and once there is room the store takes writes again."""
    a = submit(store).id
    with store.transaction() as tx:
        _make_full(tx)
    big = [prepare(TaskSpec(type="t", payload="x" * 60_000), T0) for _ in range(3)]
    with pytest.raises(StorageError, match="full"), store.transaction() as tx:
        store.start(tx, [a], T0)
        store.submit_in(tx, big, T0, Follow())
    assert state(store, a) == "pending"
    with pytest.raises(StorageError, match="full"):  # its own transaction
        store.submit(big, T0, Follow())
    with pytest.raises(StorageError, match="full"):  # a lone INSERT, autocommitted
        store.submit([big[0]], T0, Follow())
    with pytest.raises(StorageError, match="full"), store.transaction() as tx:
        store.submit_each(tx, [([big[0]], T0), ([big[1]], T0)], Follow())
    _make_room(store)
    assert [r.outcome for r in store.submit(big, T0, Follow())] == ["inserted"] * 3
    assert claim(store, [a])[0].id == a


async def test_a_failed_rollback_never_hides_the_error_that_called_for_it(
    store: SqliteStore,
) -> None:
    with pytest.raises(StorageError, match="disk is full") as caught, store.transaction() as tx:
        tx.execute("ROLLBACK")  # as SQLite does by itself on a full disk
        raise sqlite3.OperationalError("database or disk is full")
    assert "cannot rollback" not in str(caught.value)
    with store.transaction() as tx:
        store.put_setting(tx, "after", b"1")
    assert store.get_setting("after") == b"1"


# --- dedup: skip, upgrade, requeue, supersede, reject ----------------------------------------


async def test_dedup_skip_answers_the_active_task(store: SqliteStore) -> None:
    a = submit(store, dedup_key="k", priority=10).id
    res = submit(store, dedup_key="k", priority=10)
    assert (res.id, res.outcome, res.info) == (a, "duplicate", None)
    assert submit(store, dedup_key="k", priority=200).outcome == "duplicate"
    assert store.get(a).priority == 10
    assert submit(store, type="other", dedup_key="k").outcome == "inserted"  # keys per type


async def test_dedup_upgrade_raises_a_waiting_duplicate_to_the_new_urgency(
    store: SqliteStore,
) -> None:
    a = submit(store, dedup_key="k", priority=100).id
    res = submit(store, dedup_key="k", priority=20)
    assert (res.id, res.outcome, res.changed_priority) == (a, "upgraded", True)
    assert store.get(a).priority == 20


async def test_dedup_requeue_runs_the_task_once_more_after_its_current_run(
    store: SqliteStore,
) -> None:
    a = submit(store, dedup_key="k", priority=100).id
    claim(store, [a])
    res = submit(store, dedup_key="k", priority=30)
    assert (res.id, res.outcome) == (a, "requeued")
    assert submit(store, dedup_key="k", priority=60).outcome == "requeued"  # keeps the 30
    assert complete(store, a, T0 + 1) == "pending"
    info = store.get(a)
    assert (info.state, info.priority, info.attempt) == ("pending", 30, 0)
    claim(store, [a], T0 + 2)
    assert complete(store, a, T0 + 3) == "completed"  # the requeue was used up


async def test_a_requeue_survives_a_permanent_failure_of_the_current_run(
    store: SqliteStore,
) -> None:
    a = submit(store, dedup_key="k").id
    claim(store, [a])
    submit(store, dedup_key="k")
    assert fail(store, a, T0 + 1, final_state="failed") == "pending"
    assert store.get(a).attempt == 0


@pytest.mark.parametrize("holder_state", ["pending", "running"])
async def test_dedup_supersede_ends_the_holder_and_inserts_the_new_task(
    store: SqliteStore, holder_state: str
) -> None:
    a = submit(store, dedup_key="k").id
    if holder_state == "running":
        claim(store, [a])
    res = submit(store, dedup_key="k", on_duplicate="supersede", payload=2)
    assert res.outcome == "superseded" and res.id != a
    assert res.replaced == (a, holder_state)
    assert (state(store, a), state(store, res.id)) == ("superseded", "pending")


async def test_dedup_reject_names_the_holder(store: SqliteStore) -> None:
    a = submit(store, dedup_key="k").id
    with pytest.raises(DuplicateRejected) as caught:
        submit(store, dedup_key="k", on_duplicate="reject")
    assert caught.value.data["existingId"] == a


async def test_a_final_task_holds_no_key(store: SqliteStore) -> None:
    a = submit(store, dedup_key="k").id
    claim(store, [a])
    complete(store, a, T0 + 1)
    assert submit(store, dedup_key="k").outcome == "inserted"


@pytest.mark.parametrize(
    ("on_duplicate", "priority", "holder", "expected"),
    [
        ("reject", 1, Holder(1, "running", 9, None), Dedup("reject")),
        ("supersede", 1, Holder(1, "pending", 9, None), Dedup("supersede")),
        ("skip", 50, Holder(1, "running", 80, None), Dedup("requeue", 50)),
        ("skip", 90, Holder(1, "running", 80, None), Dedup("requeue", 80)),
        ("skip", 90, Holder(1, "running", 80, 20), Dedup("requeue", 20)),
        ("skip", 5, Holder(1, "pending", 9, None), Dedup("upgrade", 5)),
        ("skip", 5, Holder(1, "paused", 9, None), Dedup("upgrade", 5)),
        ("skip", 5, Holder(1, "blocked", 9, None), Dedup("upgrade", 5)),
        ("skip", 5, Holder(1, "waiting", 9, None), Dedup("skip")),
        ("skip", 9, Holder(1, "pending", 9, None), Dedup("skip")),
        ("skip", 12, Holder(1, "pending", 9, None), Dedup("skip")),
    ],
)
def test_the_dedup_decision_table(
    on_duplicate: Any, priority: int, holder: Holder, expected: Dedup
) -> None:
    assert decide_duplicate(on_duplicate, priority, holder) == expected


async def test_dedup_race_in_one_group_commit_makes_one_task(store: SqliteStore) -> None:
    """Two submits of one key in the same transaction (a dispatcher tick): the second sees
    the first's row."""
    p = prepare(TaskSpec(type="t", dedup_key="k"), T0)
    with store.transaction() as tx:
        first, second = store.submit_each(tx, [([p], T0), ([p], T0)], Follow())
    assert isinstance(first, list) and isinstance(second, list)
    assert first[0].outcome == "inserted"
    assert (second[0].id, second[0].outcome) == (first[0].id, "duplicate")
    assert [r.outcome for r in store.submit([p, p], T0, Follow())] == ["duplicate"] * 2


async def test_dedup_race_from_two_connections_makes_one_task(
    store: SqliteStore, tmp_path: Path
) -> None:
    other = SqliteStore(tmp_path / "tasks.db")
    await other.open()
    try:
        a = submit(store, dedup_key="k")
        b = submit(other, dedup_key="k")
        assert (a.outcome, b.outcome, b.id) == ("inserted", "duplicate", a.id)
        # Even a writer that skips the lookup cannot store a second active row.
        with other.transaction() as tx, pytest.raises(sqlite3.IntegrityError):
            tx.execute(
                "INSERT INTO tasks(type, state, priority, payload, max_retries, created_at, "
                "dedup_key) VALUES('t', 'pending', 1, X'6E756C6C', 0, 0, 'k')"
            )
    finally:
        await other.close()
    assert await store.find_ids(task_type="t", group=None, tags=None) == [a.id]


async def test_one_failing_submit_in_a_group_commit_undoes_only_itself(
    store: SqliteStore,
) -> None:
    held = submit(store, dedup_key="k").id
    ok = prepare(TaskSpec(type="t"), T0)
    ok_keyed = prepare(TaskSpec(type="t", dedup_key="k2"), T0)
    rejected = prepare(TaskSpec(type="t", dedup_key="k", on_duplicate="reject"), T0)
    with store.transaction() as tx:
        out = store.submit_each(tx, [([ok_keyed, rejected], T0), ([ok], T0)], Follow())
    assert isinstance(out[0], DuplicateRejected) and out[0].data["index"] == 1
    assert isinstance(out[1], list) and out[1][0].outcome == "inserted"
    ids = await store.find_ids(task_type="t", group=None, tags=None)
    assert ids == [held, out[1][0].id]  # k2 was rolled back with its batch


async def test_a_batch_in_a_larger_transaction_numbers_its_errors(store: SqliteStore) -> None:
    good = prepare(TaskSpec(type="t"), T0)
    bad = prepare(TaskSpec(type="t", parent_id=999), T0)
    with store.transaction() as tx:
        with pytest.raises(InvalidParams) as caught:
            store.submit_in(tx, [good, bad], T0, Follow(), index_base=500)
        assert caught.value.data["index"] == 501
        assert caught.value.path == "$.tasks[501].parentId"
        assert [r.outcome for r in store.submit_in(tx, [good], T0, Follow())] == ["inserted"]
    assert len(await store.find_ids(task_type="t", group=None, tags=None)) == 1


# --- parents and dependencies ------------------------------------------------------------


async def test_a_parent_waits_for_its_children_and_completes_with_the_last(
    store: SqliteStore,
) -> None:
    parent = submit(store).id
    claim(store, [parent])
    c1 = submit(store, parent_id=parent).id
    c2 = submit(store, parent_id=parent).id
    assert complete(store, parent, T0 + 1) == "waiting"
    claim(store, [c1, c2], T0 + 2)
    assert complete(store, c1, T0 + 3) == "completed" and state(store, parent) == "waiting"
    follow = Follow()
    assert fail(store, c2, T0 + 4, follow=follow) == "failed"  # any final state counts
    assert follow.completed_parents == [(parent, "t", 0, {"ok": True})]
    info = store.get(parent)
    assert (info.state, info.finished_at) == ("completed", T0 + 4)


async def test_a_child_needs_an_active_parent_and_a_dependency_a_live_task(
    store: SqliteStore,
) -> None:
    a = submit(store).id
    claim(store, [a])
    fail(store, a, T0 + 1)
    with pytest.raises(InvalidParams, match="does not exist"):
        submit(store, parent_id=999)
    with pytest.raises(InvalidParams, match="already failed"):
        submit(store, parent_id=a)
    with pytest.raises(InvalidParams, match="nothing can depend on it") as caught:
        submit(store, depends_on=[a])
    assert caught.value.path == "$.dependsOn[0]"


async def test_a_dependent_is_unblocked_when_every_dependency_completed(
    store: SqliteStore,
) -> None:
    d1, d2 = submit(store).id, submit(store).id
    dep = submit(store, depends_on=[d2, d1]).id
    assert state(store, dep) == "blocked"
    claim(store, [d1, d2])
    follow = Follow()
    complete(store, d1, T0 + 1, follow)
    assert state(store, dep) == "blocked" and follow.unblocked == []
    complete(store, d2, T0 + 2, follow)
    assert state(store, dep) == "pending" and follow.unblocked == [dep]
    done = submit(store, depends_on=[d1]).id  # on a completed task: pending at once
    assert state(store, done) == "pending"


@pytest.mark.parametrize("how", ["failed", "deadLetter", "cancelled", "superseded", "expired"])
async def test_a_dependent_fails_when_a_dependency_ends_otherwise_and_so_do_its_own(
    store: SqliteStore, how: str
) -> None:
    d = submit(store, dedup_key="k", ttl_ms=10).id
    dep = submit(store, depends_on=[d]).id
    dep2 = submit(store, depends_on=[dep]).id
    parent = submit(store).id
    claim(store, [parent])
    child = submit(store, parent_id=parent, depends_on=[d]).id
    complete(store, parent, T0 + 1)
    follow = Follow()
    with store.transaction() as tx:
        if how == "cancelled":
            store.cancel(tx, d, T0 + 5, follow)
        elif how == "expired":
            store.expire_due(tx, T0 + 10, follow)
        elif how == "superseded":
            store.submit_in(
                tx,
                [prepare(TaskSpec(type="t", dedup_key="k", on_duplicate="supersede"), T0)],
                T0 + 5,
                follow,
            )
        else:
            store.start(tx, [d], T0 + 2)
    if how in ("failed", "deadLetter"):
        fail(store, d, T0 + 5, final_state=how, follow=follow)
    assert sorted(follow.failed_dependents) == [(dep, "t"), (dep2, "t"), (child, "t")]
    assert follow.completed_parents == [(parent, "t", 0, {"ok": True})]
    for task in (dep, dep2, child):
        info = store.get(task)
        assert info.state == "failed" and info.error is not None
        assert info.error.kind == "dependency" and not info.error.retryable
    assert state(store, parent) == "completed"


# --- ids, pruning, settings -----------------------------------------------------------------


async def test_ids_are_never_reused_after_pruning_the_newest_even_across_a_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ids.db"
    s = SqliteStore(path)
    await s.open()
    ids = [submit(s).id for _ in range(3)]
    claim(s, ids)
    for i in ids:
        complete(s, i, T0 + 1)
    prunable = await s.prunable(T0 + 2, 0, None, 100)
    assert prunable == ids
    with s.transaction() as tx:
        assert s.delete_final(tx, prunable) == 3
    batch = s.submit([prepare(TaskSpec(type="t"), T0)] * 2, T0, Follow())
    assert [r.id for r in batch] == [ids[-1] + 1, ids[-1] + 2]
    with s.transaction() as tx:
        s.cancel(tx, batch[0].id, T0, Follow())
        s.cancel(tx, batch[1].id, T0, Follow())
        assert s.delete_final(tx, [r.id for r in batch]) == 2
    await s.close()
    again = SqliteStore(path)
    await again.open()
    try:
        assert submit(again).id == batch[-1].id + 1
    finally:
        await again.close()


async def test_only_final_tasks_are_pruned_by_count_and_age(store: SqliteStore) -> None:
    old, new, live = submit(store).id, submit(store).id, submit(store).id
    claim(store, [old, new])
    complete(store, old, T0 + 10)
    complete(store, new, T0 + 1000)
    assert await store.prunable(T0 + 1010, None, 500, 100) == [old]
    assert await store.prunable(T0 + 1010, 1, None, 100) == [old]
    assert await store.prunable(T0 + 1010, 0, None, 100) == [old, new]
    with store.transaction() as tx:
        assert store.delete_final(tx, [old, live]) == 1
    assert state(store, live) == "pending"


async def test_a_read_sees_the_commits_before_it_while_another_read_is_under_way(
    store: SqliteStore,
) -> None:
    """Every statement on the reader runs to its end in one hop to the reader's thread.

    A statement stepped once and left open (execute, then fetchone, then close: three hops)
    keeps the reader's read transaction open between the hops, and any other read that runs
    on the reader meanwhile reads that transaction's old snapshot. The scheduler's amortized
    pruning (``prunable`` by age) beside ``prune`` then ``list`` made a list show the tasks
    just pruned. Here pruning's first statement is held inside its first step (its read
    transaction open) while rows are deleted and a list is queued behind it: deterministic,
    with no load needed.
    """
    ids = [submit(store, type=t).id for t in ("a", "a", "b")]
    claim(store, ids)
    for i in ids:
        complete(store, i, T0 + 1)
    reader = store._conn.reader
    armed = False
    stepping, release = threading.Event(), threading.Event()

    def trace(sql: str) -> None:  # on the reader's thread, as each statement starts
        nonlocal armed
        if sql.startswith("SELECT type FROM tasks") and not stepping.is_set():
            armed = True

    def progress() -> int:  # on the reader's thread, inside a step (past its read lock)
        nonlocal armed
        if armed:
            armed = False
            stepping.set()
            release.wait(10)
        return 0

    await reader.set_trace_callback(trace)
    await reader.set_progress_handler(progress, 1)
    listed: list[int] = []

    async def list_ids() -> None:
        listed.extend(t.id for t in await store.list_tasks())

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.prunable, T0 + 10, None, 5, 100)  # by age: type by type
            assert await anyio.to_thread.run_sync(stepping.wait, 10)
            with store.transaction() as tx:
                assert store.delete_final(tx, ids[:2]) == 2
            tg.start_soon(list_ids)  # asked for after the commit
            await anyio.wait_all_tasks_blocked()
            release.set()
    await reader.set_progress_handler(None, 1)
    await reader.set_trace_callback(None)
    assert listed == [ids[2]]


async def test_settings_are_kept(store: SqliteStore) -> None:
    assert store.get_setting("a") is None
    with store.transaction() as tx:
        store.put_setting(tx, "a", b"1")
        store.put_setting(tx, "a", b"2")
    assert store.get_setting("a") == b"2"


# --- the file: pages, migrations ----------------------------------------------------------


async def test_a_new_database_has_2_kib_pages_and_the_current_schema(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "new.db")
    await s.open()
    await s.close()
    db = sqlite3.connect(tmp_path / "new.db")
    try:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 2048
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    finally:
        db.close()


def _old_database(path: Path, version: int) -> None:
    """A file at schema ``version``, built from that version's own DDL, holding five tasks
    of which the newest two were deleted (ids 1..3 left; 5 was handed out)."""
    db = sqlite3.connect(path, isolation_level=None)
    for number in range(version):
        for statement in MIGRATIONS[number].split(";"):
            if statement.strip():
                db.execute(statement)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute(f"PRAGMA user_version={version}")
    for i in range(5):
        db.execute(
            "INSERT INTO tasks(type, state, priority, payload, max_retries, created_at, "
            "finished_at, duration_ms) VALUES('t', 'completed', ?, ?, 3, 1, ?, 7)",
            (100 + i, f'{{"n": {i}}}'.encode(), 10 + i),
        )
    db.execute("DELETE FROM tasks WHERE id > 3")
    if version >= 2:  # version 2 records the floor itself (AUTOINCREMENT is gone)
        db.execute("INSERT INTO settings(key, value) VALUES('id_floor', CAST('5' AS BLOB))")
    db.close()


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_schema_is_migrated_keeping_tasks_and_every_id(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / f"v{version}.db"
    _old_database(path, version)
    s = SqliteStore(path)
    await s.open()
    try:
        assert [t.payload for t in await s.list_tasks()] == [{"n": 2}, {"n": 1}, {"n": 0}]
        assert s.recent_durations("t", 10) == [7, 7, 7]  # read through the v3 index
        assert submit(s).id == 6
    finally:
        await s.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "tasks_final" in indexes and "tasks_history" not in indexes
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name='sqlite_sequence'")
    finally:
        db.close()


async def test_a_newer_schema_is_refused_and_a_foreign_file_too_untouched(
    tmp_path: Path,
) -> None:
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.execute("CREATE TABLE x(y)")
    db.close()
    foreign = tmp_path / "foreign.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE x(y)")
    db.close()
    newer_before = newer.read_bytes()
    with pytest.raises(NotATaskmillDatabase, match=f"schema version {SCHEMA_VERSION + 1}"):
        await SqliteStore(newer).open()
    assert newer.read_bytes() == newer_before
    assert sorted(os.listdir(tmp_path)) == ["foreign.db", "newer.db"]
    before = foreign.read_bytes()
    with pytest.raises(NotATaskmillDatabase, match="another program"):
        await SqliteStore(foreign).open()
    assert foreign.read_bytes() == before
