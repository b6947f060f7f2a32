"""Submitting: every road by which new tasks reach the database.

- A lone submit (or a few) is written inline, in the caller's task: one short transaction is
  cheaper than any hand-off, and the caller learns the outcome from the database itself.
- Submits from several tasks at once are queued and written by the dispatcher's next tick,
  together with its completions and claims (group commit); past ``QUEUE_PER_TURN`` in one
  loop turn, later callers wait in line a turn (turn pacing), so a burst cannot hold the loop.
- A large batch is one transaction written ``BATCH_CHUNK`` entries per loop turn while every
  other write is held (:class:`~taskmill_core.scheduler.signals.WriteGate`).

After the commit, :meth:`Submitter.after_submit` announces each task (``task.submitted``,
``task.updated``, ``task.superseded``) and stops a superseded task's run; with
``announce_batches`` on, a batch is first announced whole by one ``task.batchSubmitted``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from taskmill_core.clock import Clock
from taskmill_core.errors import InvalidParams
from taskmill_core.metrics import Metrics
from taskmill_core.policy import TypeDefaults, apply_type_defaults
from taskmill_core.scheduler.durability import Durability
from taskmill_core.scheduler.iobridge import IoBridge
from taskmill_core.scheduler.runner import Runner
from taskmill_core.scheduler.settle import follow_events, stop_cancelled
from taskmill_core.scheduler.signals import Lifecycle, Wakeup, WriteGate
from taskmill_core.store import Follow, Prepared, SqliteStore, Submitted, Tx, prepare
from taskmill_core.types import (
    Event,
    SubmitResult,
    TaskBatchSubmitted,
    TaskSpec,
    TaskSubmitted,
    TaskSuperseded,
    TaskUpdated,
)
from taskmill_core.validation import check_spec

__all__ = [
    "BATCH_CHUNK",
    "INLINE_SUBMIT",
    "MAX_BATCH",
    "QUEUE_PER_TURN",
    "TICK_SUBMITS",
    "QueuedSubmit",
    "Submitter",
]

MAX_BATCH = 10_000
INLINE_SUBMIT = 16  # submits up to this many tasks are written inline (see _commit)
BATCH_CHUNK = 100  # larger batches are written this many per loop turn (_commit_large)
YIELD_AFTER_S = 0.001
BATCH_YIELD_S = 0.0005  # a large batch yields this often (see _Yielder)
TICK_SUBMITS = 32  # queued submits one tick writes at most (see take_queued)
QUEUE_PER_TURN = 16  # submits queued in one loop turn before later callers wait a turn


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
class QueuedSubmit:
    """A submit waiting for the dispatcher's next tick to write it."""

    prepared: list[Prepared]
    now: int
    done: anyio.Event | _Countdown = field(default_factory=anyio.Event)
    results: list[Submitted] = field(default_factory=list)
    error: BaseException | None = None
    batch: bool = False  # from submit_batch (see Submitter.announce_batches)


class Submitter:
    """Writes submits inline, through the dispatcher's ticks, or as large batches."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        clock: Clock,
        gate: WriteGate,
        durability: Durability,
        runner: Runner,
        io: IoBridge,
        lifecycle: Lifecycle,
        wake: Wakeup,
        note_expiry: Callable[[int], None],
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._gate = gate
        self._durability = durability
        self._publish = durability.publish
        self._runner = runner
        self._io = io
        self._lifecycle = lifecycle
        self._wake = wake
        self._note_expiry = note_expiry
        self.queue: list[QueuedSubmit] = []  # for the next tick (see take_queued)
        self._on_asyncio = True
        self._inline_turn = -1.0
        self._inline_task = -1
        self._queued_this_turn = 0  # submits queued in this loop turn (see _turn_slot)
        self._turn_waiters: deque[asyncio.Future[None]] = deque()
        self.announce_batches = False  # see Scheduler.announce_batches
        self.type_defaults: Mapping[str, TypeDefaults] = {}  # the typeDefaults setting

    def start(self, *, on_asyncio: bool) -> None:
        self._on_asyncio = on_asyncio

    def _task_id(self) -> int:
        """Identity of the running task (cheap on asyncio, the sidecar's loop)."""
        if self._on_asyncio:
            return id(asyncio.current_task())
        return anyio.get_current_task().id

    # --- the three roads ---------------------------------------------------------------------

    def with_defaults(self, spec: TaskSpec, given: Set[str] | None) -> TaskSpec:
        """``spec`` with its type's defaults (``typeDefaults``) in the fields it left out:
        those not in ``given``, or, without ``given``, those at the global default."""
        if spec.type not in self.type_defaults:
            return spec
        if given is None:
            given = implied_given(spec)
        return apply_type_defaults(spec, self.type_defaults, given)

    async def submit(
        self, spec: TaskSpec, *, validated: bool = False, given: Set[str] | None = None
    ) -> SubmitResult:
        """Submit one task; returns its id and the dedup outcome (PROTOCOL.md)."""
        if self._turn_waiters or self._queued_this_turn >= QUEUE_PER_TURN:
            await self._turn_slot()
        self._lifecycle.check_open()
        if not validated:
            spec = check_spec(spec)
        if self.type_defaults:
            spec = self.with_defaults(spec, given)
        now = self._clock.now_ms()
        p = prepare(spec, now)
        (res,) = await self._commit([p], now)
        info = res.info if res.info is not None else self._store.get(res.id)
        return SubmitResult(res.id, res.outcome, self._runner.with_progress(info))

    async def submit_many(
        self,
        specs: Sequence[TaskSpec],
        *,
        validated: bool = False,
        given: Sequence[Set[str] | None] | None = None,
    ) -> list[SubmitResult | Exception]:
        """Submit each spec on its own, as if by concurrent :meth:`submit` calls (see
        :meth:`Scheduler.submit_many <taskmill_core.scheduler.Scheduler.submit_many>`)."""
        self._lifecycle.check_open()
        now = self._clock.now_ms()
        outcomes: list[SubmitResult | Exception | None] = [None] * len(specs)
        prepared: list[tuple[int, Prepared]] = []
        defaults = self.type_defaults
        for i, spec in enumerate(specs):
            try:
                if not validated:
                    spec = check_spec(spec)
                if defaults:
                    spec = self.with_defaults(spec, given[i] if given is not None else None)
                prepared.append((i, prepare(spec, now)))
            except Exception as exc:
                outcomes[i] = exc
        done = _Countdown(len(prepared))
        queued = [(i, QueuedSubmit([p], now, done)) for i, p in prepared]
        if queued and len(queued) <= INLINE_SUBMIT and not self.queue and not self._gate.held:
            # A few requests (an interactive client): written at once, like a lone submit,
            # so that a request the client sends next sees them.
            follow = Follow()
            with self._store.transaction() as tx:
                self.write_queued(tx, [ps for _, ps in queued], follow)
            for _, ps in queued:
                if ps.error is None:
                    self.after_submit(ps.prepared, ps.results)
            self._publish_follow(follow)
            await self._durability.wait()
        elif queued:
            self.queue.extend(ps for _, ps in queued)
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
            outcomes[i] = SubmitResult(res.id, res.outcome, self._runner.with_progress(info))
        return [o for o in outcomes if o is not None]

    async def submit_batch(
        self,
        specs: Sequence[TaskSpec],
        *,
        validated: bool = False,
        given: Sequence[Set[str] | None] | None = None,
    ) -> list[SubmitResult]:
        """Submit many tasks in one transaction: all are accepted, or none is."""
        self._lifecycle.check_open()
        if len(specs) > MAX_BATCH:
            raise InvalidParams(f"a batch holds at most {MAX_BATCH} tasks", "$.tasks")
        now = self._clock.now_ms()
        prepared: list[Prepared] = []
        pause = _Yielder()  # a large batch must not hold the loop
        for i, spec in enumerate(specs):
            if i and i % BATCH_CHUNK == 0:
                await pause()
            try:
                if not validated:
                    spec = check_spec(spec)
                if self.type_defaults:
                    spec = self.with_defaults(spec, given[i] if given is not None else None)
                prepared.append(prepare(spec, now))
            except InvalidParams as exc:
                exc.path = exc.data["path"] = f"$.tasks[{i}]" + exc.path[1:]
                exc.data["index"] = i
                raise
            except Exception as exc:
                if hasattr(exc, "data"):
                    exc.data["index"] = i
                raise
        results = await self._commit(prepared, now, pause, batch=True)
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

    # --- writing ---------------------------------------------------------------------------

    async def _commit(
        self,
        prepared: list[Prepared],
        now: int,
        pause: _Yielder | None = None,
        *,
        batch: bool = False,
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
        turned = self._wake.loop_turned
        if self._inline_turn != turned:
            self._inline_turn, self._inline_task = turned, me
        alone = self._inline_task == me  # no other task submitted since the loop last turned
        if len(prepared) > BATCH_CHUNK:
            return await self._commit_large(prepared, now, pause or _Yielder(), batch=batch)
        if len(prepared) <= INLINE_SUBMIT and alone and not self.queue and not self._gate.held:
            follow = Follow()
            results = self._store.submit(prepared, now, follow)
            self.after_submit(prepared, results, batch=batch)
            if follow.completed_parents or follow.unblocked or follow.failed_dependents:
                self._publish_follow(follow)
            if self._durability.full:
                await self._durability.wait()
            elif time.perf_counter() - turned > YIELD_AFTER_S:
                await anyio.lowlevel.checkpoint()
            return results
        pending = QueuedSubmit(prepared, now, batch=batch)
        self.queue.append(pending)
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
        self, prepared: list[Prepared], now: int, pause: _Yielder, *, batch: bool = False
    ) -> list[Submitted]:
        """One transaction for a large batch, written ``BATCH_CHUNK`` entries at a time,
        yielding to the loop every ``BATCH_YIELD_S`` and around the COMMIT.

        While it is open nothing else may write through the connection (the write gate).
        Any failure (or the caller's cancellation) rolls the whole batch back. Once it is
        committed, the tasks are announced (``task.submitted``), also over several loop
        turns, before the dispatcher may start any of them: an urgent task at the end of the
        batch must not start before its announcement.
        """
        follow = Follow()
        results: list[Submitted] = []
        async with self._gate.hold():
            with self._store.transaction() as tx:
                for start in range(0, len(prepared), BATCH_CHUNK):
                    chunk = prepared[start : start + BATCH_CHUNK]
                    results += self._store.submit_in(tx, chunk, now, follow, index_base=start)
                    await pause()
                await pause(force=True)  # the COMMIT of thousands of rows takes milliseconds
            with anyio.CancelScope(shield=True):  # committed: every task gets announced
                await pause(force=True)
                if batch and self.announce_batches:
                    self._announce_batch(results)  # before any of them: one event
                for start in range(0, len(prepared), BATCH_CHUNK):
                    end = start + BATCH_CHUNK
                    self.after_submit(prepared[start:end], results[start:end])
                    await pause()
                self._publish_follow(follow)
        await self._durability.wait()
        return results

    # --- for the dispatcher's tick -----------------------------------------------------------

    def take_queued(self) -> list[QueuedSubmit]:
        """The queued submits one tick writes: up to ``TICK_SUBMITS`` tasks, in order.

        Bounds the time a tick holds the loop when hundreds of submitters queue at once;
        the rest wait for the next tick, which follows at once.
        """
        queued = self.queue
        taken = 0
        for n, ps in enumerate(queued):
            taken += len(ps.prepared)
            if taken >= TICK_SUBMITS:
                self.queue = queued[n + 1 :]
                return queued[: n + 1]
        self.queue = []
        return queued

    def write_queued(self, tx: Tx, submits: Sequence[QueuedSubmit], follow: Follow) -> None:
        """Write submits, each on its own, in the current transaction: each gets its results
        or the error that undid only it."""
        outcomes = self._store.submit_each(tx, [(ps.prepared, ps.now) for ps in submits], follow)
        for ps, outcome in zip(submits, outcomes, strict=True):
            if isinstance(outcome, Exception):
                ps.error = outcome
            else:
                ps.results = outcome

    def fail_queued(self, error: BaseException) -> None:
        """Fail every queued submit with ``error`` (closing, or an internal error)."""
        for ps in self.queue:
            ps.error = error
            ps.done.set()
        self.queue = []

    def after_submit(
        self, prepared: Sequence[Prepared], results: Sequence[Submitted], *, batch: bool = False
    ) -> None:
        """Announce committed submits, and stop the runs of tasks they superseded.

        ``batch``: the whole of a ``submit_batch`` (see :meth:`_announce_batch`).
        """
        if batch and self.announce_batches:
            self._announce_batch(results)
        publish = self._publish
        deduplicated = 0
        for p, res in zip(prepared, results, strict=True):
            if p.expires_at is not None:
                self._note_expiry(p.expires_at)
            if res.replaced is not None:
                old_id, _ = res.replaced
                if not self._runner.stop_task(old_id, "superseded"):
                    self._io.forget(old_id)
                publish(TaskSuperseded(id=old_id, type=p.spec.type, by=res.id))
            if res.outcome in ("inserted", "superseded"):
                assert res.info is not None
                publish(TaskSubmitted(task=res.info))
            else:
                deduplicated += 1
                if res.outcome in ("upgraded", "requeued"):
                    assert res.info is not None
                    publish(TaskUpdated(task=self._runner.with_progress(res.info)))
        if deduplicated:
            self._metrics.count("deduplicated", deduplicated)
        self._wake()

    def _announce_batch(self, results: Sequence[Submitted]) -> None:
        """One ``task.batchSubmitted`` naming a batch's inserted and superseding tasks, in
        submission order, published before their ``task.submitted`` (which still follow, for
        other subscribers; the sidecar's forwarder drops them), so before any of them starts."""
        ids = [r.id for r in results if r.outcome in ("inserted", "superseded")]
        if ids:
            self._publish(TaskBatchSubmitted(ids=ids, count=len(ids)))

    def _publish_follow(self, follow: Follow) -> None:
        """Announce what the submits set off beyond their own tasks (see ``follow_events``)."""
        self._publish_all(follow_events(self._store, follow))
        stop_cancelled(self._runner, self._io.forget, follow)

    def _publish_all(self, events: list[Event]) -> None:
        for event in events:
            self._publish(event)

    @property
    def waiting_for_turn(self) -> int:
        """Submitters waiting in line for a loop turn (see ``QUEUE_PER_TURN``)."""
        return len(self._turn_waiters)


def implied_given(spec: TaskSpec) -> frozenset[str]:
    """The defaultable fields a Python-built spec sets, as far as the spec can tell: those
    not at the global default (a Python caller names the others with ``given``)."""
    given = set()
    if spec.priority_value != 128:
        given.add("priority")
    if spec.max_retries != 3:
        given.add("max_retries")
    for name in ("backoff", "timeout_ms", "ttl_ms", "group", "io_cost"):
        if getattr(spec, name) is not None:
            given.add(name)
    return frozenset(given)
