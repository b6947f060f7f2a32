"""Behaviour of the scheduler core, one rule per test, on a real SQLite file and a fake clock."""

from __future__ import annotations

import asyncio
import itertools
import random
import sqlite3
from pathlib import Path

import anyio
import pytest

from taskmill_core import (
    Backoff,
    DuplicateRejected,
    InvalidParams,
    InvalidState,
    PayloadTooLarge,
    PermanentError,
    RetryableError,
    Scheduler,
    SchedulerConfig,
    ShuttingDown,
    TaskNotFound,
    TaskSpec,
)
from taskmill_core.scheduler import BATCH_CHUNK, QUEUE_PER_TURN, TICK_SUBMITS
from taskmill_core.types import (
    MAX_DURATION_MS,
    MAX_SAFE_INT,
    IoBytes,
    SubmitResult,
    TaskCompleted,
    TaskFailed,
    TaskInfo,
    TaskPreempted,
    TaskProgress,
)

from .helpers import FaultyStore, Gate, drain, names, open_scheduler, recorder, settle

pytestmark = pytest.mark.anyio


# --- order ---------------------------------------------------------------------------------


async def test_runs_by_priority_then_fifo(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(max_concurrency=1)) as (
        s,
        _,
        _sub,
    ):
        order, run = recorder()
        await s.pause_all()
        ids = []
        for prio in [128, 200, 0, 128, "high", 0]:
            r = await s.submit(TaskSpec(type="rec", priority=prio))
            ids.append(r.id)
        s.register("rec", run)
        await s.resume_all()
        await s.wait_idle()
        # 0, 0 (FIFO), high=64, 128, 128 (FIFO), 200
        assert order == [ids[2], ids[5], ids[4], ids[0], ids[3], ids[1]]


async def test_ids_are_never_reused(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        first = (await s.submit(TaskSpec(type="noop"))).id
        await s.wait_idle()
        await s.prune(keep=0)
        with pytest.raises(TaskNotFound):
            await s.get(first)
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        second = (await s.submit(TaskSpec(type="noop"))).id
        assert second > first
        await s.wait_idle()
        await s.prune(keep=0)  # the newest rows go again, now without a reopen
        batch = await s.submit_batch([TaskSpec(type="noop"), TaskSpec(type="noop")])
        assert [r.id for r in batch] == [second + 1, second + 2]
        await s.wait_idle()
        await s.prune(keep=0)
        assert (await s.submit(TaskSpec(type="noop", dedup_key="k"))).id == second + 3


async def test_a_version_1_database_is_migrated_keeping_every_id(tmp_path: Path) -> None:
    """Version 1 used AUTOINCREMENT; version 2 rebuilds the table without it. Ids that
    AUTOINCREMENT handed out to rows deleted since are still never handed out again."""
    import sqlite3

    from taskmill_core.store import APPLICATION_ID, MIGRATIONS

    path = tmp_path / "v1.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(MIGRATIONS[0])
    db.execute(f"PRAGMA application_id={APPLICATION_ID}")
    db.execute("PRAGMA user_version=1")
    for i in range(5):
        db.execute(
            "INSERT INTO tasks(type, state, priority, payload, max_retries, created_at) "
            "VALUES('noop', 'pending', ?, ?, 3, 1)",
            (100 + i, f'{{"n": {i}}}'.encode()),
        )
    db.execute("DELETE FROM tasks WHERE id >= 4")  # sqlite_sequence still says 5
    db.close()
    async with open_scheduler(path) as (s, _, _sub):
        await s.pause_all()
        kept = [await s.get(i) for i in (1, 2, 3)]
        assert [(t.priority, t.payload) for t in kept] == [(100, {"n": 0}), (101, {"n": 1}),
                                                          (102, {"n": 2})]  # fmt: skip
        assert (await s.submit(TaskSpec(type="noop"))).id == 6
    db = sqlite3.connect(path)
    schema = db.execute("SELECT sql FROM sqlite_master WHERE name='tasks'").fetchone()[0]
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "AUTOINCREMENT" not in schema
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert {"tasks_ready", "tasks_dedup", "tasks_final"} <= indexes
    assert not {"tasks_history", "tasks_finished"} & indexes  # merged by version 3
    db.close()


async def test_max_concurrency_group_and_type_limits(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=3, group_limits={"net": 1})
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        s.register("solo", gate, concurrency=1)
        a = await s.submit(TaskSpec(type="g", group="net"))
        b = await s.submit(TaskSpec(type="g", group="net"))
        c = await s.submit(TaskSpec(type="solo"))
        d = await s.submit(TaskSpec(type="solo"))
        e = await s.submit(TaskSpec(type="g"))
        f = await s.submit(TaskSpec(type="g"))
        await settle()
        assert sorted(gate.started) == [a.id, c.id, e.id]  # b: group full, d: type full
        gate.release(a.id)
        await settle()
        assert b.id in gate.started and f.id not in gate.started
        for tid in (b.id, c.id, e.id):
            gate.release(tid)
        await settle()
        assert d.id in gate.started and f.id in gate.started


async def test_free_slots_reach_past_a_long_run_of_held_back_tasks(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=3, group_limits={"net": 1})
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        await s.pause_all()
        held = [await s.submit(TaskSpec(type="g", group="net", priority=10)) for _ in range(50)]
        later = await s.submit(TaskSpec(type="g", priority=200))
        await s.resume_all()
        await settle()
        # One of the urgent "net" tasks runs; the other 49 wait for the group, and the
        # least urgent task, far down the queue, takes a free slot instead of waiting too.
        assert sorted(gate.started) == [held[0].id, later.id]


async def test_an_executor_sees_its_task_from_the_loop_and_from_a_thread(
    tmp_path: Path,
) -> None:
    seen: list[tuple[str, TaskInfo, TaskInfo]] = []

    async def look(ctx, payload):  # type: ignore[no-untyped-def]
        from_thread = await anyio.to_thread.run_sync(lambda: ctx.task)
        seen.append((payload, ctx.task, from_thread))

    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        s.register("look", look)
        r = await s.submit(TaskSpec(type="look", payload="p", label="L", priority=9))
        await s.wait_idle()
        ((payload, task, same),) = seen
        assert payload == task.payload == "p" and same is task
        assert (task.id, task.type, task.label, task.priority) == (r.id, "look", "L", 9)
        assert task.state == "running" and task.attempt == 0
        assert task.started_at == clock.now_ms()


# --- dedup -----------------------------------------------------------------------------------


async def test_dedup_outcomes(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(max_concurrency=1)) as (
        s,
        _,
        sub,
    ):
        gate = Gate()
        s.register("up", gate)
        blocker = await s.submit(TaskSpec(type="up", payload="blocker"))
        await settle()

        first = await s.submit(TaskSpec(type="up", payload={"f": 1}, dedup_key="k"))
        assert first.outcome == "inserted"
        dup = await s.submit(TaskSpec(type="up", payload={"f": 1}, dedup_key="k", priority=200))
        assert (dup.id, dup.outcome) == (first.id, "duplicate")
        up = await s.submit(TaskSpec(type="up", dedup_key="k", priority="high"))
        assert (up.id, up.outcome) == (first.id, "upgraded")
        assert (await s.get(first.id)).priority == 64
        with pytest.raises(DuplicateRejected) as rejected:
            await s.submit(TaskSpec(type="up", dedup_key="k", on_duplicate="reject"))
        assert rejected.value.existing_id == first.id
        # same key, other type: no duplicate (keys are scoped by type)
        other = await s.submit(TaskSpec(type="noop", dedup_key="k"))
        assert other.outcome == "inserted"
        sup = await s.submit(
            TaskSpec(type="up", payload=2, dedup_key="k", on_duplicate="supersede")
        )
        assert sup.outcome == "superseded" and sup.id != first.id
        assert (await s.get(first.id)).state == "superseded"
        events = drain(sub)
        superseded = [e for e in events if e.EVENT == "task.superseded"]
        assert [(e.id, e.by) for e in superseded] == [(first.id, sup.id)]  # type: ignore[union-attr]

        # requeue: the duplicate is running
        gate.release(blocker.id)
        await settle()
        assert gate.started[-1] == sup.id
        again = await s.submit(TaskSpec(type="up", payload=2, dedup_key="k"))
        assert (again.id, again.outcome) == (sup.id, "requeued")
        gate.release(sup.id)
        await settle()
        assert gate.started.count(sup.id) == 2  # ran once more after this run
        gate.release(sup.id)
        await s.wait_idle()
        assert (await s.get(sup.id)).state == "completed"
        # the key is free again once the task is final
        assert (await s.submit(TaskSpec(type="up", dedup_key="k"))).outcome == "inserted"


async def test_dedup_key_true_hashes_canonical_payload(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        a = await s.submit(TaskSpec(type="noop", payload={"b": 1, "a": [1, 2]}, dedup_key=True))
        b = await s.submit(TaskSpec(type="noop", payload={"a": [1, 2], "b": 1}, dedup_key=True))
        assert (b.id, b.outcome) == (a.id, "duplicate")
        info = await s.get(a.id)
        import hashlib

        canonical = b'{"a":[1,2],"b":1}'
        assert info.dedup_key == hashlib.sha256(canonical).hexdigest()


async def test_requeue_survives_permanent_failure(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        gate = Gate()
        s.register("up", gate)
        r = await s.submit(TaskSpec(type="up", dedup_key="file"))
        await settle()
        assert (await s.submit(TaskSpec(type="up", dedup_key="file"))).outcome == "requeued"
        gate.release(r.id, PermanentError("disk vanished"))
        await settle()
        failed = [e for e in drain(sub) if isinstance(e, TaskFailed)]
        assert failed[-1].will_retry and failed[-1].state == "pending"
        assert gate.started == [r.id, r.id]  # it runs once more despite the permanent failure
        gate.release(r.id)
        await s.wait_idle()
        assert (await s.get(r.id)).state == "completed"


async def test_fifty_identical_submits_in_flight_give_one_task(tmp_path: Path) -> None:
    import anyio
    import anyio.lowlevel

    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        results = []

        async def submit() -> None:
            results.append(await s.submit(TaskSpec(type="noop", payload={"p": 1}, dedup_key=True)))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(submit)
        assert len({r.id for r in results}) == 1
        assert sorted(r.outcome for r in results).count("inserted") == 1
        batch = await s.submit_batch(
            [TaskSpec(type="noop", payload={"p": 2}, dedup_key=True) for _ in range(50)]
        )
        assert len({r.id for r in batch}) == 1
        assert [r.outcome for r in batch].count("inserted") == 1
        counts = (await s.status()).counts
        assert counts["pending"] == 2


async def test_batch_is_all_or_nothing(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        await s.pause_all()
        held = await s.submit(TaskSpec(type="noop", dedup_key="x"))
        drain(sub)
        with pytest.raises(InvalidParams) as bad:
            await s.submit_batch(
                [TaskSpec(type="noop"), TaskSpec(type="noop", priority=999)]  # type: ignore[arg-type]
            )
        assert bad.value.path == "$.tasks[1].priority"
        with pytest.raises(DuplicateRejected) as dup:
            await s.submit_batch(
                [TaskSpec(type="noop"), TaskSpec(type="noop", dedup_key="x", on_duplicate="reject")]
            )
        assert dup.value.data["index"] == 1 and dup.value.existing_id == held.id
        assert (await s.status()).counts["pending"] == 1  # nothing of either batch was written
        assert names(drain(sub)) == []


async def test_a_batch_of_differently_shaped_tasks_stores_each_as_given(tmp_path: Path) -> None:
    """Rows are written with only the columns they set, several shapes in one batch."""
    specs = [
        TaskSpec(type="noop", payload=0),
        TaskSpec(type="noop", payload=1, label="one", group="g", tags={"k": "v"}),
        TaskSpec(type="noop", payload=2),
        TaskSpec(type="noop", payload=3, io_cost=IoBytes(disk_read=5), backoff=Backoff()),
        TaskSpec(type="noop", payload=4, delay_ms=50, ttl_ms=1000, timeout_ms=70),
        TaskSpec(type="noop", payload=5, max_retries=0, priority="high"),
        TaskSpec(type="noop", payload=6),
    ]
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        await s.pause_all()
        ids = [r.id for r in await s.submit_batch(specs)]
        assert ids == list(range(ids[0], ids[0] + len(specs)))
        got = [await s.get(i) for i in ids]
        assert [t.payload for t in got] == list(range(len(specs)))
        assert (got[1].label, got[1].group, got[1].tags) == ("one", "g", {"k": "v"})
        assert got[0].label is None and got[0].group is None and got[0].tags == {}
        assert got[3].io_cost == IoBytes(disk_read=5)
        assert got[4].run_at == clock.now_ms() + 50
        assert (got[5].max_retries, got[5].priority) == (0, 64)
        assert all(t.state == "pending" for t in got)


async def test_submit_many_answers_each_spec_on_its_own(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        await s.pause_all()
        held = await s.submit(TaskSpec(type="noop", dedup_key="x"))
        drain(sub)
        out = await s.submit_many(
            [
                TaskSpec(type="noop", priority=7),
                TaskSpec(type="noop", priority=999),  # type: ignore[arg-type]
                TaskSpec(type="noop", dedup_key="x", on_duplicate="reject"),
                TaskSpec(type="noop", dedup_key="y"),
                TaskSpec(type="noop", dedup_key="y"),
            ]
        )
        first, bad, rejected, y1, y2 = out
        assert isinstance(first, SubmitResult) and first.outcome == "inserted"
        assert first.task is not None and first.task.priority == 7
        assert isinstance(bad, InvalidParams) and bad.path == "$.priority"
        assert isinstance(rejected, DuplicateRejected) and rejected.existing_id == held.id
        assert isinstance(y1, SubmitResult) and isinstance(y2, SubmitResult)
        assert (y1.outcome, y2.outcome, y2.id) == ("inserted", "duplicate", y1.id)
        assert first.id < y1.id  # written in order, standalone entries and keyed ones alike
        assert (await s.status()).counts["pending"] == 3  # held, first and y
        assert names(drain(sub)) == ["task.submitted", "task.submitted"]


async def test_many_queued_submits_are_written_over_several_ticks(tmp_path: Path) -> None:
    """A tick writes at most TICK_SUBMITS queued tasks (bounding how long it holds the loop);
    a submit_many larger than that is answered once its last part is written."""
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        ticks_before = s.statistics()["ticks"]
        n = 3 * TICK_SUBMITS + 5
        results = await s.submit_many([TaskSpec(type="noop", payload=i) for i in range(n)])
        assert s.statistics()["ticks"] - ticks_before >= 4
        ids = [r.id for r in results if isinstance(r, SubmitResult)]
        assert len(ids) == n and ids == sorted(ids)  # written in submission order
        assert (await s.status()).counts["pending"] == n


async def test_a_burst_of_submits_is_let_through_a_few_per_loop_turn(tmp_path: Path) -> None:
    """Hundreds of submits started in one loop turn would hold the loop for milliseconds:
    past QUEUE_PER_TURN they wait in line, are let through at most that many per turn, and
    are each still written, in the order the callers arrived."""
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        n = 6 * QUEUE_PER_TURN
        loop = asyncio.get_running_loop()
        line: list[int] = []  # how many wait in line, sampled once per loop turn

        def sample() -> None:
            line.append(s.statistics()["waiting_for_turn"])
            if len(line) < 50:
                loop.call_soon(sample)

        loop.call_soon(sample)
        results = await asyncio.gather(
            *(s.submit(TaskSpec(type="noop", payload=i)) for i in range(n))
        )
        ids = [r.id for r in results]
        assert len(set(ids)) == n and ids == sorted(ids)
        assert max(line) >= n - 2 * QUEUE_PER_TURN  # a line formed ...
        assert max(a - b for a, b in itertools.pairwise(line)) <= QUEUE_PER_TURN  # ... and moved
        assert line[-1] == 0
        assert (await s.status()).counts["pending"] == n


async def test_a_submit_cancelled_while_waiting_in_line_writes_nothing(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        n = 3 * QUEUE_PER_TURN
        calls = [asyncio.create_task(s.submit(TaskSpec(type="noop", payload=i))) for i in range(n)]
        await asyncio.sleep(0)  # every call has started: the last ones wait in line
        assert s.statistics()["waiting_for_turn"] > QUEUE_PER_TURN
        calls[-1].cancel()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[-1], asyncio.CancelledError)
        assert all(isinstance(r, SubmitResult) for r in results[:-1])
        assert (await s.status()).counts["pending"] == n - 1
        assert s.statistics()["waiting_for_turn"] == 0


# --- retries -----------------------------------------------------------------------------


async def test_backoff_timings_are_exact_under_fake_clock(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, sub):

        async def flaky(ctx, payload):  # type: ignore[no-untyped-def]
            raise RetryableError("try later")

        s.register("flaky", flaky)
        backoff = Backoff(kind="exponential", initial_ms=100, multiplier=3, max_ms=500)
        r = await s.submit(TaskSpec(type="flaky", max_retries=4, backoff=backoff))
        t0 = clock.now_ms()
        retry_at = []
        for _ in range(4):
            await settle()
            failed = [e for e in drain(sub) if isinstance(e, TaskFailed)]
            assert failed[-1].will_retry
            assert failed[-1].retry_at is not None
            retry_at.append(failed[-1].retry_at - t0)
            clock.advance(failed[-1].retry_at - clock.now_ms() - 1)
            await settle()
            assert not [e for e in drain(sub) if e.EVENT == "task.started"]  # not a ms early
            clock.advance(1)
        assert retry_at == [100, 100 + 300, 100 + 300 + 500, 100 + 300 + 500 + 500]
        await settle()
        last = [e for e in drain(sub) if isinstance(e, TaskFailed)][-1]
        assert (last.will_retry, last.state, last.attempt) == (False, "deadLetter", 4)
        assert (await s.get(r.id)).state == "deadLetter"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("constant", [50, 50, 50]), ("linear", [50, 100, 150]), ("exponential", [50, 100, 200])],
)
async def test_backoff_kinds(tmp_path: Path, kind: str, expected: list[int]) -> None:
    from taskmill_core.retry import backoff_delay_ms

    b = Backoff(kind=kind, initial_ms=50, multiplier=2)  # type: ignore[arg-type]
    assert [backoff_delay_ms(b, n, random.Random(1)) for n in (1, 2, 3)] == expected
    jitter = Backoff(kind="exponentialJitter", initial_ms=1000, multiplier=2)
    delays = [backoff_delay_ms(jitter, 3, random.Random(seed)) for seed in range(50)]
    assert all(2000 <= d <= 4000 for d in delays) and len(set(delays)) > 10


async def test_retry_after_from_executor_wins(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, sub):

        async def busy(ctx, payload):  # type: ignore[no-untyped-def]
            raise RetryableError("rate limited", retry_after=7.5)

        s.register("busy", busy)
        await s.submit(TaskSpec(type="busy"))
        await settle()
        failed = [e for e in drain(sub) if isinstance(e, TaskFailed)]
        assert failed[0].retry_at == clock.now_ms() + 7500


@pytest.mark.parametrize(
    ("retry_after", "delay_ms"),
    [(float("inf"), MAX_DURATION_MS), (1e300, MAX_DURATION_MS), (-3.0, 0), (float("nan"), None)],
)
async def test_any_retry_after_gives_a_safe_retry_time(
    tmp_path: Path, retry_after: float, delay_ms: int | None
) -> None:
    """An executor's (or a server's Retry-After) delay is kept within what a retry time can
    be: the retry lands at most MAX_DURATION_MS away, never before now; NaN means the
    task's backoff. The scheduler goes on either way."""
    async with open_scheduler(tmp_path / "t.db") as (s, clock, sub):

        async def odd(ctx, payload):  # type: ignore[no-untyped-def]
            raise RetryableError("try again", retry_after=retry_after)

        s.register("odd", odd)
        await s.submit(TaskSpec(type="odd", backoff=Backoff(kind="constant", initial_ms=40)))
        await settle()
        failed = [e for e in drain(sub) if isinstance(e, TaskFailed)]
        assert failed[0].will_retry and failed[0].retry_at is not None
        expected = 40 if delay_ms is None else delay_ms
        assert failed[0].retry_at == clock.now_ms() + expected <= MAX_SAFE_INT
        assert (await s.submit(TaskSpec(type="noop"))).outcome == "inserted"


async def test_permanent_failure_and_manual_retry(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        r = await s.submit(TaskSpec(type="sleep", payload={"ms": 0, "fail": "permanent"}))
        await s.wait_idle()
        info = await s.get(r.id)
        assert info.state == "failed" and info.error is not None
        assert (info.error.kind, info.error.retryable) == ("permanent", False)
        with pytest.raises(InvalidState):
            await s.cancel(r.id)
        again = await s.retry(r.id)
        assert (again.id, again.outcome) == (r.id, "inserted")
        assert (await s.get(r.id)).attempt == 0


async def test_manual_retry_reports_the_active_duplicate(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        bad = {"ms": 0, "fail": "permanent"}
        r = await s.submit(TaskSpec(type="sleep", payload=bad, dedup_key="d"))
        await s.wait_idle()
        await s.pause_all()
        holder = await s.submit(TaskSpec(type="sleep", payload={"ms": 0}, dedup_key="d"))
        again = await s.retry(r.id)
        assert (again.id, again.outcome) == (holder.id, "duplicate")
        assert (await s.get(r.id)).state == "failed"


async def test_sleep_fails_retryably_on_first_attempts(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        fast = Backoff(kind="constant", initial_ms=10)
        r = await s.submit(
            TaskSpec(type="sleep", payload={"ms": 0, "failAttempts": 2}, backoff=fast)
        )
        for _ in range(3):
            await settle()
            clock.advance(10)
        await s.wait_idle()
        info = await s.get(r.id)
        assert (info.state, info.attempt) == ("completed", 2)


# --- cancel, pause, preemption ------------------------------------------------------------


async def test_cancel_pending_and_running(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(max_concurrency=1)) as (
        s,
        _,
        sub,
    ):
        gate = Gate()
        s.register("g", gate)
        running = await s.submit(TaskSpec(type="g"))
        pending = await s.submit(TaskSpec(type="g"))
        await settle()
        await s.cancel(pending.id)
        await s.cancel(running.id)
        assert (await s.get(running.id)).state == "cancelled"
        await settle()
        assert running.id in gate.exited  # the executor was cancelled at its await
        events = drain(sub)
        assert [e.EVENT for e in events if getattr(e, "id", None) == running.id][-1] == (
            "task.cancelled"
        )
        assert not [e for e in events if isinstance(e, TaskCompleted)]
        with pytest.raises(InvalidState):
            await s.cancel(running.id)
        with pytest.raises(TaskNotFound):
            await s.cancel(10_000)


async def test_cancel_hard_deadline_frees_the_slot(tmp_path: Path) -> None:
    import anyio
    import anyio.lowlevel

    cfg = SchedulerConfig(max_concurrency=1, cancel_grace_ms=2000)
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, _sub):
        release = anyio.Event()

        async def stubborn(ctx, payload):  # type: ignore[no-untyped-def]
            with anyio.CancelScope(shield=True):
                await release.wait()

        s.register("stubborn", stubborn)
        r = await s.submit(TaskSpec(type="stubborn"))
        nxt = await s.submit(TaskSpec(type="noop"))
        await settle()
        await s.cancel(r.id)
        await settle()
        assert (await s.get(nxt.id)).state == "pending"  # slot still held
        clock.advance(2000)
        await settle()
        assert (await s.get(nxt.id)).state == "completed"
        release.set()
        await settle()
        assert (await s.get(r.id)).state == "cancelled"


async def test_a_stop_that_lands_as_its_run_returns_spares_the_next_run(tmp_path: Path) -> None:
    """Run workers share a cancel scope across runs; a cancel that reaches a run whose
    executor then returns without noticing must not cancel the run its worker takes next."""
    cfg = SchedulerConfig(max_concurrency=2)
    store = FaultyStore(tmp_path / "t.db")
    async with open_scheduler(tmp_path / "t.db", cfg, store=store) as (s, _clock, _sub):
        release = anyio.Event()
        steps: list[int] = []

        async def deaf(ctx, payload):  # type: ignore[no-untyped-def]
            with anyio.CancelScope(shield=True):
                await release.wait()
            return "finished anyway"

        async def stepping(ctx, payload):  # type: ignore[no-untyped-def]
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
            steps.append(ctx.id)

        s.register("deaf", deaf)
        s.register("stepping", stepping)
        first = await s.submit(TaskSpec(type="deaf"))
        await settle()
        await s.cancel(first.id)  # cancels the worker's scope; the executor does not see it

        # The race: the deaf run returns just as the next run is queued for a worker, so
        # its worker (woken first) finds that run waiting when its executor returns. The
        # store's hook fires as the first "stepping" run is launched, right before it is
        # queued.
        def release_deaf(task_type: str) -> None:
            if task_type == "stepping":
                release.set()

        store.on_first_run_of_type = release_deaf
        nxt = await s.submit(TaskSpec(type="stepping"))
        await settle()
        assert (await s.get(first.id)).state == "cancelled"
        assert steps == [nxt.id]
        assert (await s.get(nxt.id)).state == "completed"


async def test_cancel_parent_cancels_children(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        parent = await s.submit(TaskSpec(type="noop"))
        kids = [await s.submit(TaskSpec(type="noop", parent_id=parent.id)) for _ in range(3)]
        await s.cancel(parent.id)
        for k in kids:
            assert (await s.get(k.id)).state == "cancelled"


async def test_overlapping_pauses(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        order, run = recorder()
        s.register("rec", run)
        await s.pause_all()
        await s.pause_all(group="media")
        a = await s.submit(TaskSpec(type="rec", group="media"))
        b = await s.submit(TaskSpec(type="rec"))
        await s.pause(a.id)
        await s.resume_all()  # lifts the global pause only
        await s.wait_idle()
        assert order == [b.id]
        await s.resume_all(group="media")  # the task's own pause still holds
        await s.wait_idle()
        assert order == [b.id] and (await s.get(a.id)).state == "paused"
        await s.resume(a.id)
        await s.wait_idle()
        assert order == [b.id, a.id]


async def test_pauses_and_config_persist_across_restart(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all(type="noop")
        await s.configure(max_concurrency=2, preempt_priority=10)
        r = await s.submit(TaskSpec(type="noop"))
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        status = await s.status()
        assert status.paused_types == ["noop"] and status.max_concurrency == 2
        assert s.config.preempt_priority == 10
        await s.wait_idle()
        assert (await s.get(r.id)).state == "pending"


async def test_pause_running_task_interrupts_without_using_a_retry(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        r = await s.submit(TaskSpec(type="g"))
        await settle()
        info = await s.pause(r.id)
        assert info.state == "paused"
        await settle()
        assert (await s.get(r.id)).attempt == 0
        await s.resume(r.id)
        await settle()
        assert gate.started == [r.id, r.id]
        gate.release(r.id)
        await s.wait_idle()
        assert (await s.get(r.id)).state == "completed"


async def test_preemption_only_when_no_slot_and_after_min_run(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=2, min_run_ms=1000)
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, sub):
        gate = Gate()
        s.register("g", gate)
        bg = await s.submit(TaskSpec(type="g", priority="background"))
        await settle()
        urgent1 = await s.submit(TaskSpec(type="g", priority="high"))
        await settle()
        assert urgent1.id in gate.started  # a slot was free: nothing preempted
        assert not [e for e in drain(sub) if isinstance(e, TaskPreempted)]

        urgent2 = await s.submit(TaskSpec(type="g", priority="realtime"))
        await settle()
        assert urgent2.id not in gate.started  # bg has not run minRunMs yet
        clock.advance(999)
        await settle()
        assert urgent2.id not in gate.started
        clock.advance(1)
        await settle()
        pre = [e for e in drain(sub) if isinstance(e, TaskPreempted)]
        # the least urgent running task is the victim, not urgent1
        assert [(e.id, e.by) for e in pre] == [(bg.id, urgent2.id)]
        assert urgent2.id in gate.started
        info = await s.get(bg.id)
        assert (info.state, info.attempt) == ("pending", 0)


async def test_normal_priority_does_not_preempt(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=1, min_run_ms=0)
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, sub):
        gate = Gate()
        s.register("g", gate)
        await s.submit(TaskSpec(type="g", priority="idle"))
        await settle()
        await s.submit(TaskSpec(type="g", priority="normal"))  # 128 > preemptPriority 64
        clock.advance(5000)
        await settle()
        assert not [e for e in drain(sub) if isinstance(e, TaskPreempted)]


async def test_preempted_task_is_not_preempted_again_before_min_run(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=1, min_run_ms=1000)
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, sub):
        gate = Gate()
        s.register("g", gate)
        bg = await s.submit(TaskSpec(type="g", priority=200))
        await settle()
        clock.advance(1000)
        u1 = await s.submit(TaskSpec(type="g", priority=10))
        await settle()
        gate.release(u1.id)
        await settle()
        assert gate.started == [bg.id, u1.id, bg.id]  # bg resumed
        u2 = await s.submit(TaskSpec(type="g", priority=10))
        clock.advance(999)
        await settle()
        assert u2.id not in gate.started  # anti-thrash: bg must run another minRunMs
        clock.advance(1)
        await settle()
        assert gate.started[-1] == u2.id
        pre = [e for e in drain(sub) if isinstance(e, TaskPreempted)]
        assert [e.by for e in pre] == [u1.id, u2.id]


async def test_preempted_task_gets_its_checkpoint_back(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=1, min_run_ms=0)
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, _, _sub):
        seen = []

        async def resumable(ctx, payload):  # type: ignore[no-untyped-def]
            seen.append(ctx.resume_state)
            ctx.checkpoint({"done": len(seen)})
            await ctx.sleep(10_000)

        s.register("r", resumable)
        r = await s.submit(TaskSpec(type="r", priority=200))
        await settle()
        await s.submit(TaskSpec(type="noop", priority=0))
        await settle()
        assert seen == [None, {"done": 1}]
        assert (await s.get(r.id)).attempt == 0


async def test_set_priority_can_preempt(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=1, min_run_ms=0)
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, _, sub):
        gate = Gate()
        s.register("g", gate)
        bg = await s.submit(TaskSpec(type="g", priority=200))
        await settle()
        queued = await s.submit(TaskSpec(type="g", priority=200))
        await settle()
        info = await s.set_priority(queued.id, "realtime")
        assert info.priority == 0
        await settle()
        pre = [e for e in drain(sub) if isinstance(e, TaskPreempted)]
        assert [(e.id, e.by) for e in pre] == [(bg.id, queued.id)]


# --- time: delays, TTL, timeouts ------------------------------------------------------------


async def test_delayed_tasks_wait_for_their_time(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        order, run = recorder()
        s.register("rec", run)
        later = await s.submit(TaskSpec(type="rec", delay_ms=500))
        at = await s.submit(TaskSpec(type="rec", run_at=clock.now_ms() + 200))
        await s.wait_idle()
        assert order == []
        clock.advance(200)
        await settle()
        assert order == [at.id]
        clock.advance(300)
        await settle()
        assert order == [at.id, later.id]


async def test_ttl_expires_tasks_that_did_not_start(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, sub):
        await s.pause_all()
        r = await s.submit(TaskSpec(type="noop", ttl_ms=1000))
        clock.advance(1000)
        await settle()
        assert (await s.get(r.id)).state == "expired"
        assert "task.expired" in names(drain(sub))


async def test_an_expired_task_fails_its_dependents_and_completes_its_waiting_parent(
    tmp_path: Path,
) -> None:
    """Expiry is a final state like any other: what waited on the expired task moves on."""
    async with open_scheduler(tmp_path / "t.db") as (s, clock, sub):
        gate = Gate()
        s.register("g", gate)
        parent = await s.submit(TaskSpec(type="g"))
        await settle()
        await s.pause_all(type="late")
        child = await s.submit(TaskSpec(type="late", parent_id=parent.id, ttl_ms=1000))
        dependent = await s.submit(TaskSpec(type="noop", depends_on=[child.id]))
        gate.release(parent.id)
        await settle()
        assert (await s.get(parent.id)).state == "waiting"
        drain(sub)
        clock.advance(1000)
        await settle()
        assert (await s.get(child.id)).state == "expired"
        assert (await s.get(dependent.id)).state == "failed"
        assert (await s.get(parent.id)).state == "completed"
        events = [(e.EVENT, getattr(e, "id", None)) for e in drain(sub)]
        assert ("task.expired", child.id) in events
        assert ("task.failed", dependent.id) in events
        assert ("task.completed", parent.id) in events


async def test_timeout_fails_the_run_retryably(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, sub):
        r = await s.submit(
            TaskSpec(type="sleep", payload={"ms": 60_000}, timeout_ms=1000, max_retries=0)
        )
        await settle()
        clock.advance(1000)
        await settle()
        failed = [e for e in drain(sub) if isinstance(e, TaskFailed)]
        assert failed[0].error.kind == "timeout" and failed[0].state == "deadLetter"
        assert (await s.get(r.id)).state == "deadLetter"


# --- progress ---------------------------------------------------------------------------------


async def test_explicit_progress_is_throttled_and_never_decreases(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(progress_hz=4)) as (
        s,
        clock,
        sub,
    ):
        gate = Gate()

        async def reporter(ctx, payload):  # type: ignore[no-untyped-def]
            for f in (0.1, 0.2, 0.15, 0.3):
                ctx.progress(f, bytes_done=int(f * 1000), bytes_total=1000)
            await gate(ctx, payload)

        s.register("rep", reporter)
        r = await s.submit(TaskSpec(type="rep"))
        await settle()
        sent = [e for e in drain(sub) if isinstance(e, TaskProgress)]
        assert [e.progress.fraction for e in sent] == [0.1]  # the rest waits for the tick
        clock.advance(250)
        await settle()
        sent = [e for e in drain(sub) if isinstance(e, TaskProgress)]
        assert [e.progress.fraction for e in sent] == [0.3]
        assert sent[0].progress.bytes_done == 300 and not sent[0].progress.estimated
        info = await s.get(r.id)
        assert info.progress is not None and info.progress.fraction == 0.3
        gate.release(r.id)


async def test_progress_is_extrapolated_from_history(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(progress_hz=4)) as (
        s,
        clock,
        sub,
    ):

        async def quiet(ctx, payload):  # type: ignore[no-untyped-def]
            await ctx.sleep(1000)

        s.register("quiet", quiet)
        await s.submit(TaskSpec(type="quiet"))
        await settle()
        for _ in range(4):
            clock.advance(250)
            await settle()
        await s.wait_idle()
        drain(sub)
        # now the type has a history of 1000 ms: the next run is estimated
        await s.submit(TaskSpec(type="quiet", payload=2))
        await settle()
        fractions = []
        for _ in range(4):
            clock.advance(250)
            await settle()
            fractions += [e.progress.fraction for e in drain(sub) if isinstance(e, TaskProgress)]
        assert fractions[:3] == [0.25, 0.5, 0.75]
        assert all(f < 1.0 for f in fractions)


async def test_estimates_never_reach_one(tmp_path: Path) -> None:
    from taskmill_core.progress import RunProgress

    p = RunProgress(started_ms=0)
    last = p.estimate(10_000, expected_ms=100)
    assert last is not None and last.estimated and last.fraction < 1.0
    p.report(20_000, 0.5)
    assert p.estimate(30_000, expected_ms=100) is None  # explicit reports win


# --- history ----------------------------------------------------------------------------------


async def test_history_stats_and_pruning(tmp_path: Path) -> None:
    cfg = SchedulerConfig()
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, _sub):

        async def io(ctx, payload):  # type: ignore[no-untyped-def]
            ctx.record_io(disk_read=100, disk_write=50)
            await ctx.sleep(payload)

        s.register("io", io)
        for ms in (100, 200, 300, 400):
            await s.submit(TaskSpec(type="io", payload=ms))
        for _ in range(10):
            await settle()
            clock.advance(100)
        await s.wait_idle()
        await s.submit(TaskSpec(type="sleep", payload={"ms": 0, "fail": "permanent"}))
        await s.wait_idle()
        stats = (await s.history_stats()).by_type
        assert stats["io"].completed == 4 and stats["sleep"].failed == 1
        assert stats["io"].avg_io.disk_read == 100
        assert stats["io"].avg_duration_ms is not None
        info = (await s.list_tasks(type="io", limit=1)).tasks[0]
        assert info.io_actual is not None and info.io_actual.disk_write == 50
        assert await s.prune(keep=2) == 3
        assert len((await s.list_tasks()).tasks) == 2
        clock.advance(10_000)
        assert await s.prune(older_than_ms=5_000) == 2


async def test_pruning_by_age_takes_old_final_tasks_of_every_type_and_state(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        gate = Gate()
        s.register("a", gate)
        s.register("b", gate)
        old_done = (await s.submit(TaskSpec(type="a"))).id
        old_failed = (await s.submit(TaskSpec(type="b", max_retries=0))).id
        old_cancelled = (await s.submit(TaskSpec(type="b", delay_ms=10**9))).id
        waiting = (await s.submit(TaskSpec(type="a", delay_ms=10**9))).id  # not final
        await settle()
        gate.release(old_done)
        gate.release(old_failed, PermanentError("no"))
        await s.cancel(old_cancelled)
        await settle()
        clock.advance(10_000)
        young = (await s.submit(TaskSpec(type="b"))).id
        await settle()
        gate.release(young)
        await s.wait_idle()
        assert await s.prune(older_than_ms=5_000) == 3
        left = {t.id: t.state for t in (await s.list_tasks()).tasks}
        assert left == {waiting: "pending", young: "completed"}


async def test_list_filters_and_pages(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        ids = [
            (
                await s.submit(
                    TaskSpec(type="noop", group="g" if i % 2 else None, tags={"i": str(i)})
                )
            ).id
            for i in range(5)
        ]
        page = await s.list_tasks(limit=2)
        assert [t.id for t in page.tasks] == ids[::-1][:2] and page.next_cursor
        page2 = await s.list_tasks(limit=2, cursor=page.next_cursor)
        assert [t.id for t in page2.tasks] == ids[::-1][2:4]
        assert [t.id for t in (await s.list_tasks(group="g")).tasks] == [ids[3], ids[1]]
        assert [t.id for t in (await s.list_tasks(tags={"i": "2"})).tasks] == [ids[2]]
        assert len((await s.list_tasks(state=["pending", "running"])).tasks) == 5
        with pytest.raises(InvalidParams):
            await s.list_tasks(cursor="nope")


async def test_runs_ending_in_one_tick_are_each_recorded_as_they_need(tmp_path: Path) -> None:
    """One tick writes the plain successes together; a success with dependents, a requeued
    one and a failure in the same tick still get their own handling."""
    config = SchedulerConfig(max_concurrency=8)
    async with open_scheduler(tmp_path / "t.db", config) as (s, _, sub):
        gate = Gate()
        s.register("g", gate)
        plain = [(await s.submit(TaskSpec(type="g", payload=i))).id for i in range(3)]
        needed = (await s.submit(TaskSpec(type="g", payload="dep"))).id
        requeued = (await s.submit(TaskSpec(type="g", dedup_key="k"))).id
        failing = (await s.submit(TaskSpec(type="g", payload="bad", max_retries=0))).id
        later = (await s.submit(TaskSpec(type="noop", depends_on=[needed]))).id
        await settle()
        assert len(gate.started) == 6
        again = await s.submit(TaskSpec(type="g", dedup_key="k"))
        assert (again.id, again.outcome) == (requeued, "requeued")
        for tid in [*plain, needed, requeued]:
            gate.release(tid)
        gate.release(failing, PermanentError("no"))
        await settle()
        states = {tid: (await s.get(tid)).state for tid in [*plain, needed, failing, later]}
        assert states == {
            **dict.fromkeys(plain, "completed"),
            needed: "completed",
            failing: "failed",
            later: "completed",  # unblocked by `needed`, then ran
        }
        assert len(gate.started) == 7 and gate.started[-1] == requeued  # runs again
        gate.release(requeued)
        await s.wait_idle()
        done = [e.id for e in drain(sub) if isinstance(e, TaskCompleted)]
        assert sorted(done) == sorted([*plain, needed, later, requeued])


async def test_a_result_that_is_not_json_fails_the_task_and_nothing_else(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):

        async def odd(ctx, payload):  # type: ignore[no-untyped-def]
            return object() if payload == "bad" else payload

        s.register("odd", odd)
        bad = await s.submit(TaskSpec(type="odd", payload="bad"))
        good = await s.submit(TaskSpec(type="odd", payload="good"))
        await s.wait_idle()
        info = await s.get(bad.id)
        assert info.state == "failed" and info.error is not None
        assert "not JSON-serializable" in info.error.message and not info.error.retryable
        assert (await s.get(good.id)).result == "good"


# --- children and dependencies ----------------------------------------------------------------


async def test_parent_waits_for_children(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        gate = Gate()
        s.register("child", gate)

        async def fanout(ctx, payload):  # type: ignore[no-untyped-def]
            for i in range(3):
                await ctx.submit_child(TaskSpec(type="child", payload=i))
            return {"children": 3}

        s.register("fan", fanout)
        parent = await s.submit(TaskSpec(type="fan"))
        await settle()
        assert (await s.get(parent.id)).state == "waiting"
        for kid in list(gate.started):
            gate.release(kid)
        await s.wait_idle()
        info = await s.get(parent.id)
        assert info.state == "completed" and info.result == {"children": 3}
        done = [e for e in drain(sub) if isinstance(e, TaskCompleted)]
        assert done[-1].id == parent.id  # the parent finishes after its children


async def test_dependencies_block_until_completed(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        a = await s.submit(TaskSpec(type="g"))
        b = await s.submit(TaskSpec(type="noop", depends_on=[a.id]))
        c = await s.submit(TaskSpec(type="noop", depends_on=[a.id]))
        await settle()
        assert (await s.get(b.id)).state == "blocked"
        gate.release(a.id)
        await s.wait_idle()
        assert (await s.get(b.id)).state == "completed"
        d = await s.submit(TaskSpec(type="g"))
        e = await s.submit(TaskSpec(type="noop", depends_on=[d.id]))
        await settle()
        await s.cancel(d.id)
        await settle()
        info = await s.get(e.id)
        assert info.state == "failed" and info.error is not None
        assert (await s.get(c.id)).state == "completed"
        with pytest.raises(InvalidParams) as bad:
            await s.submit(TaskSpec(type="noop", depends_on=[d.id]))
        assert bad.value.path == "$.dependsOn[0]"


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (TaskSpec(type=""), "$.type"),
        (TaskSpec(type="has space"), "$.type"),
        (TaskSpec(type="noop", priority=256), "$.priority"),
        (TaskSpec(type="noop", priority="urgent"), "$.priority"),  # type: ignore[arg-type]
        (TaskSpec(type="noop", max_retries=101), "$.maxRetries"),
        (TaskSpec(type="noop", dedup_key="k" * 257), "$.dedupKey"),
        (TaskSpec(type="noop", tags={str(i): "v" for i in range(33)}), "$.tags"),
        (TaskSpec(type="noop", payload=object()), "$.payload"),
        (TaskSpec(type="noop", parent_id=12345), "$.parentId"),
    ],
)
async def test_invalid_specs_name_the_field_and_write_nothing(
    tmp_path: Path, spec: TaskSpec, path: str
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        with pytest.raises(InvalidParams) as err:
            await s.submit(spec)
        assert err.value.path == path
        assert sum((await s.status()).counts.values()) == 0
        assert drain(sub) == []


async def test_payload_too_large(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        with pytest.raises(PayloadTooLarge):
            await s.submit(TaskSpec(type="noop", payload="x" * (1024 * 1024)))


async def test_submit_after_close_is_refused(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        pass
    with pytest.raises(ShuttingDown):
        await s.submit(TaskSpec(type="noop"))


async def test_unknown_type_stays_pending_until_registered(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        r = await s.submit(TaskSpec(type="later"))
        await s.wait_idle()
        assert (await s.get(r.id)).state == "pending"
        order, run = recorder()
        s.register("later", run)
        await s.wait_idle()
        assert order == [r.id]


async def test_shutdown_returns_running_work_to_pending(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        r = await s.submit(TaskSpec(type="sleep", payload={"ms": 60_000}))
        await settle()
        assert (await s.get(r.id)).state == "running"
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        info = await s.get(r.id)
        assert (info.state, info.attempt) == ("pending", 0)
        assert s.recovered == 0  # a clean shutdown left nothing to recover
        await settle()
        assert (await s.get(r.id)).state == "running"  # resumed without any user action


async def test_superseding_a_task_moves_its_dependents_and_parent(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        await s.pause_all()
        old = await s.submit(TaskSpec(type="noop", dedup_key="k"))
        dependent = await s.submit(TaskSpec(type="noop", depends_on=[old.id]))
        new = await s.submit(TaskSpec(type="noop", dedup_key="k", on_duplicate="supersede"))
        assert new.outcome == "superseded"
        info = await s.get(dependent.id)
        assert info.state == "failed" and info.error is not None
        assert info.error.kind == "dependency"
        failed = [e for e in drain(sub) if isinstance(e, TaskFailed)]
        assert [(e.id, e.will_retry) for e in failed] == [(dependent.id, False)]


async def test_cancel_many_by_type_group_and_tags(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        a = await s.submit(TaskSpec(type="noop", group="g", tags={"album": "1"}))
        b = await s.submit(TaskSpec(type="noop", group="g", tags={"album": "2"}))
        c = await s.submit(TaskSpec(type="sleep", payload={"ms": 0}))
        assert await s.cancel_many(tags={"album": "1"}) == 1
        assert (await s.get(a.id)).state == "cancelled"
        assert await s.cancel_many(group="g") == 1
        assert (await s.get(b.id)).state == "cancelled"
        assert await s.cancel_many(type="noop") == 0
        assert (await s.get(c.id)).state == "pending"
        with pytest.raises(InvalidParams):
            await s.cancel_many()


async def test_large_batch_is_all_or_nothing_across_chunks(tmp_path: Path) -> None:
    import anyio
    import anyio.lowlevel

    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        await s.pause_all()
        held = await s.submit(TaskSpec(type="noop", dedup_key="x"))
        drain(sub)
        specs = [TaskSpec(type="noop", payload=i) for i in range(2500)]
        specs[2100] = TaskSpec(type="noop", dedup_key="x", on_duplicate="reject")
        with pytest.raises(DuplicateRejected) as dup:
            await s.submit_batch(specs)
        assert dup.value.data["index"] == 2100 and dup.value.existing_id == held.id
        assert sum((await s.status()).counts.values()) == 1
        assert names(drain(sub)) == []

        # a write issued while a large batch is being written waits for it, then applies
        specs[2100] = TaskSpec(type="noop", dedup_key="x")  # a plain duplicate now
        results = []
        async with anyio.create_task_group() as tg:

            async def batch() -> None:
                results.extend(await s.submit_batch(specs))

            tg.start_soon(batch)
            while not s.statistics()["writes_held"]:  # the batch's transaction is open
                await anyio.lowlevel.checkpoint()
            await s.cancel(held.id)  # waits until the batch's transaction has committed
        assert results[2100].id == held.id and results[2100].outcome == "duplicate"
        assert (await s.get(held.id)).state == "cancelled"
        assert len({r.id for r in results}) == 2500
        assert [e.EVENT for e in drain(sub)].count("task.submitted") == 2499


async def test_a_reader_far_behind_stops_new_work_until_it_catches_up(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=1)
    # a small backlog limit for the test; 10,000 by default
    async with open_scheduler(tmp_path / "t.db", cfg, event_backlog_limit=20) as (s, _, sub):
        await s.submit_batch([TaskSpec(type="noop") for _ in range(50)])
        await settle(200)
        done = (await s.status()).counts["completed"]
        assert done < 50  # dispatch stopped: lifecycle events are kept, never dropped
        assert sub.backlog >= 20
        events = []
        for _ in range(100):  # the reader catches up, and the work goes on
            events += drain(sub)
            await settle()
        events += drain(sub)
        assert (await s.status()).counts["completed"] == 50
        assert [e.EVENT for e in events].count("task.completed") == 50


async def test_configure_replaces_a_setting_whole(tmp_path: Path) -> None:
    from taskmill_core import IoConfig

    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        cfg = await s.configure(io=IoConfig(disk_read_bps=5_000_000, net_bps=1_000_000))
        assert cfg.io.disk_read_bps == 5_000_000
        cfg = await s.configure(io=IoConfig(net_bps=2_000_000), group_limits={"net": 2})
        assert cfg.io.disk_read_bps is None and cfg.io.net_bps == 2_000_000
        cfg = await s.configure(group_limits={})
        assert cfg.group_limits == {} and cfg.io.net_bps == 2_000_000
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        assert s.config.io.disk_read_bps is None and s.config.io.net_bps == 2_000_000


# --- durability "full" -----------------------------------------------------------------------


async def test_full_durability_acknowledges_only_after_the_wal_is_fsynced(tmp_path: Path) -> None:
    """With durability "full" a submit returns, and its events go out, only once the WAL that
    holds it has been fsynced; the fsync runs in a worker thread, so the loop is not held."""
    import threading

    import anyio

    cfg = SchedulerConfig(durability="full")
    store = FaultyStore(tmp_path / "t.db", durability="full")
    async with open_scheduler(tmp_path / "t.db", cfg, store=store) as (s, _, sub):
        fsync_open = threading.Event()
        fsync_open.set()
        fsyncs: list[int] = []

        def gated_sync() -> None:
            fsyncs.append(store.commits)
            fsync_open.wait(10)

        store.before_sync = gated_sync
        await s.pause_all()  # durable before it returns, too
        assert fsyncs and fsyncs[-1] == store.commits
        drain(sub)
        fsync_open.clear()
        answers: list[SubmitResult] = []
        loop_turns = 0

        async def submit() -> None:
            answers.append(await s.submit(TaskSpec(type="noop")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(submit)
            seen = len(fsyncs)
            with anyio.fail_after(5):
                while len(fsyncs) == seen:  # noqa: ASYNC110 (a worker thread appends)
                    await anyio.sleep(0.001)
            for _ in range(20):
                await anyio.sleep(0.001)
                loop_turns += 1
            assert answers == [] and names(drain(sub)) == []  # nothing acknowledged yet
            fsync_open.set()
        assert loop_turns == 20  # the loop kept turning while the fsync was blocked
        assert len(answers) == 1 and answers[0].outcome == "inserted"
        assert names(drain(sub)) == ["task.submitted"]
        assert (await s.get(answers[0].id)).state == "pending"


async def test_a_large_batch_announces_every_task_before_any_of_them_starts(
    tmp_path: Path,
) -> None:
    """Per task, task.submitted comes before task.started, even for an urgent task at the end
    of a batch written over several loop turns (PROTOCOL.md: causal order per task)."""
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        order, run = recorder()
        s.register("rec", run)
        specs = [TaskSpec(type="rec") for _ in range(5 * BATCH_CHUNK)]
        specs.append(TaskSpec(type="rec", priority=0))
        results = await s.submit_batch(specs)
        await s.wait_idle()
        assert order[0] == results[-1].id  # the urgent one ran first
        seen: set[int] = set()
        for event in drain(sub):
            if event.EVENT == "task.submitted":
                seen.add(event.task.id)  # type: ignore[attr-defined]
            elif event.EVENT == "task.started":
                assert event.id in seen, f"task {event.id} started before it was announced"  # type: ignore[attr-defined]
        assert len(seen) == len(specs)


async def test_closing_during_an_fsync_still_answers_what_it_covers(tmp_path: Path) -> None:
    """Closing cancels the fsync loop; a submit waiting for the fsync that was running must
    still get its answer (not wait forever)."""
    import threading

    import anyio

    from taskmill_core import Scheduler
    from taskmill_core.clock import FakeClock

    store = FaultyStore(tmp_path / "t.db", durability="full")
    s = Scheduler(
        tmp_path / "t.db",
        SchedulerConfig(durability="full"),
        clock=FakeClock(),
        close_grace_ms=0,
        io_monitor=False,
        store=store,
    )
    fsync_open = threading.Event()
    fsyncing = threading.Event()
    answers: list[SubmitResult] = []

    async def submit() -> None:
        answers.append(await s.submit(TaskSpec(type="noop")))

    async def open_fsync_later() -> None:
        await anyio.sleep(0.05)
        fsync_open.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await s.open()
            await s.pause_all()

            def gated_sync() -> None:
                fsyncing.set()
                fsync_open.wait(10)

            store.before_sync = gated_sync
            tg.start_soon(submit)
            while not fsyncing.is_set():  # noqa: ASYNC110 (set by a worker thread)
                await anyio.sleep(0.001)
            tg.start_soon(open_fsync_later)
            await s.close()  # cancels the fsync loop while its fsync runs
    assert len(answers) == 1 and answers[0].outcome == "inserted"


@pytest.mark.parametrize("dispatching", [True, False], ids=["dispatching", "paused"])
async def test_the_wal_starts_over_while_writes_never_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dispatching: bool
) -> None:
    """A checkpoint that runs while writes go on cannot fold in the whole WAL, so under
    steady writes the WAL would never start over and would grow without bound. The
    scheduler holds writes for a short second checkpoint, and the WAL file shrinks back
    while the writes go on (also when the only writes are submits). Every task still
    runs, once."""
    import taskmill_core.scheduler.upkeep as upkeep_module
    import taskmill_core.store.connection as store_module

    monkeypatch.setattr(upkeep_module, "CHECKPOINT_EVERY_S", 0.05)
    monkeypatch.setattr(upkeep_module, "WAL_CATCH_UP_PAGES", 64)
    monkeypatch.setattr(store_module, "WAL_SIZE_LIMIT", 64 * 1024)
    wal = tmp_path / "t.db-wal"
    ran: list[int] = []

    async def record(ctx, payload):  # type: ignore[no-untyped-def]
        ran.append(ctx.id)

    sizes: list[int] = []
    async with Scheduler(tmp_path / "t.db", SchedulerConfig(), io_monitor=False) as s:
        s.register("record", record)
        if not dispatching:
            await s.pause_all()
        ids = []
        deadline = anyio.current_time() + 0.6
        while anyio.current_time() < deadline:
            ids.append((await s.submit(TaskSpec(type="record"))).id)
            if len(ids) % 20 == 0:
                sizes.append(wal.stat().st_size)
        await s.resume_all()
        await s.wait_idle()
    assert any(later < earlier for earlier, later in itertools.pairwise(sizes)), (
        f"the WAL only grew: {sizes[0]} .. {sizes[-1]} bytes"
    )
    assert sorted(ran) == ids


def _full_disk() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database or disk is full")


async def test_a_step_the_database_rejects_is_tried_again_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """Disk full during a dispatch step: the step is rolled back, the submits it carried
    fail with StorageError, and the step is tried again later (not at every wake-up).
    Once the disk has room, every run's end is written once and every task completes once."""
    from taskmill_core import StorageError
    from taskmill_core.scheduler import STORAGE_RETRY_MAX_MS

    cfg = SchedulerConfig(max_concurrency=2)
    store = FaultyStore(tmp_path / "t.db")
    async with open_scheduler(tmp_path / "t.db", cfg, store=store) as (s, clock, sub):
        gate = Gate()
        s.register("g", gate)
        a = await s.submit(TaskSpec(type="g"))
        b = await s.submit(TaskSpec(type="g"))
        await settle()
        store.complete_fault = _full_disk()  # writing a run's end fails from now on
        gate.release(a.id)
        await settle()  # the step that writes a's end fails
        assert (await s.get(a.id)).state == "running"
        many = await s.submit_many([TaskSpec(type="g") for _ in range(20)])  # queued for a step
        assert all(isinstance(r, StorageError) for r in many)
        gate.release(b.id)
        await settle()
        assert (await s.get(b.id)).state == "running"  # no retry before the delay
        store.complete_fault = None
        clock.advance(STORAGE_RETRY_MAX_MS)
        await settle()
        assert [(await s.get(i)).state for i in (a.id, b.id)] == ["completed", "completed"]
        await s.wait_idle()
        completed = [e.id for e in drain(sub) if e.EVENT == "task.completed"]
        assert sorted(completed) == [a.id, b.id]
        assert len((await s.list_tasks()).tasks) == 2  # the failed submits wrote nothing


async def test_closing_while_the_database_rejects_writes_does_not_hang(tmp_path: Path) -> None:
    """A run whose end cannot be written stays ``running`` in the file; closing does not
    wait for it, and the next open puts it back to ``pending``."""
    store = FaultyStore(tmp_path / "t.db")
    async with open_scheduler(tmp_path / "t.db", store=store) as (s, _clock, _sub):
        gate = Gate()
        s.register("g", gate)
        a = await s.submit(TaskSpec(type="g"))
        await settle()
        store.complete_fault = _full_disk()
        gate.release(a.id)
        await settle()
    # (Leaving the block closed the scheduler: it did not wait for a.)
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        assert s.recovered == 1
        assert (await s.get(a.id)).state == "pending"


async def test_an_internal_error_stops_the_scheduler_and_says_so(tmp_path: Path) -> None:
    """A bug in a dispatch step does not cancel the code that opened the scheduler: the
    scheduler stops taking work (submits raise ShuttingDown naming the error), wait_failed
    returns the error, and leaving ``async with`` raises it. The run it could not record is
    requeued on the next open."""

    path = tmp_path / "t.db"
    store = FaultyStore(path)
    with pytest.raises(RuntimeError, match="a planted bug"):
        async with open_scheduler(path, store=store) as (s, _clock, _sub):
            gate = Gate()
            s.register("g", gate)
            a = await s.submit(TaskSpec(type="g"))
            await settle()
            store.complete_fault = RuntimeError("a planted bug")
            gate.release(a.id)
            assert repr(await s.wait_failed()) == "RuntimeError('a planted bug')"
            assert s.failure is not None
            with pytest.raises(ShuttingDown, match="a planted bug"):
                await s.submit(TaskSpec(type="g"))
            with pytest.raises(ShuttingDown, match="a planted bug"):
                await s.wait_idle()
    async with open_scheduler(path) as (s, _clock, _sub):
        assert s.recovered == 1
        assert (await s.get(a.id)).state == "pending"
