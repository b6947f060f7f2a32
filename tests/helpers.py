"""Test helpers: drive a scheduler on a fake clock without sleeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from taskmill_core import FakeClock, Scheduler, SchedulerConfig, TaskContext
from taskmill_core.events import Subscription
from taskmill_core.iogovernor import GovernorSettings
from taskmill_core.store import SqliteStore
from taskmill_core.types import Event


async def settle(rounds: int = 20) -> None:
    """Let every task that can make progress do so (no real time passes)."""
    for _ in range(rounds):
        await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def open_scheduler(
    path: Path, config: SchedulerConfig | None = None, **kw: Any
) -> AsyncIterator[tuple[Scheduler, FakeClock, Subscription]]:
    clock = kw.pop("clock", None) or FakeClock()
    kw.setdefault("io_monitor", False)  # no real IO sampling unless a test scripts it
    # The governor's mechanics are specified with its reference settings (a one-second
    # bucket); the scheduler's desktop default (a quarter second) has a test of its own.
    kw.setdefault("io_settings", GovernorSettings())
    sched = Scheduler(path, config or SchedulerConfig(), clock=clock, close_grace_ms=0, **kw)
    async with sched:
        sub = sched.subscribe()
        yield sched, clock, sub


def drain(sub: Subscription) -> list[Event]:
    out = []
    while (ev := sub.get_nowait()) is not None:
        out.append(ev)
    return out


def names(events: list[Event], *, skip_progress: bool = True) -> list[str]:
    return [e.EVENT for e in events if not (skip_progress and e.EVENT == "task.progress")]


class Gate:
    """An executor whose runs block until the test releases them, by task id."""

    def __init__(self) -> None:
        self.events: dict[int, anyio.Event] = {}
        self.started: list[int] = []
        self.exited: list[int] = []
        self.results: dict[int, Any] = {}
        self.errors: dict[int, BaseException] = {}

    async def __call__(self, ctx: TaskContext, payload: Any) -> Any:
        self.started.append(ctx.id)
        ev = self.events.setdefault(ctx.id, anyio.Event())
        try:
            await ev.wait()
        finally:
            self.events.pop(ctx.id, None)
            self.exited.append(ctx.id)
        if ctx.id in self.errors:
            raise self.errors.pop(ctx.id)
        return self.results.get(ctx.id, {"ok": ctx.id})

    def release(self, task_id: int, error: BaseException | None = None) -> None:
        if error is not None:
            self.errors[task_id] = error
        self.events.setdefault(task_id, anyio.Event()).set()


def recorder() -> tuple[list[int], Callable[[TaskContext, Any], Any]]:
    order: list[int] = []

    async def run(ctx: TaskContext, payload: Any) -> Any:
        order.append(ctx.id)
        return {}

    return order, run


class FaultyStore(SqliteStore):
    """A real SQLite store with fault hooks, injected with ``Scheduler(..., store=...)``.

    - ``complete_fault``: while set, writing run ends (``complete_standalone``) raises it — a full
      disk (``sqlite3.OperationalError``) or a planted bug;
    - ``before_sync``: called in the fsync's worker thread before the WAL is synced;
    - ``on_first_run_of_type``: called as the first run of a type is launched (the runner
      reads that type's recent durations), right before the run is queued for a worker.
    """

    def __init__(self, path: str | os.PathLike[str], **kw: Any) -> None:
        super().__init__(path, **kw)
        self.complete_fault: BaseException | None = None
        self.before_sync: Callable[[], None] | None = None
        self.on_first_run_of_type: Callable[[str], None] | None = None

    def complete_standalone(self, *args: Any, **kwargs: Any) -> Any:
        if self.complete_fault is not None:
            raise self.complete_fault
        return super().complete_standalone(*args, **kwargs)

    def sync_wal(self) -> None:
        if self.before_sync is not None:
            self.before_sync()
        super().sync_wal()

    def recent_durations(self, task_type: str, n: int) -> list[int]:
        if self.on_first_run_of_type is not None:
            self.on_first_run_of_type(task_type)
        return super().recent_durations(task_type, n)


REPO = Path(__file__).resolve().parent.parent


def sigkill_when_ready(args: list[str], marker: Path, out: Path, *, then_wait: float = 0.0) -> int:
    """Run ``python *args`` (a child scheduler, this repo importable) until it creates
    ``marker``, wait ``then_wait`` seconds more, then SIGKILL it: a real crash, at a known
    point. Its output goes to ``out`` (shown if it exits early). Returns its pid."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"child exited early ({proc.returncode}):\n{out.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"child never became ready:\n{out.read_text()}")
            time.sleep(0.005)
        if then_wait:
            time.sleep(then_wait)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.pid
