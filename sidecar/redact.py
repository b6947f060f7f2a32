"""Header values of ``http.*`` tasks are secrets: stored and used, never shown (PROTOCOL.md).

A task of an ``http.`` type may carry ``payload.headers`` (``Authorization``, an API key). The
sidecar keeps them in the database and hands them to the executor unchanged, but every
:class:`TaskInfo` that leaves it — in an answer (``task.submit``, ``task.get``, ``task.list``,
``task.setPriority``, ``task.pause``/``resume``, ``scheduler.status``) or an event
(``task.submitted``, ``task.updated``) — shows each value as ``"<redacted>"`` (the names stay:
a client may check which headers a task sends). The executors never log or report them.

``dedupKey: true`` hashes the payload as clients see it, values redacted, so a rotated token
does not make a second upload of the same file, and the key gives nothing away.

Only ``http.`` tasks are looked at, so the cost elsewhere is one ``str.startswith`` per
task in an answer or event; an ``http.`` task without headers is passed through as it is.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from taskmill_core.types import (
    Event,
    Schedule,
    SchedulerStatus,
    SubmitResult,
    TaskInfo,
    TaskPage,
    TaskSpec,
    TaskSubmitted,
    TaskUpdated,
)

__all__ = [
    "REDACTED",
    "redact_event",
    "redact_page",
    "redact_payload",
    "redact_result",
    "redact_schedule",
    "redact_status",
    "redact_task",
    "redact_tasks",
    "without_secrets_key",
]

REDACTED = "<redacted>"
PREFIX = "http."

_encode_sorted = msgspec.json.Encoder(order="sorted").encode  # (the canonical JSON of dedupKey)


def redact_payload(payload: Any) -> Any:
    """``payload`` with each ``headers`` value replaced by ``"<redacted>"`` (the same object
    when there is nothing to hide)."""
    if isinstance(payload, dict):
        headers = payload.get("headers")
        if isinstance(headers, dict) and headers:
            return {**payload, "headers": dict.fromkeys(headers, REDACTED)}
    return payload


def redact_task(info: TaskInfo) -> TaskInfo:
    if not info.type.startswith(PREFIX):
        return info
    payload = redact_payload(info.payload)
    if payload is info.payload:
        return info
    return msgspec.structs.replace(info, payload=payload)


def redact_tasks(infos: list[TaskInfo]) -> list[TaskInfo]:
    if not any(i.type.startswith(PREFIX) for i in infos):
        return infos
    return [redact_task(i) for i in infos]


def redact_result(r: SubmitResult) -> SubmitResult:
    if r.task is None or not r.task.type.startswith(PREFIX):
        return r
    return msgspec.structs.replace(r, task=redact_task(r.task))


def redact_page(page: TaskPage) -> TaskPage:
    tasks = redact_tasks(page.tasks)
    return page if tasks is page.tasks else msgspec.structs.replace(page, tasks=tasks)


def redact_status(status: SchedulerStatus) -> SchedulerStatus:
    running = redact_tasks(status.running)
    return status if running is status.running else msgspec.structs.replace(status, running=running)


def redact_schedule(schedule: Schedule) -> Schedule:
    """A schedule's task is shown like a task: header values of ``http.`` tasks redacted."""
    task = schedule.task
    if not task.type.startswith(PREFIX):
        return schedule
    payload = redact_payload(task.payload)
    if payload is task.payload:
        return schedule
    return msgspec.structs.replace(schedule, task=msgspec.structs.replace(task, payload=payload))


def redact_event(event: Event) -> Event:
    """``task.submitted`` and ``task.updated`` carry a whole task; the other events do not."""
    if isinstance(event, TaskSubmitted | TaskUpdated) and event.task.type.startswith(PREFIX):
        return msgspec.structs.replace(event, task=redact_task(event.task))
    return event


def without_secrets_key(spec: TaskSpec) -> TaskSpec:
    """A ``dedupKey: true`` submit of an ``http.`` task with headers, given the key of its
    redacted payload (the lowercase hex SHA-256 of its canonical JSON), so that the store
    does not hash the header values into it."""
    if spec.dedup_key is not True or not spec.type.startswith(PREFIX):
        return spec
    payload = redact_payload(spec.payload)
    if payload is spec.payload:
        return spec
    try:
        key = hashlib.sha256(_encode_sorted(payload)).hexdigest()
    except (TypeError, msgspec.EncodeError):
        return spec  # not JSON: the store refuses it with the usual error
    return msgspec.structs.replace(spec, dedup_key=key)
