"""The wire types of the sidecar's methods that the core does not already define.

Params and results of every method in PROTOCOL.md, as msgspec Structs with camelCase names.
Together with :mod:`taskmill_core.types` they are the source of ``schemas/openrpc.json``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from taskmill_core.types import (
    MAX_DURATION_MS,
    MAX_SAFE_INT,
    AgingConfig,
    ChildCounts,
    FairShareConfig,
    IoConfig,
    NonNegInt,
    Phase,
    PositiveInt,
    PriorityName,
    PriorityValue,
    RateLimitsConfig,
    Retention,
    Schedule,
    ScheduleName,
    ShortText,
    State,
    TaskId,
    TaskInfo,
    TaskSpec,
    TaskType,
    ThrottleTierConfig,
    TypeDefaultsConfig,
)

__all__ = [
    "CancelManyParams",
    "CancelManyResult",
    "CancelResult",
    "ClientInfo",
    "ConfigureParams",
    "ConfigureRequest",
    "Empty",
    "EventsConfigureParams",
    "ExecuteParams",
    "ExecuteResult",
    "ExecutorCancelParams",
    "ExecutorCheckpointParams",
    "ExecutorProgressParams",
    "ExitingParams",
    "HistoryStatsParams",
    "InitializeParams",
    "InitializeResult",
    "ListParams",
    "PauseParams",
    "PingResult",
    "PruneParams",
    "PruneResult",
    "ReadyParams",
    "Recovered",
    "RegisterParams",
    "RetryResult",
    "ScheduleListResult",
    "ScheduleRefParams",
    "ScopeParams",
    "ServerInfo",
    "SetPressureParams",
    "SetPriorityParams",
    "ShutdownParams",
    "SubmitBatchParams",
    "SubmitBatchResult",
    "SubmitParams",
    "TaskIdParams",
    "UnregisterParams",
]

PROTOCOL_VERSION = 1

_Strict: dict[str, Any] = {"rename": "camel", "forbid_unknown_fields": True, "gc": False}
_Out: dict[str, Any] = {"rename": "camel", "omit_defaults": True, "gc": False}


class Empty(Struct, **_Strict):
    """No parameters (any given field is an error), or an empty result ``{}``."""


class ClientInfo(Struct, **_Strict):
    name: str
    version: str | None = None


class ServerInfo(Struct, **_Out):
    name: str
    version: str


class InitializeParams(Struct, **_Strict):
    client: ClientInfo | None = None


class Capabilities(Struct, **_Out):
    host_executors: bool = True
    batch_max: int = 10_000
    max_message_bytes: int = 4 * 1024 * 1024
    events: list[str] = msgspec.field(default_factory=list)
    features: list[str] = msgspec.field(default_factory=list)


class InitializeResult(Struct, **_Out):
    server_info: ServerInfo
    protocol_version: int
    executors: list[str]
    capabilities: Capabilities


class Recovered(Struct, **_Out):
    requeued: int


class ReadyParams(Struct, **_Out):
    """``sidecar.ready``."""

    server_info: ServerInfo
    protocol_version: int
    pid: int
    db: str
    recovered: Recovered
    executors: list[str]


class ExitingParams(Struct, **_Out):
    """``sidecar.exiting``."""

    reason: Literal["shutdown", "stdinClosed", "signal", "parentExited", "fatal"]


class PingResult(Struct, **_Out):
    now: int


class ShutdownParams(Struct, **_Strict):
    grace_ms: Annotated[int, Meta(ge=0, le=600_000)] = 5000


class SubmitBatchParams(Struct, **_Strict):
    tasks: Annotated[list[TaskSpec], Meta(max_length=10_000)]


class BatchEntry(Struct, **_Out):
    id: int
    outcome: str


class SubmitBatchResult(Struct, **_Out):
    results: list[BatchEntry]


class TaskIdParams(Struct, **_Strict):
    id: TaskId


class ListParams(Struct, **_Strict):
    state: State | list[State] | None = None
    type: str | None = None
    group: str | None = None
    tags: dict[str, str] | None = None
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100
    cursor: str | None = None
    dedup_key: ShortText | None = None
    parent_id: TaskId | None = None


class LookupParams(Struct, **_Strict):
    """``task.lookup``: a task by its dedup key (scoped by type)."""

    type: TaskType
    dedup_key: ShortText


class CancelResult(Struct, rename="camel", gc=False):
    id: int
    state: Literal["cancelled"]


class CancelManyParams(Struct, **_Strict):
    type: str | None = None
    group: str | None = None
    tags: dict[str, str] | None = None


class CancelManyResult(Struct, **_Out):
    cancelled: int


class SetPriorityParams(Struct, **_Strict):
    id: TaskId
    priority: PriorityValue | PriorityName


class RetryResult(Struct, **_Out):
    id: int
    outcome: str


class ScopeParams(Struct, **_Strict):
    """A pause scope: a group, a task type, or neither (the global pause)."""

    group: ShortText | None = None
    type: TaskType | None = None


class PauseParams(ScopeParams, **_Strict):
    """``scheduler.pause``: a scope, and for a timed pause its end (``untilAt``, in the
    future) or its length (``forMs``; it becomes ``untilAt`` at the call), not both."""

    until_at: Annotated[int, Meta(ge=0, le=MAX_SAFE_INT)] | None = None
    for_ms: Annotated[int, Meta(ge=1, le=MAX_DURATION_MS)] | None = None


class SetPressureParams(Struct, **_Strict):
    """``scheduler.setPressure``: one source of host pressure, live for ``ttlMs``."""

    source: Annotated[str, Meta(min_length=1, max_length=64)]
    level: Annotated[float, Meta(ge=0.0, le=1.0)]
    ttl_ms: Annotated[int, Meta(ge=1, le=MAX_DURATION_MS)] = 60_000


class SubmitParams(TaskSpec, **_Strict):
    """``task.submit`` as decoded off the wire: ``priority`` and ``maxRetries`` keep "left
    out" (``UNSET``) apart from "given", so type defaults fill only what a submit left out
    (:meth:`Methods.submit <sidecar.methods.Methods.submit>` then puts the global defaults
    in). Its schema is ``TaskSpec``'s."""

    priority: PriorityValue | PriorityName | msgspec.UnsetType = msgspec.UNSET  # type: ignore[assignment]
    max_retries: Annotated[int, Meta(ge=0, le=100)] | msgspec.UnsetType = msgspec.UNSET  # type: ignore[assignment]


EventName = Annotated[str, Meta(min_length=1, max_length=64)]


class EventsConfigureParams(Struct, **_Strict):
    """``events.configure``: this connection's event selection; each call replaces the whole
    selection (omitted fields take their defaults), in force until the next call.

    ``exclude``: events not to send. Each must be an event this sidecar sends
    (``initialize.capabilities.events``) other than ``sidecar.*``; anything else refuses
    the call with -32602 naming the entry (``data.path`` ``$.exclude[i]``, ``data.index``)
    and changes nothing. ``batchSubmitted``: a ``task.submitBatch`` announces its inserted
    and superseding tasks with one ``task.batchSubmitted {ids, count}`` (submission order,
    before any of them starts) instead of one ``task.submitted`` each; only
    ``task.submitBatch`` does, never pipelined ``task.submit``. The two are independent:
    ``exclude`` applies to the names on the wire, so excluding ``task.submitted`` does not
    drop ``task.batchSubmitted`` (exclude that by its own name).
    """

    exclude: Annotated[list[EventName], Meta(max_length=64)] = msgspec.field(default_factory=list)
    batch_submitted: bool = False


class ConfigureParams(Struct, **_Strict):
    max_concurrency: Annotated[int, Meta(ge=1, le=1024)] | None = None
    group_limits: dict[ShortText, PositiveInt] | None = None
    io: IoConfig | None = None
    progress_hz: Annotated[float, Meta(gt=0.0, le=100.0)] | None = None
    retention: Retention | None = None
    preempt_priority: PriorityValue | None = None
    min_run_ms: NonNegInt | None = None
    # Scheduling policy: left out, unchanged; null removes it (throttle: the default tiers).
    rate_limits: RateLimitsConfig | msgspec.UnsetType | None = msgspec.UNSET
    aging: AgingConfig | msgspec.UnsetType | None = msgspec.UNSET
    fair_share: FairShareConfig | msgspec.UnsetType | None = msgspec.UNSET
    throttle: (
        Annotated[list[ThrottleTierConfig], Meta(max_length=64)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    type_defaults: (
        Annotated[dict[TaskType, TypeDefaultsConfig], Meta(max_length=4096)]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET


class ConfigureRequest(ConfigureParams, **_Strict):
    """``scheduler.configure`` as the sidecar decodes it: the policy settings are checked by
    the scheduler (whose error names a bad entry's key, ``$.rateLimits.types.upload``, where
    decoding would say ``[...]``); the schema is :class:`ConfigureParams`."""

    rate_limits: Any = msgspec.UNSET
    aging: Any = msgspec.UNSET
    fair_share: Any = msgspec.UNSET
    throttle: Any = msgspec.UNSET
    type_defaults: Any = msgspec.UNSET


class HistoryStatsParams(Struct, **_Strict):
    type: str | None = None


class PruneParams(Struct, **_Strict):
    older_than_ms: NonNegInt | None = None
    keep: NonNegInt | None = None


class PruneResult(Struct, **_Out):
    removed: int


class RegisterParams(Struct, **_Strict):
    type: TaskType
    concurrency: Annotated[int, Meta(ge=1, le=1024)] | None = None


class UnregisterParams(Struct, **_Strict):
    type: TaskType


class ExecuteParams(Struct, **_Out):
    """``task.execute`` (sidecar → client request). ``phase`` is always sent: ``"run"``, or
    ``"finalize"`` for a parent's finalize phase, which also carries ``children``."""

    task: TaskInfo
    phase: Phase
    checkpoint: Any = None
    children: ChildCounts | None = None


class ExecuteResult(Struct, rename="camel", gc=False):
    """What a host answers to ``task.execute``."""

    result: Any = None


class ExecutorProgressParams(Struct, **_Strict):
    id: TaskId
    fraction: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    bytes_done: NonNegInt | None = None
    bytes_total: NonNegInt | None = None
    message: Annotated[str, Meta(max_length=1024)] | None = None


class ExecutorCheckpointParams(Struct, **_Strict):
    id: TaskId
    state: Any


class ExecutorCancelParams(Struct, **_Out):
    """``executor.cancel`` (sidecar → client notification)."""

    id: int
    reason: Literal["cancelled", "preempted", "paused", "shutdown", "timeout"]


# --- recurring schedules ----------------------------------------------------------------------


class ScheduleRefParams(Struct, **_Strict):
    """A schedule by ``id`` or by ``name`` (exactly one)."""

    id: Annotated[int, Meta(ge=1)] | None = None
    name: ScheduleName | None = None


class ScheduleListResult(Struct, **_Out):
    schedules: list[Schedule]
