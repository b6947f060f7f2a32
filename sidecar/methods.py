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
    ConfigureRequest,
    Empty,
    EventsConfigureParams,
    ExecutorCheckpointParams,
    ExecutorProgressParams,
    HistoryStatsParams,
    InitializeParams,
    InitializeResult,
    ListParams,
    LookupParams,
    PauseParams,
    PingResult,
    PruneParams,
    PruneResult,
    RegisterParams,
    RetryResult,
    ScheduleListResult,
    ScheduleRefParams,
    ScopeParams,
    ServerInfo,
    SetPressureParams,
    SetPriorityParams,
    ShutdownParams,
    SubmitBatchResult,
    SubmitParams,
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
from taskmill_core.scheduler.settings import POLICY_SETTINGS
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
from taskmill_core.validation import camel

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
    # scheduling policy
    "scheduler.pressure",
]

FEATURES = ["upload", "eventSelection", "policy", "schedules", "workflows"]
"""What this sidecar has of the contract's additions (``initialize.capabilities.features``)."""

_INDEX = re.compile(r"^\$\[(\d+)\]")
_NULLABLE_DEFAULTABLE = ("backoff", "timeout_ms", "ttl_ms", "group", "io_cost")


def _given(p: SubmitParams) -> frozenset[str]:
    """The defaultable fields a wire submit gave (a ``null`` counts as left out)."""
    given = [n for n in _NULLABLE_DEFAULTABLE if getattr(p, n) is not None]
    if p.priority is not msgspec.UNSET:
        given.append("priority")
    if p.max_retries is not msgspec.UNSET:
        given.append("max_retries")
    return frozenset(given)


def _with_global_defaults(p: SubmitParams) -> TaskSpec:
    """A decoded :class:`SubmitParams` with the global defaults where it left a field out
    (in place: the value is this request's own)."""
    if p.priority is msgspec.UNSET:
        p.priority = 128
    if p.max_retries is msgspec.UNSET:
        p.max_retries = 3
    return p


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
        self._proto: JsonRpcProtocol | None = None
        self._submit_kind: type[TaskSpec] = TaskSpec

    def register_all(self, proto: JsonRpcProtocol) -> None:
        r = proto.register
        r("initialize", self.initialize, InitializeParams)
        r("ping", self.ping, Empty)
        r("shutdown", self.shutdown, ShutdownParams, shuts_down=True)
        r("rpc.discover", self.discover, Empty)
        self._proto = proto
        self._submit_kind = self._submit_type()
        r("task.submit", self.submit, self._submit_kind, batch=self.submit_many)
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
        r("scheduler.pause", self.pause_all, PauseParams)
        r("scheduler.resume", self.resume_all, ScopeParams)
        r("scheduler.configure", self.configure, ConfigureRequest)
        r("scheduler.setPressure", self.set_pressure, SetPressureParams)
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

    # task.submit is decoded as SubmitParams (which keeps a left-out priority or maxRetries
    # apart from a given one) only while type defaults are configured; else as TaskSpec, as
    # it always was (see _submit_type).

    def _submit_type(self) -> type[TaskSpec]:
        return SubmitParams if self.sched.config.type_defaults else TaskSpec

    def _register_submit(self) -> None:
        if self._proto is not None:
            kind = self._submit_type()
            if kind is not self._submit_kind:
                self._submit_kind = kind
                self._proto.retype("task.submit", kind)

    async def submit(self, p: TaskSpec) -> SubmitResult:
        given = None
        if isinstance(p, SubmitParams):
            given = _given(p)
            _with_global_defaults(p)
        spec = without_secrets_key(p)
        return redact_result(await self.sched.submit(spec, validated=True, given=given))

    async def submit_many(self, ps: list[TaskSpec]) -> list[SubmitResult | Exception]:
        """Pipelined ``task.submit`` requests that arrived together, each answered on its own."""
        given: list[frozenset[str] | None] | None = None
        if ps and isinstance(ps[0], SubmitParams):
            given = [_given(p) if isinstance(p, SubmitParams) else None for p in ps]
            for p in ps:
                if isinstance(p, SubmitParams):
                    _with_global_defaults(p)
        results = await self.sched.submit_many(
            [without_secrets_key(p) for p in ps], validated=True, given=given
        )
        return [r if isinstance(r, Exception) else redact_result(r) for r in results]

    async def submit_batch(self, p: RawBatch) -> SubmitBatchResult:
        if len(p.tasks) > MAX_BATCH:
            raise InvalidParams(f"a batch holds at most {MAX_BATCH} tasks", "$.tasks")
        try:
            wire = msgspec.convert(p.tasks, list[self._submit_type()])  # type: ignore[misc]
        except msgspec.ValidationError as exc:
            message = str(exc)
            inner = validation_path(message)
            match = _INDEX.match(inner)
            index = int(match.group(1)) if match else None
            path = "$.tasks" + inner[1:]
            data = {"index": index} if index is not None else {}
            raise InvalidParams(message.split(" - at `")[0], path, **data) from None
        try:
            given = None
            if wire and isinstance(wire[0], SubmitParams):
                given = [_given(w) for w in wire]
                for w in wire:
                    _with_global_defaults(w)
            specs = [without_secrets_key(w) for w in wire]
            results = await self.sched.submit_batch(specs, validated=True, given=given)
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

    async def pause_all(self, p: PauseParams) -> Empty:
        await self.sched.pause_all(group=p.group, type=p.type, until=p.until_at, for_ms=p.for_ms)
        return Empty()

    async def resume_all(self, p: ScopeParams) -> Empty:
        await self.sched.resume_all(group=p.group, type=p.type)
        return Empty()

    async def configure(self, p: ConfigureParams) -> SchedulerConfig:
        # Left out (UNSET, or None for the older settings): unchanged; a policy setting given
        # as null is removed (None reaches the scheduler).
        changes = {
            f: v
            for f in p.__struct_fields__
            if (v := getattr(p, f)) is not msgspec.UNSET
            and (v is not None or camel(f) in POLICY_SETTINGS)
        }
        config = await self.sched.configure(**changes)
        self._register_submit()
        return config

    async def set_pressure(self, p: SetPressureParams) -> Empty:
        self.sched.set_pressure(p.source, p.level, p.ttl_ms)
        return Empty()

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
