"""The scheduler: the async shell that performs what the store records and dispatch decides.

:class:`Scheduler` (in :mod:`.facade`) is the public API; the rooms behind it are named in
that module's docstring. The tunables tests refer to are re-exported here.
"""

from __future__ import annotations

from taskmill_core.scheduler.dispatcher import STORAGE_RETRY_MAX_MS, STORAGE_RETRY_MS
from taskmill_core.scheduler.facade import Scheduler
from taskmill_core.scheduler.iobridge import DESKTOP_IO_SETTINGS
from taskmill_core.scheduler.schedules import FIRE_PER_TICK
from taskmill_core.scheduler.submitting import (
    BATCH_CHUNK,
    INLINE_SUBMIT,
    MAX_BATCH,
    QUEUE_PER_TURN,
    TICK_SUBMITS,
)

__all__ = [
    "BATCH_CHUNK",
    "DESKTOP_IO_SETTINGS",
    "FIRE_PER_TICK",
    "INLINE_SUBMIT",
    "MAX_BATCH",
    "QUEUE_PER_TURN",
    "STORAGE_RETRY_MAX_MS",
    "STORAGE_RETRY_MS",
    "TICK_SUBMITS",
    "Scheduler",
]
