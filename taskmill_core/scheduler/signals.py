"""The small shared signals the scheduler's components coordinate through.

- :class:`Wakeup`: "the dispatcher has something to do" (a submit, a run's end, a config
  change), and when its loop last turned;
- :class:`WriteGate`: writes held while a large batch's transaction or a WAL catch-up runs;
- :class:`Lifecycle`: closing, and the internal error that stopped the scheduler.

Each is a few fields and no policy; the components that own the work hold a reference.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog

from taskmill_core.errors import ShuttingDown

__all__ = ["Lifecycle", "Wakeup", "WriteGate"]

log = structlog.get_logger("taskmill.scheduler")


class Wakeup:
    """Wakes the dispatch loop; setting it many times before the loop runs costs one flag."""

    __slots__ = ("_event", "_woken", "loop_turned")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._woken = False
        self.loop_turned = 0.0  # perf_counter() when the dispatcher last ran a tick

    def __call__(self) -> None:
        if not self._woken:  # (called several times per task: setting once is enough)
            self._woken = True
            self._event.set()

    def rearm(self) -> anyio.Event:
        """Start a new round: the event the loop waits on until the next wake-up."""
        self._event = anyio.Event()
        self._woken = False
        return self._event

    @property
    def pending(self) -> bool:
        """A wake-up came since the loop last re-armed."""
        return self._woken


class WriteGate:
    """Holds every other write while one piece of work owns the connection.

    While held, the dispatcher skips its ticks, writes wait in :meth:`wait_open`, single
    submits queue for the next tick and executors' checkpoints are kept until then.
    """

    __slots__ = ("_released", "_wake", "held")

    def __init__(self, wake: Wakeup) -> None:
        self._wake = wake
        self.held = False
        self._released = anyio.Event()

    async def wait_open(self) -> None:
        """Wait while writes are held (a large batch's transaction, a WAL catch-up)."""
        while self.held:
            await self._released.wait()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold every other write until the block ends."""
        await self.wait_open()
        self.held = True
        self._released = anyio.Event()
        try:
            yield
        finally:
            self.held = False
            self._released.set()
            self._wake()


class Lifecycle:
    """Whether the scheduler takes work: closing, closed, or stopped by an internal error."""

    __slots__ = ("_failed", "closed", "closing", "failure")

    def __init__(self) -> None:
        self.closing = False
        self.closed = False
        self.failure: Exception | None = None
        self._failed = anyio.Event()

    def check_failed(self) -> None:
        if self.failure is not None:
            raise ShuttingDown(f"the scheduler stopped on an internal error: {self.failure!r}")

    def check_open(self) -> None:
        self.check_failed()
        if self.closing:
            raise ShuttingDown("the scheduler is shutting down")

    def fail(self, exc: Exception) -> bool:
        """Record the internal error that stops the scheduler; False if one already did."""
        if self.failure is not None:
            return False
        log.error("the scheduler stopped on an internal error", error=repr(exc), exc_info=exc)
        self.failure = exc
        self.closing = True
        self._failed.set()
        return True

    async def wait_failed(self) -> Exception:
        await self._failed.wait()
        assert self.failure is not None
        return self.failure
