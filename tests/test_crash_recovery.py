"""A real crash: a child process is SIGKILLed mid-work, then the database is reopened.

The child opens a scheduler on a real SQLite file, finishes a few tasks, then starts four
long-running tasks that checkpoint their progress (one of them has already used two retries)
while more tasks wait behind them, some holding dedup keys; a duplicate of a running task is
requeued. Once every long task has checkpointed, the test kills the child with SIGKILL and
reopens the file in-process. Executor side effects of the child go to an append-only file, those
of this process to a list, so "each task finished exactly once" is checked across both.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskmill_core import (
    DuplicateRejected,
    RetryableError,
    Scheduler,
    SchedulerConfig,
    TaskContext,
    TaskSpec,
)
from taskmill_core.events import Subscription
from taskmill_core.types import Event, TaskCompleted, TaskFailed, TaskStarted

from .helpers import sigkill_when_ready

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")


# The child: argv = db path, effects log, readiness marker.
CHILD = r"""
from __future__ import annotations

import json
import os
import sys

import anyio

from taskmill_core import RetryableError, Scheduler, SchedulerConfig, TaskSpec

DB, LOG, MARKER = sys.argv[1:4]
PID = os.getpid()
LONG = 4  # tasks that must be running, checkpointed, when the child signals readiness
ready: set[int] = set()
all_ready = anyio.Event()


def record(**fields):
    # One write() per line, flushed at once: it survives the SIGKILL.
    with open(LOG, "a") as f:
        f.write(json.dumps({"pid": PID, **fields}) + "\n")


async def work(ctx, payload):
    record(ev="start", id=ctx.id, attempt=ctx.attempt, resume=ctx.resume_state)
    if ctx.attempt < payload.get("failAttempts", 0):
        record(ev="fail", id=ctx.id, attempt=ctx.attempt)
        raise RetryableError("not yet", retry_after=0)
    if payload.get("hang"):
        state = None
        for step in range(1, 4):
            state = {"step": step, "n": payload["n"], "pid": PID}
            ctx.checkpoint(state)
        record(ev="ready", id=ctx.id, attempt=ctx.attempt, checkpoint=state)
        ready.add(ctx.id)
        if len(ready) == LONG:
            all_ready.set()
        await anyio.sleep_forever()
    record(ev="done", id=ctx.id, attempt=ctx.attempt)
    return {"by": PID}


def note(specs, results):
    for spec, r in zip(specs, results, strict=True):
        record(
            ev="submitted", id=r.id, outcome=r.outcome, n=spec.payload["n"],
            priority=spec.priority, dedupKey=spec.dedup_key, group=spec.group,
            tags=spec.tags, maxRetries=spec.max_retries,
        )


async def main():
    config = SchedulerConfig(max_concurrency=4, preempt_priority=0)
    async with Scheduler(DB, config, load_entry_points=False) as sched:
        sched.register("work", work)
        # Phase 1: tasks that complete before the crash.
        quick = [
            TaskSpec(type="work", payload={"n": i}, priority=100 + i,
                     dedup_key=f"quick-{i}" if i % 2 else None)
            for i in range(3)
        ]
        note(quick, await sched.submit_batch(quick))
        await sched.wait_idle()
        # Phase 2: four long tasks take every slot, four more wait behind them.
        batch = [
            TaskSpec(type="work", payload={"n": 10, "hang": True}, priority=70,
                     dedup_key="run-a", group="g"),
            TaskSpec(type="work", payload={"n": 11, "hang": True}, priority=80,
                     tags={"k": "v"}),
            TaskSpec(type="work", payload={"n": 12, "hang": True}, priority=90,
                     dedup_key="run-requeue"),
            TaskSpec(type="work", payload={"n": 13, "hang": True, "failAttempts": 2},
                     priority=100, dedup_key="run-retry", max_retries=5),
            TaskSpec(type="work", payload={"n": 20}, priority=150, dedup_key="pend-a"),
            TaskSpec(type="work", payload={"n": 21}, priority=160, group="g"),
            TaskSpec(type="work", payload={"n": 22}, priority=170, dedup_key="pend-b",
                     max_retries=0),
            TaskSpec(type="work", payload={"n": 23}, priority=255, tags={"x": "y"}),
        ]
        note(batch, await sched.submit_batch(batch))
        with anyio.fail_after(20):
            await all_ready.wait()
        # Duplicates: of a pending task (nothing changes), of a running one (requeued).
        dups = [
            TaskSpec(type="work", payload={"n": 20}, priority=150, dedup_key="pend-a"),
            TaskSpec(type="work", payload={"n": 12, "hang": True}, priority=90,
                     dedup_key="run-requeue"),
        ]
        note(dups, [await sched.submit(s) for s in dups])
        record(ev="crashpoint")
        open(MARKER, "w").close()
        await anyio.sleep_forever()


anyio.run(main)
"""


@dataclass
class Crashed:
    db: Path
    records: list[dict[str, Any]]  # the child's effects log
    child_pid: int
    snapshot: dict[int, dict[str, Any]]  # rows as the crash left them on disk


def _snapshot(db: Path, into: Path) -> dict[int, dict[str, Any]]:
    """Read the crashed database from a copy, so the original is reopened untouched."""
    into.mkdir()
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{db}{suffix}")
        if src.exists():
            shutil.copy(src, into / (db.name + suffix))
    with closing(sqlite3.connect(into / db.name)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT id, state, priority, dedup_key, grp, attempt, checkpoint FROM tasks"
        ).fetchall()
    return {
        int(r["id"]): {
            "state": r["state"],
            "priority": r["priority"],
            "dedup_key": r["dedup_key"],
            "group": r["grp"],
            "attempt": r["attempt"],
            "checkpoint": json.loads(r["checkpoint"]) if r["checkpoint"] is not None else None,
        }
        for r in rows
    }


@pytest.fixture
def crashed(tmp_path: Path) -> Crashed:
    """Run the child until its long tasks are mid-work, then SIGKILL it."""
    db = tmp_path / "tasks.db"
    log = tmp_path / "effects.jsonl"
    marker = tmp_path / "ready.marker"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    pid = sigkill_when_ready(
        [str(script), str(db), str(log), str(marker)], marker, tmp_path / "child.out"
    )
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["ev"] == "crashpoint"  # nothing ran between readiness and the kill
    return Crashed(db, records, pid, _snapshot(db, tmp_path / "snapshot"))


def _drain(sub: Subscription) -> list[Event]:
    out: list[Event] = []
    while (ev := sub.get_nowait()) is not None:
        out.append(ev)
    return out


@pytest.mark.anyio
async def test_sigkill_mid_work_loses_nothing_and_finishes_everything_once(
    crashed: Crashed,
) -> None:
    recs = crashed.records
    assert {r["pid"] for r in recs} == {crashed.child_pid}
    submitted = [r for r in recs if r["ev"] == "submitted"]
    by_n = {r["n"]: r for r in submitted if r["outcome"] == "inserted"}
    assert len(by_n) == 11
    ids = {r["id"] for r in by_n.values()}
    quick_ids = {by_n[n]["id"] for n in (0, 1, 2)}
    long_ids = {by_n[n]["id"] for n in (10, 11, 12, 13)}
    pending_ids = {by_n[n]["id"] for n in (20, 21, 22, 23)}
    requeued_id = by_n[12]["id"]
    retried_id = by_n[13]["id"]
    # The duplicates the child submitted resolved to the existing tasks.
    dup_outcomes = {r["id"]: r["outcome"] for r in submitted if r["outcome"] != "inserted"}
    assert dup_outcomes == {by_n[20]["id"]: "duplicate", requeued_id: "requeued"}

    child_done = Counter(r["id"] for r in recs if r["ev"] == "done")
    assert child_done == Counter(quick_ids)
    ready = {r["id"]: r for r in recs if r["ev"] == "ready"}
    assert set(ready) == long_ids
    assert [r["attempt"] for r in recs if r["ev"] == "fail"] == [0, 1]
    assert ready[retried_id]["attempt"] == 2

    # What the crash left on disk: the long tasks running with their last checkpoint.
    snap = crashed.snapshot
    assert set(snap) == ids
    assert {i for i, row in snap.items() if row["state"] == "running"} == long_ids
    assert {i for i, row in snap.items() if row["state"] == "completed"} == quick_ids
    assert {i for i, row in snap.items() if row["state"] == "pending"} == pending_ids
    for i in long_ids:
        assert snap[i]["checkpoint"] == ready[i]["checkpoint"]

    effects: list[tuple[str, int, int, Any]] = []

    async def work(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        effects.append(("start", ctx.id, ctx.attempt, ctx.resume_state))
        if ctx.attempt < payload.get("failAttempts", 0):
            raise RetryableError("would consume a retry", retry_after=0)
        effects.append(("done", ctx.id, ctx.attempt, None))
        return {"by": os.getpid()}

    sched = Scheduler(crashed.db, SchedulerConfig(max_concurrency=4), load_entry_points=False)
    sub = sched.subscribe()
    await sched.open()
    try:
        assert sched.recovered == len(long_ids) == 4
        # No executor for "work" yet: everything stays put while we look.
        tasks = {t.id: t for t in (await sched.list_tasks(limit=1000)).tasks}
        assert set(tasks) == ids  # nothing lost
        for n, sub_rec in by_n.items():
            t = tasks[sub_rec["id"]]
            assert t.priority == sub_rec["priority"], n
            assert t.dedup_key == sub_rec["dedupKey"], n
            assert t.group == sub_rec["group"], n
            assert t.tags == sub_rec["tags"], n
            assert t.max_retries == sub_rec["maxRetries"], n
            assert t.payload["n"] == n
            expected_state = "completed" if t.id in quick_ids else "pending"
            assert t.state == expected_state, n
            assert t.attempt == snap[t.id]["attempt"], n  # the crash consumed no retry
        assert tasks[retried_id].attempt == 2
        # Every dedup key of an active task is still held by the same id.
        for n in (10, 12, 13, 20, 22):
            rec = by_n[n]
            with pytest.raises(DuplicateRejected) as info:
                await sched.submit(
                    TaskSpec(
                        type="work",
                        payload={"n": n},
                        dedup_key=rec["dedupKey"],
                        on_duplicate="reject",
                    )
                )
            assert info.value.existing_id == rec["id"]

        sched.register("work", work)
        with anyio.fail_after(10):
            await sched.wait_idle()

        final = {t.id: t for t in (await sched.list_tasks(limit=1000)).tasks}
        assert set(final) == ids
        assert {t.state for t in final.values()} == {"completed"}
        assert final[retried_id].attempt == 2
        status = await sched.status()
        assert status.counts["completed"] == len(ids)
        assert sum(status.counts.values()) == len(ids)
    finally:
        await sched.close()

    events = _drain(sub)
    starts = [e for e in effects if e[0] == "start"]
    done = Counter(e[1] for e in effects if e[0] == "done")
    # Finished work is never redone; everything else finishes once, the requeued task twice
    # (its requeue was recorded before the crash and survives it).
    assert not quick_ids & {e[1] for e in starts}
    assert done == Counter({i: 2 if i == requeued_id else 1 for i in long_ids | pending_ids})
    first_start: dict[int, tuple[int, Any]] = {}
    for _, tid, attempt, resume in starts:
        first_start.setdefault(tid, (attempt, resume))
    for tid in long_ids:
        # The checkpoint comes back, and the interrupted run is not counted as an attempt.
        assert first_start[tid] == (snap[tid]["attempt"], ready[tid]["checkpoint"]), tid
    for tid in pending_ids:
        assert first_start[tid] == (0, None), tid
    # The requeued run starts afresh (a new run, not a resumed one).
    assert [s[3] for s in starts if s[1] == requeued_id] == [ready[requeued_id]["checkpoint"], None]

    completed = Counter(e.id for e in events if isinstance(e, TaskCompleted))
    assert completed == Counter(long_ids | pending_ids)  # exactly once each
    assert not [e for e in events if isinstance(e, TaskFailed)]
    started = Counter(e.id for e in events if isinstance(e, TaskStarted))
    assert started == Counter({i: 2 if i == requeued_id else 1 for i in long_ids | pending_ids})
    # Child and parent together: every task's work completed exactly once (requeue: twice).
    total_done = child_done + done
    assert total_done == Counter(
        {i: 2 if i == requeued_id else 1 for i in quick_ids | long_ids | pending_ids}
    )
