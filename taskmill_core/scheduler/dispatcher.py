"""The dispatcher: the loop that turns what happened into what runs next.

Each wake-up runs one *tick* — write the queued submits, settle every run that ended since
the last tick, expire overdue tasks, ask :func:`~taskmill_core.dispatch.decide` what to start
and preempt, claim those tasks — all in one SQLite transaction (group commit). Only after the
commit does the tick act: it answers submitters, publishes events, launches runs and asks
preemption victims to stop; a tick the database rejects (disk full, I/O error) is rolled back,
hands its database work back for the next try and is retried with a growing delay. The loop
sleeps until something happens (submit, run end, config change) or the next timer (delayed
task, retry, expiry, timeout, preemption eligibility, IO refill, the next schedule firing); it
never polls when idle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio
import structlog

from taskmill_core.clock import Clock
from taskmill_core.dispatch import Candidate, HoldReason, Limits, Policy, RunningTask, decide
from taskmill_core.errors import StorageError
from taskmill_core.events import EventBus
from taskmill_core.executors import Registry
from taskmill_core.metrics import HoldCounter
from taskmill_core.policy import RateBuckets
from taskmill_core.runs import Run
from taskmill_core.scheduler.durability import Durability
from taskmill_core.scheduler.iobridge import IO_RETRY_MS, IoBridge
from taskmill_core.scheduler.policystate import PolicyState
from taskmill_core.scheduler.runner import Runner
from taskmill_core.scheduler.schedules import Firings, Schedules
from taskmill_core.scheduler.settings import Settings
from taskmill_core.scheduler.settle import Settlement, follow_events, stop_cancelled
from taskmill_core.scheduler.signals import Lifecycle, Wakeup, WriteGate
from taskmill_core.scheduler.submitting import Submitter
from taskmill_core.scheduler.upkeep import Upkeep
from taskmill_core.store import Follow, Ready, SqliteStore, Started, Tx
from taskmill_core.types import Event, SchedulerResumed, TaskExpired

__all__ = ["IO_WINDOW", "STORAGE_RETRY_MAX_MS", "STORAGE_RETRY_MS", "Dispatcher"]

log = structlog.get_logger("taskmill.scheduler")

STORAGE_RETRY_MS = 500  # after a tick could not write (disk full, I/O error): first retry
STORAGE_RETRY_MAX_MS = 30_000  # ... doubling up to this
IO_WINDOW = 256  # while IO-heavy work is deferred, dispatch looks this far down the queue


@dataclass(eq=False)
class _Claims:
    """What one tick decided inside its transaction, acted on after the commit."""

    events: list[Event] = field(default_factory=list)
    follow: Follow = field(default_factory=Follow)
    settled: list[Run] = field(default_factory=list)  # recorded; apply() after the commit
    saved: list[Run] = field(default_factory=list)  # runs whose kept checkpoint was written
    next_expiry: int | None = None
    expired: list[int] | None = None  # expired in this tick (next_expiry was recomputed)
    started: list[Started] = field(default_factory=list)
    buckets: RateBuckets | None = None  # the rate buckets after this tick's starts
    preempt: list[tuple[int, int]] = field(default_factory=list)
    wake_at: int | None = None
    candidates_found: bool = False
    io_deferred: int = 0
    firings: Firings | None = None  # recurring schedules fired in this tick
    held: dict[int, HoldReason] = field(default_factory=dict)  # why each candidate waits


def _wake(claims: _Claims, at: int) -> None:
    if claims.wake_at is None or at < claims.wake_at:
        claims.wake_at = at


class Dispatcher:
    """The dispatch loop and its tick."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        clock: Clock,
        registry: Registry,
        settings: Settings,
        bus: EventBus,
        durability: Durability,
        gate: WriteGate,
        lifecycle: Lifecycle,
        wake: Wakeup,
        runner: Runner,
        submitter: Submitter,
        settlement: Settlement,
        io: IoBridge,
        upkeep: Upkeep,
        holds: HoldCounter,
        policy: PolicyState,
        schedules: Schedules | None = None,
    ) -> None:
        self._store = store
        self._holds = holds
        self._clock = clock
        self._registry = registry
        self._settings = settings
        self._bus = bus
        self._durability = durability
        self._publish = durability.publish
        self._gate = gate
        self._lifecycle = lifecycle
        self._wake = wake
        self._runner = runner
        self._running = runner.running  # (the same dict, read on every tick)
        self._submitter = submitter
        self._settlement = settlement
        self._io = io
        self._upkeep = upkeep
        self._schedules = schedules
        self._policy = policy
        self.lift_pauses = True  # timed pauses lift by themselves (see Scheduler.open)
        self.held: dict[int, HoldReason] = {}
        """Why each candidate the last deciding tick held back waits (rateLimited, throttled,
        ioDeferred, groupLimit, typeLimit), by task id; replaced by every deciding tick."""
        self.ticks = 0
        self.storage_failing = False  # the last tick could not write (see run)
        self.next_expiry: int | None = None
        self._idle_waiters: list[tuple[int, anyio.Event]] = []

    def note_expiry(self, expires_at: int) -> None:
        """A task that expires at ``expires_at`` was written."""
        if self.next_expiry is None or expires_at < self.next_expiry:
            self.next_expiry = expires_at

    async def run(self) -> None:
        """The loop: tick, then sleep until woken or the next timer."""
        failures = 0
        retry_at: int | None = None  # after a failed tick: no tick before this, bar submits
        wake = self._wake
        while True:
            woken = wake.rearm()
            waiting = retry_at is not None and not self._submitter.queue
            if waiting and retry_at is not None and self._clock.now_ms() < retry_at:
                await self._clock.wait(woken, retry_at)
                continue
            retry_at = None
            wake.loop_turned = time.perf_counter()
            try:
                deadline = self.tick()
            except StorageError as exc:
                # The database could not take the tick's writes (disk full, I/O error):
                # nothing of it was written and what it took is back in place (see tick).
                # Try again later, not at every run's end, but at once for a queued submit
                # (its caller is told either way); meanwhile a closing scheduler need not
                # wait for the runs to be written (recovery requeues them on open).
                failures += 1
                self.storage_failing = True
                self._runner.runs_empty.set()
                delay = min(STORAGE_RETRY_MAX_MS, STORAGE_RETRY_MS << min(failures - 1, 16))
                if failures == 1 or failures % 10 == 0:
                    log.error(
                        "the database rejected a dispatch step; retrying",
                        error=str(exc),
                        failures=failures,
                        retry_in_ms=delay,
                    )
                retry_at = self._clock.now_ms() + delay
                continue
            if failures:
                log.info("the database takes writes again", after_failures=failures)
                failures = 0
                self.storage_failing = False
            await self._clock.wait(woken, deadline)

    def tick(self) -> int | None:
        """One step: commit queued submits, settle, expire, decide, claim — one transaction.

        Returns the time of the next timer, if any.
        """
        if self._gate.held:
            return None  # the holder wakes us when it lets go
        self.ticks += 1
        now = self._clock.now_ms()
        if self.lift_pauses and self._settings.pauses.until:
            self._lift_ended_pauses(now)
        runner = self._runner
        runner.enforce_deadlines(now)
        claims = _Claims()
        submits = self._submitter.take_queued()
        finished, runner.finished = runner.finished, []
        settlement = self._settlement
        store = self._store
        try:
            with store.transaction() as tx:
                if submits:
                    self._submitter.write_queued(tx, submits, claims.follow)
                for run in self._running.values():
                    if run.unsaved_checkpoint:
                        store.save_checkpoint(tx, run.id, run.checkpoint)
                        claims.saved.append(run)
                completed = settlement.complete_standalone(tx, finished, now)
                for run, end, value in finished:
                    settlement.settle(
                        tx,
                        run,
                        end,
                        value,
                        now,
                        claims.follow,
                        claims.events,
                        completed,
                        claims.settled,
                    )
                if self._schedules is not None:
                    claims.firings = self._schedules.fire_due(tx, now, claims.follow)
                self._expire_and_claim(tx, now, claims)
        except BaseException as exc:
            for ps in submits:
                ps.error = ps.error or exc
                ps.done.set()
            # Rolled back: nothing in memory changed yet but the IO the decision admitted;
            # hand back the run ends for the next tick to write.
            runner.finished = finished + runner.finished
            self._io.give_back_admissions(now)
            raise
        # Committed: now the in-memory effects, the runs that ended first (a requeued task
        # may start again in this very tick).
        if claims.buckets is not None:
            self._policy.keep_buckets(claims.buckets)
        for run in claims.saved:
            run.unsaved_checkpoint = False
        settlement.apply(claims.settled)
        if claims.expired is not None:
            self.next_expiry = claims.next_expiry
            for task_id in claims.expired:
                self._io.forget(task_id)
        # Submitters first: woken before any event is published, they answer (a sidecar
        # writes the responses) before the forwarder sends these tasks' events.
        when_durable = self._durability.when_durable
        for ps in submits:
            when_durable(ps.done.set)
        for ps in submits:
            if ps.error is None:
                self._submitter.after_submit(ps.prepared, ps.results, batch=ps.batch)
        if claims.firings is not None:
            assert self._schedules is not None
            self._schedules.announce(claims.firings)  # (before the fired tasks start)
        publish = self._publish
        for event in claims.events:
            publish(event)
        for event in follow_events(store, claims.follow):
            publish(event)
        stop_cancelled(runner, self._io.forget, claims.follow)
        for s in claims.started:
            runner.launch(s, now)
        if claims.io_deferred or self._io.pressure_on:
            self._io.poll_pressure(now)
        for victim, for_id in claims.preempt:
            victim_run = self._running.get(victim)
            if victim_run is not None:
                runner.stop(victim_run, "preempted", for_id)
        if not self._running:
            runner.runs_empty.set()
        if claims.candidates_found:
            self.held = claims.held
        if self._idle_waiters:
            self._release_idle_waiters(claims)
        self._upkeep.note_writes()
        if self._submitter.queue:
            self._wake()  # more queued than one tick takes: the next tick goes on at once
        return self._next_deadline(now, claims.wake_at)

    def _lift_ended_pauses(self, now: int) -> None:
        """Timed pauses whose end has come lift by themselves (PROTOCOL.md "Timed pauses")."""
        pauses = self._settings.pauses
        ended = pauses.ended(now)
        if not ended:
            return
        for group, type_ in ended:
            pauses.remove(group=group, type=type_)
        try:
            self._settings.save_pauses()
        except BaseException:
            for group, type_ in ended:  # still paused; the tick's retry lifts them
                pauses.add(group=group, type=type_, until_at=now)
            raise
        for group, type_ in ended:
            self._publish(SchedulerResumed(group=group, type=type_))

    def _expire_and_claim(self, tx: Tx, now: int, claims: _Claims) -> None:
        if self.next_expiry is not None and now >= self.next_expiry:
            claims.expired = []
            for tid, ttype in self._store.expire_due(tx, now, claims.follow):
                claims.expired.append(tid)
                claims.events.append(TaskExpired(id=tid, type=ttype))
            claims.next_expiry = self._store.next_expiry()
        pauses = self._settings.pauses
        if self._lifecycle.closing or pauses.paused or self._bus.saturated:
            return
        # The runs this tick settled still hold their slots in memory until the commit;
        # the decision sees them gone, as the database does.
        runs = self._running
        if claims.settled:
            ended = {run.id for run in claims.settled}
            runs = {i: r for i, r in runs.items() if i not in ended}
        limits = self._limits()
        # Enough rows to fill the free slots and to look past a few candidates that limits
        # hold back (or that may preempt); when that is not enough, a second, wider read.
        window = max(0, limits.max_concurrency - len(runs)) + 8
        types = self._registry.types()
        policy = self._policy.policy(now)
        paused_groups = pauses.groups
        if policy is not None:
            types, paused_groups = self._unmetered(policy, now, types, paused_groups, claims)
        ready = self._store.ready(now, types, paused_groups, pauses.types, window)
        if policy is not None and (policy.aging is not None or policy.fair_share is not None):
            candidates = self._policy_candidates(
                policy, ready, now, types, paused_groups, runs, window
            )
        else:
            candidates = [
                Candidate(r.id, r.type, r.priority, r.group) for r in ready if r.id not in runs
            ]
        claims.candidates_found = bool(candidates)
        if not candidates:
            self._holds.step(())
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
            for r in runs.values()
        ]
        admit = self._io.admission(ready, types, now)
        decision = decide(candidates, running, limits, now, admit, policy)
        start = decision.start
        held = claims.held
        held.update(decision.held)
        if (
            len(ready) >= window
            and window < IO_WINDOW
            and len(running) + len(start) < limits.max_concurrency
        ):
            # Slots are free but the window is full of work that limits or a saturated
            # resource hold back: look further down the queue for tasks that may start
            # (they must not wait behind it).
            seen = {c.id for c in candidates}
            more = self._store.ready(now, types, paused_groups, pauses.types, IO_WINDOW)
            extra = [
                Candidate(r.id, r.type, r.priority, r.group)
                for r in more
                if r.id not in seen and r.id not in runs
            ]
            if extra:
                running += [RunningTask(c.id, c.type, c.priority, c.group, now) for c in start]
                admit = self._io.admission(more, types, now)
                if policy is not None:
                    if policy.aging is not None:
                        extra = self._with_due_since(extra)
                    # the second look sees the tokens the first one took
                    policy = Policy(
                        policy.aging, decision.buckets, policy.throttle, policy.fair_share
                    )
                second = decide(extra, running, limits, now, admit, policy)
                start = start + second.start
                decision.preempt += second.preempt
                decision.deferred += second.deferred
                decision.buckets = second.buckets
                held.update(second.held)
                if second.wake_at is not None:
                    decision.wake_at = min(second.wake_at, decision.wake_at or second.wake_at)
        self._holds.step(held.items())
        claims.preempt = decision.preempt
        if decision.wake_at is not None:
            _wake(claims, decision.wake_at)
        claims.io_deferred = decision.deferred
        if decision.deferred:
            retry_at = self._io.governor.next_admission_ms(now)
            if retry_at is not None:
                if retry_at <= now:
                    # Waiting for a heavy task to end, not for tokens: its release wakes us.
                    # The timer is only a safety net (and keeps the deferral alive).
                    retry_at = now + IO_RETRY_MS
                claims.wake_at = (
                    retry_at if claims.wake_at is None else min(claims.wake_at, retry_at)
                )
        claims.started = self._store.start(tx, [c.id for c in start], now)
        if self._io.admitted and len(claims.started) < len(start):  # not claimed: give back
            self._io.give_back_admissions(now, keep=frozenset(x.id for x in claims.started))
        if policy is not None and decision.buckets is not None:
            claims.buckets = decision.buckets
            if len(claims.started) < len(start):  # charge only the starts the store made
                before = self._policy.buckets
                assert before is not None
                claims.buckets = before.charge(((s.type, s.group) for s in claims.started), now)

    def _unmetered(
        self,
        policy: Policy,
        now: int,
        types: list[str],
        paused_groups: list[str],
        claims: _Claims,
    ) -> tuple[list[str], list[str]]:
        """The types and groups whose rate bucket has no token are left out of the read, as a
        pause would leave them out: however many of their tasks wait, those behind them are
        read. The dispatcher wakes when the first of those buckets has a token again."""
        buckets = policy.buckets
        if buckets is None:
            return types, paused_groups
        empty_types = {
            t for t, b in buckets.types.items() if b.next_token_at(now) > now and t in types
        }
        empty_groups = [g for g, b in buckets.groups.items() if b.next_token_at(now) > now]
        for t in empty_types:
            _wake(claims, buckets.types[t].next_token_at(now))
        for g in empty_groups:
            _wake(claims, buckets.groups[g].next_token_at(now))
        if empty_types:
            types = [t for t in types if t not in empty_types]
        if empty_groups:
            paused_groups = [*paused_groups, *(g for g in empty_groups if g not in paused_groups)]
        return types, paused_groups

    def _policy_candidates(
        self,
        policy: Policy,
        ready: list[Ready],
        now: int,
        types: list[str],
        paused_groups: list[str],
        runs: dict[int, Run],
        window: int,
    ) -> list[Candidate]:
        """The window's candidates plus what aging and fair share need beyond it: the
        longest-due tasks of each priority level (aging may put them first) and each
        configured group's most urgent tasks (they compete for slots) — bounded reads, index
        seeks all."""
        aging, fair = policy.aging, policy.fair_share
        extra: list[Ready] = []
        if len(ready) >= window:  # (else the window holds every due task already)
            if aging is not None:
                extra += self._store.aged(now, types, paused_groups, aging.limit, window)
            if fair is not None:
                # A group with no task in the window sits behind others' backlog: read its
                # most urgent. One with some competes already (and again next step).
                present = {r.group for r in ready}
                groups = [
                    g
                    for g in {**fair.weights, **fair.min_slots}
                    if g not in present and g not in paused_groups
                ]
                if groups:
                    runnable = set(types).difference(self._settings.pauses.types)
                    extra += [
                        r
                        for r in self._store.group_ready(now, groups, window)
                        if r.type in runnable
                    ]
        if extra:
            rows: dict[int, Ready] = {r.id: r for r in ready}
            for r in extra:
                rows.setdefault(r.id, r)
            ready = sorted(rows.values(), key=lambda r: (r.priority, r.id))
        candidates = [
            Candidate(r.id, r.type, r.priority, r.group) for r in ready if r.id not in runs
        ]
        if aging is not None:
            candidates = self._with_due_since(candidates)
        return candidates

    def _with_due_since(self, candidates: list[Candidate]) -> list[Candidate]:
        due = self._store.due_since_of([c.id for c in candidates])
        return [Candidate(c.id, c.type, c.priority, c.group, due.get(c.id)) for c in candidates]

    def _limits(self) -> Limits:
        c = self._settings.config
        return Limits(
            max_concurrency=c.max_concurrency,
            group_limits=c.group_limits,
            type_limits=self._registry.limits(),
            preempt_priority=c.preempt_priority,
            min_run_ms=c.min_run_ms,
        )

    def _next_deadline(self, now: int, wake_at: int | None) -> int | None:
        times = [wake_at, self.next_expiry, self._runner.next_deadline()]
        if self._schedules is not None:
            times.append(self._schedules.deadline)
        if self._settings.pauses.until and self.lift_pauses:
            times.append(self._settings.pauses.next_end())
        if self._policy.pressure.sources:
            times.append(self._policy.next_change(now))
        if not self._settings.pauses.paused:
            times.append(self._store.next_due(now))
        real = [t for t in times if t is not None]
        return min(real) if real else None

    # --- idleness -----------------------------------------------------------------------------

    async def wait_idle(self) -> None:
        """Return after a tick that found nothing running and nothing ready to run now."""
        ev = anyio.Event()
        self._idle_waiters.append((self.ticks, ev))
        self._wake()
        await ev.wait()

    def _release_idle_waiters(self, claims: _Claims) -> None:
        if (
            self._running
            or self._runner.finished
            or self._submitter.queue
            or claims.started
            or claims.candidates_found
            or self._bus.saturated  # work may be held back for a slow reader
        ):
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for n, ev in waiters:
            if n < self.ticks:
                ev.set()
            else:
                self._idle_waiters.append((n, ev))

    def release_all_idle_waiters(self) -> None:
        """Closing or failed: nobody waits for idleness any more."""
        waiters, self._idle_waiters = self._idle_waiters, []
        for _, ev in waiters:
            ev.set()
