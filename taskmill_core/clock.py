"""Time, injected. The store and scheduler read time only through a :class:`Clock`.

``SystemClock`` is wall time in epoch milliseconds with real sleeping. ``FakeClock`` only
moves when a test calls :meth:`FakeClock.advance`, and wakes exactly the sleepers whose
deadline has passed, so tests assert exact timings without sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def now_ms(self) -> int:
        """Current time, integer milliseconds since the Unix epoch."""
        ...

    async def wait(self, event: anyio.Event, deadline_ms: int | None) -> None:
        """Return when ``event`` is set or the clock reaches ``deadline_ms`` (None: no limit)."""
        ...

    async def sleep(self, ms: float) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def wait(self, event: anyio.Event, deadline_ms: int | None) -> None:
        if deadline_ms is None:
            await event.wait()
            return
        delay = (deadline_ms - self.now_ms()) / 1000
        if delay <= 0:
            return
        with anyio.move_on_after(delay):
            await event.wait()

    async def sleep(self, ms: float) -> None:
        await anyio.sleep(ms / 1000)

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that stands still until :meth:`advance` is called."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._sleepers: list[tuple[int, anyio.Event]] = []

    def now_ms(self) -> int:
        return self._now

    async def wait(self, event: anyio.Event, deadline_ms: int | None) -> None:
        if deadline_ms is None:
            await event.wait()
            return
        if deadline_ms <= self._now:
            return
        entry = (deadline_ms, event)
        self._sleepers.append(entry)
        try:
            await event.wait()
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    async def sleep(self, ms: float) -> None:
        if ms <= 0:
            await anyio.lowlevel.checkpoint()
            return
        await self.wait(anyio.Event(), self._now + max(1, round(ms)))

    def advance(self, ms: int) -> None:
        """Move time forward and wake every sleeper whose deadline has now passed."""
        self._now += ms
        due = [entry for entry in self._sleepers if entry[0] <= self._now]
        for entry in due:
            self._sleepers.remove(entry)
            entry[1].set()

    def next_deadline(self) -> int | None:
        return min((d for d, _ in self._sleepers), default=None)

    def __repr__(self) -> str:
        return f"FakeClock(now_ms={self._now}, sleepers={len(self._sleepers)})"
