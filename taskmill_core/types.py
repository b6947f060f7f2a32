"""The data model: every value that crosses a boundary is one of these msgspec Structs.

They are the single source of truth for the wire protocol (field names are camelCase on the
wire, snake_case in Python), the generated JSON Schemas and the TypeScript types. Constraints
declared here with ``Meta`` are enforced whenever a value is decoded or converted; the core
re-validates a ``TaskSpec`` built in Python so that the Python API enforces the same rules.

Every Struct here is declared ``gc=False``: their instances hold only JSON-like data and never
take part in reference cycles, and untracking them keeps the cyclic garbage collector's full
passes (which stall the event loop) short even with many thousands of tasks in flight.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct

__all__ = [
    "ACTIVE_STATES",
    "DEFAULT_THROTTLE",
    "FINAL_STATES",
    "MAX_DURATION_MS",
    "MAX_SAFE_INT",
    "PRIORITY_NAMES",
    "AgingConfig",
    "Backoff",
    "BucketStatus",
    "ChildCounts",
    "ErrorInfo",
    "Event",
    "FairShareConfig",
    "HistoryStats",
    "IoBytes",
    "IoConfig",
    "IoPressure",
    "IoStatus",
    "MetricCounters",
    "MetricGauges",
    "MetricsReport",
    "Outcome",
    "PauseInfo",
    "Phase",
    "PressureStatus",
    "Progress",
    "RateBucketsStatus",
    "RateLimitConfig",
    "RateLimitsConfig",
    "Retention",
    "Schedule",
    "ScheduleFired",
    "ScheduleSkipped",
    "ScheduleSpec",
    "SchedulerConfig",
    "SchedulerPaused",
    "SchedulerPressure",
    "SchedulerResumed",
    "SchedulerStatus",
    "State",
    "SubmitResult",
    "TaskBatchSubmitted",
    "TaskCancelled",
    "TaskCompleted",
    "TaskExpired",
    "TaskFailed",
    "TaskInfo",
    "TaskPage",
    "TaskPreempted",
    "TaskProgress",
    "TaskSpec",
    "TaskStarted",
    "TaskSubmitted",
    "TaskSuperseded",
    "TaskUpdated",
    "ThrottleTierConfig",
    "TypeDefaultsConfig",
    "TypeStats",
]

State = Literal[
    "pending",
    "running",
    "paused",
    "waiting",
    "blocked",
    "completed",
    "failed",
    "deadLetter",
    "cancelled",
    "superseded",
    "expired",
]
ACTIVE_STATES: tuple[str, ...] = ("pending", "running", "paused", "waiting", "blocked")
FINAL_STATES: tuple[str, ...] = (
    "completed",
    "failed",
    "deadLetter",
    "cancelled",
    "superseded",
    "expired",
)

Outcome = Literal["inserted", "duplicate", "upgraded", "requeued", "superseded"]

PRIORITY_NAMES: dict[str, int] = {
    "realtime": 0,
    "high": 64,
    "normal": 128,
    "background": 192,
    "idle": 255,
}

TaskType = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
PriorityValue = Annotated[int, Meta(ge=0, le=255)]
PriorityName = Literal["realtime", "high", "normal", "background", "idle"]
# Integers on the wire stay within what a JavaScript number holds exactly (and SQLite's int64).
MAX_SAFE_INT = 2**53 - 1
NonNegInt = Annotated[int, Meta(ge=0, le=MAX_SAFE_INT)]
PositiveInt = Annotated[int, Meta(ge=1, le=MAX_SAFE_INT)]
TaskId = Annotated[int, Meta(ge=1, le=MAX_SAFE_INT)]
# A duration that becomes a time (a delay, a TTL, a timeout, a retry backoff) is added to now,
# and that sum must stay a safe integer too. 2^52 ms (~142,000 years) leaves now the other
# 2^52 ms, so no time derived from a valid duration ever exceeds MAX_SAFE_INT.
MAX_DURATION_MS = 2**52
DurationMs = Annotated[int, Meta(ge=0, le=MAX_DURATION_MS)]
PositiveDurationMs = Annotated[int, Meta(ge=1, le=MAX_DURATION_MS)]
ShortText = Annotated[str, Meta(max_length=256)]
Label = Annotated[str, Meta(max_length=1024)]
Tags = Annotated[dict[ShortText, Annotated[str, Meta(max_length=1024)]], Meta(max_length=32)]


class IoBytes(Struct, rename="camel", gc=False, forbid_unknown_fields=True):
    """Bytes of IO per resource: declared (``ioCost``) or measured (``ioActual``)."""

    disk_read: NonNegInt = 0
    disk_write: NonNegInt = 0
    net_rx: NonNegInt = 0
    net_tx: NonNegInt = 0

    def total(self) -> int:
        return self.disk_read + self.disk_write + self.net_rx + self.net_tx


class Backoff(Struct, rename="camel", gc=False, forbid_unknown_fields=True, omit_defaults=True):
    """Delay before retry ``n`` (1-based): constant, linear, exponential or with jitter."""

    kind: Literal["constant", "linear", "exponential", "exponentialJitter"] = "exponentialJitter"
    initial_ms: DurationMs = 1000
    max_ms: DurationMs = 300_000
    multiplier: Annotated[float, Meta(ge=1.0, le=100.0)] = 2.0


class TaskSpec(Struct, rename="camel", gc=False, forbid_unknown_fields=True, omit_defaults=True):
    """What a client submits (``SubmitParams`` on the wire)."""

    type: TaskType
    payload: Any = None
    priority: PriorityValue | PriorityName = 128
    dedup_key: ShortText | bool | None = None
    on_duplicate: Literal["skip", "supersede", "reject"] = "skip"
    group: ShortText | None = None
    tags: Tags = msgspec.field(default_factory=dict)
    label: Label | None = None
    io_cost: IoBytes | None = None
    max_retries: Annotated[int, Meta(ge=0, le=100)] = 3
    backoff: Backoff | None = None
    run_at: NonNegInt | None = None
    delay_ms: DurationMs | None = None
    ttl_ms: PositiveDurationMs | None = None
    timeout_ms: PositiveDurationMs | None = None
    parent_id: TaskId | None = None
    depends_on: Annotated[list[TaskId], Meta(max_length=1000)] | None = None
    # Workflows (PROTOCOL.md, "Workflows")
    finalize: bool = False
    on_child_failure: Literal["ignore", "failParent"] = "ignore"
    on_dependency_failure: Literal["fail", "ignore"] = "fail"
    sibling_of: TaskId | None = None

    @property
    def priority_value(self) -> int:
        p = self.priority
        return PRIORITY_NAMES[p] if isinstance(p, str) else p


# --- recurring schedules -------------------------------------------------------------------

ScheduleName = Annotated[str, Meta(min_length=1, max_length=128)]


class ScheduleSpec(
    Struct, rename="camel", gc=False, forbid_unknown_fields=True, omit_defaults=True
):
    """A recurring schedule (``schedule.create``): submit ``task`` every ``every_ms`` from
    ``start_at``, or at the times of the five-field ``cron`` expression in ``timezone``."""

    task: TaskSpec
    every_ms: Annotated[int, Meta(ge=1000, le=MAX_DURATION_MS)] | None = None
    cron: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    start_at: NonNegInt | None = None
    max_runs: PositiveInt | None = None
    name: ScheduleName | None = None


class Schedule(Struct, rename="camel", gc=False, omit_defaults=True):
    """A stored schedule. ``next_at`` is absent while it is paused and once it has ended
    (``max_runs`` reached); ``last_at`` and ``last_task_id`` are those of the last firing
    that submitted a task; ``runs`` counts such firings."""

    id: int
    task: TaskSpec
    runs: int
    paused: bool
    name: str | None = None
    every_ms: int | None = None
    cron: str | None = None
    timezone: str | None = None
    start_at: int | None = None
    next_at: int | None = None
    last_at: int | None = None
    last_task_id: int | None = None
    max_runs: int | None = None


Phase = Literal["run", "finalize"]
"""Which phase of its task a run is: the task's own run, or a parent's finalize phase."""


class ChildCounts(Struct, rename="camel", gc=False):
    """A parent's direct children by final state, handed to its finalize phase (every
    field present)."""

    completed: int
    failed: int
    dead_letter: int
    cancelled: int
    superseded: int
    expired: int


class Progress(Struct, rename="camel", gc=False, omit_defaults=True):
    fraction: float
    estimated: bool
    bytes_done: int | None = None
    bytes_total: int | None = None
    rate_bps: float | None = None
    eta_ms: int | None = None
    message: str | None = None


class ErrorInfo(Struct, rename="camel", gc=False):
    message: str
    kind: str
    retryable: bool


class TaskInfo(Struct, rename="camel", gc=False, omit_defaults=True):
    """A task as stored, plus live progress while it runs."""

    id: int
    type: str
    state: State
    priority: int
    payload: Any
    tags: dict[str, str]
    io_cost: IoBytes
    attempt: int
    max_retries: int
    created_at: int
    dedup_key: str | None = None
    group: str | None = None
    label: str | None = None
    io_actual: IoBytes | None = None
    run_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    duration_ms: int | None = None
    parent_id: int | None = None
    progress: Progress | None = None
    result: Any = None
    error: ErrorInfo | None = None
    # Workflows: shown only when not the default
    phase: Phase = "run"
    finalize: bool = False
    on_child_failure: Literal["ignore", "failParent"] = "ignore"
    on_dependency_failure: Literal["fail", "ignore"] = "fail"
    effective_priority: int | None = None  # pending and aged: the priority it is ordered by


class SubmitResult(Struct, rename="camel", gc=False, omit_defaults=True):
    """What ``submit`` returns; ``task`` is omitted in batch results."""

    id: int
    outcome: Outcome
    task: TaskInfo | None = None


class Retention(Struct, rename="camel", gc=False, forbid_unknown_fields=True, omit_defaults=True):
    """History pruning: keep at most ``max_count`` final tasks, none older than ``max_age_ms``."""

    max_count: NonNegInt | None = 100_000
    max_age_ms: NonNegInt | None = 30 * 24 * 3600 * 1000


class IoConfig(Struct, rename="camel", gc=False, forbid_unknown_fields=True, omit_defaults=True):
    disk_read_bps: PositiveInt | None = None
    disk_write_bps: PositiveInt | None = None
    net_bps: PositiveInt | None = None
    auto: bool = True
    saturation: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.8


class IoStatus(Struct, rename="camel", gc=False):
    disk_read_bps: float = 0.0
    disk_write_bps: float = 0.0
    net_rx_bps: float = 0.0
    net_tx_bps: float = 0.0
    capacity: dict[str, float] = msgspec.field(default_factory=dict)
    utilization: dict[str, float] = msgspec.field(default_factory=dict)
    throttling: bool = False
    deferred: int = 0


# --- scheduling policy settings (PROTOCOL.md "Policy settings"; the pure model is policy.py) --

Rate = Annotated[float, Meta(gt=0.0, le=1e9)]
Weight = Annotated[int, Meta(ge=1, le=1_000_000)]
_Setting: dict[str, Any] = {
    "rename": "camel",
    "gc": False,
    "forbid_unknown_fields": True,
    "omit_defaults": True,
}


class RateLimitConfig(Struct, **_Setting):
    """A token bucket: exactly one of ``perSecond`` and ``perMinute``, ``burst`` tokens."""

    per_second: Rate | None = None
    per_minute: Rate | None = None
    burst: Annotated[int, Meta(ge=1, le=1_000_000)] = 1

    def __post_init__(self) -> None:
        if (self.per_second is None) == (self.per_minute is None):
            raise ValueError("a rate limit needs exactly one of perSecond and perMinute")


class RateLimitsConfig(Struct, rename="camel", gc=False, forbid_unknown_fields=True):
    """``rateLimits``: a bucket per task type and per group (unknown names are fine)."""

    types: Annotated[dict[TaskType, RateLimitConfig], Meta(max_length=1024)] = msgspec.field(
        default_factory=dict
    )
    groups: Annotated[dict[ShortText, RateLimitConfig], Meta(max_length=1024)] = msgspec.field(
        default_factory=dict
    )


class AgingConfig(Struct, rename="camel", gc=False, forbid_unknown_fields=True):
    """``aging``: one level more urgent per whole ``stepMs`` due beyond ``afterMs``, never
    beyond ``limit``."""

    after_ms: DurationMs
    step_ms: PositiveDurationMs
    limit: PriorityValue = 64


class FairShareConfig(Struct, rename="camel", gc=False, forbid_unknown_fields=True):
    """``fairShare``: free slots go to the competing group with the lowest running ÷ weight,
    after every group's ``minSlots``."""

    weights: Annotated[dict[ShortText, Weight], Meta(max_length=1024)] = msgspec.field(
        default_factory=dict
    )
    default_weight: Weight = 1
    min_slots: Annotated[
        dict[ShortText, Annotated[int, Meta(ge=0, le=1024)]], Meta(max_length=1024)
    ] = msgspec.field(default_factory=dict)


class ThrottleTierConfig(Struct, rename="camel", gc=False, forbid_unknown_fields=True):
    """A throttle tier: while the pressure level is ≥ ``level``, tasks whose stored priority is
    ≥ ``minPriority`` do not start."""

    min_priority: PriorityValue
    level: Annotated[float, Meta(gt=0.0, le=1.0)]


DEFAULT_THROTTLE: tuple[tuple[int, float], ...] = ((192, 0.5), (128, 0.75))
"""The default throttle tiers as ``(minPriority, level)``."""


def _default_throttle() -> list[ThrottleTierConfig]:
    return [ThrottleTierConfig(p, lv) for p, lv in DEFAULT_THROTTLE]


class TypeDefaultsConfig(Struct, **_Setting):
    """One type's submit defaults: each fills the field when a submit leaves it out (a field
    given as ``null`` counts as left out; a given value wins, even the global default).
    Applied at submit (single, batch, children); ``ioCost`` and ``backoff`` are taken whole."""

    priority: PriorityValue | PriorityName | None = None
    max_retries: Annotated[int, Meta(ge=0, le=100)] | None = None
    backoff: Backoff | None = None
    timeout_ms: PositiveDurationMs | None = None
    ttl_ms: PositiveDurationMs | None = None
    group: ShortText | None = None
    io_cost: IoBytes | None = None


class SchedulerConfig(Struct, rename="camel", gc=False, forbid_unknown_fields=True):
    """Scheduler settings. Values set later with ``configure`` are persisted and win on reopen."""

    max_concurrency: Annotated[int, Meta(ge=1, le=1024)] = 4
    group_limits: dict[ShortText, PositiveInt] = msgspec.field(default_factory=dict)
    io: IoConfig = msgspec.field(default_factory=IoConfig)
    progress_hz: Annotated[float, Meta(gt=0.0, le=100.0)] = 4.0
    retention: Retention = msgspec.field(default_factory=Retention)
    preempt_priority: PriorityValue = 64
    min_run_ms: NonNegInt = 1000
    durability: Literal["normal", "full"] = "normal"
    cancel_grace_ms: DurationMs = 5000
    # Scheduling policy (None: that policy is off; throttle defaults to DEFAULT_THROTTLE).
    rate_limits: RateLimitsConfig | None = None
    aging: AgingConfig | None = None
    fair_share: FairShareConfig | None = None
    throttle: Annotated[list[ThrottleTierConfig], Meta(max_length=64)] = msgspec.field(
        default_factory=_default_throttle
    )
    type_defaults: Annotated[dict[TaskType, TypeDefaultsConfig], Meta(max_length=4096)] | None = (
        None
    )


# --- events -------------------------------------------------------------------------------


class _Event(Struct, rename="camel", gc=False, omit_defaults=True):
    EVENT: ClassVar[str] = ""
    LIFECYCLE: ClassVar[bool] = True


class TaskSubmitted(_Event):
    EVENT = "task.submitted"
    task: TaskInfo


class TaskUpdated(_Event):
    EVENT = "task.updated"
    task: TaskInfo


class TaskBatchSubmitted(_Event):
    """``task.batchSubmitted``: the inserted and superseding tasks of one batch submit
    (``task.submitBatch``), in submission order, sent before any of them starts and instead
    of their ``task.submitted``; ``count`` is ``len(ids)``. Sent only to a client that asked
    for it (``events.configure {batchSubmitted: true}``); ``task.get`` or ``task.list`` give
    the tasks' details.
    """

    # Published only while Scheduler.announce_batches is on, before the batch's task.submitted.
    EVENT = "task.batchSubmitted"
    ids: list[int]
    count: int


class TaskStarted(_Event):
    EVENT = "task.started"
    id: int
    type: str
    attempt: int
    priority: int
    started_at: int


class TaskProgress(_Event):
    EVENT = "task.progress"
    LIFECYCLE = False
    id: int
    type: str
    progress: Progress


class TaskCompleted(_Event):
    EVENT = "task.completed"
    id: int
    type: str
    attempt: int
    duration_ms: int
    result: Any = None


class TaskFailed(_Event):
    EVENT = "task.failed"
    id: int
    type: str
    attempt: int
    error: ErrorInfo
    will_retry: bool
    state: State
    retry_at: int | None = None


class TaskCancelled(_Event):
    EVENT = "task.cancelled"
    id: int
    type: str


class TaskSuperseded(_Event):
    EVENT = "task.superseded"
    id: int
    type: str
    by: int


class TaskPreempted(_Event):
    EVENT = "task.preempted"
    id: int
    type: str
    by: int


class TaskExpired(_Event):
    EVENT = "task.expired"
    id: int
    type: str


class SchedulerPaused(_Event):
    EVENT = "scheduler.paused"
    group: str | None = None
    type: str | None = None
    until_at: int | None = None  # a timed pause lifts by itself then


class SchedulerResumed(_Event):
    EVENT = "scheduler.resumed"
    group: str | None = None
    type: str | None = None


class ScheduleFired(_Event):
    """A schedule submitted its task (sent after that task's ``task.submitted``)."""

    EVENT = "schedule.fired"
    id: int
    task_id: int
    next_at: int | None = None


class ScheduleSkipped(_Event):
    """A firing submitted nothing: the previous firing's task is still active
    (``stillActive``), or the submit found a duplicate (``duplicate``)."""

    EVENT = "schedule.skipped"
    id: int
    reason: Literal["stillActive", "duplicate"]
    next_at: int | None = None


class SchedulerPressure(_Event):
    """``scheduler.pressure``: the set of throttle tiers in force changed (``holding`` lists
    their ``minPriority``); ``level`` is the maximum of the live ``sources``."""

    EVENT = "scheduler.pressure"
    level: float
    sources: dict[str, float]
    holding: list[int]


class IoPressure(IoStatus):
    """``io.pressure``: the params are the ``IoStatus`` itself."""

    EVENT: ClassVar[str] = "io.pressure"
    LIFECYCLE: ClassVar[bool] = False


Event = (
    TaskSubmitted
    | TaskUpdated
    | TaskBatchSubmitted
    | TaskStarted
    | TaskProgress
    | TaskCompleted
    | TaskFailed
    | TaskCancelled
    | TaskSuperseded
    | TaskPreempted
    | TaskExpired
    | SchedulerPaused
    | SchedulerResumed
    | IoPressure
    | ScheduleFired
    | ScheduleSkipped
    | SchedulerPressure
)


class PressureStatus(Struct, rename="camel", gc=False):
    """The host pressure: the maximum of the live sources' levels."""

    level: float = 0.0
    sources: dict[str, float] = msgspec.field(default_factory=dict)


class BucketStatus(Struct, rename="camel", gc=False, omit_defaults=True):
    """A rate bucket now: its tokens and, while it holds less than one, when the next comes."""

    tokens: float
    next_token_at: int | None = None


class RateBucketsStatus(Struct, rename="camel", gc=False):
    types: dict[str, BucketStatus] = msgspec.field(default_factory=dict)
    groups: dict[str, BucketStatus] = msgspec.field(default_factory=dict)


class PauseInfo(Struct, rename="camel", gc=False, omit_defaults=True):
    """A pause in force: of a group, of a type, or (neither) the global pause; ``untilAt``:
    it lifts by itself then."""

    group: str | None = None
    type: str | None = None
    until_at: int | None = None


class SchedulerStatus(Struct, rename="camel", gc=False):
    """``scheduler.status``: pauses in force, counts per state, running tasks, IO."""

    paused: bool
    paused_groups: list[str]
    paused_types: list[str]
    counts: dict[str, int]
    running: list[TaskInfo]
    max_concurrency: int
    io: IoStatus
    executors: list[str]
    pressure: PressureStatus = msgspec.field(default_factory=PressureStatus)
    rate_buckets: RateBucketsStatus = msgspec.field(default_factory=RateBucketsStatus)
    pauses: list[PauseInfo] = msgspec.field(default_factory=list)


class MetricCounters(Struct, rename="camel", gc=False):
    """``scheduler.metrics`` counters: what happened since the scheduler opened."""

    submitted: int
    deduplicated: int
    started: int
    completed: int
    failed: int
    retried: int
    dead_lettered: int
    cancelled: int
    superseded: int
    expired: int
    preempted: int
    rate_limited: int
    throttled: int
    io_deferred: int


class MetricGauges(Struct, rename="camel", gc=False):
    """``scheduler.metrics`` gauges: tasks in each waiting or running state now."""

    pending: int
    running: int
    waiting: int
    blocked: int
    paused: int


class MetricsReport(Struct, rename="camel", gc=False):
    """``scheduler.metrics``: counters since ``since_at`` (the scheduler opened), gauges now."""

    since_at: int
    counters: MetricCounters
    gauges: MetricGauges


class TypeStats(Struct, rename="camel", gc=False):
    completed: int
    failed: int
    avg_duration_ms: float | None
    p95_duration_ms: float | None
    avg_io: IoBytes


class HistoryStats(Struct, rename="camel", gc=False):
    by_type: dict[str, TypeStats]


class TaskPage(Struct, rename="camel", gc=False, omit_defaults=True):
    """``task.list``: newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""

    tasks: list[TaskInfo]
    next_cursor: str | None = None
