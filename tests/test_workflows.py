"""Workflows (PROTOCOL.md, "Workflows"): a parent's finalize phase, what a failed child does to
its parent, dependencies that may fail, siblings, lookup by dedup key and the metrics — one
promise per test, on a real SQLite file and a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskmill_core import (
    Backoff,
    InvalidParams,
    InvalidState,
    IoBytes,
    IoConfig,
    PermanentError,
    RetryableError,
    SchedulerConfig,
    TaskContext,
    TaskNotFound,
    TaskSpec,
)
from taskmill_core.metrics import HoldCounter, Metrics
from taskmill_core.types import ChildCounts, TaskCancelled, TaskFailed, TaskStarted

from .helpers import Gate, drain, names, open_scheduler, settle

pytestmark = pytest.mark.anyio

CONSTANT = Backoff(kind="constant", initial_ms=1000, max_ms=1000)
MB = 1_000_000


def counts(**some: int) -> ChildCounts:
    """Child counts, zero but for ``some``."""
    zero = dict.fromkeys(("completed", "failed", "cancelled", "superseded", "expired"), 0)
    return ChildCounts(**{**zero, "dead_letter": 0, **some})


class Upload:
    """A parent executor: its run fans out ``payload["parts"]`` children of type ``part``;
    its finalize phase records what it was handed and returns a commit (or raises, as
    scripted in ``fail_finalize``)."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, str, int]] = []  # (id, phase, attempt)
        self.children: list[ChildCounts] = []
        self.fail_finalize: list[BaseException] = []

    async def __call__(self, ctx: TaskContext, payload: Any) -> Any:
        self.runs.append((ctx.id, ctx.phase, ctx.attempt))
        if ctx.phase == "run":
            for n in range((payload or {}).get("parts", 0)):
                await ctx.submit_child(TaskSpec(type="part", payload={"n": n}, max_retries=0))
            return {"phase": "run"}
        self.children.append(ctx.children)
        if self.fail_finalize:
            raise self.fail_finalize.pop(0)
        return {"committed": ctx.children.completed}


# --- finalize ------------------------------------------------------------------------------


async def test_finalize_runs_once_after_all_children_with_their_counts_and_its_result_wins(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        upload, parts = Upload(), Gate()
        s.register("upload", upload)
        s.register("part", parts)
        parent = await s.submit(TaskSpec(type="upload", payload={"parts": 3}, finalize=True))
        await settle()
        assert (await s.get(parent.id)).state == "waiting"
        kids = (await s.list_tasks(parent_id=parent.id)).tasks
        assert len(kids) == 3
        parts.release(kids[0].id, PermanentError("bad part"))
        parts.release(kids[1].id)
        await settle()
        assert (await s.get(parent.id)).state == "waiting"  # one child is still running
        assert [r[1] for r in upload.runs] == ["run"]
        parts.release(kids[2].id)
        await s.wait_idle()
        info = await s.get(parent.id)
        assert info.state == "completed"
        assert info.phase == "finalize"
        assert info.result == {"committed": 2}
        assert upload.runs == [(parent.id, "run", 0), (parent.id, "finalize", 0)]
        assert upload.children == [counts(completed=2, failed=1)]
        started = [e.id for e in drain(sub) if isinstance(e, TaskStarted)]
        assert started.count(parent.id) == 2  # task.started again for the finalize phase


async def test_finalize_runs_also_without_children(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        upload = Upload()
        s.register("upload", upload)
        parent = await s.submit(TaskSpec(type="upload", finalize=True))
        await s.wait_idle()
        assert [r[1] for r in upload.runs] == ["run", "finalize"]
        assert upload.children == [counts()]
        assert (await s.get(parent.id)).result == {"committed": 0}


async def test_finalize_starts_at_attempt_0_and_retries_like_a_run(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, sub):
        upload = Upload()
        upload.fail_finalize = [RetryableError("commit refused")]
        s.register("upload", upload)
        parent = await s.submit(
            TaskSpec(type="upload", finalize=True, max_retries=2, backoff=CONSTANT)
        )
        await settle()
        failed = [e for e in drain(sub) if isinstance(e, TaskFailed)]
        assert [(e.will_retry, e.attempt) for e in failed] == [(True, 0)]
        assert (await s.get(parent.id)).phase == "finalize"
        clock.advance(1000)
        await s.wait_idle()
        assert upload.runs == [
            (parent.id, "run", 0),
            (parent.id, "finalize", 0),
            (parent.id, "finalize", 1),
        ]
        assert (await s.get(parent.id)).state == "completed"


async def test_a_run_that_retried_still_starts_its_finalize_at_attempt_0(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        seen: list[tuple[str, int]] = []

        async def flaky(ctx: TaskContext, payload: Any) -> Any:
            seen.append((ctx.phase, ctx.attempt))
            if ctx.phase == "run" and ctx.attempt == 0:
                raise RetryableError("once")
            return ctx.phase

        s.register("flaky", flaky)
        t = await s.submit(TaskSpec(type="flaky", finalize=True, backoff=CONSTANT))
        await settle()
        clock.advance(1000)
        await s.wait_idle()
        assert seen == [("run", 0), ("run", 1), ("finalize", 0)]
        assert (await s.get(t.id)).result == "finalize"


async def test_cancelling_a_waiting_parent_runs_no_finalize(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        upload, parts = Upload(), Gate()
        s.register("upload", upload)
        s.register("part", parts)
        parent = await s.submit(TaskSpec(type="upload", payload={"parts": 2}, finalize=True))
        await settle()
        await s.cancel(parent.id)
        await s.wait_idle()
        assert (await s.get(parent.id)).state == "cancelled"
        assert [r[1] for r in upload.runs] == ["run"]


async def test_an_interrupted_finalize_resumes_as_finalize_after_reopening(
    tmp_path: Path,
) -> None:
    gate_open = Gate()
    seen: list[str] = []

    async def slow(ctx: TaskContext, payload: Any) -> Any:
        seen.append(ctx.phase)
        if ctx.phase == "finalize" and len(seen) == 2:
            await gate_open(ctx, payload)  # held until the scheduler closes
        return ctx.phase

    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        s.register("slow", slow)
        t = await s.submit(TaskSpec(type="slow", finalize=True))
        await settle()
        assert (await s.get(t.id)).state == "running"
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        assert (await s.get(t.id)).phase == "finalize"
        s.register("slow", slow)
        await s.wait_idle()
        assert seen == ["run", "finalize", "finalize"]
        assert (await s.get(t.id)).state == "completed"


# --- onChildFailure: failParent ------------------------------------------------------------


async def test_a_failed_child_cancels_its_siblings_and_fails_the_parent_after_its_run(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(max_concurrency=4)) as (
        s,
        _,
        sub,
    ):
        gate = Gate()
        s.register("g", gate)
        grand = await s.submit(TaskSpec(type="g"))
        parent = await s.submit(
            TaskSpec(type="g", parent_id=grand.id, on_child_failure="failParent")
        )
        await settle()
        kids = [
            (await s.submit(TaskSpec(type="g", parent_id=parent.id, max_retries=0))).id
            for _ in range(3)
        ]
        await s.pause(kids[2])  # an active child that is not running
        await settle()
        nephew = await s.submit(TaskSpec(type="g", parent_id=kids[1]))
        await settle()
        drain(sub)
        gate.release(kids[0], PermanentError("part 0 is broken"))
        await settle()
        states = {k: (await s.get(k)).state for k in (*kids, nephew.id)}
        assert states == {
            kids[0]: "failed",
            kids[1]: "cancelled",
            kids[2]: "cancelled",
            nephew.id: "cancelled",
        }
        cancelled = {e.id for e in drain(sub) if isinstance(e, TaskCancelled)}
        assert cancelled == {kids[1], kids[2], nephew.id}
        assert kids[1] in gate.exited  # its run was stopped
        with pytest.raises(InvalidState) as refused:
            await s.submit(TaskSpec(type="g", parent_id=parent.id))
        assert refused.value.data["path"] == "$.parentId"
        # The parent's own run is still going; it finishes it, then fails.
        assert (await s.get(parent.id)).state == "running"
        gate.release(parent.id)
        await settle()
        info = await s.get(parent.id)
        assert info.state == "failed"
        assert info.error is not None and info.error.kind == "childFailed"
        failed = [e for e in drain(sub) if isinstance(e, TaskFailed) and e.id == parent.id]
        assert [(e.error.kind, e.will_retry) for e in failed] == [("childFailed", False)]
        # ... and is a failed child of its own parent (which ignores child failures).
        gate.release(grand.id)
        await s.wait_idle()
        assert (await s.get(grand.id)).state == "completed"


async def test_with_finalize_a_failparent_parent_finalizes_then_fails(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        upload, parts = Upload(), Gate()
        s.register("upload", upload)
        s.register("part", parts)
        parent = await s.submit(
            TaskSpec(
                type="upload",
                payload={"parts": 3},
                finalize=True,
                on_child_failure="failParent",
            )
        )
        await settle()
        kids = [t.id for t in (await s.list_tasks(parent_id=parent.id)).tasks]
        parts.release(kids[-1])
        await settle()
        parts.release(kids[0], PermanentError("gone"))
        await s.wait_idle()
        assert upload.children == [counts(completed=1, failed=1, cancelled=1)]
        info = await s.get(parent.id)
        assert info.state == "failed"
        assert info.error is not None and info.error.kind == "childFailed"


async def test_a_parent_that_ignores_child_failures_completes(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        parent = await s.submit(TaskSpec(type="g"))
        await settle()
        a = await s.submit(TaskSpec(type="g", parent_id=parent.id, max_retries=0))
        b = await s.submit(TaskSpec(type="g", parent_id=parent.id))
        await settle()
        gate.release(a.id, PermanentError("no"))
        gate.release(parent.id)
        await settle()
        assert (await s.get(b.id)).state == "running"
        gate.release(b.id)
        await s.wait_idle()
        assert (await s.get(parent.id)).state == "completed"


# --- onDependencyFailure -------------------------------------------------------------------


async def test_dependency_failure_ignore_still_unblocks_and_fail_fails(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        optional = await s.submit(TaskSpec(type="g", max_retries=0))
        required = await s.submit(TaskSpec(type="g"))
        tolerant = await s.submit(
            TaskSpec(
                type="noop",
                depends_on=[optional.id, required.id],
                on_dependency_failure="ignore",
            )
        )
        strict = await s.submit(TaskSpec(type="noop", depends_on=[optional.id]))
        await settle()
        gate.release(optional.id, PermanentError("optional step failed"))
        await settle()
        assert (await s.get(strict.id)).state == "failed"
        assert (await s.get(tolerant.id)).state == "blocked"  # still waits for `required`
        gate.release(required.id)
        await s.wait_idle()
        assert (await s.get(tolerant.id)).state == "completed"
        strict_info = await s.get(strict.id)
        assert strict_info.error is not None and strict_info.error.kind == "dependency"


async def test_a_dependency_already_failed_refuses_fail_and_accepts_ignore(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        dep = await s.submit(TaskSpec(type="g", max_retries=0))
        await settle()
        gate.release(dep.id, PermanentError("no"))
        await s.wait_idle()
        with pytest.raises(InvalidParams) as refused:
            await s.submit(TaskSpec(type="noop", depends_on=[dep.id]))
        assert refused.value.path == "$.dependsOn[0]"
        ok = await s.submit(
            TaskSpec(type="noop", depends_on=[dep.id], on_dependency_failure="ignore")
        )
        assert ok.task is not None and ok.task.state == "pending"
        assert ok.task.on_dependency_failure == "ignore"
        await s.wait_idle()
        assert (await s.get(ok.id)).state == "completed"


# --- siblingOf -----------------------------------------------------------------------------


async def test_sibling_of_takes_that_tasks_parent(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        parent = await s.submit(TaskSpec(type="g"))
        child = await s.submit(TaskSpec(type="g", parent_id=parent.id))
        sib = await s.submit(TaskSpec(type="g", sibling_of=child.id))
        assert sib.task is not None and sib.task.parent_id == parent.id
        same = await s.submit(TaskSpec(type="g", sibling_of=child.id, parent_id=parent.id))
        assert (await s.get(same.id)).parent_id == parent.id
        kids = {t.id for t in (await s.list_tasks(parent_id=parent.id)).tasks}
        assert kids == {child.id, sib.id, same.id}


async def test_sibling_of_errors_name_the_field_and_store_nothing(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        gate = Gate()
        s.register("g", gate)
        root = await s.submit(TaskSpec(type="g"))
        other = await s.submit(TaskSpec(type="g"))
        child = await s.submit(TaskSpec(type="g", parent_id=root.id))
        done_parent = await s.submit(TaskSpec(type="noop"))
        await s.pause_all(type="late")
        orphan = await s.submit(TaskSpec(type="late", parent_id=done_parent.id))
        await s.cancel(done_parent.id)  # (also cancels `orphan`)
        before = sum((await s.status()).counts.values())
        with pytest.raises(TaskNotFound) as unknown:
            await s.submit(TaskSpec(type="g", sibling_of=999_999))
        assert unknown.value.data["path"] == "$.siblingOf"
        with pytest.raises(InvalidState) as rootless:
            await s.submit(TaskSpec(type="g", sibling_of=root.id))
        assert rootless.value.data["path"] == "$.siblingOf"
        with pytest.raises(InvalidParams) as conflict:
            await s.submit(TaskSpec(type="g", sibling_of=child.id, parent_id=other.id))
        assert conflict.value.path == "$.siblingOf"
        with pytest.raises(InvalidState):
            await s.submit(TaskSpec(type="g", sibling_of=orphan.id))
        with pytest.raises(InvalidState) as in_batch:
            await s.submit_batch([TaskSpec(type="g"), TaskSpec(type="g", sibling_of=root.id)])
        assert in_batch.value.data["index"] == 1
        assert in_batch.value.data["path"] == "$.tasks[1].siblingOf"
        assert sum((await s.status()).counts.values()) == before


# --- lookup and list filters ---------------------------------------------------------------


async def test_lookup_finds_the_active_task_else_the_latest_final_one(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        gate = Gate()
        s.register("g", gate)
        with pytest.raises(TaskNotFound):
            await s.lookup("g", "file-a")
        first = await s.submit(TaskSpec(type="g", dedup_key="file-a", max_retries=0))
        await settle()
        assert (await s.lookup("g", "file-a")).id == first.id
        gate.release(first.id, PermanentError("upload failed"))
        await settle()
        clock.advance(10)
        second = await s.submit(TaskSpec(type="g", dedup_key="file-a"))
        await settle()
        gate.release(second.id)
        await settle()
        found = await s.lookup("g", "file-a")
        assert (found.id, found.state) == (second.id, "completed")
        # Ties in finishedAt: the higher id.
        third = await s.submit(TaskSpec(type="g", dedup_key="file-a"))
        await settle()
        await s.cancel(third.id)
        await settle()
        assert (await s.get(third.id)).finished_at == (await s.get(second.id)).finished_at
        assert (await s.lookup("g", "file-a")).id == third.id
        with pytest.raises(TaskNotFound):
            await s.lookup("other", "file-a")  # a key is scoped by type


async def test_list_filters_by_dedup_key_and_parent(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        await s.pause_all()
        p = await s.submit(TaskSpec(type="noop"))
        c1 = await s.submit(TaskSpec(type="noop", parent_id=p.id, dedup_key="k"))
        await s.submit(TaskSpec(type="noop", dedup_key="other"))
        page = await s.list_tasks(dedup_key="k")
        assert [t.id for t in page.tasks] == [c1.id]
        assert [t.id for t in (await s.list_tasks(parent_id=p.id)).tasks] == [c1.id]
        assert (await s.list_tasks(parent_id=c1.id)).tasks == []


# --- metrics --------------------------------------------------------------------------------


async def test_metrics_count_a_known_sequence(tmp_path: Path) -> None:
    config = SchedulerConfig(max_concurrency=1, preempt_priority=0, min_run_ms=0)
    async with open_scheduler(tmp_path / "t.db", config) as (s, clock, _sub):
        gate = Gate()
        s.register("g", gate)

        async def flaky(ctx: TaskContext, payload: Any) -> Any:
            if ctx.attempt == 0 or payload == "always":
                raise RetryableError("not now")
            return None

        s.register("f", flaky)
        assert (await s.metrics()).since_at == clock.now_ms()
        a = await s.submit(TaskSpec(type="g", dedup_key="a"))
        await settle()
        await s.submit(TaskSpec(type="g", dedup_key="a"))  # requeued
        await s.submit(TaskSpec(type="g", dedup_key="b", priority=200))
        await s.submit(TaskSpec(type="g", dedup_key="b", priority=200))  # duplicate
        await s.submit(TaskSpec(type="g", dedup_key="b", priority=100))  # upgraded
        b2 = await s.submit(TaskSpec(type="g", dedup_key="b", on_duplicate="supersede"))
        await s.submit(TaskSpec(type="noop", ttl_ms=5, delay_ms=100))
        clock.advance(10)  # ... expired
        await settle()
        doomed = await s.submit(TaskSpec(type="g", priority=250))
        await s.cancel(doomed.id)
        m = await s.metrics()
        assert (m.gauges.running, m.gauges.pending) == (1, 1)  # a; b2
        urgent = await s.submit(TaskSpec(type="g", priority=0))
        await settle()  # preempts a
        gate.release(urgent.id, PermanentError("no"))
        await settle()
        gate.release(a.id)  # its resumed run, then the requeued one
        await settle()
        gate.release(a.id)
        await settle()
        gate.release(b2.id)
        await settle()
        await s.submit(TaskSpec(type="f", backoff=CONSTANT))
        await s.submit(TaskSpec(type="f", payload="always", max_retries=0))
        await settle()
        clock.advance(1000)
        await s.wait_idle()
        m = await s.metrics()
        c = m.counters
        assert (c.submitted, c.deduplicated) == (8, 3)
        assert (c.cancelled, c.superseded, c.expired, c.preempted) == (1, 1, 1, 1)
        assert (c.failed, c.retried, c.dead_lettered) == (1, 1, 1)
        assert c.completed == 3  # a, b2 and the flaky task
        assert c.started == 8  # a x3 (preempted, resumed, requeued), urgent, b2, flaky x2, f
        assert (m.gauges.running, m.gauges.pending) == (0, 0)


def test_holds_count_once_per_task_per_hold() -> None:
    metrics = Metrics(since_at=0)
    holds = HoldCounter(metrics)
    holds.step([(1, "ioDeferred"), (2, "groupLimit")])
    holds.step([(1, "ioDeferred"), (3, "ioDeferred")])
    holds.step([(1, "rateLimited")])
    holds.step([])
    holds.step([(1, "rateLimited"), (2, "throttled")])
    assert {k: v for k, v in metrics.counters.items() if v} == {
        "ioDeferred": 2,
        "rateLimited": 2,
        "throttled": 1,
    }


def test_metrics_refuse_an_unknown_counter() -> None:
    with pytest.raises(KeyError):
        Metrics(since_at=0).count("nonsense")


async def test_every_finalize_event_is_named(tmp_path: Path) -> None:
    """The finalize phase is announced: the parent's update to pending, its second start."""
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        s.register("upload", Upload())
        parent = await s.submit(TaskSpec(type="upload", finalize=True))
        await s.wait_idle()
        assert names(drain(sub)) == [
            "task.submitted",
            "task.started",
            "task.updated",
            "task.started",
            "task.completed",
        ]
        assert (await s.get(parent.id)).state == "completed"


async def test_io_deferred_counts_each_task_once_per_hold(tmp_path: Path) -> None:
    """A task the IO budget holds back over many dispatch steps is one ``ioDeferred``."""
    io = IoConfig(disk_write_bps=10 * MB, auto=False)
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(io=io)) as (s, clock, _sub):
        gate = Gate()
        s.register("io", gate)
        first = await s.submit(TaskSpec(type="io", io_cost=IoBytes(disk_write=8 * MB)))
        await settle()
        held = await s.submit(TaskSpec(type="io", io_cost=IoBytes(disk_write=8 * MB)))
        await settle()
        for _ in range(3):  # more dispatch steps while it is still held back
            await s.submit(TaskSpec(type="noop"))
            await settle()
        assert (await s.metrics()).counters.io_deferred == 1
        clock.advance(1000)  # the bucket refills: it starts
        await settle()
        assert held.id in gate.started
        gate.release(first.id)
        gate.release(held.id)
        await s.wait_idle()
        assert (await s.metrics()).counters.io_deferred == 1
