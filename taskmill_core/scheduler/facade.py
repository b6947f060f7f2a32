"""The Scheduler: the public face of the core, wiring its components together.

It owns no behaviour of its own beyond the lifecycle (open, close, failure); each call goes to
the component that holds its state, one call for one:

- :mod:`.submitting` — where a submit gets written (inline, group commit, large batches);
- :mod:`.dispatcher` — where a task gets claimed (the loop and its tick);
- :mod:`.runner` — where executors run and are stopped;
- :mod:`.settle` — where a run's end becomes a state (the retry decision is
  :func:`taskmill_core.retry.decide_failure`);
- :mod:`.operations`, :mod:`.reports`, :mod:`.settings`, :mod:`.upkeep`,
  :mod:`.durability`, :mod:`.iobridge` — the rest of the house.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence, Set
from contextlib import AsyncExitStack
from os import PathLike
from typing import Any

import anyio

# anyio loads its asyncio backend on first use (~10 ms of imports): load it with this module,
# not on the event loop when the app creates its first Scheduler.
import anyio._backends._asyncio
import anyio.abc
import anyio.to_thread
import structlog

from taskmill_core.clock import Clock, SystemClock
from taskmill_core.errors import InvalidParams, ShuttingDown
from taskmill_core.events import EventBus, Subscription
from taskmill_core.executors import ExecutorFn, Registration, Registry
from taskmill_core.executors.builtin import BUILTINS
from taskmill_core.iogovernor import GovernorSettings, IoGovernor
from taskmill_core.iomonitor import Sampler
from taskmill_core.metrics import OBSERVED, HoldCounter, Metrics
from taskmill_core.progress import DurationModel
from taskmill_core.scheduler.dispatcher import Dispatcher
from taskmill_core.scheduler.durability import Durability
from taskmill_core.scheduler.iobridge import IoBridge
from taskmill_core.scheduler.operations import TaskOperations
from taskmill_core.scheduler.policystate import PolicyState
from taskmill_core.scheduler.reports import Reports
from taskmill_core.scheduler.runner import Runner
from taskmill_core.scheduler.schedules import Schedules
from taskmill_core.scheduler.settings import Settings
from taskmill_core.scheduler.settle import Settlement
from taskmill_core.scheduler.signals import Lifecycle, Wakeup, WriteGate
from taskmill_core.scheduler.submitting import Submitter
from taskmill_core.scheduler.upkeep import Upkeep
from taskmill_core.store import SqliteStore
from taskmill_core.types import (
    MAX_DURATION_MS,
    Event,
    HistoryStats,
    MetricsReport,
    Schedule,
    SchedulerConfig,
    SchedulerStatus,
    ScheduleSpec,
    SubmitResult,
    TaskInfo,
    TaskPage,
    TaskSpec,
)
from taskmill_core.validation import camel

__all__ = ["Scheduler"]

log = structlog.get_logger("taskmill.scheduler")


class Scheduler:
    """A persistent priority task scheduler over one SQLite file.

    Use it as an async context manager; leaving it closes gracefully (running tasks get
    ``close_grace_ms`` to finish, then are interrupted and go back to ``pending``).

    ``store`` replaces the SQLite store opened at ``path`` (a seam for tests: a store whose
    writes fail, or whose fsync is gated); ``event_backlog_limit`` is how many lifecycle
    events a subscriber may fall behind before new work stops starting.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        config: SchedulerConfig | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        load_entry_points: bool = True,
        close_grace_ms: int = 5000,
        io_sampler: Sampler | None = None,
        io_monitor: bool = True,
        io_settings: GovernorSettings | None = None,
        store: SqliteStore | None = None,
        event_backlog_limit: int = 10_000,
    ) -> None:
        config = config or SchedulerConfig()
        self.clock: Clock = clock or SystemClock()
        self.close_grace_ms = close_grace_ms
        self.recovered = 0
        self._load_entry_points = load_entry_points
        self._io_monitor_enabled = io_monitor
        self._store = store or SqliteStore(path, durability=config.durability)
        self._registry = Registry()
        for reg in BUILTINS:
            self._registry.add(reg)
        self._wake = Wakeup()
        self._metrics = Metrics(self.clock.now_ms())
        self._bus = EventBus(
            event_backlog_limit,
            on_drained=self._wake,
            observe=self._metrics.observe,
            observe_types=OBSERVED,
        )
        self._metrics.tally = self._bus.tally
        self._settings = Settings(self._store, config)
        self._lifecycle = Lifecycle()
        self._gate = WriteGate(self._wake)
        self._durability = Durability(self._store, self._bus, full=config.durability == "full")
        publish = self._durability.publish
        self._io = IoBridge(
            config.io,
            clock=self.clock,
            store=self._store,
            registry=self._registry,
            publish=publish,
            wake=self._wake,
            settings=io_settings,
            sampler=io_sampler,
        )
        self._policy = PolicyState(config, publish)
        durations = DurationModel()
        self._upkeep = Upkeep(
            store=self._store,
            clock=self.clock,
            gate=self._gate,
            retention=lambda: self._settings.config.retention,
        )
        self._runner = Runner(
            store=self._store,
            clock=self.clock,
            registry=self._registry,
            settings=self._settings,
            io=self._io,
            gate=self._gate,
            durations=durations,
            publish=publish,
            wake=self._wake,
            submit=self.submit,
        )
        self._settlement = Settlement(
            store=self._store,
            running=self._runner.running,
            durations=durations,
            rng=rng or random.Random(),
            on_final=self._upkeep.note_final,
        )
        self._submitter = Submitter(
            store=self._store,
            clock=self.clock,
            gate=self._gate,
            durability=self._durability,
            runner=self._runner,
            io=self._io,
            lifecycle=self._lifecycle,
            wake=self._wake,
            note_expiry=self._note_expiry,
            metrics=self._metrics,
        )
        self._schedules = Schedules(
            store=self._store,
            clock=self.clock,
            submitter=self._submitter,
            durability=self._durability,
            gate=self._gate,
            lifecycle=self._lifecycle,
            wake=self._wake,
        )
        self._dispatcher = Dispatcher(
            store=self._store,
            clock=self.clock,
            registry=self._registry,
            settings=self._settings,
            bus=self._bus,
            durability=self._durability,
            gate=self._gate,
            lifecycle=self._lifecycle,
            wake=self._wake,
            runner=self._runner,
            submitter=self._submitter,
            settlement=self._settlement,
            io=self._io,
            upkeep=self._upkeep,
            schedules=self._schedules,
            holds=HoldCounter(self._metrics),
            policy=self._policy,
        )
        self._ops = TaskOperations(
            store=self._store,
            clock=self.clock,
            settings=self._settings,
            durability=self._durability,
            gate=self._gate,
            lifecycle=self._lifecycle,
            runner=self._runner,
            io=self._io,
            wake=self._wake,
        )
        self._reports = Reports(
            store=self._store,
            settings=self._settings,
            registry=self._registry,
            runner=self._runner,
            io=self._io,
            bus=self._bus,
            policy=self._policy,
            clock=self.clock,
        )
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    def _note_expiry(self, expires_at: int) -> None:
        self._dispatcher.note_expiry(expires_at)

    @property
    def config(self) -> SchedulerConfig:
        """The settings in force (change them with :meth:`configure`)."""
        return self._settings.config

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Scheduler:
        await self.open()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()
        if self._lifecycle.failure is not None and exc is None:
            raise self._lifecycle.failure

    async def open(self, *, lift_ended_pauses: bool = True) -> None:
        """Open the database, recover interrupted work and start dispatching.

        A timed pause whose end passed while the scheduler was closed lifts at the first
        dispatch step (``scheduler.resumed``); with ``lift_ended_pauses=False`` it holds until
        :meth:`lift_ended_pauses` is called (the sidecar: after ``sidecar.ready``, so that a
        client hears of it)."""
        self._dispatcher.lift_pauses = lift_ended_pauses
        try:
            on_asyncio = asyncio.current_task() is not None
        except RuntimeError:  # not an asyncio loop (trio)
            on_asyncio = False
        await self._store.open()
        try:
            # Nothing else uses the connection yet: recovery (a scan of a large file) and
            # plugin discovery run in a worker thread instead of stalling the loop.
            await anyio.to_thread.run_sync(self._recover)
        except BaseException:
            await self._store.close()
            raise
        self._stack = AsyncExitStack()
        self._tg = tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._runner.start(tg, on_asyncio=on_asyncio)
        self._submitter.start(on_asyncio=on_asyncio)
        tg.start_soon(self._guarded, self._dispatcher.run)
        tg.start_soon(self._guarded, self._runner.progress_loop)
        tg.start_soon(self._guarded, self._upkeep.checkpoint_loop)
        if self._durability.full:
            tg.start_soon(self._guarded, self._durability.sync_loop)
        self._io.governor.configure(self.config.io)  # the persisted config was loaded
        if self._io_monitor_enabled:
            tg.start_soon(self._io.monitor_loop)
        self._upkeep.start(tg)

    def lift_ended_pauses(self) -> None:
        """Let timed pauses lift by themselves from now on (see :meth:`open`)."""
        self._dispatcher.lift_pauses = True
        self._wake()

    def _recover(self) -> None:
        self._settings.load()
        self._policy.configure(self._settings.config)  # the persisted settings
        self._submitter.type_defaults = self._policy.type_defaults
        if self._load_entry_points:
            self._registry.load_entry_points()
        with self._store.transaction() as tx:
            self.recovered = self._store.recover(tx)
        if self.recovered:
            log.info("recovered interrupted tasks", count=self.recovered)
        self._dispatcher.next_expiry = self._store.next_expiry()
        self._schedules.load()

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the scheduler's own loops; if it fails, the scheduler stops (see
        ``_fail``) instead of the failure cancelling the task that opened it."""
        try:
            await loop()
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """An internal error (a bug, a failed fsync): stop taking work, fail what waits for
        the dispatcher, and keep the error for ``failure``, ``wait_failed`` and the end of
        ``async with`` (which raises it). ``close`` then does not wait for running tasks:
        the file keeps them ``running`` and the next open requeues them."""
        if not self._lifecycle.fail(exc):
            return
        self._submitter.fail_queued(
            ShuttingDown(f"the scheduler stopped on an internal error: {exc!r}")
        )
        self._dispatcher.release_all_idle_waiters()
        self._runner.runs_empty.set()

    @property
    def announce_batches(self) -> bool:
        """Whether each :meth:`submit_batch` also publishes one
        :class:`~taskmill_core.types.TaskBatchSubmitted` naming its inserted and superseding
        tasks, before their ``task.submitted`` (off by default; the sidecar turns it on for a
        client that asked for ``events.configure {batchSubmitted: true}``)."""
        return self._submitter.announce_batches

    @announce_batches.setter
    def announce_batches(self, on: bool) -> None:
        self._submitter.announce_batches = on

    @property
    def failure(self) -> Exception | None:
        """The internal error that stopped the scheduler, if one did."""
        return self._lifecycle.failure

    async def wait_failed(self) -> Exception:
        """Wait until an internal error stops the scheduler; returns that error."""
        return await self._lifecycle.wait_failed()

    async def close(self, grace_ms: int | None = None) -> None:
        """Stop dispatching, let running tasks finish for ``grace_ms``, interrupt the rest."""
        life = self._lifecycle
        if life.closed or self._stack is None:
            return
        life.closing = True
        runner = self._runner
        grace = self.close_grace_ms if grace_ms is None else grace_ms
        deadline = self.clock.now_ms() + grace
        while runner.running and life.failure is None and self.clock.now_ms() < deadline:
            runner.runs_empty = anyio.Event()
            await self.clock.wait(runner.runs_empty, deadline)
        for run in list(runner.running.values()):
            runner.stop(run, "shutdown")
        while runner.running and not self._dispatcher.storage_failing and life.failure is None:
            runner.runs_empty = anyio.Event()
            self._wake()
            await runner.runs_empty.wait()
        life.closed = True
        self._submitter.fail_queued(
            ShuttingDown("the scheduler closed before this submit was written")
        )
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._stack.aclose()
        if self._durability.full:
            await self._durability.sync_now()
        self._bus.close()
        self._dispatcher.release_all_idle_waiters()
        await self._store.close()

    @property
    def closing(self) -> bool:
        return self._lifecycle.closing

    # --- settings ----------------------------------------------------------------------

    async def configure(self, **changes: Any) -> SchedulerConfig:
        """Change settings (snake_case or camelCase names); persisted, effective at once.

        Each given setting replaces the old value whole: ``io={"disk_write_bps": 10e6}`` drops
        any other budget. ``None`` means "leave this setting as it is" — except for the
        scheduling policy settings (``rate_limits``, ``aging``, ``fair_share``, ``throttle``,
        ``type_defaults``), where it removes the setting (``throttle``: the default tiers).
        """
        await self._gate.wait_open()
        new = self._settings.change(changes)
        if any(camel(name) == "io" for name in changes):
            self._io.governor.configure(new.io)
        self._policy.configure(new)
        self._policy.retier(self.clock.now_ms())
        self._submitter.type_defaults = self._policy.type_defaults
        self._wake()
        await self._durability.wait()
        return new

    # --- executors ---------------------------------------------------------------------

    def register(
        self,
        task_type: str,
        fn: ExecutorFn,
        *,
        concurrency: int | None = None,
        builtin: bool = False,
        paced: bool = False,
    ) -> None:
        """Run tasks of ``task_type`` with ``fn``; pending tasks of that type become runnable.

        ``builtin`` marks an executor the host application provides itself (the sidecar's
        file and network executors): clients cannot register over it. ``paced``: ``fn``
        draws its bytes through ``ctx.consume_io``, so the IO governor charges only a first
        chunk when it starts and paces the rest.
        """
        self._registry.add(Registration(task_type, fn, concurrency, builtin, paced))
        self._wake()

    def unregister(self, task_type: str) -> None:
        """Stop dispatching ``task_type``; its pending tasks stay pending."""
        self._registry.remove(task_type)

    def load_plugin(self, module: str) -> list[str]:
        """Import ``module`` and register its ``@executor`` functions."""
        types = self._registry.load_module(module)
        self._wake()
        return types

    def executor_types(self) -> list[str]:
        return self._registry.types()

    def is_builtin(self, task_type: str) -> bool:
        reg = self._registry.get(task_type)
        return reg is not None and reg.builtin

    # --- submit (the hot path: each returns the submitter's coroutine, no extra frame) -----

    def submit(
        self, spec: TaskSpec, *, validated: bool = False, given: Set[str] | None = None
    ) -> Awaitable[SubmitResult]:
        """Submit one task; returns its id and the dedup outcome (PROTOCOL.md).

        Type defaults (the ``type_defaults`` setting) fill the fields the submit left out.
        ``given`` names the fields it set (Python names: ``priority``, ``max_retries``,
        ``backoff``, ``timeout_ms``, ``ttl_ms``, ``group``, ``io_cost``); without it, a
        field counts as set when it is not at its global default (``priority`` 128,
        ``max_retries`` 3, None) — pass ``given={"priority"}`` to keep 128 against a type's
        default.
        """
        return self._submitter.submit(spec, validated=validated, given=given)

    def submit_many(
        self,
        specs: Sequence[TaskSpec],
        *,
        validated: bool = False,
        given: Sequence[Set[str] | None] | None = None,
    ) -> Awaitable[list[SubmitResult | Exception]]:
        """Submit each spec on its own, as if by concurrent :meth:`submit` calls.

        Unlike :meth:`submit_batch` this is not all-or-nothing: each entry of the result is
        that spec's :class:`SubmitResult`, or the exception its ``submit`` would have raised.
        A few (up to ``INLINE_SUBMIT``) are written at once, like a lone submit; more go to
        the dispatcher's next ticks and share one wake-up, which makes this the cheap way
        to hand over many independent requests at once (the sidecar uses it for pipelined
        ``task.submit`` requests).
        """
        return self._submitter.submit_many(specs, validated=validated, given=given)

    def submit_batch(
        self,
        specs: Sequence[TaskSpec],
        *,
        validated: bool = False,
        given: Sequence[Set[str] | None] | None = None,
    ) -> Awaitable[list[SubmitResult]]:
        """Submit many tasks in one transaction: all are accepted, or none is."""
        return self._submitter.submit_batch(specs, validated=validated, given=given)

    # --- operations on tasks -----------------------------------------------------------

    async def get(self, task_id: int) -> TaskInfo:
        return self._reports.get(task_id)

    async def list_tasks(
        self,
        *,
        state: str | Sequence[str] | None = None,
        type: str | None = None,
        group: str | None = None,
        tags: dict[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
        dedup_key: str | None = None,
        parent_id: int | None = None,
    ) -> TaskPage:
        """Tasks, newest first, filtered; page with ``cursor``."""
        return await self._reports.list_tasks(
            state=state,
            type=type,
            group=group,
            tags=tags,
            limit=limit,
            cursor=cursor,
            dedup_key=dedup_key,
            parent_id=parent_id,
        )

    async def lookup(self, type: str, dedup_key: str) -> TaskInfo:
        """The task with this dedup key: the active one, else the final one that finished
        last (ties: the higher id); :class:`~taskmill_core.errors.TaskNotFound` if none.
        "Was this file already uploaded?" """
        return self._reports.lookup(type, dedup_key)

    async def cancel(self, task_id: int) -> None:
        """Cancel an active task (and its active children); a running executor is stopped."""
        await self._ops.cancel(task_id)

    async def cancel_many(
        self,
        *,
        type: str | None = None,
        group: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> int:
        return await self._ops.cancel_many(type=type, group=group, tags=tags)

    async def set_priority(self, task_id: int, priority: int | str) -> TaskInfo:
        return await self._ops.set_priority(task_id, priority)

    async def pause(self, task_id: int) -> TaskInfo:
        """Pause one task: a pending one waits, a running one is interrupted (no retry used)."""
        return await self._ops.pause(task_id)

    async def resume(self, task_id: int) -> TaskInfo:
        return await self._ops.resume(task_id)

    async def retry(self, task_id: int) -> SubmitResult:
        """Run a failed or dead-lettered task again: same id, attempt 0."""
        return await self._ops.retry(task_id)

    async def pause_all(
        self,
        *,
        group: str | None = None,
        type: str | None = None,
        until: int | None = None,
        for_ms: int | None = None,
    ) -> None:
        """Pause dispatching globally, or of one group or task type; persisted.

        Timed: ``until`` (epoch ms, in the future) or ``for_ms`` (not both) — the pause
        lifts by itself then (``scheduler.resumed``), also across a restart. Pausing a
        paused scope again replaces its end (none: until resumed).
        """
        await self._ops.pause_all(group=group, type=type, until_at=until, for_ms=for_ms)

    async def resume_all(self, *, group: str | None = None, type: str | None = None) -> None:
        """Lift the pause of exactly that scope."""
        await self._ops.resume_all(group=group, type=type)

    # --- recurring schedules ------------------------------------------------------------

    async def schedule(
        self,
        task: TaskSpec,
        *,
        every_ms: int | None = None,
        cron: str | None = None,
        timezone: str | None = None,
        start_at: int | None = None,
        max_runs: int | None = None,
        name: str | None = None,
    ) -> Schedule:
        """Submit ``task`` again and again: every ``every_ms`` from ``start_at`` (default: now +
        ``every_ms``), or at the times of the five-field ``cron`` expression in the IANA
        ``timezone`` (default: the machine's zone). A firing is skipped while the task of the
        previous one is still active; firings missed while closed collapse into one.
        ``max_runs`` ends it after that many submitted tasks; ``name`` (unique) names it.
        """
        return await self.create_schedule(
            ScheduleSpec(
                task=task,
                every_ms=every_ms,
                cron=cron,
                timezone=timezone,
                start_at=start_at,
                max_runs=max_runs,
                name=name,
            )
        )

    async def create_schedule(self, spec: ScheduleSpec) -> Schedule:
        """:meth:`schedule` with its arguments as one :class:`ScheduleSpec` (the wire's)."""
        return await self._schedules.create(spec)

    async def schedules(self) -> list[Schedule]:
        """Every schedule, by id."""
        return self._schedules.list()

    async def get_schedule(self, ref: int | str) -> Schedule:
        """The schedule with that id (int) or name (str); ``ScheduleNotFound`` otherwise."""
        return self._schedules.resolve(ref)

    async def pause_schedule(self, ref: int | str) -> Schedule:
        """Stop a schedule firing until :meth:`resume_schedule`; persisted."""
        return await self._schedules.pause(ref)

    async def resume_schedule(self, ref: int | str) -> Schedule:
        """Fire again from the schedule's first time after now (none for the paused time)."""
        return await self._schedules.resume(ref)

    async def delete_schedule(self, ref: int | str) -> None:
        """Remove a schedule; the tasks it submitted stay."""
        await self._schedules.delete(ref)

    # --- host pressure ---------------------------------------------------------------------

    def set_pressure(self, source: str, level: float, ttl_ms: int = 60_000) -> None:
        """Report the host's pressure from ``source`` (0..1; 0 removes it), live for
        ``ttl_ms``. The level is the maximum of the live sources; while it reaches a throttle
        tier's level, tasks of that tier's priority or less urgent do not start (running
        tasks go on). Not persisted. ``scheduler.pressure`` is published when the tiers in
        force change."""
        if not 1 <= len(source) <= 64:
            raise InvalidParams("source must be 1 to 64 characters", "$.source")
        if not 0 <= level <= 1:
            raise InvalidParams("level must be in 0..1", "$.level")
        if not 1 <= ttl_ms <= MAX_DURATION_MS:
            raise InvalidParams("ttlMs must be at least 1", "$.ttlMs")
        self._policy.set_pressure(source, level, ttl_ms, self.clock.now_ms())
        self._wake()

    @property
    def held(self) -> dict[int, str]:
        """Why each candidate the last dispatch step held back waits, by task id
        (``rateLimited``, ``throttled``, ``ioDeferred``, ``groupLimit``, ``typeLimit``)."""
        return dict(self._dispatcher.held)

    # --- status and history -------------------------------------------------------------

    async def status(self) -> SchedulerStatus:
        return await self._reports.status()

    async def metrics(self) -> MetricsReport:
        """Counters since the scheduler opened and gauges now (``scheduler.metrics``)."""
        return self._metrics.report(await self._store.counts())

    @property
    def counters(self) -> Metrics:
        """The metrics' counters and their seam (``count(name, n)``), for the parts of the
        host that decide what they count."""
        return self._metrics

    async def history_stats(self, task_type: str | None = None) -> HistoryStats:
        return await self._reports.history_stats(task_type)

    async def prune(self, *, older_than_ms: int | None = None, keep: int | None = None) -> int:
        """Remove final tasks older than ``older_than_ms`` or beyond the newest ``keep``.

        Without arguments, the configured retention applies.
        """
        removed = await self._upkeep.prune(older_than_ms=older_than_ms, keep=keep)
        await self._durability.wait()
        return removed

    # --- events ------------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """A queue of every event from now on; iterate it, ``close()`` it when done."""
        return self._bus.subscribe()

    async def events(self) -> AsyncIterator[Event]:
        """Every event from now on, as typed Structs (the same events as the wire)."""
        sub = self._bus.subscribe()
        try:
            async for event in sub:
                yield event
        finally:
            sub.close()

    async def wait_idle(self) -> None:
        """Return when no task is running and none is ready to run now.

        Tasks that cannot run now — delayed, paused, of a type no executor handles, or of
        a type or group whose rate bucket is empty — do not count.
        """
        if self._lifecycle.closed:
            return
        self._lifecycle.check_failed()
        await self._dispatcher.wait_idle()
        self._lifecycle.check_failed()

    # --- IO and diagnostics ----------------------------------------------------------------

    @property
    def io_governor(self) -> IoGovernor:
        """The IO governor (admission, pacing, learned capacity and costs)."""
        return self._io.governor

    def statistics(self) -> dict[str, Any]:
        """Counters for tests and diagnostics (cheap; no database read)."""
        return {
            "running": len(self._runner.running),
            "subscribers_backlog": self._bus.backlog(),
            "events_published": self._bus.published,
            "ticks": self._dispatcher.ticks,
            "queued_submits": len(self._submitter.queue),
            "waiting_for_turn": self._submitter.waiting_for_turn,
            "writes_held": self._gate.held,
            "dispatch_pending": self._wake.pending,
        }

    def debug_state(self) -> dict[str, Any]:
        """What the dispatcher and the IO governor hold right now, for a diagnostic dump."""
        return {
            **self.statistics(),
            **self._runner.statistics(),
            "paused": self._settings.pauses.paused,
            "bus_saturated": self._bus.saturated,
            **self._reports.io_state(),
        }

    def __repr__(self) -> str:
        return (
            f"Scheduler({str(self._store.path)!r}, running={len(self._runner.running)}, "
            f"max_concurrency={self.config.max_concurrency})"
        )
