"""The scheduler: the async shell that performs what the store records and dispatch decides.

One dispatch loop does all the writing that follows from executors finishing: each wake-up
runs one *tick* — settle every run that ended since the last tick, expire overdue tasks, ask
:func:`~taskmill_core.dispatch.decide` what to start and preempt, claim those tasks — all in
one SQLite transaction (group commit), then publishes the events and starts the runners. The
loop sleeps until something happens (submit, completion, config change) or the next timer
(delayed task, retry, expiry, timeout, preemption eligibility); it never polls when idle.

Submits are written synchronously in the caller's task: a short transaction is cheaper than
any hand-off, and the caller learns the outcome from the database itself.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import anyio

# anyio loads its asyncio backend on first use (~10 ms of imports): load it with this module,
# not on the event loop when the app creates its first Scheduler.
import anyio._backends._asyncio
import anyio.lowlevel
import anyio.to_thread
import msgspec
import structlog

from taskmill_core.clock import Clock, SystemClock
from taskmill_core.context import TaskContext
from taskmill_core.dispatch import Candidate, Limits, RunningTask, decide
from taskmill_core.errors import (
    ExecutorError,
    InvalidParams,
    InvalidState,
    PermanentError,
    RetryableError,
    ShuttingDown,
    StorageError,
    TaskNotFound,
)
from taskmill_core.events import EventBus, Subscription
from taskmill_core.executors import ExecutorFn, Registration, Registry
from taskmill_core.executors.builtin import BUILTINS
from taskmill_core.iogovernor import GovernorSettings, IoGovernor
from taskmill_core.iomonitor import RESOURCES, IoMonitor, IoSample, Resource, Sampler
from taskmill_core.progress import DurationModel, RunProgress
from taskmill_core.retry import DEFAULT_BACKOFF, backoff_delay_ms
from taskmill_core.store import (
    Follow,
    Prepared,
    Ready,
    SqliteStore,
    Started,
    Submitted,
    Tx,
    prepare,
)
from taskmill_core.types import (
    MAX_SAFE_INT,
    ErrorInfo,
    Event,
    HistoryStats,
    IoBytes,
    SchedulerConfig,
    SchedulerPaused,
    SchedulerResumed,
    SchedulerStatus,
    SubmitResult,
    TaskCancelled,
    TaskCompleted,
    TaskExpired,
    TaskFailed,
    TaskInfo,
    TaskPage,
    TaskPreempted,
    TaskProgress,
    TaskSpec,
    TaskStarted,
    TaskSubmitted,
    TaskSuperseded,
    TaskUpdated,
    TypeStats,
)

__all__ = ["MAX_BATCH", "Scheduler"]

log = structlog.get_logger("taskmill.scheduler")

MAX_BATCH = 10_000
# A quarter second of budget per bucket: tokens saved while writers stall (fsync) may be spent
# at once, so the bucket size bounds how far one second can overshoot the budget.
DESKTOP_IO_SETTINGS = GovernorSettings(burst_s=0.25)
INLINE_SUBMIT = 16  # submits up to this many tasks are written inline (see _commit)
BATCH_CHUNK = 100  # larger batches are written this many per loop turn (_commit_large)
YIELD_AFTER_S = 0.001
BATCH_YIELD_S = 0.0005  # a large batch yields this often (see _Yielder)
TICK_SUBMITS = 32  # queued submits one tick writes at most (see _take_submits)
QUEUE_PER_TURN = 16  # submits queued in one loop turn before later callers wait a turn
PRUNE_EVERY = 1000
STORAGE_RETRY_MS = 500  # after a tick could not write (disk full, I/O error): first retry
STORAGE_RETRY_MAX_MS = 30_000  # ... doubling up to this
CHECKPOINT_EVERY_S = 1.0  # how often the WAL is folded into the database while writes go on
WAL_CATCH_UP_PAGES = 2048  # past this, writes are held to let the WAL start over
PRUNE_BATCH = 500
_PAUSES_KEY = "pauses"
_CONFIG_KEY = "config"
IO_WINDOW = 256  # while IO-heavy work is deferred, dispatch looks this far down the queue
IO_RETRY_MS = 1000  # deferred work waiting for a release, not tokens, is re-checked this often
_decode_backoff = msgspec.json.Decoder(DEFAULT_BACKOFF.__class__).decode
_decode_io = msgspec.json.Decoder(IoBytes).decode


class _Pauses(msgspec.Struct):
    paused: bool = False
    groups: list[str] = msgspec.field(default_factory=list)
    types: list[str] = msgspec.field(default_factory=list)


def _validation_path(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    marker = " - at `"
    if marker in text:
        return text.rsplit(marker, 1)[1].rstrip("`")
    return "$"


_encode_result = msgspec.json.Encoder().encode


def _check_spec(spec: TaskSpec) -> TaskSpec:
    """Enforce the declared constraints on a spec built in Python (decoding already does)."""
    try:
        return msgspec.convert(msgspec.to_builtins(spec), TaskSpec)
    except msgspec.ValidationError as exc:
        raise InvalidParams(str(exc).split(" - at `")[0], _validation_path(exc)) from None
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidParams(f"payload is not JSON-serializable: {exc}", "$.payload") from None


@dataclass(eq=False)
class _Step:
    """What one tick did, gathered inside the transaction, acted on after the commit."""

    events: list[Event] = field(default_factory=list)
    follow: Follow = field(default_factory=Follow)
    started: list[Started] = field(default_factory=list)
    preempt: list[tuple[int, int]] = field(default_factory=list)
    wake_at: int | None = None
    candidates_found: bool = False
    io_deferred: int = 0


class _Countdown:
    """Set once it has been set ``count`` times: one wake-up for a group of submits that
    ticks may write in several parts."""

    __slots__ = ("_event", "_left")

    def __init__(self, count: int) -> None:
        self._left = count
        self._event = anyio.Event()

    def set(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


class _Yielder:
    """Lets a long piece of work on the loop yield once it has held the loop for
    ``BATCH_YIELD_S``: often enough that nothing waits long, rarely enough that the work
    is not spread over hundreds of loop turns (each of which may run a dispatch tick)."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since = time.perf_counter()

    async def __call__(self, *, force: bool = False) -> None:
        if force or time.perf_counter() - self._since > BATCH_YIELD_S:
            await anyio.lowlevel.checkpoint()
            self._since = time.perf_counter()


@dataclass(eq=False)
class _PendingSubmit:
    prepared: list[Prepared]
    now: int
    done: anyio.Event | _Countdown = field(default_factory=anyio.Event)
    results: list[Submitted] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(eq=False)
class _Run:
    """One run of one task, in memory while it lasts."""

    id: int
    type: str
    priority: int
    group: str | None
    attempt: int
    max_retries: int
    backoff: bytes | None
    timeout_ms: int | None
    checkpoint: Any
    payload: Any
    run_started: int
    progress: RunProgress
    io: IoBytes = field(default_factory=IoBytes)
    scope: anyio.CancelScope | None = None  # its worker's scope, while the executor runs
    stop_reason: str | None = None
    stop_for: int | None = None
    stop_deadline: int | None = None
    abandoned: bool = False
    unsaved_checkpoint: bool = False
    io_held: bool = False  # the IO governor admitted it (holds its expected bytes)
    result_json: bytes = b"null"  # what a successful run returned, encoded
    info: TaskInfo | None = None  # read when the executor first asks (TaskContext.task)

    @property
    def timeout_at(self) -> int | None:
        return None if self.timeout_ms is None else self.run_started + self.timeout_ms


class Scheduler:
    """A persistent priority task scheduler over one SQLite file.

    Use it as an async context manager; leaving it closes gracefully (running tasks get
    ``close_grace_ms`` to finish, then are interrupted and go back to ``pending``).
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
    ) -> None:
        self.config = config or SchedulerConfig()
        self.clock: Clock = clock or SystemClock()
        self.close_grace_ms = close_grace_ms
        self._rng = rng or random.Random()
        self._store = SqliteStore(path, durability=self.config.durability)
        self._registry = Registry()
        for reg in BUILTINS:
            self._registry.add(reg)
        self._load_entry_points = load_entry_points
        self._bus = EventBus(on_drained=self._wake)
        # Durability "full": nothing is acknowledged (a submit's return, an event) before the
        # WAL holding it is fsynced, and the fsync runs in a worker thread (_sync_loop).
        self._full = self.config.durability == "full"
        self._synced = 0  # store commits covered by the last completed fsync
        self._held: list[Event] = []  # events waiting for that fsync, in order
        self._after_sync: list[Callable[[], None]] = []
        self._sync_wanted = anyio.Event()
        self._running: dict[int, _Run] = {}
        self._finished: list[tuple[_Run, str, Any]] = []
        self._submits: list[_PendingSubmit] = []
        self._run_queue: deque[tuple[_Run, ExecutorFn]] = deque()
        # Idle workers wait on a future each (an asyncio future is a few times cheaper than
        # an anyio Event; on another backend, an anyio Event).
        self._idle_workers: deque[asyncio.Future[None] | anyio.Event] = deque()
        self._on_asyncio = True
        self._loop_turned = 0.0  # when the dispatcher last ran (see _commit)
        # Set while nothing else may write: a large batch's transaction spans several loop
        # turns (_commit_large), a WAL catch-up needs the writes stopped (_maintenance_loop).
        self._writes_held = False
        self._writes_released = anyio.Event()
        self._inline_turn = -1.0
        self._inline_task = -1
        self._queued_this_turn = 0  # submits queued in this loop turn (see _turn_slot)
        self._turn_waiters: deque[asyncio.Future[None]] = deque()
        self._pauses = _Pauses()
        self._durations = DurationModel()
        self._wake_event = anyio.Event()
        self._woken = False
        self._progress_event = anyio.Event()
        self._dirty_event = anyio.Event()  # something was written: a checkpoint is due
        self._storage_failing = False  # the last tick could not write (see _dispatch_loop)
        self._failure: Exception | None = None  # the internal error that stopped it (_fail)
        self._failed = anyio.Event()
        self._changes_seen = 0
        self._runs_empty = anyio.Event()
        self._idle_waiters: list[tuple[int, anyio.Event]] = []
        self._tick_no = 0
        self._next_expiry: int | None = None
        self._finals_since_prune = 0
        self._pruning = False
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._closed = False
        self.recovered = 0
        # IO: the governor decides admission and pacing; the monitor (psutil by default, or
        # ``io_sampler``) feeds it about once a second on the scheduler's clock.
        self._gov = IoGovernor(
            self.config.io, clock=self.clock, settings=io_settings or DESKTOP_IO_SETTINGS
        )
        self._io_sampler = io_sampler
        self._io_monitor_enabled = io_monitor
        self._io_monitor: IoMonitor | None = None
        self._io_types_seen: set[str] = set()
        self._io_admitted: set[int] = set()  # admitted in this tick, not launched yet
        self._io_pressure_on = False

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Scheduler:
        await self.open()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        await self.close()
        if self._failure is not None and exc is None:
            raise self._failure

    async def open(self) -> None:
        """Open the database, recover interrupted work and start dispatching."""
        try:
            self._on_asyncio = asyncio.current_task() is not None
        except RuntimeError:  # not an asyncio loop (trio)
            self._on_asyncio = False
        await self._store.open()
        try:
            # Nothing else uses the connection yet: recovery (a scan of a large file) and
            # plugin discovery run in a worker thread instead of stalling the loop.
            await anyio.to_thread.run_sync(self._prepare)
        except BaseException:
            await self._store.close()
            raise
        self._stack = AsyncExitStack()
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(self._guarded, self._dispatch_loop)
        self._tg.start_soon(self._guarded, self._progress_loop)
        self._tg.start_soon(self._guarded, self._maintenance_loop)
        if self._full:
            self._tg.start_soon(self._guarded, self._sync_loop)
        self._gov.configure(self.config.io)  # the persisted config was loaded by _prepare
        if self._io_monitor_enabled:
            self._tg.start_soon(self._io_loop)
        self._pruning = True
        self._tg.start_soon(self._prune_some)

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
        if self._failure is not None:
            return
        log.error("the scheduler stopped on an internal error", error=repr(exc), exc_info=exc)
        self._failure = exc
        self._closing = True
        for ps in self._submits:
            ps.error = ShuttingDown(f"the scheduler stopped on an internal error: {exc!r}")
            ps.done.set()
        self._submits = []
        waiters, self._idle_waiters = self._idle_waiters, []
        for _, ev in waiters:
            ev.set()
        self._runs_empty.set()
        self._failed.set()

    @property
    def failure(self) -> Exception | None:
        """The internal error that stopped the scheduler, if one did."""
        return self._failure

    async def wait_failed(self) -> Exception:
        """Wait until an internal error stops the scheduler; returns that error."""
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    def _task_id(self) -> int:
        """Identity of the running task (cheap on asyncio, the sidecar's loop)."""
        if self._on_asyncio:
            return id(asyncio.current_task())
        return anyio.get_current_task().id

    def _prepare(self) -> None:
        self._load_settings()
        if self._load_entry_points:
            self._registry.load_entry_points()
        with self._store.transaction() as tx:
            self.recovered = self._store.recover(tx)
        if self.recovered:
            log.info("recovered interrupted tasks", count=self.recovered)
        self._next_expiry = self._store.next_expiry()

    async def close(self, grace_ms: int | None = None) -> None:
        """Stop dispatching, let running tasks finish for ``grace_ms``, interrupt the rest."""
        if self._closed or self._stack is None:
            return
        self._closing = True
        grace = self.close_grace_ms if grace_ms is None else grace_ms
        deadline = self.clock.now_ms() + grace
        while self._running and self._failure is None and self.clock.now_ms() < deadline:
            self._runs_empty = anyio.Event()
            await self.clock.wait(self._runs_empty, deadline)
        for run in list(self._running.values()):
            self._stop(run, "shutdown")
        while self._running and not self._storage_failing and self._failure is None:
            self._runs_empty = anyio.Event()
            self._wake()
            await self._runs_empty.wait()
        self._closed = True
        for ps in self._submits:
            ps.error = ShuttingDown("the scheduler closed before this submit was written")
            ps.done.set()
        self._submits = []
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._stack.aclose()
        if self._full:
            await self._sync_now()
        self._bus.close()
        for _, ev in self._idle_waiters:
            ev.set()
        await self._store.close()

    @property
    def closing(self) -> bool:
        return self._closing

    # --- settings ----------------------------------------------------------------------

    def _load_settings(self) -> None:
        raw = self._store.get_setting(_PAUSES_KEY)
        if raw is not None:
            self._pauses = msgspec.json.decode(raw, type=_Pauses)
        raw = self._store.get_setting(_CONFIG_KEY)
        if raw is not None:
            stored = msgspec.json.decode(raw)
            merged = msgspec.to_builtins(self.config)
            merged.update(stored)
            # durability is how this process opened the file, not a persisted choice
            merged["durability"] = self.config.durability
            self.config = msgspec.convert(merged, SchedulerConfig)

    def _save_pauses(self) -> None:
        with self._store.transaction() as tx:
            self._store.put_setting(tx, _PAUSES_KEY, msgspec.json.encode(self._pauses))

    async def configure(self, **changes: Any) -> SchedulerConfig:
        """Change settings (snake_case or camelCase names); persisted, effective at once.

        Each given setting replaces the old value whole: ``io={"disk_write_bps": 10e6}`` drops
        any other budget. ``None`` means "leave this setting as it is".
        """
        await self._writes_allowed()
        current = msgspec.to_builtins(self.config)
        persisted = msgspec.json.decode(self._store.get_setting(_CONFIG_KEY) or b"{}")
        for name, value in changes.items():
            if value is None:
                continue
            key = _camel(name)
            if key == "durability":
                raise InvalidParams("durability is chosen when the database is opened", "$")
            if isinstance(value, msgspec.Struct):
                value = msgspec.to_builtins(value)
            # A given object replaces the setting whole (io, retention, groupLimits), so a
            # budget or limit is removed by leaving it out.
            current[key] = value
            persisted[key] = value
        try:
            new = msgspec.convert(current, SchedulerConfig)
        except msgspec.ValidationError as exc:
            raise InvalidParams(str(exc).split(" - at `")[0], _validation_path(exc)) from None
        self.config = new
        with self._store.transaction() as tx:
            self._store.put_setting(tx, _CONFIG_KEY, msgspec.json.encode(persisted))
        if any(_camel(name) == "io" for name in changes):
            self._gov.configure(new.io)
        self._wake()
        await self._durable()
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

    # --- submit ------------------------------------------------------------------------

    async def _writes_allowed(self) -> None:
        """Wait while writes are held (a large batch's transaction, a WAL catch-up)."""
        while self._writes_held:
            await self._writes_released.wait()

    @asynccontextmanager
    async def _holding_writes(self) -> AsyncIterator[None]:
        """Hold every other write until the block ends: the dispatcher skips its ticks,
        writes wait in ``_writes_allowed``, single submits queue for the next tick and
        executors' checkpoints are kept until then."""
        await self._writes_allowed()
        self._writes_held = True
        self._writes_released = anyio.Event()
        try:
            yield
        finally:
            self._writes_held = False
            self._writes_released.set()
            self._wake()

    def _check_failed(self) -> None:
        if self._failure is not None:
            raise ShuttingDown(f"the scheduler stopped on an internal error: {self._failure!r}")

    def _check_open(self) -> None:
        self._check_failed()
        if self._closing:
            raise ShuttingDown("the scheduler is shutting down")

    async def submit(self, spec: TaskSpec, *, validated: bool = False) -> SubmitResult:
        """Submit one task; returns its id and the dedup outcome (PROTOCOL.md)."""
        if self._turn_waiters or self._queued_this_turn >= QUEUE_PER_TURN:
            await self._turn_slot()
        self._check_open()
        if not validated:
            spec = _check_spec(spec)
        now = self.clock.now_ms()
        p = prepare(spec, now)
        (res,) = await self._commit([p], now)
        info = res.info if res.info is not None else self._store.get(res.id)
        return SubmitResult(res.id, res.outcome, self._with_progress(info))

    async def submit_many(
        self, specs: Sequence[TaskSpec], *, validated: bool = False
    ) -> list[SubmitResult | Exception]:
        """Submit each spec on its own, as if by concurrent :meth:`submit` calls.

        Unlike :meth:`submit_batch` this is not all-or-nothing: each entry of the result is
        that spec's :class:`SubmitResult`, or the exception its ``submit`` would have raised.
        A few (up to ``INLINE_SUBMIT``) are written at once, like a lone submit; more go to
        the dispatcher's next ticks and share one wake-up, which makes this the cheap way
        to hand over many independent requests at once (the sidecar uses it for pipelined
        ``task.submit`` requests).
        """
        self._check_open()
        now = self.clock.now_ms()
        outcomes: list[SubmitResult | Exception | None] = [None] * len(specs)
        prepared: list[tuple[int, Prepared]] = []
        for i, spec in enumerate(specs):
            try:
                prepared.append((i, prepare(spec if validated else _check_spec(spec), now)))
            except Exception as exc:
                outcomes[i] = exc
        done = _Countdown(len(prepared))
        queued = [(i, _PendingSubmit([p], now, done)) for i, p in prepared]
        if queued and len(queued) <= INLINE_SUBMIT and not self._submits and not self._writes_held:
            # A few requests (an interactive client): written at once, like a lone submit,
            # so that a request the client sends next sees them.
            follow = Follow()
            with self._store.transaction() as tx:
                self._write_submits(tx, [ps for _, ps in queued], follow)
            for _, ps in queued:
                if ps.error is None:
                    self._after_submit(ps.prepared, ps.results)
            self._publish_follow(follow)
            await self._durable()
        elif queued:
            self._submits.extend(ps for _, ps in queued)
            self._wake()
            with anyio.CancelScope(shield=True):  # once queued, each is committed or fails
                await done.wait()
        for i, ps in queued:
            if ps.error is not None:
                outcomes[i] = (
                    ps.error if isinstance(ps.error, Exception) else RuntimeError(str(ps.error))
                )
                continue
            (res,) = ps.results
            info = res.info if res.info is not None else self._store.get(res.id)
            outcomes[i] = SubmitResult(res.id, res.outcome, self._with_progress(info))
        return [o for o in outcomes if o is not None]

    async def submit_batch(
        self, specs: Sequence[TaskSpec], *, validated: bool = False
    ) -> list[SubmitResult]:
        """Submit many tasks in one transaction: all are accepted, or none is."""
        self._check_open()
        if len(specs) > MAX_BATCH:
            raise InvalidParams(f"a batch holds at most {MAX_BATCH} tasks", "$.tasks")
        now = self.clock.now_ms()
        prepared: list[Prepared] = []
        pause = _Yielder()  # a large batch must not hold the loop
        for i, spec in enumerate(specs):
            if i and i % BATCH_CHUNK == 0:
                await pause()
            try:
                prepared.append(prepare(spec if validated else _check_spec(spec), now))
            except InvalidParams as exc:
                exc.path = exc.data["path"] = f"$.tasks[{i}]" + exc.path[1:]
                exc.data["index"] = i
                raise
            except Exception as exc:
                if hasattr(exc, "data"):
                    exc.data["index"] = i
                raise
        results = await self._commit(prepared, now, pause)
        out: list[SubmitResult] = []
        for start in range(0, len(results), BATCH_CHUNK):
            if start:
                await pause()  # 10,000 results take milliseconds to build
            out += [SubmitResult(r.id, r.outcome) for r in results[start : start + BATCH_CHUNK]]
        # ... and milliseconds to free, all at once when this frame ends: free them in steps.
        # (A small batch does not yield here: its answer comes before its tasks start.)
        while len(results) > BATCH_CHUNK:
            await pause()
            del results[-BATCH_CHUNK:], prepared[-BATCH_CHUNK:]
        return out

    async def _commit(
        self, prepared: list[Prepared], now: int, pause: _Yielder | None = None
    ) -> list[Submitted]:
        """Write a submit: inline when it is small and nothing is queued, else group commit.

        A single submit is one short transaction right here (tens of microseconds; a hand-off
        to the dispatcher would cost more than the write). So that a loop of such submits
        cannot hold the event loop, the caller yields once the loop has not turned for
        ``YIELD_AFTER_S``; the dispatcher then claims what accumulated in one tick.

        Larger batches, and submits from several tasks at once, go to the next tick,
        which commits every queued submit together with that tick's completions and claims.
        The wait is shielded: once queued, a submit is either committed or fails as a whole,
        whatever happens to the caller.
        """
        me = self._task_id()
        if self._inline_turn != self._loop_turned:
            self._inline_turn, self._inline_task = self._loop_turned, me
        alone = self._inline_task == me  # no other task submitted since the loop last turned
        if len(prepared) > BATCH_CHUNK:
            return await self._commit_large(prepared, now, pause or _Yielder())
        if len(prepared) <= INLINE_SUBMIT and alone and not self._submits and not self._writes_held:
            follow = Follow()
            results = self._store.submit(prepared, now, follow)
            self._after_submit(prepared, results)
            self._publish_follow(follow)
            if self._full:
                await self._durable()
            elif time.perf_counter() - self._loop_turned > YIELD_AFTER_S:
                await anyio.lowlevel.checkpoint()
            return results
        pending = _PendingSubmit(prepared, now)
        self._submits.append(pending)
        self._wake()
        if self._on_asyncio:
            if not self._queued_this_turn:
                asyncio.get_running_loop().call_soon(self._new_turn)
            self._queued_this_turn += 1
        with anyio.CancelScope(shield=True):
            await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.results

    async def _turn_slot(self) -> None:
        """Wait, in line, for a loop turn with room for one more queued submit.

        Hundreds of callers submitting in the same loop turn (a gather, a burst of requests)
        would hold the loop for milliseconds; past ``QUEUE_PER_TURN`` they wait here (at no
        cost per turn) and are let through that many per turn, in order.
        """
        fut = asyncio.get_running_loop().create_future()
        self._turn_waiters.append(fut)
        if not self._queued_this_turn:  # nothing else will start the next turn
            self._queued_this_turn = 1
            asyncio.get_running_loop().call_soon(self._new_turn)
        try:
            await fut
        finally:
            fut.cancel()  # (no-op once let through; else _new_turn skips it)

    def _new_turn(self) -> None:
        """A new loop turn: let the next waiting submitters through (see _turn_slot)."""
        self._queued_this_turn = 0
        waiters = self._turn_waiters
        while waiters and self._queued_this_turn < QUEUE_PER_TURN:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._queued_this_turn += 1
        if self._queued_this_turn:
            asyncio.get_running_loop().call_soon(self._new_turn)

    async def _commit_large(
        self, prepared: list[Prepared], now: int, pause: _Yielder
    ) -> list[Submitted]:
        """One transaction for a large batch, written ``BATCH_CHUNK`` entries at a time,
        yielding to the loop every ``BATCH_YIELD_S`` and around the COMMIT.

        While it is open nothing else may write through the connection (``_holding_writes``).
        Any failure (or the caller's cancellation) rolls the whole batch back. Once it is
        committed, the tasks are announced (``task.submitted``), also over several loop
        turns, before the dispatcher may start any of them: an urgent task at the end of the
        batch must not start before its announcement.
        """
        follow = Follow()
        results: list[Submitted] = []
        async with self._holding_writes():
            with self._store.transaction() as tx:
                for start in range(0, len(prepared), BATCH_CHUNK):
                    chunk = prepared[start : start + BATCH_CHUNK]
                    results += self._store.submit_in(tx, chunk, now, follow, index_base=start)
                    await pause()
                await pause(force=True)  # the COMMIT of thousands of rows takes milliseconds
            with anyio.CancelScope(shield=True):  # committed: every task gets announced
                await pause(force=True)
                for start in range(0, len(prepared), BATCH_CHUNK):
                    end = start + BATCH_CHUNK
                    self._after_submit(prepared[start:end], results[start:end])
                    await pause()
                self._publish_follow(follow)
        await self._durable()
        return results

    def _after_submit(self, prepared: Sequence[Prepared], results: Sequence[Submitted]) -> None:
        for p, res in zip(prepared, results, strict=True):
            if p.expires_at is not None and (
                self._next_expiry is None or p.expires_at < self._next_expiry
            ):
                self._next_expiry = p.expires_at
            if res.replaced is not None:
                old_id, _ = res.replaced
                run = self._running.get(old_id)
                if run is not None:
                    self._stop(run, "superseded")
                else:
                    self._gov.forget(old_id)
                self._publish(TaskSuperseded(id=old_id, type=p.spec.type, by=res.id))
            if res.outcome in ("inserted", "superseded"):
                assert res.info is not None
                self._publish(TaskSubmitted(task=res.info))
            elif res.outcome in ("upgraded", "requeued"):
                assert res.info is not None
                self._publish(TaskUpdated(task=self._with_progress(res.info)))
        self._wake()

    # --- operations on tasks -----------------------------------------------------------

    def _with_progress(self, info: TaskInfo) -> TaskInfo:
        run = self._running.get(info.id)
        if run is not None and run.progress.last is not None and info.state == "running":
            info.progress = run.progress.last
        return info

    async def get(self, task_id: int) -> TaskInfo:
        return self._with_progress(self._store.get(task_id))

    async def list_tasks(
        self,
        *,
        state: str | Sequence[str] | None = None,
        type: str | None = None,
        group: str | None = None,
        tags: dict[str, str] | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> TaskPage:
        """Tasks, newest first, filtered; page with ``cursor``."""
        states = [state] if isinstance(state, str) else list(state or [])
        before = None
        if cursor is not None:
            try:
                before = int(cursor)
            except ValueError:
                before = -1
            if not 0 < before <= MAX_SAFE_INT:
                raise InvalidParams("cursor is not one this server gave out", "$.cursor")
        if not 1 <= limit <= 1000:
            raise InvalidParams("limit must be between 1 and 1000", "$.limit")
        rows = await self._store.list_tasks(
            states=states, task_type=type, group=group, tags=tags, limit=limit + 1,
            before_id=before,
        )  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        return TaskPage(
            tasks=[self._with_progress(t) for t in rows],
            next_cursor=str(rows[-1].id) if more else None,
        )

    async def cancel(self, task_id: int) -> None:
        """Cancel an active task (and its active children); a running executor is stopped."""
        await self._cancel(task_id)
        await self._durable()

    async def _cancel(self, task_id: int) -> None:
        await self._writes_allowed()
        follow = Follow()
        with self._store.transaction() as tx:
            _, cancelled = self._store.cancel(tx, task_id, self.clock.now_ms(), follow)
        for cid, ctype in cancelled:
            run = self._running.get(cid)
            if run is not None:
                self._stop(run, "cancelled")
            else:
                self._gov.forget(cid)
            self._publish(TaskCancelled(id=cid, type=ctype))
        self._publish_follow(follow)
        self._wake()

    async def cancel_many(
        self,
        *,
        type: str | None = None,
        group: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> int:
        if type is None and group is None and not tags:
            raise InvalidParams("give at least one of type, group, tags", "$")
        count = 0
        for task_id in await self._store.find_ids(task_type=type, group=group, tags=tags):
            try:
                await self._cancel(task_id)
                count += 1
            except (InvalidState, TaskNotFound):
                pass  # a child already cancelled with its parent
        await self._durable()  # one fsync for them all
        return count

    async def set_priority(self, task_id: int, priority: int | str) -> TaskInfo:
        await self._writes_allowed()
        value = _priority(priority)
        with self._store.transaction() as tx:
            info = self._store.set_priority(tx, task_id, value)
        run = self._running.get(task_id)
        if run is not None:
            run.priority = value
        info = self._with_progress(info)
        self._publish(TaskUpdated(task=info))
        self._wake()
        await self._durable()
        return info

    async def pause(self, task_id: int) -> TaskInfo:
        """Pause one task: a pending one waits, a running one is interrupted (no retry used)."""
        await self._writes_allowed()
        with self._store.transaction() as tx:
            state = self._store.state_of(task_id)
            if state == "pending":
                self._store.pause_pending(tx, task_id)
                self._gov.forget(task_id)
            elif state == "running" and task_id in self._running:
                self._store.interrupt(tx, task_id, "paused")
            else:
                raise InvalidState(
                    f"task {task_id} is {state}; only pending or running tasks can be paused",
                    id=task_id,
                    state=state,
                )
        run = self._running.get(task_id)
        if run is not None:
            self._stop(run, "paused")
        info = self._store.get(task_id)
        self._publish(TaskUpdated(task=info))
        await self._durable()
        return info

    async def resume(self, task_id: int) -> TaskInfo:
        await self._writes_allowed()
        with self._store.transaction() as tx:
            info = self._store.resume(tx, task_id)
        self._publish(TaskUpdated(task=info))
        self._wake()
        await self._durable()
        return info

    async def retry(self, task_id: int) -> SubmitResult:
        """Run a failed or dead-lettered task again: same id, attempt 0."""
        await self._writes_allowed()
        self._check_open()
        with self._store.transaction() as tx:
            new_id, outcome, info = self._store.retry(tx, task_id)
        if info is not None:
            self._publish(TaskUpdated(task=info))
        self._wake()
        await self._durable()
        return SubmitResult(new_id, outcome)

    # --- scheduler-wide pauses -----------------------------------------------------------

    async def pause_all(self, *, group: str | None = None, type: str | None = None) -> None:
        """Pause dispatching globally, or of one group or task type; persisted."""
        await self._writes_allowed()
        if group is not None and type is not None:
            raise InvalidParams("pause one scope at a time: group or type", "$")
        if group is not None:
            if group not in self._pauses.groups:
                self._pauses.groups.append(group)
        elif type is not None:
            if type not in self._pauses.types:
                self._pauses.types.append(type)
        else:
            self._pauses.paused = True
        self._save_pauses()
        self._publish(SchedulerPaused(group=group, type=type))
        await self._durable()

    async def resume_all(self, *, group: str | None = None, type: str | None = None) -> None:
        """Lift the pause of exactly that scope."""
        await self._writes_allowed()
        if group is not None and type is not None:
            raise InvalidParams("resume one scope at a time: group or type", "$")
        if group is not None:
            if group in self._pauses.groups:
                self._pauses.groups.remove(group)
        elif type is not None:
            if type in self._pauses.types:
                self._pauses.types.remove(type)
        else:
            self._pauses.paused = False
        self._save_pauses()
        self._publish(SchedulerResumed(group=group, type=type))
        self._wake()
        await self._durable()

    # --- status and history -------------------------------------------------------------

    async def status(self) -> SchedulerStatus:
        counts = await self._store.counts()
        running = []
        for run in sorted(self._running.values(), key=lambda r: r.id):
            try:
                running.append(self._with_progress(self._store.get(run.id)))
            except TaskNotFound:
                continue
        return SchedulerStatus(
            paused=self._pauses.paused,
            paused_groups=list(self._pauses.groups),
            paused_types=list(self._pauses.types),
            counts=counts,
            running=running,
            max_concurrency=self.config.max_concurrency,
            io=self._gov.status(),
            executors=self._registry.types(),
        )

    async def history_stats(self, task_type: str | None = None) -> HistoryStats:
        rows = await self._store.history(task_type)
        grouped: dict[str, list[tuple[str, int | None, bytes]]] = {}
        for t, state, duration, io in rows:
            grouped.setdefault(t, []).append((state, duration, io))
        by_type: dict[str, TypeStats] = {}
        decode_io = msgspec.json.Decoder(IoBytes).decode
        for t, items in grouped.items():
            durations = sorted(d for s, d, _ in items if s == "completed" and d is not None)
            ios = [decode_io(io) for s, _, io in items if s == "completed" and io]
            n = max(1, len(ios))
            by_type[t] = TypeStats(
                completed=sum(1 for s, _, _ in items if s == "completed"),
                failed=sum(1 for s, _, _ in items if s in ("failed", "deadLetter")),
                avg_duration_ms=sum(durations) / len(durations) if durations else None,
                p95_duration_ms=(
                    float(durations[max(0, math.ceil(0.95 * len(durations)) - 1)])
                    if durations
                    else None
                ),
                avg_io=IoBytes(
                    disk_read=sum(i.disk_read for i in ios) // n,
                    disk_write=sum(i.disk_write for i in ios) // n,
                    net_rx=sum(i.net_rx for i in ios) // n,
                    net_tx=sum(i.net_tx for i in ios) // n,
                ),
            )
        return HistoryStats(by_type=by_type)

    async def prune(self, *, older_than_ms: int | None = None, keep: int | None = None) -> int:
        """Remove final tasks older than ``older_than_ms`` or beyond the newest ``keep``.

        Without arguments, the configured retention applies.
        """
        await self._writes_allowed()
        if older_than_ms is None and keep is None:
            retention = self.config.retention
            older_than_ms, keep = retention.max_age_ms, retention.max_count
        removed = 0
        while True:
            ids = await self._store.prunable(self.clock.now_ms(), keep, older_than_ms, PRUNE_BATCH)
            if ids:
                with self._store.transaction() as tx:
                    removed += self._store.delete_final(tx, ids)
            if len(ids) < PRUNE_BATCH:
                await self._durable()
                return removed

    async def _prune_some(self) -> None:
        """Amortized retention: one bounded batch every ``PRUNE_EVERY`` final tasks."""
        await self._writes_allowed()
        r = self.config.retention
        try:
            ids = await self._store.prunable(
                self.clock.now_ms(), r.max_count, r.max_age_ms, PRUNE_BATCH
            )
            if ids:
                with self._store.transaction() as tx:
                    self._store.delete_final(tx, ids)
        except StorageError as exc:  # (disk full: the next round tries again)
            log.warning("pruning history failed", error=str(exc))
        finally:
            self._pruning = False

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

        Tasks that cannot run now — delayed, paused, or of a type no executor handles —
        do not count.
        """
        if self._closed:
            return
        self._check_failed()
        ev = anyio.Event()
        self._idle_waiters.append((self._tick_no, ev))
        self._wake()
        await ev.wait()
        self._check_failed()

    # --- the dispatch loop ---------------------------------------------------------------

    def _wake(self) -> None:
        if not self._woken:  # (called several times per task: setting once is enough)
            self._woken = True
            self._wake_event.set()

    async def _dispatch_loop(self) -> None:
        failures = 0
        retry_at: int | None = None  # after a failed tick: no tick before this, bar submits
        while True:
            self._wake_event = anyio.Event()
            self._woken = False
            if retry_at is not None and not self._submits and self.clock.now_ms() < retry_at:
                await self.clock.wait(self._wake_event, retry_at)
                continue
            retry_at = None
            self._loop_turned = time.perf_counter()
            try:
                deadline = self._tick()
            except StorageError as exc:
                # The database could not take the tick's writes (disk full, I/O error):
                # nothing of it was written and what it took is back in place (see _tick).
                # Try again later, not at every run's end, but at once for a queued submit
                # (its caller is told either way); meanwhile a closing scheduler need not
                # wait for the runs to be written (recovery requeues them on open).
                failures += 1
                self._storage_failing = True
                self._runs_empty.set()
                delay = min(STORAGE_RETRY_MAX_MS, STORAGE_RETRY_MS << min(failures - 1, 16))
                if failures == 1 or failures % 10 == 0:
                    log.error(
                        "the database rejected a dispatch step; retrying",
                        error=str(exc),
                        failures=failures,
                        retry_in_ms=delay,
                    )
                retry_at = self.clock.now_ms() + delay
                continue
            if failures:
                log.info("the database takes writes again", after_failures=failures)
                failures = 0
                self._storage_failing = False
            await self.clock.wait(self._wake_event, deadline)

    def _limits(self) -> Limits:
        c = self.config
        return Limits(
            max_concurrency=c.max_concurrency,
            group_limits=c.group_limits,
            type_limits=self._registry.limits(),
            preempt_priority=c.preempt_priority,
            min_run_ms=c.min_run_ms,
        )

    def _tick(self) -> int | None:
        """One step: commit queued submits, settle, expire, decide, claim — one transaction.

        Returns the time of the next timer, if any.
        """
        if self._writes_held:
            return None  # the batch wakes us when its transaction ends
        self._tick_no += 1
        now = self.clock.now_ms()
        for run in list(self._running.values()):
            timeout_at = run.timeout_at
            if run.stop_reason is None and timeout_at is not None and now >= timeout_at:
                self._stop(run, "timeout")
            elif run.stop_deadline is not None and now >= run.stop_deadline and not run.abandoned:
                # The executor ignored cancellation past the hard deadline: free its slot.
                log.warning("executor did not stop in time; abandoning it", id=run.id)
                run.abandoned = True
                self._finished.append((run, "stopped", None))
        step = _Step()
        submits = self._take_submits()
        finished, self._finished = self._finished, []
        next_expiry = self._next_expiry
        saved: list[_Run] = []
        try:
            with self._store.transaction() as tx:
                if submits:
                    self._write_submits(tx, submits, step.follow)
                for run in self._running.values():
                    if run.unsaved_checkpoint:
                        self._store.save_checkpoint(tx, run.id, run.checkpoint)
                        run.unsaved_checkpoint = False
                        saved.append(run)
                for run, _, _ in finished:
                    if run.unsaved_checkpoint:
                        self._store.save_checkpoint(tx, run.id, run.checkpoint)
                completed = self._complete_plain(tx, finished, now)
                for run, kind, value in finished:
                    self._settle(tx, run, kind, value, now, step.follow, step.events, completed)
                self._expire_and_claim(tx, now, step)
        except BaseException as exc:
            for ps in submits:
                ps.error = ps.error or exc
                ps.done.set()
            # Rolled back: put back what this tick took, for the next one to write. (What
            # _settle told the IO governor and the duration model stays told: a run settled
            # twice counts twice in those averages, nothing more.)
            for run in saved:
                run.unsaved_checkpoint = True
            for run, _, _ in finished:
                self._running[run.id] = run
            self._finished = finished + self._finished
            self._next_expiry = next_expiry
            self._give_back_admissions(now)
            raise
        # Submitters first: woken before any event is published, they answer (a sidecar
        # writes the responses) before the forwarder sends these tasks' events.
        for ps in submits:
            self._when_durable(ps.done.set)
        for ps in submits:
            if ps.error is None:
                self._after_submit(ps.prepared, ps.results)
        self._publish_follow(step.follow, step.events)
        for event in step.events:
            self._publish(event)
        for s in step.started:
            self._launch(s, now)
        if step.io_deferred or self._io_pressure_on:
            self._poll_io_pressure(now)
        for victim, for_id in step.preempt:
            victim_run = self._running.get(victim)
            if victim_run is not None:
                self._stop(victim_run, "preempted", for_id)
        if not self._running:
            self._runs_empty.set()
        if (
            self._idle_waiters
            and not self._running
            and not self._finished
            and not self._submits
            and not step.started
            and not step.candidates_found
            and not self._bus.saturated  # work may be held back for a slow reader
        ):
            waiters, self._idle_waiters = self._idle_waiters, []
            for n, ev in waiters:
                if n < self._tick_no:
                    ev.set()
                else:
                    self._idle_waiters.append((n, ev))
        if self._store.changes != self._changes_seen:  # (also a lone submit's own commit)
            self._changes_seen = self._store.changes
            self._dirty_event.set()
        if self._submits:
            self._wake()  # more queued than one tick takes: the next tick goes on at once
        return self._next_deadline(now, step.wake_at)

    def _write_submits(self, tx: Tx, submits: Sequence[_PendingSubmit], follow: Follow) -> None:
        """Write submits, each on its own, in the current transaction: each gets its results
        or the error that undid only it."""
        outcomes = self._store.submit_each(tx, [(ps.prepared, ps.now) for ps in submits], follow)
        for ps, outcome in zip(submits, outcomes, strict=True):
            if isinstance(outcome, Exception):
                ps.error = outcome
            else:
                ps.results = outcome

    def _take_submits(self) -> list[_PendingSubmit]:
        """The queued submits one tick writes: up to ``TICK_SUBMITS`` tasks, in order.

        Bounds the time a tick holds the loop when hundreds of submitters queue at once;
        the rest wait for the next tick, which follows at once.
        """
        queued = self._submits
        taken = 0
        for n, ps in enumerate(queued):
            taken += len(ps.prepared)
            if taken >= TICK_SUBMITS:
                self._submits = queued[n + 1 :]
                return queued[: n + 1]
        self._submits = []
        return queued

    def _expire_and_claim(self, tx: Tx, now: int, step: _Step) -> None:
        if self._next_expiry is not None and now >= self._next_expiry:
            for tid, ttype in self._store.expire_due(tx, now):
                self._gov.forget(tid)
                step.events.append(TaskExpired(id=tid, type=ttype))
            self._next_expiry = self._store.next_expiry()
        if self._closing or self._pauses.paused or self._bus.saturated:
            return
        limits = self._limits()
        # Enough rows to fill the free slots and to look past a few candidates that limits
        # hold back (or that may preempt); when that is not enough, a second, wider read.
        window = max(0, limits.max_concurrency - len(self._running)) + 8
        types = self._registry.types()
        ready = self._store.ready(now, types, self._pauses.groups, self._pauses.types, window)
        candidates = [
            Candidate(r.id, r.type, r.priority, r.group) for r in ready if r.id not in self._running
        ]
        step.candidates_found = bool(candidates)
        if not candidates:
            return
        running = [
            RunningTask(
                r.id,
                r.type,
                r.priority,
                r.group,
                r.run_started,
                r.stop_reason is not None,
                r.stop_for if r.stop_reason == "preempted" else None,
            )
            for r in self._running.values()
        ]
        decision = decide(candidates, running, limits, now, self._io_admission(ready, types, now))
        start = decision.start
        if (
            len(ready) >= window
            and window < IO_WINDOW
            and len(running) + len(start) < limits.max_concurrency
        ):
            # Slots are free but the window is full of work that limits or a saturated
            # resource hold back: look further down the queue for tasks that may start
            # (they must not wait behind it).
            seen = {r.id for r in ready}
            more = self._store.ready(now, types, self._pauses.groups, self._pauses.types, IO_WINDOW)
            extra = [
                Candidate(r.id, r.type, r.priority, r.group)
                for r in more
                if r.id not in seen and r.id not in self._running
            ]
            if extra:
                running += [RunningTask(c.id, c.type, c.priority, c.group, now) for c in start]
                admit = self._io_admission(more, types, now)
                second = decide(extra, running, limits, now, admit)
                start = start + second.start
                decision.preempt += second.preempt
                decision.deferred += second.deferred
                if second.wake_at is not None:
                    decision.wake_at = min(second.wake_at, decision.wake_at or second.wake_at)
        step.preempt = decision.preempt
        step.wake_at = decision.wake_at
        step.io_deferred = decision.deferred
        if decision.deferred:
            retry_at = self._gov.next_admission_ms(now)
            if retry_at is not None:
                if retry_at <= now:
                    # Waiting for a heavy task to end, not for tokens: its release wakes us.
                    # The timer is only a safety net (and keeps the deferral alive).
                    retry_at = now + IO_RETRY_MS
                step.wake_at = retry_at if step.wake_at is None else min(step.wake_at, retry_at)
        step.started = self._store.start(tx, [c.id for c in start], now)
        if self._io_admitted and len(step.started) < len(start):  # not claimed: give back
            self._give_back_admissions(now, keep=frozenset(x.id for x in step.started))

    def _give_back_admissions(self, now: int, keep: frozenset[int] = frozenset()) -> None:
        """Release the IO the governor admitted for claims that were not written."""
        for task_id in [i for i in self._io_admitted if i not in keep]:
            self._io_admitted.discard(task_id)
            self._gov.release(task_id, IoBytes(), now)

    def _io_admission(
        self, ready: list[Ready], types: list[str], now: int
    ) -> Callable[[Candidate], bool] | None:
        """The IO admission check for one round of ``decide``, or None when no candidate can
        expect IO (none declares ``ioCost`` and no runnable type has a learned cost): then
        admission costs nothing. Otherwise a candidate that expects no IO is still admitted
        without asking the governor, and a declared ``ioCost`` is decoded only when present.
        """
        gov = self._gov
        knows = gov.cost_model.knows
        if not self._io_types_seen.issuperset(types):
            for t in types:
                if t not in self._io_types_seen:
                    self._seed_io_cost(t)
        declared = {r.id: r.io_cost for r in ready if r.io_cost is not None}
        if not declared and not any(knows(t) for t in types):
            return None
        admitted = self._io_admitted

        def admit(c: Candidate) -> bool:
            raw = declared.get(c.id)
            if raw is None and not knows(c.type):
                return True
            expected = gov.expected_io(c.type, _decode_io(raw) if raw is not None else None)
            if not expected.total():
                return True
            reg = self._registry.get(c.type)
            paced = reg is not None and reg.paced
            if gov.admit(c.id, c.priority, expected, now, task_type=c.type, paced=paced):
                admitted.add(c.id)
                return True
            return False

        return admit

    def _seed_io_cost(self, task_type: str) -> None:
        """Once per type: start its learned IO cost from the average of its stored history."""
        self._io_types_seen.add(task_type)
        if self._gov.cost_model.knows(task_type):
            return
        average = self._store.average_io(task_type)
        if average is not None and average.total():
            self._gov.cost_model.seed(task_type, average)

    def _next_deadline(self, now: int, wake_at: int | None) -> int | None:
        times = [wake_at, self._next_expiry]
        if not self._pauses.paused:
            times.append(self._store.next_due(now))
        for run in self._running.values():
            times.append(run.timeout_at if run.stop_reason is None else run.stop_deadline)
        real = [t for t in times if t is not None]
        return min(real) if real else None

    def _launch(self, s: Started, now: int) -> None:
        reg = self._registry.get(s.type)
        run = _Run(
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
        )
        if self._io_admitted:
            run.io_held = s.id in self._io_admitted
            self._io_admitted.discard(s.id)
        self._running[s.id] = run
        self._publish(
            TaskStarted(
                id=s.id, type=s.type, attempt=s.attempt, priority=s.priority, started_at=now
            )
        )
        if not self._durations.known(s.type):
            self._durations.seed(s.type, self._store.recent_durations(s.type, 20))
        self._progress_event.set()
        assert self._tg is not None
        if reg is None:  # unregistered between claim and launch
            self._finished.append((run, "stopped", None))
            run.stop_reason = "shutdown"
            return
        self._queue_run(run, reg.fn)

    def _queue_run(self, run: _Run, fn: ExecutorFn) -> None:
        """Hand a run to an idle worker, starting one when none is idle.

        Long-lived workers are much cheaper than a new task per run; their number only grows
        to the peak of concurrent runs (plus executors that ignored cancellation).
        """
        self._run_queue.append((run, fn))
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
            current: _Run | None = None
            with anyio.CancelScope() as scope:
                while self._run_queue and not scope.cancel_called:
                    run, fn = self._run_queue.popleft()
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

    async def _execute(self, run: _Run, fn: ExecutorFn, scope: anyio.CancelScope) -> None:
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

    def _record(self, run: _Run, kind: str, value: Any) -> None:
        """Hand a run's end to the next tick (unless it was abandoned: its slot is gone)."""
        if not run.abandoned:
            self._finished.append((run, kind, value))
            self._wake()

    def _stop(self, run: _Run, reason: str, by: int | None = None) -> None:
        """Ask a run to stop. Cancel and supersede override any earlier reason."""
        if run.stop_reason is not None and reason not in ("cancelled", "superseded"):
            return
        run.stop_reason = reason
        run.stop_for = by
        if run.stop_deadline is None:
            run.stop_deadline = self.clock.now_ms() + self.config.cancel_grace_ms
        if run.scope is not None:  # its executor is running (else its worker sees the reason)
            run.scope.cancel()
        self._wake()

    def _complete_plain(self, tx: Tx, finished: list[tuple[_Run, str, Any]], now: int) -> set[int]:
        """Write the successful runs that need nothing else in one statement (see
        ``SqliteStore.complete_plain``); returns their ids, for ``_settle``."""
        done = [
            (
                run.id,
                max(0, now - run.run_started),
                run.result_json,
                run.io if run.io.total() else None,
            )
            for run, kind, value in finished
            if kind == "ok" and run.stop_reason not in ("cancelled", "superseded")
        ]
        return self._store.complete_plain(tx, done, now) if done else set()

    def _settle(
        self,
        tx: Tx,
        run: _Run,
        kind: str,
        value: Any,
        now: int,
        follow: Follow,
        events: list[Event],
        completed: set[int],
    ) -> None:
        """Record how a run ended (inside the tick's transaction); ``completed`` holds the
        runs already written as completed (``_complete_plain``)."""
        self._running.pop(run.id, None)
        io = run.io if run.io.total() else None
        if run.io_held:  # the governor settles its prepaid bytes; io teaches the cost model
            run.io_held = False
            self._gov.release(run.id, io)
        elif io is not None:
            self._gov.cost_model.observe(run.type, io)
        reason = run.stop_reason
        if reason in ("cancelled", "superseded"):
            return  # already final in the database; its result is discarded
        duration = max(0, now - run.run_started)
        if kind == "ok":
            state = (
                "completed"
                if run.id in completed
                else self._store.complete(
                    tx,
                    run.id,
                    now,
                    result=run.result_json,
                    duration_ms=duration,
                    io_actual=io,
                    follow=follow,
                )
            )
            if state == "completed":
                self._final(run.type, duration)
                events.append(
                    TaskCompleted(
                        id=run.id,
                        type=run.type,
                        attempt=run.attempt,
                        duration_ms=duration,
                        result=value,
                    )
                )
            else:
                events.append(TaskUpdated(task=self._store.get(run.id)))
            return
        if kind == "stopped" and reason in ("preempted", "shutdown", "paused"):
            if reason == "paused":
                return  # recorded when the pause was asked for
            self._store.interrupt(tx, run.id, "pending")
            if reason == "preempted":
                assert run.stop_for is not None
                events.append(TaskPreempted(id=run.id, type=run.type, by=run.stop_for))
            return
        if kind == "stopped" and reason == "timeout":
            value = RetryableError(f"timed out after {run.timeout_ms} ms", kind="timeout")
        self._settle_error(tx, run, value, now, duration, io, follow, events)

    def _settle_error(
        self,
        tx: Tx,
        run: _Run,
        exc: BaseException | None,
        now: int,
        duration: int,
        io: IoBytes | None,
        follow: Follow,
        events: list[Event],
    ) -> None:
        if isinstance(exc, ExecutorError):
            kind, retryable = exc.kind, exc.retryable
            message = str(exc) or exc.__class__.__name__
        else:
            kind, retryable = "error", True
            message = f"{exc.__class__.__name__}: {exc}" if exc else "executor failed"
            log.warning("executor raised", id=run.id, type=run.type, error=message)
        error = ErrorInfo(message=message, kind=kind, retryable=retryable)
        retry_at: int | None = None
        final_state = "failed"
        if retryable:
            if run.attempt < run.max_retries:
                after = getattr(exc, "retry_after", None)
                if after is not None:
                    delay = round(after * 1000)
                else:
                    backoff = _decode_backoff(run.backoff) if run.backoff else DEFAULT_BACKOFF
                    delay = backoff_delay_ms(backoff, run.attempt + 1, self._rng)
                retry_at = now + delay
            else:
                final_state = "deadLetter"
        state = self._store.fail(
            tx,
            run.id,
            now,
            error=error,
            retry_at=retry_at,
            final_state=final_state,
            duration_ms=duration,
            io_actual=io,
            follow=follow,
        )
        if state != "pending":
            self._final(run.type, None)
        elif retry_at is None:
            retry_at = now  # a requeue outlived the failure: it runs again at once
        events.append(
            TaskFailed(
                id=run.id,
                type=run.type,
                attempt=run.attempt,
                error=error,
                will_retry=state == "pending",
                state=state,  # type: ignore[arg-type]
                retry_at=retry_at if state == "pending" else None,
            )
        )

    def _final(self, task_type: str, duration: int | None) -> None:
        if duration is not None:
            self._durations.observe(task_type, duration)
        self._finals_since_prune += 1
        if self._finals_since_prune >= PRUNE_EVERY and not self._pruning and self._tg:
            self._finals_since_prune = 0
            self._pruning = True
            self._tg.start_soon(self._prune_some)

    # --- durability "full": acknowledge after an fsync, off the loop ---------------------

    def _sync_due(self) -> bool:
        """Durability "full" and something committed or held since the last fsync."""
        return self._full and (bool(self._held) or self._store.commits != self._synced)

    def _publish(self, event: Event) -> None:
        if self._sync_due():
            self._held.append(event)
            self._sync_wanted.set()
            return
        self._bus.publish(event)

    def _when_durable(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything committed so far is durable (at once, unless
        durability is "full" and an fsync is due)."""
        if self._sync_due():
            self._after_sync.append(callback)
            self._sync_wanted.set()
            return
        callback()

    async def _durable(self) -> None:
        """Return once everything committed so far is durable. Shielded: the write is done,
        so a cancelled caller still waits the few milliseconds of its fsync."""
        if self._full:
            done = anyio.Event()
            self._when_durable(done.set)
            with anyio.CancelScope(shield=True):
                await done.wait()

    async def _sync_loop(self) -> None:
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted = anyio.Event()
            await self._sync_now()

    async def _sync_now(self) -> None:
        """fsync the WAL in a worker thread, then release what waited for it: acknowledgements
        first (a submitter answers before its task's events), then the events, in order."""
        target = self._store.commits
        callbacks, self._after_sync = self._after_sync, []
        events, self._held = self._held, []
        if target != self._synced:
            # Shielded: what was taken off the lists above must be released, even when the
            # scheduler closes while the fsync runs.
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self._store.sync_wal)
                except OSError as exc:  # as SQLite's own FULL would, say so; nothing more
                    log.error("fsync of the write-ahead log failed", error=str(exc))
            self._synced = target
        for callback in callbacks:
            callback()
        for event in events:
            self._bus.publish(event)

    def _publish_follow(self, follow: Follow, events: list[Event] | None = None) -> None:
        out: list[Event] = []
        for pid, ptype, attempt, result in follow.completed_parents:
            out.append(
                TaskCompleted(id=pid, type=ptype, attempt=attempt, duration_ms=0, result=result)
            )
        for did, dtype in follow.failed_dependents:
            out.append(
                TaskFailed(
                    id=did,
                    type=dtype,
                    attempt=0,
                    error=ErrorInfo("a task it depends on did not complete", "dependency", False),
                    will_retry=False,
                    state="failed",
                )
            )
        for uid in follow.unblocked:
            out.append(TaskUpdated(task=self._store.get(uid)))
        if events is not None:
            events.extend(out)
        else:
            for e in out:
                self._publish(e)

    # --- progress, checkpoints ------------------------------------------------------------

    def _report_progress(
        self,
        run: _Run,
        fraction: float | None,
        bytes_done: int | None,
        bytes_total: int | None,
        message: str | None,
    ) -> None:
        if run.id not in self._running or run.stop_reason is not None:
            return
        now = self.clock.now_ms()
        progress = run.progress.report(now, fraction, bytes_done, bytes_total, message)
        interval = 1000 / self.config.progress_hz
        last = run.progress.last_sent_ms
        if last is None or now - last >= interval:
            self._send_progress(run, progress, now)

    def _send_progress(self, run: _Run, progress: Any, now: int) -> None:
        run.progress.last_sent_ms = now
        run.progress.dirty = False
        self._publish(TaskProgress(id=run.id, type=run.type, progress=progress))

    def _save_checkpoint(self, run: _Run, state: Any) -> None:
        if run.id in self._running and run.stop_reason not in ("cancelled", "superseded"):
            run.checkpoint = state
            if self._writes_held:
                _encode_result(state)  # a bad state fails here, in the executor, not in the tick
                run.unsaved_checkpoint = True  # written by the next tick
                self._wake()
            else:
                with self._store.transaction() as tx:
                    self._store.save_checkpoint(tx, run.id, state)

    async def _progress_loop(self) -> None:
        """While tasks run: flush throttled reports and send estimates at ``progressHz``."""
        while True:
            if not self._running:
                self._progress_event = anyio.Event()
                await self._progress_event.wait()
                continue
            await self.clock.sleep(1000 / self.config.progress_hz)
            now = self.clock.now_ms()
            for run in list(self._running.values()):
                if run.stop_reason is not None:
                    continue
                p = run.progress
                if p.dirty and p.last is not None:
                    self._send_progress(run, p.last, now)
                    continue
                estimate = p.estimate(now, self._durations.expected_ms(run.type))
                if estimate is not None:
                    self._send_progress(run, estimate, now)

    async def _maintenance_loop(self) -> None:
        """Fold the WAL into the database about once a second while there are writes.

        The checkpoint runs off the loop while writes go on, so it folds in what the WAL
        held when it began. The WAL starts over from its beginning only once it has been
        folded in whole; under steady writes that never happens, and it would grow without
        bound. So when writes came in during the checkpoint and the WAL had grown past
        ``WAL_CATCH_UP_PAGES``, a second checkpoint folds in the rest with every write held
        (milliseconds: the pages written meanwhile, and an fsync). SQLite then starts the
        WAL over, and trims its file to ``WAL_SIZE_LIMIT`` (``journal_size_limit``).
        """
        while True:
            self._dirty_event = anyio.Event()
            await self._dirty_event.wait()
            await anyio.sleep(CHECKPOINT_EVERY_S)
            try:
                changes = self._store.changes
                await self._store.checkpoint()
                if self._store.changes != changes and self._store.wal_pages >= WAL_CATCH_UP_PAGES:
                    async with self._holding_writes():
                        await self._store.checkpoint()
            except Exception as exc:  # a busy checkpoint is retried on the next write
                log.debug("wal checkpoint skipped", error=str(exc))

    # --- IO ------------------------------------------------------------------------------

    @property
    def io_governor(self) -> IoGovernor:
        """The IO governor (admission, pacing, learned capacity and costs)."""
        return self._gov

    async def _io_loop(self) -> None:
        """Sample the machine's IO about once a second (on the scheduler's clock)."""
        try:
            self._io_monitor = IoMonitor(self.clock, self._io_sampler)
            await self._io_monitor.run(self._on_io_sample)
        except Exception as exc:  # no psutil, a broken sampler: run on, unmeasured
            log.warning("IO monitoring stopped; IO is no longer measured", error=repr(exc))

    def _on_io_sample(self, sample: IoSample) -> None:
        gov = self._gov
        now = self.clock.now_ms()
        gov.observe(sample, now)
        self._poll_io_pressure(now)
        if gov.next_admission_ms(now) is not None:
            self._wake()  # refill rates changed: deferred work may fit sooner

    def _poll_io_pressure(self, now: int) -> None:
        event = self._gov.poll_pressure(now)
        if event is not None:
            self._io_pressure_on = event.throttling
            self._publish(event)

    def _record_io(self, run: _Run, amounts: tuple[int, int, int, int]) -> None:
        io = run.io
        disk_read, disk_write, net_rx, net_tx = amounts
        io.disk_read += disk_read
        io.disk_write += disk_write
        io.net_rx += net_rx
        io.net_tx += net_tx
        gov = self._gov
        for resource, nbytes in zip(RESOURCES, amounts, strict=True):
            if nbytes > 0:
                gov.record(run.id, resource, nbytes)

    async def _consume_io(self, run: _Run, resource: Resource, nbytes: int) -> None:
        if resource not in RESOURCES:
            raise ValueError(f"unknown IO resource {resource!r}; one of {', '.join(RESOURCES)}")
        if nbytes <= 0:
            return
        await self._gov.consume(run.id, resource, nbytes, run.priority)
        io = run.io
        if resource == "diskRead":
            io.disk_read += nbytes
        elif resource == "diskWrite":
            io.disk_write += nbytes
        elif resource == "netRx":
            io.net_rx += nbytes
        else:
            io.net_tx += nbytes

    def statistics(self) -> dict[str, Any]:
        return {
            "running": len(self._running),
            "subscribers_backlog": self._bus.backlog(),
            "events_published": self._bus.published,
            "ticks": self._tick_no,
        }

    def debug_state(self) -> dict[str, Any]:
        """What the dispatcher and the IO governor hold right now, for a diagnostic dump."""
        now = self.clock.now_ms()
        return {
            **self.statistics(),
            "runs": [
                {
                    "id": r.id,
                    "type": r.type,
                    "ms": now - r.run_started,
                    "stop": r.stop_reason,
                    "io": msgspec.to_builtins(r.io),
                }
                for r in self._running.values()
            ],
            "finished_unsettled": len(self._finished),
            "queued_submits": len(self._submits),
            "writes_held": self._writes_held,
            "paused": self._pauses.paused,
            "bus_saturated": self._bus.saturated,
            "io_governor": repr(self._gov),
            "io_waiting": {str(k): list(v) for k, v in self._gov.waiting().items()},
            "io_deferred": self._gov.deferred(),
        }

    def __repr__(self) -> str:
        return (
            f"Scheduler({str(self._store.path)!r}, running={len(self._running)}, "
            f"max_concurrency={self.config.max_concurrency})"
        )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _priority(value: int | str) -> int:
    from taskmill_core.types import PRIORITY_NAMES

    if isinstance(value, str):
        if value not in PRIORITY_NAMES:
            raise InvalidParams(f"unknown priority name {value!r}", "$.priority")
        return PRIORITY_NAMES[value]
    if isinstance(value, bool) or not 0 <= value <= 255:
        raise InvalidParams("priority must be 0..255 or a priority name", "$.priority")
    return value
