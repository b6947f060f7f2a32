"""Recurring schedules: creating and changing them, and firing them from the dispatcher's tick.

A schedule fires inside a dispatch tick, in the tick's own transaction: the task it submits
(written by :meth:`Submitter.write_queued`, the road every queued submit takes) and the
schedule's new ``next_at``/``runs`` commit together or not at all, so a crash can neither fire
a schedule twice nor lose a firing. Only after the commit are the firings announced: each
task's ``task.submitted`` first, then ``schedule.fired`` (or ``schedule.skipped``).

No timer of its own: :attr:`Schedules.next_at` (the earliest ``next_at`` of the table, from
its index) is one more deadline the dispatcher sleeps until, so an idle scheduler with a
thousand schedules still does not wake before the first is due. A tick fires at most
``FIRE_PER_TICK`` schedules; when more are due, the next tick follows at once (its deadline
is already past), so a thousand due schedules never hold the loop in one piece.

The times themselves are :mod:`taskmill_core.recurrence`'s: after a firing at ``now`` the next
time is the first one later than ``now`` — which is also how firings missed while the app
was closed collapse into one, and why a resumed schedule does not fire for its paused time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import msgspec
import structlog

from taskmill_core.clock import Clock
from taskmill_core.errors import (
    DuplicateRejected,
    InvalidParams,
    ScheduleNotFound,
    TaskmillError,
    TaskNotFound,
)
from taskmill_core.recurrence import Cron, local_zone_name, next_on_grid, zone
from taskmill_core.scheduler.durability import Durability
from taskmill_core.scheduler.signals import Lifecycle, WriteGate
from taskmill_core.scheduler.submitting import QueuedSubmit, Submitter
from taskmill_core.store import Follow, SqliteStore, Tx, prepare
from taskmill_core.types import (
    ACTIVE_STATES,
    Schedule,
    ScheduleFired,
    ScheduleSkipped,
    ScheduleSpec,
    TaskSpec,
)
from taskmill_core.validation import check_spec, invalid

__all__ = ["FIRE_PER_TICK", "SCHEDULE_TAG", "Firings", "Schedules"]

log = structlog.get_logger("taskmill.scheduler")

# Schedules one tick fires at most (see the module docstring): a firing costs ~60 us on the
# loop (its row read, the task's insert, the row's update, the events), so 16 of them keep a
# tick well inside the 5 ms loop-stall budget together with the runs it settles and claims.
FIRE_PER_TICK = 16
SCHEDULE_TAG = "schedule"  # the tag naming the schedule that submitted a task
# SubmitParams fields a schedule's task may not set: its time is the schedule's, and it has
# no place in a workflow. (getattr: ``sibling_of`` comes with workflows.)
_FORBIDDEN = ("run_at", "delay_ms", "depends_on", "parent_id", "sibling_of")


@dataclass(eq=False)
class Firings:
    """What one tick's firings wrote, announced after its commit."""

    submits: list[QueuedSubmit] = field(default_factory=list)
    events: list[tuple[QueuedSubmit | None, ScheduleFired | ScheduleSkipped]] = field(
        default_factory=list
    )
    next_at: int | None = None  # the table's earliest next_at after them
    more: bool = False  # as many as a tick fires: more may be due now


class Schedules:
    """The schedules' API and their firing."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        clock: Clock,
        submitter: Submitter,
        durability: Durability,
        gate: WriteGate,
        lifecycle: Lifecycle,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._submitter = submitter
        self._durability = durability
        self._publish = durability.publish
        self._gate = gate
        self._lifecycle = lifecycle
        self._wake = wake
        self.next_at: int | None = None  # the earliest next_at in the table
        self._backlog = False  # more are due than the last tick fired
        self.fired = 0  # firings that submitted a task, since open
        self.skipped = 0

    def load(self) -> None:
        """Read the first deadline (on open)."""
        self.next_at = self._store.next_schedule_at()

    def _note(self, at: int | None) -> None:
        if at is not None and (self.next_at is None or at < self.next_at):
            self.next_at = at
            self._wake()

    # --- firing (in the dispatcher's tick) ----------------------------------------------------

    def fire_due(self, tx: Tx, now: int, follow: Follow) -> Firings | None:
        """Fire up to ``FIRE_PER_TICK`` due schedules inside the tick's transaction."""
        if self.next_at is None or now < self.next_at or self._lifecycle.closing:
            return None
        store = self._store
        out = Firings()
        firing: list[tuple[Schedule, int | None, QueuedSubmit]] = []
        done = anyio.Event()  # (nobody waits for it: one for all, not one per firing)
        due = store.due_schedules(now, FIRE_PER_TICK)
        for s in due:
            try:
                following = self._following(s, now)
            except InvalidParams as exc:  # its zone vanished from the zone data: it ends
                log.error("a schedule cannot be timed; it ends", schedule=s.id, error=str(exc))
                following = None
            if s.last_task_id is not None and self._active(s.last_task_id):
                store.record_firing(tx, s.id, following, None, now)
                out.events.append((None, ScheduleSkipped(s.id, "stillActive", following)))
                continue
            spec = msgspec.structs.replace(s.task, tags={**s.task.tags, SCHEDULE_TAG: str(s.id)})
            if self._submitter.type_defaults:
                # Each firing takes the type's defaults as they are now. The stored task does
                # not keep which fields its create named, so one at the global default (e.g.
                # priority 128) counts as left out (docs/protocol.md, Choices).
                spec = self._submitter.with_defaults(spec, None)
            qs = QueuedSubmit([prepare(spec, now)], now, done)
            out.submits.append(qs)
            firing.append((s, following, qs))
        if out.submits:
            self._submitter.write_queued(tx, out.submits, follow)
        for s, following, qs in firing:
            if qs.error is not None and not isinstance(qs.error, DuplicateRejected):
                raise qs.error  # (validated at creation: a bug, not the schedule's)
            submitted = qs.error is None and qs.results[0].outcome in ("inserted", "superseded")
            if not submitted:
                store.record_firing(tx, s.id, following, None, now)
                out.events.append((qs, ScheduleSkipped(s.id, "duplicate", following)))
                continue
            task_id = qs.results[0].id
            if s.max_runs is not None and s.runs + 1 >= s.max_runs:
                following = None
            store.record_firing(tx, s.id, following, task_id, now)
            out.events.append((qs, ScheduleFired(s.id, task_id, following)))
        out.next_at = store.next_schedule_at()
        out.more = len(due) >= FIRE_PER_TICK
        return out

    @property
    def deadline(self) -> int | None:
        """When the dispatcher must tick for the next firing. None while a backlog of due
        schedules is worked off: a wake-up drives those ticks instead, since a deadline
        already past would let the loop tick again without yielding to anything else."""
        return None if self._backlog else self.next_at

    def announce(self, firings: Firings) -> None:
        """After the commit: each task's events, then the schedule's."""
        self.next_at = firings.next_at
        self._backlog = firings.more
        if firings.more:
            self._wake()
        after_submit = self._submitter.after_submit
        for qs, event in firings.events:
            if qs is not None and qs.error is None:
                after_submit(qs.prepared, qs.results)
            if isinstance(event, ScheduleFired):
                self.fired += 1
            else:
                self.skipped += 1
            self._publish(event)

    def _active(self, task_id: int) -> bool:
        try:
            return self._store.state_of(task_id) in ACTIVE_STATES
        except TaskNotFound:  # pruned
            return False

    @staticmethod
    def _following(s: Schedule, now: int) -> int | None:
        """The schedule's first time later than ``now``."""
        if s.every_ms is not None:
            assert s.start_at is not None
            return next_on_grid(s.start_at, s.every_ms, now)
        assert s.cron is not None and s.timezone is not None
        return Cron(s.cron, zone(s.timezone)).next_after(now)

    # --- the API ----------------------------------------------------------------------------

    async def create(self, spec: ScheduleSpec) -> Schedule:
        """Check and store a new schedule; its first firing is at its first time."""
        self._lifecycle.check_open()
        now = self._clock.now_ms()
        new = self._check(spec, now)
        await self._gate.wait_open()
        with self._store.transaction() as tx:
            if new.name is not None:
                existing = self._store.find_schedule(new.name)
                if existing is not None:
                    raise DuplicateRejected(
                        f"a schedule named {new.name!r} exists", existing.id, path="$.name"
                    )
            schedule_id = self._store.insert_schedule(tx, new, now)
        self._note(new.next_at)
        await self._durability.wait()
        return self._store.get_schedule(schedule_id)

    def _check(self, spec: ScheduleSpec, now: int) -> Schedule:
        """The stored form of ``spec``, or ``InvalidParams`` naming the field."""
        try:
            spec = msgspec.convert(msgspec.to_builtins(spec), ScheduleSpec)
        except msgspec.ValidationError as exc:
            raise invalid(exc) from None
        except (TypeError, msgspec.EncodeError) as exc:
            raise InvalidParams(f"task payload is not JSON: {exc}", "$.task.payload") from None
        task = self._check_task(spec.task, now)
        if (spec.every_ms is None) == (spec.cron is None):
            raise InvalidParams(
                "give exactly one of everyMs and cron",
                "$.everyMs" if spec.every_ms is not None else "$.cron",
            )
        common = {"task": task, "name": spec.name, "max_runs": spec.max_runs}
        if spec.every_ms is not None:
            if spec.timezone is not None:
                raise InvalidParams("timezone applies to cron schedules only", "$.timezone")
            start = spec.start_at if spec.start_at is not None else now + spec.every_ms
            first = start if start >= now else next_on_grid(start, spec.every_ms, now - 1)
            return Schedule(
                id=0,
                runs=0,
                paused=False,
                every_ms=spec.every_ms,
                start_at=start,
                next_at=first,
                **common,  # type: ignore[arg-type]
            )
        assert spec.cron is not None
        tz_name = spec.timezone if spec.timezone is not None else local_zone_name()
        cron = Cron.parse(spec.cron, zone(tz_name))
        after = now if spec.start_at is None else max(now, spec.start_at - 1)
        first_cron = cron.next_after(after)
        if first_cron is None:
            raise InvalidParams(f"the cron {spec.cron!r} never matches", "$.cron")
        return Schedule(
            id=0,
            runs=0,
            paused=False,
            cron=spec.cron,
            timezone=tz_name,
            start_at=spec.start_at,
            next_at=first_cron,
            **common,  # type: ignore[arg-type]
        )

    @staticmethod
    def _check_task(task: TaskSpec, now: int) -> TaskSpec:
        for name in _FORBIDDEN:
            if getattr(task, name, None) is not None:
                wire = name.split("_")[0] + "".join(w.title() for w in name.split("_")[1:])
                raise InvalidParams(
                    f"a schedule's task may not set {wire}: the schedule decides its time",
                    f"$.task.{wire}",
                )
        if SCHEDULE_TAG in task.tags:
            raise InvalidParams(
                f"the tag {SCHEDULE_TAG!r} is the schedule's own", f"$.task.tags.{SCHEDULE_TAG}"
            )
        if len(task.tags) > 31:
            raise InvalidParams("a schedule's task holds at most 31 tags", "$.task.tags")
        try:
            task = check_spec(task)
            prepare(task, now)  # (the payload's size)
        except TaskmillError as exc:
            path = str(exc.data.get("path", "$"))
            exc.data["path"] = "$.task" + path[1:]
            if isinstance(exc, InvalidParams):
                exc.path = exc.data["path"]
            raise
        return task

    def resolve(self, ref: int | str) -> Schedule:
        """The schedule with id ``ref`` (an int) or name ``ref`` (a str)."""
        if isinstance(ref, str):
            found = self._store.find_schedule(ref)
            if found is None:
                raise ScheduleNotFound(f"no schedule named {ref!r}", name=ref)
            return found
        return self._store.get_schedule(ref)

    def list(self) -> list[Schedule]:
        return self._store.list_schedules()

    async def pause(self, ref: int | str) -> Schedule:
        """Stop firing until resumed (``next_at`` absent meanwhile)."""
        await self._gate.wait_open()
        s = self.resolve(ref)
        with self._store.transaction() as tx:
            self._store.set_schedule_next(tx, s.id, None, paused=True)
        await self._durability.wait()
        return self._store.get_schedule(s.id)

    async def resume(self, ref: int | str) -> Schedule:
        """Fire again from the first time after now (none for the paused time)."""
        await self._gate.wait_open()
        s = self.resolve(ref)
        if not s.paused:
            return s
        ended = s.max_runs is not None and s.runs >= s.max_runs
        following = None if ended else self._following(s, self._clock.now_ms())
        with self._store.transaction() as tx:
            self._store.set_schedule_next(tx, s.id, following, paused=False)
        self._note(following)
        await self._durability.wait()
        return self._store.get_schedule(s.id)

    async def delete(self, ref: int | str) -> None:
        """Remove the schedule; the tasks it submitted stay."""
        await self._gate.wait_open()
        s = self.resolve(ref)
        with self._store.transaction() as tx:
            self._store.delete_schedule(tx, s.id)
        await self._durability.wait()
