"""The runner: the runs in flight — starting executors, stopping them, hearing from them.

A claimed task becomes a :class:`~taskmill_core.runs.Run`, handed to a long-lived worker that
awaits the executor inside a cancel scope. A stop (cancel, preempt, pause, shutdown, timeout)
cancels that scope; how the executor ended goes to :attr:`Runner.finished`, which the next
dispatch tick settles. The IO a run held is released the moment it ends (its executor no
longer moves bytes), once, whatever becomes of the tick that records it. The runner is also
the :class:`~taskmill_core.runs.RunHost` every ``TaskContext`` talks to: progress, checkpoints
and IO of the runs it holds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import msgspec
import structlog

from taskmill_core.clock import Clock
from taskmill_core.context import TaskContext
from taskmill_core.errors import PermanentError
from taskmill_core.executors import ExecutorFn, Registry
from taskmill_core.iomonitor import Resource
from taskmill_core.progress import DurationModel, RunProgress
from taskmill_core.runs import FINAL_STOPS, Run, RunEnd, StopReason
from taskmill_core.scheduler.iobridge import IoBridge
from taskmill_core.scheduler.settings import Settings
from taskmill_core.scheduler.signals import Wakeup, WriteGate
from taskmill_core.store import SqliteStore, Started
from taskmill_core.types import Event, SubmitResult, TaskInfo, TaskProgress, TaskSpec, TaskStarted

__all__ = ["Finished", "Runner"]

log = structlog.get_logger("taskmill.scheduler")

_encode_result = msgspec.json.Encoder().encode

Finished = tuple[Run, RunEnd, Any]
"""A run's end, waiting for the tick that records it: the run, how it ended, and what the
executor returned or raised."""


class Runner:
    """The runs in flight, their workers, and the host of their executors."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        clock: Clock,
        registry: Registry,
        settings: Settings,
        io: IoBridge,
        gate: WriteGate,
        durations: DurationModel,
        publish: Callable[[Event], None],
        wake: Wakeup,
        submit: Callable[[TaskSpec], Awaitable[SubmitResult]],
    ) -> None:
        self._store = store
        self._clock = clock
        self._registry = registry
        self._settings = settings
        self._io = io
        self._gate = gate
        self._durations = durations
        self._publish = publish
        self._wake = wake
        self._submit = submit
        self.running: dict[int, Run] = {}
        self.finished: list[Finished] = []  # ends the next tick records
        self.runs_empty = anyio.Event()  # set when the last run is settled
        self._queue: deque[tuple[Run, ExecutorFn]] = deque()
        # Idle workers wait on a future each (an asyncio future is a few times cheaper than
        # an anyio Event; on another backend, an anyio Event).
        self._idle_workers: deque[asyncio.Future[None] | anyio.Event] = deque()
        self._progress_event = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._on_asyncio = True

    def start(self, tg: anyio.abc.TaskGroup, *, on_asyncio: bool) -> None:
        """Run workers in ``tg`` from now on."""
        self._tg = tg
        self._on_asyncio = on_asyncio

    @property
    def clock(self) -> Clock:
        return self._clock

    # --- starting -------------------------------------------------------------------------

    def launch(self, s: Started, now: int) -> None:
        """Start a claimed task: its run, its ``task.started``, a worker for its executor."""
        reg = self._registry.get(s.type)
        run = Run(
            id=s.id,
            type=s.type,
            priority=s.priority,
            group=s.group,
            attempt=s.attempt,
            max_retries=s.max_retries,
            backoff=s.backoff,
            timeout_ms=s.timeout_ms,
            checkpoint=s.checkpoint,
            payload=s.payload,
            run_started=now,
            progress=RunProgress(now),
            phase=s.phase,
            children=s.children,
        )
        if self._io.admitted:
            run.io_admitted = self._io.take_admission(s.id)
        self.running[s.id] = run
        self._publish(
            TaskStarted(
                id=s.id, type=s.type, attempt=s.attempt, priority=s.priority, started_at=now
            )
        )
        if not self._durations.known(s.type):
            self._durations.seed(s.type, self._store.recent_durations(s.type, 20))
        self._progress_event.set()
        if reg is None:  # unregistered between claim and launch
            run.stop_reason = "shutdown"
            self._ended(run, "stopped", None)
            return
        self.queue_run(run, reg.fn)

    def queue_run(self, run: Run, fn: ExecutorFn) -> None:
        """Hand a run to an idle worker, starting one when none is idle.

        Long-lived workers are much cheaper than a new task per run; their number only grows
        to the peak of concurrent runs (plus executors that ignored cancellation).
        """
        self._queue.append((run, fn))
        idle = self._idle_workers
        while idle:
            wakeup = idle.popleft()
            if isinstance(wakeup, anyio.Event):
                wakeup.set()
                return
            if not wakeup.done():  # (a worker cancelled at shutdown left its future)
                wakeup.set_result(None)
                return
        assert self._tg is not None
        self._tg.start_soon(self._worker)

    async def _worker(self) -> None:
        """Run queued executors one after another, inside one cancel scope.

        A scope per run would cost more than a no-op executor (constructing and entering an
        anyio scope is several microseconds); so the worker keeps its scope until a stop
        cancels it, and only then starts a fresh one. ``run.scope`` is set only while that
        run's executor runs, so a stop can never reach the run the worker takes up next.
        """
        while True:
            current: Run | None = None
            with anyio.CancelScope() as scope:
                while self._queue and not scope.cancel_called:
                    run, fn = self._queue.popleft()
                    current = run
                    await self._execute(run, fn, scope)
                    current = None
            if current is not None:  # its executor ended by the stop's cancellation
                self._record(current, "stopped", None)
                continue
            if scope.cancel_called:  # a stop came as its run returned: take a fresh scope
                continue
            if self._on_asyncio:
                fut = asyncio.get_running_loop().create_future()
                self._idle_workers.append(fut)
                await fut
            else:
                wakeup = anyio.Event()
                self._idle_workers.append(wakeup)
                await wakeup.wait()

    async def _execute(self, run: Run, fn: ExecutorFn, scope: anyio.CancelScope) -> None:
        """Run one executor in its worker's ``scope`` and record how it ended. A stop's
        cancellation propagates out of here, to the worker's scope, which records it."""
        run.scope = scope
        if run.stop_reason is not None:  # stopped while it waited for a worker
            scope.cancel()
        ctx = TaskContext(self, run)
        try:
            value = await fn(ctx, run.payload)
        except Exception as exc:
            if run.stop_reason is not None:
                self._record(run, "stopped", None)
            else:
                self._record(run, "error", exc)
            return
        finally:
            run.scope = None
        try:
            run.result_json = _encode_result(value)
        except (TypeError, msgspec.EncodeError) as exc:
            error = PermanentError(f"the executor's result is not JSON-serializable: {exc}")
            self._record(run, "error", error)
            return
        self._record(run, "ok", value)

    def _record(self, run: Run, end: RunEnd, value: Any) -> None:
        """Hand a run's end to the next tick (unless it was abandoned: its slot is gone)."""
        if not run.abandoned:
            self._ended(run, end, value)
            self._wake()

    def _ended(self, run: Run, end: RunEnd, value: Any) -> None:
        """The run is over: the IO governor settles what it prepaid (and learns its cost),
        and the next tick records how it ended."""
        io = run.io_actual = run.io if run.io.total() else None
        if run.io_admitted or io is not None:
            self._io.run_ended(run, io)
        self.finished.append((run, end, value))

    # --- stopping -------------------------------------------------------------------------

    def stop(self, run: Run, reason: StopReason, by: int | None = None) -> None:
        """Ask a run to stop. Cancel and supersede override any earlier reason."""
        if run.stop_reason is not None and reason not in FINAL_STOPS:
            return
        run.stop_reason = reason
        run.stop_for = by
        if run.stop_deadline is None:
            run.stop_deadline = self._clock.now_ms() + self._settings.config.cancel_grace_ms
        if run.scope is not None:  # its executor is running (else its worker sees the reason)
            run.scope.cancel()
        self._wake()

    def stop_task(self, task_id: int, reason: StopReason) -> bool:
        """Stop the run of ``task_id`` if it has one; False when it is not running."""
        run = self.running.get(task_id)
        if run is None:
            return False
        self.stop(run, reason)
        return True

    def enforce_deadlines(self, now: int) -> None:
        """Stop runs past their timeout; abandon executors deaf to a stop past its grace."""
        for run in list(self.running.values()):
            timeout_at = run.timeout_at
            if run.stop_reason is None and timeout_at is not None and now >= timeout_at:
                self.stop(run, "timeout")
            elif run.stop_deadline is not None and now >= run.stop_deadline and not run.abandoned:
                # The executor ignored cancellation past the hard deadline: free its slot.
                log.warning("executor did not stop in time; abandoning it", id=run.id)
                run.abandoned = True
                self._ended(run, "stopped", None)

    def next_deadline(self) -> int | None:
        """The earliest timeout or stop grace among the runs."""
        times = [
            run.timeout_at if run.stop_reason is None else run.stop_deadline
            for run in self.running.values()
        ]
        real = [t for t in times if t is not None]
        return min(real) if real else None

    # --- what the runs report (the RunHost) --------------------------------------------------

    def with_progress(self, info: TaskInfo) -> TaskInfo:
        """``info`` with the latest progress of its run, if it is running."""
        run = self.running.get(info.id)
        if run is not None and run.progress.last is not None and info.state == "running":
            info.progress = run.progress.last
        return info

    def task_info(self, run: Run) -> TaskInfo:
        return self._store.get(run.id)

    def report_progress(
        self,
        run: Run,
        fraction: float | None,
        bytes_done: int | None,
        bytes_total: int | None,
        message: str | None,
    ) -> None:
        if run.id not in self.running or run.stop_reason is not None:
            return
        now = self._clock.now_ms()
        progress = run.progress.report(now, fraction, bytes_done, bytes_total, message)
        interval = 1000 / self._settings.config.progress_hz
        last = run.progress.last_sent_ms
        if last is None or now - last >= interval:
            self._send_progress(run, progress, now)

    def _send_progress(self, run: Run, progress: Any, now: int) -> None:
        run.progress.last_sent_ms = now
        run.progress.dirty = False
        self._publish(TaskProgress(id=run.id, type=run.type, progress=progress))

    def save_checkpoint(self, run: Run, state: Any) -> None:
        if run.id in self.running and run.stop_reason not in FINAL_STOPS:
            run.checkpoint = state
            if self._gate.held:
                _encode_result(state)  # a bad state fails here, in the executor, not in the tick
                run.unsaved_checkpoint = True  # written by the next tick
                self._wake()
            else:
                with self._store.transaction() as tx:
                    self._store.save_checkpoint(tx, run.id, state)

    def record_io(self, run: Run, amounts: tuple[int, int, int, int]) -> None:
        self._io.record_io(run, amounts)

    async def consume_io(self, run: Run, resource: Resource, nbytes: int) -> None:
        await self._io.consume_io(run, resource, nbytes)

    async def submit_child(self, spec: TaskSpec) -> SubmitResult:
        return await self._submit(spec)

    async def progress_loop(self) -> None:
        """While tasks run: flush throttled reports and send estimates at ``progressHz``."""
        while True:
            if not self.running:
                self._progress_event = anyio.Event()
                await self._progress_event.wait()
                continue
            await self._clock.sleep(1000 / self._settings.config.progress_hz)
            now = self._clock.now_ms()
            for run in list(self.running.values()):
                if run.stop_reason is not None:
                    continue
                p = run.progress
                if p.dirty and p.last is not None:
                    self._send_progress(run, p.last, now)
                    continue
                estimate = p.estimate(now, self._durations.expected_ms(run.type))
                if estimate is not None:
                    self._send_progress(run, estimate, now)

    def statistics(self) -> dict[str, Any]:
        now = self._clock.now_ms()
        return {
            "running": len(self.running),
            "finished_unsettled": len(self.finished),
            "runs": [
                {
                    "id": r.id,
                    "type": r.type,
                    "ms": now - r.run_started,
                    "stop": r.stop_reason,
                    "io": msgspec.to_builtins(r.io),
                }
                for r in self.running.values()
            ],
        }
