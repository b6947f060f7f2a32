"""Operations on tasks that exist: cancel, reprioritize, pause and resume, retry — and the
scheduler-wide pauses.

Each is one short write (waiting while a large batch holds writes), then its effects on the
runs in flight (a cancelled task's run is stopped), its events, and the wait for durability.
"""

from __future__ import annotations

from collections.abc import Callable

from taskmill_core.clock import Clock
from taskmill_core.errors import InvalidParams, InvalidState, TaskNotFound
from taskmill_core.scheduler.durability import Durability
from taskmill_core.scheduler.iobridge import IoBridge
from taskmill_core.scheduler.runner import Runner
from taskmill_core.scheduler.settings import Settings
from taskmill_core.scheduler.settle import follow_events, stop_cancelled
from taskmill_core.scheduler.signals import Lifecycle, WriteGate
from taskmill_core.store import Follow, SqliteStore
from taskmill_core.types import (
    MAX_DURATION_MS,
    MAX_SAFE_INT,
    SchedulerPaused,
    SchedulerResumed,
    SubmitResult,
    TaskCancelled,
    TaskInfo,
    TaskUpdated,
)
from taskmill_core.validation import priority_value

__all__ = ["TaskOperations"]


class TaskOperations:
    """Changes to tasks already submitted, and to the scheduler-wide pauses."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        clock: Clock,
        settings: Settings,
        durability: Durability,
        gate: WriteGate,
        lifecycle: Lifecycle,
        runner: Runner,
        io: IoBridge,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._durability = durability
        self._publish = durability.publish
        self._gate = gate
        self._lifecycle = lifecycle
        self._runner = runner
        self._io = io
        self._wake = wake

    async def cancel(self, task_id: int) -> None:
        await self._cancel(task_id)
        await self._durability.wait()

    async def _cancel(self, task_id: int) -> None:
        await self._gate.wait_open()
        follow = Follow()
        with self._store.transaction() as tx:
            _, cancelled = self._store.cancel(tx, task_id, self._clock.now_ms(), follow)
        for cid, ctype in cancelled:
            if not self._runner.stop_task(cid, "cancelled"):
                self._io.forget(cid)
            self._publish(TaskCancelled(id=cid, type=ctype))
        for event in follow_events(self._store, follow):
            self._publish(event)
        stop_cancelled(self._runner, self._io.forget, follow)
        self._wake()

    async def cancel_many(
        self, *, type: str | None, group: str | None, tags: dict[str, str] | None
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
        await self._durability.wait()  # one fsync for them all
        return count

    async def set_priority(self, task_id: int, priority: int | str) -> TaskInfo:
        await self._gate.wait_open()
        value = priority_value(priority)
        with self._store.transaction() as tx:
            info = self._store.set_priority(tx, task_id, value)
        run = self._runner.running.get(task_id)
        if run is not None:
            run.priority = value
        info = self._runner.with_progress(info)
        self._publish(TaskUpdated(task=info))
        self._wake()
        await self._durability.wait()
        return info

    async def pause(self, task_id: int) -> TaskInfo:
        """Pause one task: a pending one waits, a running one is interrupted (no retry used)."""
        await self._gate.wait_open()
        running = self._runner.running
        with self._store.transaction() as tx:
            state = self._store.state_of(task_id)
            if state == "pending":
                self._store.pause_pending(tx, task_id)
            elif state == "running" and task_id in running:
                self._store.interrupt(tx, task_id, "paused")
            else:
                raise InvalidState(
                    f"task {task_id} is {state}; only pending or running tasks can be paused",
                    id=task_id,
                    state=state,
                )
        if state == "pending":
            self._io.forget(task_id)
        self._runner.stop_task(task_id, "paused")
        info = self._store.get(task_id)
        self._publish(TaskUpdated(task=info))
        await self._durability.wait()
        return info

    async def resume(self, task_id: int) -> TaskInfo:
        await self._gate.wait_open()
        with self._store.transaction() as tx:
            info = self._store.resume(tx, task_id, self._clock.now_ms())
        self._publish(TaskUpdated(task=info))
        self._wake()
        await self._durability.wait()
        return info

    async def retry(self, task_id: int) -> SubmitResult:
        """Run a failed or dead-lettered task again: same id, attempt 0."""
        await self._gate.wait_open()
        self._lifecycle.check_open()
        with self._store.transaction() as tx:
            new_id, outcome, info = self._store.retry(tx, task_id, self._clock.now_ms())
        if info is not None:
            self._publish(TaskUpdated(task=info))
        self._wake()
        await self._durability.wait()
        return SubmitResult(new_id, outcome)

    async def pause_all(
        self,
        *,
        group: str | None,
        type: str | None,
        until_at: int | None = None,
        for_ms: int | None = None,
    ) -> None:
        """Pause a scope, until resumed or (timed) until ``until_at`` / for ``for_ms``."""
        await self._gate.wait_open()
        if group is not None and type is not None:
            raise InvalidParams("pause one scope at a time: group or type", "$")
        now = self._clock.now_ms()
        if until_at is not None and for_ms is not None:
            raise InvalidParams("give untilAt or forMs, not both", "$.forMs")
        if for_ms is not None:
            if not 1 <= for_ms <= MAX_DURATION_MS:
                raise InvalidParams(f"forMs must be in 1..{MAX_DURATION_MS}", "$.forMs")
            until_at = now + for_ms
        elif until_at is not None and not now < until_at <= MAX_SAFE_INT:
            raise InvalidParams("untilAt must be a time in the future (epoch ms)", "$.untilAt")
        self._settings.pauses.add(group=group, type=type, until_at=until_at)
        self._settings.save_pauses()
        self._publish(SchedulerPaused(group=group, type=type, until_at=until_at))
        if until_at is not None:
            self._wake()  # the dispatcher's next deadline now includes the pause's end
        await self._durability.wait()

    async def resume_all(self, *, group: str | None, type: str | None) -> None:
        await self._gate.wait_open()
        if group is not None and type is not None:
            raise InvalidParams("resume one scope at a time: group or type", "$")
        self._settings.pauses.remove(group=group, type=type)
        self._settings.save_pauses()
        self._publish(SchedulerResumed(group=group, type=type))
        self._wake()
        await self._durability.wait()
