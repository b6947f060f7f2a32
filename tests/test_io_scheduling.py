"""IO-aware dispatch, deterministic: a fake clock, a scripted sampler, no psutil, no sleeping.

The governor's own rules are tested in test_iogovernor.py; here we check that the scheduler
asks it at the right moments: admission in the tick, retry by timer, release on every exit,
forget when a deferred task leaves, io.pressure events, status().io, learned per-type cost.

Budgets are 10 MB/s of disk writes with the default governor settings: a 10 MB bucket that
starts full and refills at 10 MB/s (minus other programs' IO); at priority 128 a task needs
about its own size in the bucket, urgent tasks may dip into debt, background ones must leave
a reserve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from taskmill_core import IoBytes, IoConfig, SchedulerConfig, TaskContext, TaskSpec
from taskmill_core.iomonitor import CounterSample
from taskmill_core.types import IoPressure

from .helpers import Gate, drain, open_scheduler, settle

pytestmark = pytest.mark.anyio

MB = 1_000_000
DISK10 = IoConfig(disk_write_bps=10 * MB, auto=False)


def config(io: IoConfig = DISK10, max_concurrency: int = 8) -> SchedulerConfig:
    return SchedulerConfig(max_concurrency=max_concurrency, io=io)


def writes(nbytes: int, priority: int = 128, task_type: str = "io") -> TaskSpec:
    return TaskSpec(type=task_type, priority=priority, io_cost=IoBytes(disk_write=nbytes))


def pressure(events: list[Any]) -> list[tuple[bool, int]]:
    return [(e.throttling, e.deferred) for e in events if isinstance(e, IoPressure)]


class ScriptedSampler:
    """Cumulative counters that grow by ``step`` bytes of disk writes per sample."""

    blocking = False  # cheap: sampled on the loop, so the fake clock alone drives it

    def __init__(self, step: int) -> None:
        self.step = step
        self.calls = 0

    def sample(self) -> CounterSample:
        written = self.step * self.calls
        self.calls += 1
        return CounterSample.of({"sda": (0, written)})


async def test_saturated_disk_defers_io_tasks_but_not_others(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", config()) as (sched, clock, sub):
        gate = Gate()
        sched.register("io", gate)
        a = (await sched.submit(writes(8 * MB))).id
        await settle()
        b = (await sched.submit(writes(8 * MB))).id
        c = (await sched.submit(TaskSpec(type="io"))).id  # declares no IO, none learned
        await settle()
        assert gate.started == [a, c]
        st = (await sched.status()).io
        assert st.throttling and st.deferred == 1 and st.capacity == {"diskWrite": 10 * MB}
        assert (await sched.get(b)).state == "pending"
        assert pressure(drain(sub)) == [(True, 1)]

        # The bucket refills at 10 MB/s: b fits after about 600 ms, and starts by timer.
        clock.advance(500)
        await settle()
        assert b not in gate.started
        clock.advance(200)
        await settle()
        assert gate.started == [a, c, b]
        st = (await sched.status()).io
        assert not st.throttling and st.deferred == 0
        assert pressure(drain(sub)) == [(False, 0)]
        for task_id in (a, b, c):
            gate.release(task_id)
        await sched.wait_idle()


async def test_more_urgent_io_is_admitted_first(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", config()) as (sched, clock, _):
        gate = Gate()
        sched.register("io", gate)
        a = (await sched.submit(writes(10 * MB))).id  # empties the bucket
        await settle()
        await sched.pause_all()
        low = (await sched.submit(writes(4 * MB, priority=200))).id
        high = (await sched.submit(writes(4 * MB, priority=100))).id
        await sched.resume_all()
        await settle()
        assert gate.started == [a]
        assert (await sched.status()).io.deferred == 2
        clock.advance(400)  # enough for the urgent one (it may leave less in the bucket)
        await settle()
        assert gate.started == [a, high]
        clock.advance(400)  # the background one must leave a reserve: still waiting
        await settle()
        assert gate.started == [a, high]
        clock.advance(600)
        await settle()
        assert gate.started == [a, high, low]
        for task_id in (a, high, low):
            gate.release(task_id)
        await sched.wait_idle()


async def test_urgent_io_dips_into_debt_background_keeps_a_reserve(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", config()) as (sched, _, _sub):
        gate = Gate()
        sched.register("io", gate)
        a = (await sched.submit(writes(9 * MB))).id  # 1 MB left
        await settle()
        await sched.pause_all()
        bg = (await sched.submit(writes(5 * MB, priority=200))).id
        urgent = (await sched.submit(writes(5 * MB, priority=10))).id
        await sched.resume_all()
        await settle()
        assert gate.started == [a, urgent]
        assert (await sched.get(bg)).state == "pending"
        for task_id in (a, urgent):
            gate.release(task_id)
        await settle()
        await sched.cancel(bg)


async def test_huge_task_runs_alone_and_never_starves(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", config()) as (sched, _, _sub):
        gate = Gate()
        sched.register("io", gate)
        a = (await sched.submit(writes(8 * MB))).id
        await settle()
        huge = (await sched.submit(writes(10_000 * MB))).id  # 1,000 s of budget
        await settle()
        assert gate.started == [a]  # something IO-heavy runs: it waits
        gate.release(a)
        await settle()
        assert gate.started == [a, huge]  # alone now: admitted at once, not in 1,000 s
        small = (await sched.submit(writes(1 * MB))).id
        await settle()
        assert small not in gate.started  # the bucket is in debt: the rest pays it back
        no_io = (await sched.submit(TaskSpec(type="io"))).id
        await settle()
        assert no_io in gate.started  # needs nothing saturated: runs without delay
        for task_id in (huge, no_io):
            gate.release(task_id)
        await settle()
        await sched.cancel(small)


async def test_tasks_without_io_are_not_stuck_behind_a_queue_of_deferred_io(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db", config(max_concurrency=2)) as (sched, _, _s):
        gate = Gate()
        sched.register("io", gate)
        sched.register("cpu", gate)
        await sched.pause_all()
        ios = [r.id for r in await sched.submit_batch([writes(8 * MB, 100)] * 40)]
        cpu = (await sched.submit(TaskSpec(type="cpu", priority=200))).id
        await sched.resume_all()
        await settle()
        assert gate.started == [ios[0], cpu]
        assert (await sched.status()).io.deferred >= 1
        await sched.cancel_many(type="io")
        await settle()
        st = (await sched.status()).io
        assert st.deferred == 0 and not st.throttling


async def test_cancelled_or_expired_deferred_task_is_forgotten(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", config()) as (sched, clock, sub):
        gate = Gate()
        sched.register("io", gate)
        a = (await sched.submit(writes(8 * MB))).id
        b = (await sched.submit(writes(8 * MB))).id
        spec = writes(8 * MB)
        spec.ttl_ms = 100
        c = (await sched.submit(spec)).id
        await settle()
        assert gate.started == [a]
        assert (await sched.status()).io.deferred == 2
        await sched.cancel(b)
        assert (await sched.status()).io.deferred == 1
        clock.advance(100)  # c expires before the bucket has refilled
        await settle()
        assert (await sched.get(c)).state == "expired"
        st = (await sched.status()).io
        assert st.deferred == 0 and not st.throttling
        assert pressure(drain(sub))[-1] == (False, 0)
        gate.release(a)
        await sched.wait_idle()


async def test_every_run_end_releases_its_io(tmp_path: Path) -> None:
    """Preempted, failed, cancelled and paused runs give their admission back."""
    async with open_scheduler(tmp_path / "t.db", config()) as (sched, clock, _):
        gate = Gate()
        sched.register("io", gate)
        gov = sched.io_governor
        ids = [(await sched.submit(writes(1 * MB))).id for _ in range(4)]
        await settle()
        assert gate.started == ids
        assert gov.statistics().running == 4
        gate.release(ids[0], RuntimeError("boom"))
        await sched.cancel(ids[1])
        await sched.pause(ids[2])
        gate.release(ids[3])
        await settle()
        assert gov.statistics().running == 0
        clock.advance(10_000)  # the failed one retries and is admitted again
        await settle()
        assert gov.statistics().running == 1
        await sched.cancel(ids[0])
        await settle()
        assert gov.statistics().running == 0


async def test_monitor_feeds_the_governor_and_publishes_pressure(tmp_path: Path) -> None:
    sampler = ScriptedSampler(step=5 * MB)  # other programs write 5 MB/s
    async with open_scheduler(tmp_path / "t.db", config(), io_sampler=sampler, io_monitor=True) as (
        sched,
        clock,
        sub,
    ):
        await settle()
        assert sampler.calls == 1  # the baseline, taken at open
        clock.advance(999)
        await settle()
        assert sampler.calls == 1  # about once a second, on the injected clock
        clock.advance(1)
        await settle()
        assert sampler.calls == 2
        st = (await sched.status()).io
        assert st.disk_write_bps == pytest.approx(5 * MB)
        assert st.utilization["diskWrite"] == pytest.approx(0.5)
        disk = {r.resource: r for r in sched.io_governor.statistics().resources}["diskWrite"]
        assert disk.refill_bps < 10 * MB  # others' IO leaves us less than the budget

        gate = Gate()
        sched.register("io", gate)
        a = (await sched.submit(writes(8 * MB))).id
        b = (await sched.submit(writes(1000 * MB))).id  # waits until a has finished
        await settle()
        assert gate.started == [a]
        assert pressure(drain(sub)) == [(True, 1)]
        clock.advance(1000)  # the next sample: still throttling, reported once a second
        await settle()
        assert sampler.calls == 3
        assert [t for t, _ in pressure(drain(sub))] == [True]
        await sched.cancel(b)
        gate.release(a)
        await settle()
        assert pressure(drain(sub)) == [(False, 0)]


async def test_monitor_does_not_wake_an_idle_dispatcher(tmp_path: Path) -> None:
    sampler = ScriptedSampler(step=0)
    async with open_scheduler(tmp_path / "t.db", config(), io_sampler=sampler, io_monitor=True) as (
        sched,
        clock,
        _,
    ):
        await settle()
        ticks = sched.statistics()["ticks"]
        for _ in range(5):
            clock.advance(1000)
            await settle()
        assert sampler.calls == 6
        assert sched.statistics()["ticks"] == ticks


async def test_broken_sampler_does_not_take_the_scheduler_down(tmp_path: Path) -> None:
    class Broken:
        blocking = False

        def sample(self) -> CounterSample:
            raise RuntimeError("no counters here")

    async with open_scheduler(
        tmp_path / "t.db", config(), io_sampler=Broken(), io_monitor=True
    ) as (sched, _, _sub):
        order: list[int] = []

        async def run(ctx: TaskContext, payload: Any) -> None:
            order.append(ctx.id)

        sched.register("x", run)
        task_id = (await sched.submit(TaskSpec(type="x"))).id
        await sched.wait_idle()
        assert order == [task_id]


async def test_record_io_is_kept_and_teaches_the_type_cost(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    released: dict[int, anyio.Event] = {}

    async def writer(ctx: TaskContext, payload: Any) -> None:
        ctx.record_io(disk_write=6 * MB, net_rx=1000)
        await released.setdefault(ctx.id, anyio.Event()).wait()

    async with open_scheduler(db, config()) as (sched, clock, _):
        sched.register("w", writer)
        first = (await sched.submit(TaskSpec(type="w"))).id  # no cost known: runs at once
        await settle()
        released.setdefault(first, anyio.Event()).set()
        await sched.wait_idle()
        info = await sched.get(first)
        assert info.io_actual == IoBytes(disk_write=6 * MB, net_rx=1000)
        assert sched.io_governor.cost_model.learned("w") == info.io_actual
        assert (await sched.history_stats("w")).by_type["w"].avg_io.disk_write == 6 * MB

    # A new process learns the type's cost from history and charges it up front.
    async with open_scheduler(db, config()) as (sched, clock, _):
        sched.register("w", writer)
        second = (await sched.submit(TaskSpec(type="w"))).id
        third = (await sched.submit(TaskSpec(type="w"))).id
        await settle()
        assert (await sched.get(second)).state == "running"
        assert (await sched.get(third)).state == "pending"  # 6 + 6 MB > the 10 MB bucket
        assert (await sched.status()).io.deferred == 1
        released.setdefault(second, anyio.Event()).set()
        await settle()
        clock.advance(2000)
        await settle()
        assert (await sched.get(third)).state == "running"
        released.setdefault(third, anyio.Event()).set()
        await sched.wait_idle()


async def test_record_io_is_attributed_to_our_own_tasks(tmp_path: Path) -> None:
    """Bytes a task reports are ours: a sample showing them is not other programs' IO."""
    sampler = ScriptedSampler(step=0)
    async with open_scheduler(tmp_path / "t.db", config(), io_sampler=sampler, io_monitor=True) as (
        sched,
        clock,
        _,
    ):
        done = anyio.Event()

        async def writer(ctx: TaskContext, payload: Any) -> None:
            ctx.record_io(disk_write=5 * MB)
            await done.wait()

        sched.register("w", writer)
        await sched.submit(TaskSpec(type="w"))
        await settle()
        sampler.step = 5 * MB  # the counters show exactly what the task reported
        clock.advance(1000)
        await settle()
        disk = {r.resource: r for r in sched.io_governor.statistics().resources}["diskWrite"]
        assert disk.others_bps == 0.0 and disk.refill_bps == 10 * MB
        done.set()
        await sched.wait_idle()


async def test_consume_io_paces_a_long_task(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", config()) as (sched, clock, _):
        finished: list[int] = []
        errors: list[str] = []

        async def copy(ctx: TaskContext, payload: Any) -> None:
            try:
                await ctx.consume_io("disk", 1)  # type: ignore[arg-type]
            except ValueError as exc:
                errors.append(str(exc))
            for _ in range(30):
                await ctx.consume_io("diskWrite", 1 * MB)
            finished.append(clock.now_ms())

        sched.register("copy", copy, paced=True)
        start = clock.now_ms()
        task_id = (await sched.submit(writes(30 * MB, task_type="copy"))).id
        await settle()
        assert (await sched.get(task_id)).state == "running"  # paced: not held back as huge
        while not finished:
            clock.advance(100)
            await settle()
        # 10 MB from the full bucket, the other 20 MB at 10 MB/s.
        assert 1900 <= finished[0] - start <= 2300
        await sched.wait_idle()
        assert (await sched.get(task_id)).io_actual == IoBytes(disk_write=30 * MB)
        assert len(errors) == 1 and "unknown IO resource" in errors[0]


async def test_configure_io_applies_at_once_and_unconstrained_admits_all(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(max_concurrency=8)) as (
        sched,
        _,
        _sub,
    ):
        gate = Gate()
        sched.register("io", gate)
        ids = [(await sched.submit(writes(100 * MB))).id for _ in range(3)]
        await settle()
        assert gate.started == ids  # auto, nothing learned yet: not limited
        st = (await sched.status()).io
        assert st.capacity == {} and not st.throttling
        for task_id in ids:
            gate.release(task_id)
        await sched.wait_idle()

        new = await sched.configure(io=IoConfig(disk_write_bps=5 * MB, auto=False))
        assert new.io.disk_write_bps == 5 * MB
        assert (await sched.status()).io.capacity == {"diskWrite": 5 * MB}
        a = (await sched.submit(writes(4 * MB))).id
        b = (await sched.submit(writes(4 * MB))).id
        await settle()
        assert a in gate.started and b not in gate.started
        await sched.cancel(b)
        gate.release(a)
        await sched.wait_idle()


async def test_desktop_default_bucket_bounds_a_one_second_burst(tmp_path: Path) -> None:
    """Tokens saved while idle are at most a quarter second of budget: after a pause, one
    second moves at most 1.25 x the budget (a 1-s bucket would allow 2x)."""
    from taskmill_core.scheduler import DESKTOP_IO_SETTINGS

    assert DESKTOP_IO_SETTINGS.burst_s == 0.25
    async with open_scheduler(tmp_path / "t.db", config(), io_settings=DESKTOP_IO_SETTINGS) as (
        sched,
        clock,
        _,
    ):
        done_at: list[int] = []

        async def copy(ctx: TaskContext, payload: Any) -> None:
            for _ in range(30):
                await ctx.consume_io("diskWrite", 1 * MB)
                done_at.append(clock.now_ms())

        sched.register("copy", copy, paced=True)
        clock.advance(5000)  # idle: the bucket fills up
        start = clock.now_ms()
        await sched.submit(writes(30 * MB, task_type="copy"))
        await settle()
        while len(done_at) < 30:
            clock.advance(50)
            await settle()
        first_second = sum(1 for t in done_at if t - start <= 1000)
        assert first_second <= 10 * 1.25 + 1  # MB, with one chunk of rounding
        assert 2600 <= done_at[-1] - start <= 3100  # 2.5 MB from the bucket, 27.5 at 10 MB/s
