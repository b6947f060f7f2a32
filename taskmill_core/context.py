"""TaskContext: everything an executor may do with the scheduler, and nothing more.

Executors are ``async def run(ctx, payload) -> result``. Cancellation (user cancel, preemption,
pause, shutdown, timeout) arrives as anyio cancellation at the next ``await``; tight loops and
worker threads can check the cheap ``ctx.cancelled`` flag. The synchronous methods may also be
called from a worker thread (``anyio.to_thread.run_sync``): they hop to the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.from_thread

from taskmill_core.types import ChildCounts, IoBytes, Phase, SubmitResult, TaskInfo, TaskSpec

if TYPE_CHECKING:
    from taskmill_core.iomonitor import Resource
    from taskmill_core.runs import Run, RunHost, StopReason

__all__ = ["TaskContext"]

T = TypeVar("T")

_NO_CHILDREN = ChildCounts(
    completed=0, failed=0, dead_letter=0, cancelled=0, superseded=0, expired=0
)


class TaskContext:
    """Handed to an executor for one run of one task."""

    __slots__ = ("_host", "_run", "_thread")

    def __init__(self, host: RunHost, run: Run) -> None:
        self._host = host
        self._run = run
        self._thread = threading.get_ident()

    @property
    def task(self) -> TaskInfo:
        """The task as it was when this run first asked for it (state ``running``)."""
        run = self._run
        if run.info is None:
            run.info = self._call(lambda: self._host.task_info(run))
        return run.info

    @property
    def id(self) -> int:
        return self._run.id

    @property
    def attempt(self) -> int:
        """Retries consumed before this run (0 on the first run)."""
        return self._run.attempt

    @property
    def phase(self) -> Phase:
        """``"run"``, or ``"finalize"`` for the finalize phase of a parent submitted with
        ``finalize=True`` (after all its direct children are final; ``attempt`` restarts at 0
        for it, and its result becomes the task's result)."""
        return self._run.phase

    @property
    def children(self) -> ChildCounts:
        """In the finalize phase: the direct children by final state (all zero otherwise)."""
        return self._run.children or _NO_CHILDREN

    @property
    def resume_state(self) -> Any:
        """The last state saved with :meth:`checkpoint` in an earlier run, or None."""
        return self._run.checkpoint

    @property
    def cancelled(self) -> bool:
        """True once this run has been asked to stop (cancel, preempt, pause, shutdown...)."""
        return self._run.stop_reason is not None

    @property
    def stop_reason(self) -> StopReason | None:
        """Why this run is being stopped: cancelled, superseded, preempted, paused, shutdown,
        timeout; None while it may run on."""
        return self._run.stop_reason

    def _call(self, fn: Callable[[], T]) -> T:
        if threading.get_ident() == self._thread:
            return fn()
        return anyio.from_thread.run_sync(fn)

    def progress(
        self,
        fraction: float | None = None,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress: a fraction 0..1 and/or bytes done of a total, and a message."""
        self._call(
            lambda: self._host.report_progress(
                self._run, fraction, bytes_done, bytes_total, message
            )
        )

    def checkpoint(self, state: Any) -> None:
        """Durably save resumable state; the next run of this task gets it as resume_state."""
        self._call(lambda: self._host.save_checkpoint(self._run, state))

    def record_io(
        self, *, disk_read: int = 0, disk_write: int = 0, net_rx: int = 0, net_tx: int = 0
    ) -> None:
        """Add bytes this run moved to the task's measured IO (kept in history).

        The IO governor counts them as our own IO (not other programs') and learns the task
        type's cost from them. To be paced instead, draw bytes with :meth:`consume_io`.
        """
        amounts = (disk_read, disk_write, net_rx, net_tx)
        self._call(lambda: self._host.record_io(self._run, amounts))

    async def consume_io(self, resource: Resource, nbytes: int) -> None:
        """Draw ``nbytes`` of ``resource`` (``"diskRead"``, ``"diskWrite"``, ``"netRx"``,
        ``"netTx"``) from the IO budget *before* moving them, waiting (on the scheduler's
        clock) while the budget is exhausted; call it per chunk. The bytes count as this run's
        IO: do not :meth:`record_io` them as well. Executors that pace themselves this way
        should be registered with ``paced=True``."""
        await self._host.consume_io(self._run, resource, nbytes)

    async def submit_child(self, spec: TaskSpec) -> SubmitResult:
        """Submit a child task; this task completes only after all its children are final."""
        if spec.parent_id is None:
            spec.parent_id = self._run.id
        return await self._host.submit_child(spec)

    async def sleep(self, ms: float) -> None:
        """Sleep on the scheduler's clock (a fake clock in tests)."""
        await self._host.clock.sleep(ms)

    @property
    def io(self) -> IoBytes:
        return self._run.io

    def __repr__(self) -> str:
        run = self._run
        phase = ", phase='finalize'" if run.phase == "finalize" else ""
        return f"TaskContext(id={run.id}, type={run.type!r}, attempt={self.attempt}{phase})"
