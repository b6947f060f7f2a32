"""taskmill_core: the persistent, IO-aware priority task scheduler behind the sidecar."""

from __future__ import annotations

from taskmill_core.clock import Clock, FakeClock, SystemClock
from taskmill_core.context import TaskContext
from taskmill_core.errors import (
    DuplicateRejected,
    InvalidParams,
    InvalidState,
    PayloadTooLarge,
    PermanentError,
    RetryableError,
    ScheduleNotFound,
    ShuttingDown,
    StorageError,
    TaskmillError,
    TaskNotFound,
)
from taskmill_core.executors import executor
from taskmill_core.scheduler import Scheduler
from taskmill_core.types import (
    Backoff,
    ErrorInfo,
    IoBytes,
    IoConfig,
    IoStatus,
    Progress,
    Schedule,
    SchedulerConfig,
    ScheduleSpec,
    SubmitResult,
    TaskInfo,
    TaskSpec,
)

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "Clock",
    "DuplicateRejected",
    "ErrorInfo",
    "FakeClock",
    "InvalidParams",
    "InvalidState",
    "IoBytes",
    "IoConfig",
    "IoStatus",
    "PayloadTooLarge",
    "PermanentError",
    "Progress",
    "RetryableError",
    "Schedule",
    "ScheduleNotFound",
    "ScheduleSpec",
    "Scheduler",
    "SchedulerConfig",
    "ShuttingDown",
    "StorageError",
    "SubmitResult",
    "SystemClock",
    "TaskContext",
    "TaskInfo",
    "TaskNotFound",
    "TaskSpec",
    "TaskmillError",
    "__version__",
    "executor",
]
