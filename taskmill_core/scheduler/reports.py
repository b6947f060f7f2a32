"""Reports: reading the scheduler's state for people and programs — the task list, one task,
the status (counts, pauses, runs, IO), history statistics, and diagnostics.

Nothing here writes; a running task's record carries the latest progress of its run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio.lowlevel
import msgspec

from taskmill_core.clock import Clock
from taskmill_core.errors import InvalidParams, TaskNotFound
from taskmill_core.events import EventBus
from taskmill_core.executors import Registry
from taskmill_core.scheduler.iobridge import IoBridge
from taskmill_core.scheduler.policystate import PolicyState
from taskmill_core.scheduler.runner import Runner
from taskmill_core.scheduler.settings import Settings
from taskmill_core.store import SqliteStore
from taskmill_core.store.history import FOLD_CHUNK
from taskmill_core.types import (
    MAX_SAFE_INT,
    HistoryStats,
    SchedulerStatus,
    TaskInfo,
    TaskPage,
    TypeStats,
)

__all__ = ["Reports"]

MAX_FOLDS = 1000  # chunks one history.stats call adds in at most (more than FOLD_AT needs)


class Reports:
    """Read-only views over the store and the runs in flight."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        settings: Settings,
        registry: Registry,
        runner: Runner,
        io: IoBridge,
        bus: EventBus,
        policy: PolicyState,
        clock: Clock,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._store = store
        self._settings = settings
        self._registry = registry
        self._runner = runner
        self._io = io
        self._bus = bus

    def get(self, task_id: int) -> TaskInfo:
        info = self._runner.with_progress(self._store.get(task_id))
        if self._policy.aging is not None and info.state == "pending":
            (info,) = self._aged([info])
        return info

    def _aged(self, tasks: list[TaskInfo]) -> list[TaskInfo]:
        """``effectivePriority`` on the pending tasks aging orders as more urgent."""
        aging = self._policy.aging
        pending = [
            t.id
            for t in tasks
            if t.state == "pending" and t.priority > (aging.limit if aging else 255)
        ]
        if aging is None or not pending:
            return tasks
        due = self._store.due_since_of(pending)
        now = self._clock.now_ms()
        out = []
        for t in tasks:
            since = due.get(t.id)
            if since is not None:
                p = aging.effective(t.priority, since, now)
                if p != t.priority:
                    t = msgspec.structs.replace(t, effective_priority=p)
            out.append(t)
        return out

    def lookup(self, task_type: str, dedup_key: str) -> TaskInfo:
        return self._runner.with_progress(self._store.lookup(task_type, dedup_key))

    async def list_tasks(
        self,
        *,
        state: str | Sequence[str] | None,
        type: str | None,
        group: str | None,
        tags: dict[str, str] | None,
        limit: int,
        cursor: str | None,
        dedup_key: str | None = None,
        parent_id: int | None = None,
    ) -> TaskPage:
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
            before_id=before, dedup_key=dedup_key, parent_id=parent_id,
        )  # fmt: skip
        more = len(rows) > limit
        rows = rows[:limit]
        tasks = [self._runner.with_progress(t) for t in rows]
        if self._policy.aging is not None:
            tasks = self._aged(tasks)
        return TaskPage(
            tasks=tasks,
            next_cursor=str(rows[-1].id) if more else None,
        )

    async def status(self) -> SchedulerStatus:
        counts = await self._store.counts()
        running = []
        for run in sorted(self._runner.running.values(), key=lambda r: r.id):
            try:
                running.append(self._runner.with_progress(self._store.get(run.id)))
            except TaskNotFound:
                continue
        pauses = self._settings.pauses
        now = self._clock.now_ms()
        return SchedulerStatus(
            paused=pauses.paused,
            paused_groups=list(pauses.groups),
            paused_types=list(pauses.types),
            counts=counts,
            running=running,
            max_concurrency=self._settings.config.max_concurrency,
            io=self._io.governor.status(),
            executors=self._registry.types(),
            pressure=self._policy.pressure_status(now),
            rate_buckets=self._policy.buckets_status(now),
            pauses=pauses.listing(),
        )

    async def history_stats(self, task_type: str | None) -> HistoryStats:
        """From the per-type aggregates the store keeps as tasks finish (history.py): the
        tasks finished since the last call are added in first, a chunk per loop turn."""
        for _ in range(MAX_FOLDS):  # (a chunk per loop turn; the rest waits for the next call)
            if not self._store.fold_history(FOLD_CHUNK):
                break
            await anyio.lowlevel.checkpoint()
        return HistoryStats(
            by_type={
                t: TypeStats(
                    completed=agg.completed,
                    failed=agg.failed,
                    avg_duration_ms=agg.duration_sum / agg.durations if agg.durations else None,
                    p95_duration_ms=agg.p95(),
                    avg_io=agg.avg_io(),
                )
                for t, agg in self._store.history_aggregates(task_type).items()
            }
        )

    def io_state(self) -> dict[str, Any]:
        gov = self._io.governor
        return {
            "io_governor": repr(gov),
            "io_waiting": {str(k): list(v) for k, v in gov.waiting().items()},
            "io_deferred": gov.deferred(),
        }
