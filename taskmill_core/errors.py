"""Exceptions of the core. Each carries a stable camelCase ``kind`` (the wire's ``data.kind``).

The sidecar maps them to JSON-RPC error codes; Python callers catch them by class.
Executors raise :class:`RetryableError` or :class:`PermanentError`; any other exception
from an executor counts as retryable.
"""

from __future__ import annotations

import math
from typing import Any

from taskmill_core.types import MAX_DURATION_MS

__all__ = [
    "DamagedDatabase",
    "DuplicateRejected",
    "ExecutorError",
    "Forbidden",
    "InvalidParams",
    "InvalidState",
    "NotATaskmillDatabase",
    "PayloadTooLarge",
    "PermanentError",
    "RetryableError",
    "ScheduleNotFound",
    "ShuttingDown",
    "StorageError",
    "TaskNotFound",
    "TaskmillError",
    "is_damage",
]

# SQLite's primary result codes for a damaged file (the low byte of an extended code).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class TaskmillError(Exception):
    """Base of the errors the core reports to callers."""

    kind = "internal"

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = data


class InvalidParams(TaskmillError):
    """Bad input. ``data['path']`` names the offending field, e.g. ``$.tasks[3].priority``."""

    kind = "invalidParams"

    def __init__(self, message: str, path: str = "$", **data: Any) -> None:
        super().__init__(message, path=path, **data)
        self.path = path


class TaskNotFound(TaskmillError):
    kind = "taskNotFound"


class ScheduleNotFound(TaskmillError):
    """No schedule has that id or name."""

    kind = "scheduleNotFound"


class InvalidState(TaskmillError):
    kind = "invalidState"


class DuplicateRejected(TaskmillError):
    kind = "duplicateRejected"

    def __init__(self, message: str, existing_id: int, **data: Any) -> None:
        super().__init__(message, existingId=existing_id, **data)
        self.existing_id = existing_id


class PayloadTooLarge(TaskmillError):
    kind = "payloadTooLarge"


class ShuttingDown(TaskmillError):
    kind = "shuttingDown"


class StorageError(TaskmillError):
    kind = "storage"


class Forbidden(TaskmillError):
    """A request refused by configuration (e.g. registering a built-in executor type)."""

    kind = "forbidden"


class NotATaskmillDatabase(TaskmillError):
    """The file exists but is not a taskmill database (or is corrupt); it was not modified."""

    kind = "storage"


class DamagedDatabase(NotATaskmillDatabase):
    """A taskmill database whose file is damaged (SQLite reports it corrupt); ``taskmill
    repair`` can save what is still readable."""


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` says the database file is damaged: a :class:`DamagedDatabase`, or an
    SQLite error whose code is CORRUPT or NOTADB, also when it is the cause or context of
    ``exc`` or the only member of an exception group.

    Other SQLite errors (a full disk, a lock, an I/O error) are not damage: the file may
    be sound, and ``StorageError`` covers them."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DamagedDatabase):
            return True
        code = getattr(e, "sqlite_errorcode", None)  # sqlite3.Error, Python 3.11+
        if isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return True
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend((e.__cause__, e.__context__))
    return False


class ExecutorError(Exception):
    """Base for errors an executor raises on purpose."""

    kind = "error"
    retryable = True

    def __init__(self, message: str = "", *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class RetryableError(ExecutorError):
    """Try again later; ``retry_after`` (seconds) overrides the task's backoff.

    ``retry_after`` comes from executors, HTTP ``Retry-After`` headers and host clients, so it
    is kept within what a retry time can be: NaN is ignored (None: the backoff applies), a
    negative delay is 0, and one beyond ``MAX_DURATION_MS`` (infinity included) is that.
    """

    def __init__(
        self, message: str = "", *, retry_after: float | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message, kind=kind)
        self.retry_after = retry_after

    @property
    def retry_after(self) -> float | None:
        return self._retry_after

    @retry_after.setter
    def retry_after(self, seconds: float | None) -> None:
        if seconds is None or math.isnan(seconds):
            self._retry_after: float | None = None
        else:
            self._retry_after = min(max(float(seconds), 0.0), MAX_DURATION_MS / 1000)


class PermanentError(ExecutorError):
    """Retrying cannot help: the task ends ``failed``."""

    kind = "permanent"
    retryable = False
