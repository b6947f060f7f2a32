"""Event-loop stall watchdog (scenario D).

A coroutine sleeps 1 ms in a loop and records how late each wake-up is. Any synchronous work
on the loop (a blocking SQLite call, a long validation, a GC pause) shows up as lateness.
The watchdog's own wake-ups (~1,000/s) are charged to the contender it watches, which makes
the throughput numbers of the watched runs slightly conservative.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from array import array
from types import TracebackType
from typing import Any

PERIOD_S = 0.001


class StallWatch:
    """Async context manager measuring the worst event-loop lateness while it is active."""

    def __init__(self, period_s: float = PERIOD_S) -> None:
        self.period_s = period_s
        self._late = array("d")
        self._task: asyncio.Task[None] | None = None
        self._phase = "open"
        self._phase_worst: dict[str, float] = {}
        # The same lateness less the cyclic GC's pauses inside each sleep: what is left is
        # what the code running on the loop (the store, the scheduler) held it for.
        self._late_nogc = array("d")
        self._phase_worst_nogc: dict[str, float] = {}
        # And the part of it the loop's thread spent running (CPU time): a wall-clock delay
        # also counts the time the OS did not run the process at all (a shared VM's noise).
        self._held = array("d")
        self._phase_worst_held: dict[str, float] = {}
        self._gc_pauses: list[tuple[float, float]] = []  # (start, end), recent ones
        self._gc_started = 0.0
        self._gc_worst = 0.0

    def phase(self, name: str) -> None:
        """Attribute the following wake-ups to ``name`` (e.g. open, submit, drain, close).

        A wake-up whose sleep began in one phase and ended in another is charged to
        ``"<from>-><to>"``: the loop was held while the phase changed."""
        self._phase = name

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
            return
        self._gc_pauses.append((self._gc_started, now))
        self._gc_worst = max(self._gc_worst, now - self._gc_started)

    def _gc_time_since(self, since: float) -> float:
        """GC pause time after ``since``; forgets pauses that ended before it."""
        pauses = self._gc_pauses
        while pauses and pauses[0][1] <= since:
            pauses.pop(0)
        return sum(end - max(start, since) for start, end in pauses)

    async def __aenter__(self) -> StallWatch:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._run(), name="bench-stall-watch")
        await asyncio.sleep(0)  # let the watchdog take its first timestamp
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        period = self.period_s
        late = self._late
        clock = time.perf_counter
        cpu = time.thread_time
        while True:
            before, cpu_before, phase = clock(), cpu(), self._phase
            await asyncio.sleep(period)
            lateness = clock() - before - period
            late.append(lateness)
            gc_time = self._gc_time_since(before)
            nogc = max(0.0, lateness - gc_time)
            self._late_nogc.append(nogc)
            held = max(0.0, min(lateness, cpu() - cpu_before) - gc_time)
            self._held.append(held)
            if phase != self._phase:
                # The loop was held across a phase change: e.g. "submit->drain" means the
                # submit loop never let the watchdog run until the submits were over.
                phase = f"{phase}->{self._phase}"
            if lateness > self._phase_worst.get(phase, -1.0):
                self._phase_worst[phase] = lateness
            if nogc > self._phase_worst_nogc.get(phase, -1.0):
                self._phase_worst_nogc[phase] = nogc
            if held > self._phase_worst_held.get(phase, -1.0):
                self._phase_worst_held[phase] = held

    def summary(self) -> dict[str, Any]:
        """Worst, p99 and median lateness in ms, wake-ups later than 5 ms, worst per phase."""
        if not self._late:
            return {"samples": 0, "worst_ms": None, "p99_ms": None, "median_ms": None}
        ordered = sorted(self._late)
        n = len(ordered)
        return {
            "samples": n,
            "worst_ms": round(ordered[-1] * 1000, 3),
            "p99_ms": round(ordered[min(n - 1, int(n * 0.99))] * 1000, 3),
            "median_ms": round(ordered[n // 2] * 1000, 3),
            "over_5ms": sum(1 for x in ordered if x > 0.005),
            "phases": {k: round(v * 1000, 3) for k, v in self._phase_worst.items()},
            "worst_nogc_ms": round(max(self._late_nogc) * 1000, 3),
            "phases_nogc": {k: round(v * 1000, 3) for k, v in self._phase_worst_nogc.items()},
            "gc_worst_ms": round(self._gc_worst * 1000, 3),
            "held_ms": round(max(self._held) * 1000, 3),
            "phases_held": {k: round(v * 1000, 3) for k, v in self._phase_worst_held.items()},
        }
