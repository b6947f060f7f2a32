"""The method handlers: thin, typed adapters from JSON-RPC params to the scheduler.

Each handler receives params already validated by msgspec (see :mod:`sidecar.params`) and
returns a Struct the protocol layer encodes. Errors are the core's exceptions; the protocol
layer maps them to codes by their ``kind``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from sidecar.hostexec import HostExecutors
from sidecar.jsonrpc import JsonRpcProtocol, validation_path
from sidecar.params import (
    PROTOCOL_VERSION,
    BatchEntry,
    CancelManyParams,
    CancelManyResult,
    CancelResult,
    Capabilities,
    ConfigureParams,
    Empty,
    EventsConfigureParams,
    ExecutorCheckpointParams,
    ExecutorProgressParams,
    HistoryStatsParams,
    InitializeParams,
    InitializeResult,
    ListParams,
    LookupParams,
    PingResult,
    PruneParams,
    PruneResult,
    RegisterParams,
    RetryResult,
    ScheduleListResult,
    ScheduleRefParams,
    ScopeParams,
    ServerInfo,
    SetPriorityParams,
    ShutdownParams,
    SubmitBatchResult,
    TaskIdParams,
    UnregisterParams,
)
from sidecar.redact import (
    redact_page,
    redact_result,
    redact_schedule,
    redact_status,
    redact_task,
    without_secrets_key,
)
from sidecar.selection import EventSelection
from taskmill_core import Scheduler, TaskSpec
from taskmill_core.errors import InvalidParams, PayloadTooLarge
from taskmill_core.scheduler import MAX_BATCH
from taskmill_core.types import (
    HistoryStats,
    MetricsReport,
    Schedule,
    SchedulerConfig,
    SchedulerStatus,
    ScheduleSpec,
    SubmitResult,
    TaskInfo,
    TaskPage,
)

__all__ = ["EVENT_NAMES", "Methods", "RawBatch"]

EVENT_NAMES = [
    "sidecar.ready",
    "sidecar.exiting",
    "task.submitted",
    "task.updated",
    "task.batchSubmitted",
    "task.started",
    "task.progress",
    "task.completed",
    "task.failed",
    "task.cancelled",
    "task.superseded",
    "task.preempted",
    "task.expired",
    "scheduler.paused",
    "scheduler.resumed",
    "io.pressure",
    # recurring schedules
    "schedule.fired",
    "schedule.skipped",
]

FEATURES = ["upload", "eventSelection", "schedules", "workflows"]
"""What this sidecar has of the contract's additions (``initialize.capabilities.features``)."""

_INDEX = re.compile(r"^\$\[(\d+)\]")


class RawBatch(msgspec.Struct, forbid_unknown_fields=True):
    """``task.submitBatch`` before its entries are validated one by one (to name the index)."""

    tasks: list[Any]


class Methods:
    """Binds every client → sidecar method of PROTOCOL.md to the scheduler."""

    def __init__(
        self,
        scheduler: Scheduler,
        hosts: HostExecutors,
        *,
        server_info: ServerInfo,
        max_message_bytes: int,
        request_shutdown: Callable[[int], None],
        now_ms: Callable[[], int],
        selection: EventSelection | None = None,
    ) -> None:
        self.sched = scheduler
        self.hosts = hosts
        self.server_info = server_info
        self.max_message_bytes = max_message_bytes
        self.request_shutdown = request_shutdown
        self.now_ms = now_ms
        self.selection = selection or EventSelection(EVENT_NAMES)
        self.discover_document: dict[str, Any] = {}

    def register_all(self, proto: JsonRpcProtocol) -> None:
        r = proto.register
        r("initialize", self.initialize, InitializeParams)
        r("ping", self.ping, Empty)
        r("shutdown", self.shutdown, ShutdownParams, shuts_down=True)
        r("rpc.discover", self.discover, Empty)
        r("task.submit", self.submit, TaskSpec, batch=self.submit_many)
        r("task.submitBatch", self.submit_batch, RawBatch)
        r("task.get", self.get, TaskIdParams)
        r("task.list", self.list_tasks, ListParams)
        r("task.cancel", self.cancel, TaskIdParams)
        r("task.cancelMany", self.cancel_many, CancelManyParams)
        r("task.setPriority", self.set_priority, SetPriorityParams)
        r("task.pause", self.pause, TaskIdParams)
        r("task.resume", self.resume, TaskIdParams)
        r("task.retry", self.retry, TaskIdParams)
        r("scheduler.status", self.status, Empty)
        r("scheduler.pause", self.pause_all, ScopeParams)
        r("scheduler.resume", self.resume_all, ScopeParams)
        r("scheduler.configure", self.configure, ConfigureParams)
        r("history.stats", self.history_stats, HistoryStatsParams)
        r("history.prune", self.prune, PruneParams)
        r("events.configure", self.events_configure, EventsConfigureParams)
        r("schedule.create", self.schedule_create, ScheduleSpec)
        r("schedule.get", self.schedule_get, ScheduleRefParams)
        r("schedule.delete", self.schedule_delete, ScheduleRefParams)
        r("schedule.list", self.schedule_list, Empty)
        r("schedule.pause", self.schedule_pause, ScheduleRefParams)
        r("schedule.resume", self.schedule_resume, ScheduleRefParams)
        r("executor.register", self.register, RegisterParams)
        r("executor.unregister", self.unregister, UnregisterParams)
        r("executor.progress", self.executor_progress, ExecutorProgressParams)
        r("executor.checkpoint", self.executor_checkpoint, ExecutorCheckpointParams)
        # Workflows
        r("task.lookup", self.lookup, LookupParams)
        r("scheduler.metrics", self.metrics, Empty)

    # --- lifecycle ---------------------------------------------------------------------

    async def initialize(self, p: InitializeParams) -> InitializeResult:
        return InitializeResult(
            server_info=self.server_info,
            protocol_version=PROTOCOL_VERSION,
            executors=self.sched.executor_types(),
            capabilities=Capabilities(
                max_message_bytes=self.max_message_bytes,
                events=EVENT_NAMES,
                batch_max=MAX_BATCH,
                features=FEATURES,
            ),
        )

    async def ping(self, p: Empty) -> PingResult:
        return PingResult(now=self.now_ms())

    async def shutdown(self, p: ShutdownParams) -> Empty:
        self.request_shutdown(p.grace_ms)
        return Empty()

    async def discover(self, p: Empty) -> dict[str, Any]:
        return self.discover_document

    # --- tasks -------------------------------------------------------------------------

    # Every TaskInfo answered goes through redact_* (header values of http.* tasks).

    async def submit(self, p: TaskSpec) -> SubmitResult:
        return redact_result(await self.sched.submit(without_secrets_key(p), validated=True))

    async def submit_many(self, ps: list[TaskSpec]) -> list[SubmitResult | Exception]:
        """Pipelined ``task.submit`` requests that arrived together, each answered on its own."""
        results = await self.sched.submit_many([without_secrets_key(p) for p in ps], validated=True)
        return [r if isinstance(r, Exception) else redact_result(r) for r in results]

    async def submit_batch(self, p: RawBatch) -> SubmitBatchResult:
        if len(p.tasks) > MAX_BATCH:
            raise InvalidParams(f"a batch holds at most {MAX_BATCH} tasks", "$.tasks")
        try:
            specs = msgspec.convert(p.tasks, list[TaskSpec])
        except msgspec.ValidationError as exc:
            message = str(exc)
            inner = validation_path(message)
            match = _INDEX.match(inner)
            index = int(match.group(1)) if match else None
            path = "$.tasks" + inner[1:]
            data = {"index": index} if index is not None else {}
            raise InvalidParams(message.split(" - at `")[0], path, **data) from None
        try:
            specs = [without_secrets_key(spec) for spec in specs]
            results = await self.sched.submit_batch(specs, validated=True)
        except PayloadTooLarge as exc:
            index = exc.data.get("index")
            if index is not None:
                exc.data["path"] = f"$.tasks[{index}].payload"
            raise
        return SubmitBatchResult(results=[BatchEntry(r.id, r.outcome) for r in results])

    async def get(self, p: TaskIdParams) -> TaskInfo:
        return redact_task(await self.sched.get(p.id))

    async def list_tasks(self, p: ListParams) -> TaskPage:
        page = await self.sched.list_tasks(
            state=p.state,
            type=p.type,
            group=p.group,
            tags=p.tags,
            limit=p.limit,
            cursor=p.cursor,
            dedup_key=p.dedup_key,
            parent_id=p.parent_id,
        )
        return redact_page(page)

    async def cancel(self, p: TaskIdParams) -> CancelResult:
        await self.sched.cancel(p.id)
        return CancelResult(id=p.id, state="cancelled")

    async def cancel_many(self, p: CancelManyParams) -> CancelManyResult:
        n = await self.sched.cancel_many(type=p.type, group=p.group, tags=p.tags)
        return CancelManyResult(cancelled=n)

    async def set_priority(self, p: SetPriorityParams) -> TaskInfo:
        return redact_task(await self.sched.set_priority(p.id, p.priority))

    async def pause(self, p: TaskIdParams) -> TaskInfo:
        return redact_task(await self.sched.pause(p.id))

    async def resume(self, p: TaskIdParams) -> TaskInfo:
        return redact_task(await self.sched.resume(p.id))

    async def retry(self, p: TaskIdParams) -> RetryResult:
        r = await self.sched.retry(p.id)
        return RetryResult(id=r.id, outcome=r.outcome)

    # --- scheduler -----------------------------------------------------------------------

    async def status(self, p: Empty) -> SchedulerStatus:
        return redact_status(await self.sched.status())

    async def pause_all(self, p: ScopeParams) -> Empty:
        await self.sched.pause_all(group=p.group, type=p.type)
        return Empty()

    async def resume_all(self, p: ScopeParams) -> Empty:
        await self.sched.resume_all(group=p.group, type=p.type)
        return Empty()

    async def configure(self, p: ConfigureParams) -> SchedulerConfig:
        changes = {f: getattr(p, f) for f in p.__struct_fields__ if getattr(p, f) is not None}
        return await self.sched.configure(**changes)

    async def history_stats(self, p: HistoryStatsParams) -> HistoryStats:
        return await self.sched.history_stats(p.type)

    async def prune(self, p: PruneParams) -> PruneResult:
        removed = await self.sched.prune(older_than_ms=p.older_than_ms, keep=p.keep)
        return PruneResult(removed=removed)

    # --- event selection -------------------------------------------------------------------

    async def events_configure(self, p: EventsConfigureParams) -> Empty:
        self.selection.configure(p.exclude, p.batch_submitted)  # (raises before changing)
        self.sched.announce_batches = p.batch_submitted
        return Empty()

    # --- recurring schedules ------------------------------------------------------------------

    async def schedule_create(self, p: ScheduleSpec) -> Schedule:
        spec = msgspec.structs.replace(p, task=without_secrets_key(p.task))
        return redact_schedule(await self.sched.create_schedule(spec))

    async def schedule_get(self, p: ScheduleRefParams) -> Schedule:
        return redact_schedule(await self.sched.get_schedule(_schedule_ref(p)))

    async def schedule_delete(self, p: ScheduleRefParams) -> Empty:
        await self.sched.delete_schedule(_schedule_ref(p))
        return Empty()

    async def schedule_list(self, p: Empty) -> ScheduleListResult:
        return ScheduleListResult([redact_schedule(s) for s in await self.sched.schedules()])

    async def schedule_pause(self, p: ScheduleRefParams) -> Schedule:
        return redact_schedule(await self.sched.pause_schedule(_schedule_ref(p)))

    async def schedule_resume(self, p: ScheduleRefParams) -> Schedule:
        return redact_schedule(await self.sched.resume_schedule(_schedule_ref(p)))

    # --- host executors --------------------------------------------------------------------

    async def register(self, p: RegisterParams) -> Empty:
        self.hosts.register(p.type, p.concurrency)
        return Empty()

    async def unregister(self, p: UnregisterParams) -> Empty:
        self.hosts.unregister(p.type)
        return Empty()

    async def executor_progress(self, p: ExecutorProgressParams) -> None:
        self.hosts.progress(p)

    async def executor_checkpoint(self, p: ExecutorCheckpointParams) -> None:
        self.hosts.checkpoint(p)

    # --- workflows --------------------------------------------------------------------------

    async def lookup(self, p: LookupParams) -> TaskInfo:
        return redact_task(await self.sched.lookup(p.type, p.dedup_key))

    async def metrics(self, p: Empty) -> MetricsReport:
        return await self.sched.metrics()


def _schedule_ref(p: ScheduleRefParams) -> int | str:
    """``{id}`` or ``{name}``, exactly one."""
    if p.id is not None and p.name is not None:
        raise InvalidParams("give id or name, not both", "$.name")
    if p.id is not None:
        return p.id
    if p.name is None:
        raise InvalidParams("give the schedule's id or name", "$.id")
    return p.name
