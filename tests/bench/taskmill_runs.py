"""The taskmill_core contender: scenarios A (sequential), B (concurrent), C (``submit_batch``)
and the E (scale) build and probe steps, each watched by the stall watchdog (scenario D).

Written against the binding minimal API of DESIGN.md only (``Scheduler``, ``SchedulerConfig``,
``TaskSpec``, ``register``, ``submit``, ``submit_batch``, ``wait_idle``). The no-op task is a
registered executor that only counts, like the peers' task functions, so every run can check
that exactly ``n`` tasks ran. The watchdog covers the whole scheduler lifetime (open, work,
close), not just the timed section.
"""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path
from typing import Any

import psutil

from tests.bench.stall import StallWatch

CONCURRENCY = 8
NOOP = "bench.noop"
PROBE = "bench.probe"
# Tasks of a type nobody registered stay `pending` (PROTOCOL.md, "Host executors"); the scale
# databases are filled with them so they stay put until the probe process registers the type.
PENDING = "bench.pending"


class Unavailable(Exception):
    """taskmill_core (or the part of its API the benchmark needs) cannot be imported yet."""


def load_api() -> tuple[Any, Any, Any]:
    """Return ``(Scheduler, SchedulerConfig, TaskSpec)`` or raise :class:`Unavailable`."""
    try:
        from taskmill_core import Scheduler, SchedulerConfig, TaskSpec
    except Exception as exc:  # ImportError, or a module caught half-written
        raise Unavailable(f"taskmill_core not available yet ({type(exc).__name__}: {exc})") from exc
    return Scheduler, SchedulerConfig, TaskSpec


class _Counter:
    """The benchmark's no-op executor: counts runs and wakes a waiter at ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.reached = asyncio.Event()

    async def run(self, ctx: Any, payload: Any) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


class _CallTimes:
    """Durations of individual ``await sched.submit(...)`` calls (latency as the caller sees
    it; for a call that never suspends, also how long it held the event loop)."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        ordered = sorted(self.samples)
        n = len(ordered)
        return {
            "submit_median_ms": ordered[n // 2] * 1000,
            "submit_p99_ms": ordered[min(n - 1, int(n * 0.99))] * 1000,
            "submit_max_ms": ordered[-1] * 1000,
        }


def _shares(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def sequential(workdir: Path, n: int, durability: str) -> dict[str, Any]:
    """A: ``n`` submits awaited one by one, then ``wait_idle`` (the scheduler is live)."""
    Scheduler, SchedulerConfig, TaskSpec = load_api()
    counter = _Counter(n)
    config = SchedulerConfig(max_concurrency=CONCURRENCY, durability=durability)
    async with StallWatch() as watch:
        async with Scheduler(str(workdir / "tasks.db"), config) as sched:
            sched.register(NOOP, counter.run)
            watch.phase("submit")
            calls = _CallTimes()
            t0 = time.perf_counter()
            for _ in range(n):
                tc = time.perf_counter()
                await sched.submit(TaskSpec(type=NOOP, payload={}))
                calls.add(time.perf_counter() - tc)
            t_sub = time.perf_counter()
            watch.phase("drain")
            await sched.wait_idle()
            t_end = time.perf_counter()
            watch.phase("close")
        close_s = time.perf_counter() - t_end
    if counter.count != n:
        return {"status": "error", "error": f"wait_idle returned after {counter.count}/{n} ran"}
    return {
        "status": "ok",
        "rate": n / (t_end - t0),
        "elapsed_s": t_end - t0,
        "submit_rate": n / (t_sub - t0),
        **calls.summary(),
        "close_s": close_s,
        "completed": counter.count,
        "stall": watch.summary(),
    }


async def concurrent(workdir: Path, n: int, submitters: int) -> dict[str, Any]:
    """B: ``submitters`` coroutines with a submit in flight each, ``n`` in total; live drain."""
    Scheduler, SchedulerConfig, TaskSpec = load_api()
    counter = _Counter(n)
    config = SchedulerConfig(max_concurrency=CONCURRENCY)
    async with StallWatch() as watch:
        async with Scheduler(str(workdir / "tasks.db"), config) as sched:
            sched.register(NOOP, counter.run)

            calls = _CallTimes()

            async def produce(count: int) -> None:
                for _ in range(count):
                    tc = time.perf_counter()
                    await sched.submit(TaskSpec(type=NOOP, payload={}))
                    calls.add(time.perf_counter() - tc)

            watch.phase("submit")
            t0 = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for share in _shares(n, submitters):
                    tg.create_task(produce(share))
            t_sub = time.perf_counter()
            watch.phase("drain")
            await sched.wait_idle()
            t_end = time.perf_counter()
            watch.phase("close")
        close_s = time.perf_counter() - t_end
    if counter.count != n:
        return {"status": "error", "error": f"wait_idle returned after {counter.count}/{n} ran"}
    return {
        "status": "ok",
        "rate": n / (t_end - t0),
        "elapsed_s": t_end - t0,
        "submit_rate": n / (t_sub - t0),
        **calls.summary(),
        "close_s": close_s,
        "completed": counter.count,
        "stall": watch.summary(),
    }


async def batch(workdir: Path, n: int) -> dict[str, Any]:
    """C: one ``submit_batch`` of ``n`` specs (built before the clock starts); then drain."""
    Scheduler, SchedulerConfig, TaskSpec = load_api()
    counter = _Counter(n)
    config = SchedulerConfig(max_concurrency=CONCURRENCY)
    specs = [TaskSpec(type=NOOP, payload={}) for _ in range(n)]
    async with StallWatch() as watch:
        async with Scheduler(str(workdir / "tasks.db"), config) as sched:
            sched.register(NOOP, counter.run)
            watch.phase("batch")
            t0 = time.perf_counter()
            results = await sched.submit_batch(specs)
            t_batch = time.perf_counter()
            watch.phase("drain")
            await sched.wait_idle()
            t_end = time.perf_counter()
            watch.phase("close")
        close_s = time.perf_counter() - t_end
    if len(results) != n or counter.count != n:
        return {"status": "error", "error": f"{len(results)} results, {counter.count} ran of {n}"}
    return {
        "status": "ok",
        "rate": n / (t_batch - t0),
        "elapsed_s": t_batch - t0,
        "submit_max_ms": (t_batch - t0) * 1000,
        "e2e_rate": n / (t_end - t0),
        "close_s": close_s,
        "completed": counter.count,
        "stall": watch.summary(),
    }


async def scale_build(db: Path, total: int, chunk: int = 10_000) -> dict[str, Any]:
    """E, step 1: fill ``db`` with ``total`` pending tasks via ``submit_batch`` in chunks."""
    Scheduler, SchedulerConfig, TaskSpec = load_api()
    config = SchedulerConfig(max_concurrency=CONCURRENCY)
    batch_s = longest = 0.0
    async with StallWatch() as watch:
        async with Scheduler(str(db), config) as sched:
            watch.phase("build")
            t0 = time.perf_counter()
            done = 0
            while done < total:
                size = min(chunk, total - done)
                specs = []
                for start in range(0, size, 500):  # the benchmark must not hold the loop either
                    specs += [
                        TaskSpec(type=PENDING, payload={}) for _ in range(min(500, size - start))
                    ]
                    await asyncio.sleep(0)
                tb = time.perf_counter()
                await sched.submit_batch(specs)
                took = time.perf_counter() - tb
                batch_s += took
                longest = max(longest, took)
                done += size
            t_end = time.perf_counter()
            watch.phase("close")
        close_s = time.perf_counter() - t_end
    return {
        "status": "ok",
        "total": total,
        "build_s": t_end - t0,
        "rate": total / (t_end - t0),
        "batch_rate": total / batch_s if batch_s else None,
        "submit_max_ms": longest * 1000,
        "close_s": close_s,
        "db_mb": sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**20,
        "stall": watch.summary(),
    }


async def scale_probe(db: Path, probes: int, drain: int, limit_s: float) -> dict[str, Any]:
    """E, step 2 (fresh process): open a pre-built DB, measure RSS, urgent-task claim latency
    with the backlog in place, and the time to drain the first ``drain`` backlog tasks."""
    Scheduler, SchedulerConfig, TaskSpec = load_api()
    loop = asyncio.get_running_loop()
    config = SchedulerConfig(max_concurrency=CONCURRENCY)
    rss_before = _rss_mb()
    started: list[asyncio.Future[float]] = []

    async def probe(ctx: Any, payload: Any) -> None:
        if started and not started[-1].done():
            started[-1].set_result(time.perf_counter())

    counter = _Counter(drain)
    latencies: list[float] = []
    async with StallWatch() as watch:
        t0 = time.perf_counter()
        async with Scheduler(str(db), config) as sched:
            open_s = time.perf_counter() - t0
            await asyncio.sleep(0.1)  # let any deferred open-time work run before sampling RSS
            rss_open = _rss_mb()
            sched.register(PROBE, probe)
            watch.phase("probe")
            for _ in range(probes):
                fut: asyncio.Future[float] = loop.create_future()
                started.append(fut)
                ts = time.perf_counter()
                await sched.submit(TaskSpec(type=PROBE, payload={}, priority=0))
                t_start = await asyncio.wait_for(fut, limit_s)
                latencies.append(t_start - ts)
            watch.phase("drain")
            sched.register(PENDING, counter.run)
            td = time.perf_counter()
            try:
                await asyncio.wait_for(counter.reached.wait(), limit_s)
            except TimeoutError:
                return {
                    "status": "error",
                    "error": f"backlog drain timed out: {counter.count}/{drain} ran",
                }
            drain_s = time.perf_counter() - td
            rss_drain = _rss_mb()
            watch.phase("close")
    first_ms = latencies[0] * 1000
    latencies.sort()
    return {
        "status": "ok",
        "open_s": open_s,
        "probe_median_ms": latencies[len(latencies) // 2] * 1000,
        "probe_max_ms": latencies[-1] * 1000,
        "probe_first_ms": first_ms,
        "drain_s": drain_s,
        "drain_rate": drain / drain_s,
        "rss_before_open_mb": rss_before,
        "rss_open_mb": rss_open,
        "rss_after_drain_mb": rss_drain,
        "rss_peak_mb": _peak_rss_mb(),
        "stall": watch.summary(),
    }
