"""The OpenRPC document and JSON Schemas, generated from the msgspec types (never by hand).

``python -m sidecar.schemas`` (``python3 dev.py schemas``) writes ``schemas/openrpc.json``
and ``schemas/taskmill.schema.json``; ``--check`` exits 1 when the committed files differ
from a fresh generation. ``rpc.discover`` answers with the same document.

Events are listed as methods without a ``result`` (OpenRPC 1.3: such a method is a
notification) and marked ``"x-direction": "server-to-client"``; so is the ``task.execute``
request the sidecar sends to host executors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from sidecar import params as P
from sidecar.methods import RawBatch
from taskmill_core import __version__
from taskmill_core import types as T

__all__ = ["ERRORS", "EVENTS", "METHODS", "json_schema", "openrpc_document"]

ROOT = Path(__file__).resolve().parent.parent / "schemas"

# code, message, kind
ERRORS: list[tuple[int, str, str]] = [
    (-32700, "Parse error", "parseError"),
    (-32600, "Invalid request", "invalidRequest"),
    (-32601, "Method not found", "methodNotFound"),
    (-32602, "Invalid params", "invalidParams"),
    (-32603, "Internal error", "internal"),
    (-32001, "Task not found", "taskNotFound"),
    (-32002, "Invalid state", "invalidState"),
    (-32003, "Duplicate rejected", "duplicateRejected"),
    (-32004, "Payload too large", "payloadTooLarge"),
    (-32005, "Shutting down", "shuttingDown"),
    (-32006, "Storage error", "storage"),
    (-32007, "Forbidden", "forbidden"),
    (-32008, "Schedule not found", "scheduleNotFound"),
]
_COMMON = [-32602, -32603, -32005, -32006]

# name, summary, params type, result type, extra error codes
METHODS: list[tuple[str, str, type[Any] | None, Any, list[int]]] = [
    ("initialize", "Handshake (optional).", P.InitializeParams, P.InitializeResult, []),
    ("ping", "Liveness; the sidecar's clock.", P.Empty, P.PingResult, []),
    ("shutdown", "Graceful shutdown, then exit 0.", P.ShutdownParams, P.Empty, []),
    ("rpc.discover", "This document.", P.Empty, dict[str, Any], []),
    ("task.submit", "Submit one task (SubmitParams).", T.TaskSpec, T.SubmitResult,
     [-32001, -32002, -32003, -32004]),
    ("task.submitBatch", "Submit up to 10,000 tasks, all or nothing.", P.SubmitBatchParams,
     P.SubmitBatchResult, [-32001, -32002, -32003, -32004]),
    ("task.get", "One task, final ones included.", P.TaskIdParams, T.TaskInfo, [-32001]),
    ("task.list", "Tasks by id descending, filtered, paged.", P.ListParams, T.TaskPage, []),
    ("task.cancel", "Cancel an active task and its children.", P.TaskIdParams,
     P.CancelResult, [-32001, -32002]),
    ("task.cancelMany", "Cancel active tasks by type, group or tags.", P.CancelManyParams,
     P.CancelManyResult, []),
    ("task.setPriority", "Change a task's priority (may preempt).", P.SetPriorityParams,
     T.TaskInfo, [-32001, -32002]),
    ("task.pause", "Pause one pending or running task.", P.TaskIdParams, T.TaskInfo,
     [-32001, -32002]),
    ("task.resume", "Resume a paused task.", P.TaskIdParams, T.TaskInfo, [-32001, -32002]),
    ("task.retry", "Run a failed or deadLetter task again.", P.TaskIdParams, P.RetryResult,
     [-32001, -32002]),
    ("scheduler.status", "Pauses, counts, running tasks, IO.", P.Empty, T.SchedulerStatus, []),
    ("scheduler.pause", "Pause globally, a group or a type (persisted), until resumed or "
     "(untilAt / forMs) until a time.", P.PauseParams, P.Empty, []),
    ("scheduler.resume", "Lift one scope's pause.", P.ScopeParams, P.Empty, []),
    ("scheduler.configure", "Change settings (persisted); returns the whole config.",
     P.ConfigureParams, T.SchedulerConfig, []),
    ("scheduler.setPressure", "Report host pressure from one source (throttle tiers).",
     P.SetPressureParams, P.Empty, []),
    ("history.stats", "Per-type statistics of final tasks.", P.HistoryStatsParams,
     T.HistoryStats, []),
    ("history.prune", "Remove final tasks by age or count.", P.PruneParams, P.PruneResult, []),
    ("events.configure",
     "Select this connection's events: exclude names, task.batchSubmitted for batches "
     "(replaces the whole selection).", P.EventsConfigureParams, P.Empty, []),
    ("schedule.create",
     "Create a recurring schedule: exactly one of everyMs (>= 1000; startAt defaults to now + "
     "everyMs, a past startAt keeps its grid) or cron (five fields; timezone only with cron, "
     "default the machine's zone, stored resolved). task may not set runAt, delayMs, "
     "dependsOn, parentId or siblingOf, nor the tag 'schedule'. A duplicate name is -32003 "
     "with data.existingId.", T.ScheduleSpec, T.Schedule, [-32003, -32004]),
    ("schedule.get", "One schedule, by id or name (exactly one).", P.ScheduleRefParams,
     T.Schedule, [-32008]),
    ("schedule.delete", "Remove a schedule; the tasks it submitted stay.",
     P.ScheduleRefParams, P.Empty, [-32008]),
    ("schedule.list", "Every schedule, by id.", P.Empty, P.ScheduleListResult, []),
    ("schedule.pause", "Stop a schedule firing (nextAt absent while paused); persisted.",
     P.ScheduleRefParams, T.Schedule, [-32008]),
    ("schedule.resume",
     "Fire again from the first time after now; nothing fires for the paused time.",
     P.ScheduleRefParams, T.Schedule, [-32008]),
    ("executor.register", "This client runs tasks of a type.", P.RegisterParams, P.Empty,
     [-32007]),
    ("executor.unregister", "Stop running a type.", P.UnregisterParams, P.Empty, [-32007]),
    # Workflows
    ("task.lookup",
     "The active task with this dedup key, else the final one with the latest finishedAt "
     "(ties: the higher id).", P.LookupParams, T.TaskInfo, [-32001]),
    ("scheduler.metrics",
     "Counters since the sidecar started (each task counted once per hold for rateLimited, "
     "throttled, ioDeferred) and gauges of the waiting and running states now.", P.Empty,
     T.MetricsReport, []),
]  # fmt: skip

# Client → sidecar notifications (no response).
CLIENT_NOTIFICATIONS: list[tuple[str, str, type[Any]]] = [
    ("executor.progress", "Progress of a task.execute in flight.", P.ExecutorProgressParams),
    ("executor.checkpoint", "Resumable state of a task.execute in flight.",
     P.ExecutorCheckpointParams),
]  # fmt: skip

# Sidecar → client.
EVENTS: list[tuple[str, type[Any]]] = [
    ("sidecar.ready", P.ReadyParams),
    ("sidecar.exiting", P.ExitingParams),
    ("task.submitted", T.TaskSubmitted),
    ("task.updated", T.TaskUpdated),
    ("task.batchSubmitted", T.TaskBatchSubmitted),
    ("task.started", T.TaskStarted),
    ("task.progress", T.TaskProgress),
    ("task.completed", T.TaskCompleted),
    ("task.failed", T.TaskFailed),
    ("task.cancelled", T.TaskCancelled),
    ("task.superseded", T.TaskSuperseded),
    ("task.preempted", T.TaskPreempted),
    ("task.expired", T.TaskExpired),
    ("scheduler.paused", T.SchedulerPaused),
    ("scheduler.resumed", T.SchedulerResumed),
    ("io.pressure", T.IoStatus),
    ("schedule.fired", T.ScheduleFired),
    ("schedule.skipped", T.ScheduleSkipped),
    ("scheduler.pressure", T.SchedulerPressure),
    ("executor.cancel", P.ExecutorCancelParams),
]

_REF = "#/components/schemas/{name}"


def _all_types() -> list[Any]:
    types: list[Any] = []
    for _, _, ptype, rtype, _ in METHODS:
        types += [ptype, rtype]
    types += [t for _, _, t in CLIENT_NOTIFICATIONS]
    types += [t for _, t in EVENTS]
    types += [P.ExecuteParams, P.ExecuteResult, RawBatch]
    return types


def _params(schema: dict[str, Any], components: dict[str, Any]) -> list[dict[str, Any]]:
    ref = schema.get("$ref", "")
    comp = components[ref.rsplit("/", 1)[-1]] if ref else schema
    required = set(comp.get("required", []))
    return [
        {"name": name, "required": name in required, "schema": sub}
        for name, sub in comp.get("properties", {}).items()
    ]


def openrpc_document() -> dict[str, Any]:
    types = _all_types()
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    by_type = dict(zip(map(id, types), schemas, strict=True))
    errors = {code: {"code": code, "message": msg, "data": {"kind": kind}}
              for code, msg, kind in ERRORS}  # fmt: skip
    methods: list[dict[str, Any]] = []
    for name, summary, ptype, rtype, extra in METHODS:
        methods.append(
            {
                "name": name,
                "summary": summary,
                "paramStructure": "by-name",
                "params": _params(by_type[id(ptype)], components) if ptype else [],
                "result": {"name": "result", "schema": by_type[id(rtype)]},
                "errors": [errors[c] for c in sorted(set(_COMMON + extra), reverse=True)],
            }
        )
    for name, summary, ptype in CLIENT_NOTIFICATIONS:
        methods.append(
            {
                "name": name,
                "summary": summary,
                "paramStructure": "by-name",
                "params": _params(by_type[id(ptype)], components),
                "x-direction": "client-to-server",
            }
        )
    methods.append(
        {
            "name": "task.execute",
            "summary": "Sidecar → client request: run this task (host executors).",
            "paramStructure": "by-name",
            "params": _params(by_type[id(P.ExecuteParams)], components),
            "result": {"name": "result", "schema": by_type[id(P.ExecuteResult)]},
            "x-direction": "server-to-client",
        }
    )
    for name, etype in EVENTS:
        methods.append(
            {
                "name": name,
                "summary": f"Event {name}.",
                "paramStructure": "by-name",
                "params": _params(by_type[id(etype)], components),
                "x-direction": "server-to-client",
            }
        )
    return {
        "openrpc": "1.3.2",
        "info": {
            "title": "Taskmill sidecar",
            "version": __version__,
            "description": "JSON-RPC 2.0 over newline-delimited stdio; see docs/protocol.md.",
            "x-protocol-version": P.PROTOCOL_VERSION,
        },
        "methods": methods,
        "components": {
            "schemas": components,
            "errors": {kind: errors[code] for code, _, kind in ERRORS},
        },
    }


def json_schema() -> dict[str, Any]:
    """One JSON Schema document with every shared type under ``$defs``."""
    _, components = msgspec.json.schema_components(_all_types(), ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Taskmill shared types",
        "$defs": components,
    }


def _render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def files() -> dict[Path, str]:
    return {
        ROOT / "openrpc.json": _render(openrpc_document()),
        ROOT / "taskmill.schema.json": _render(json_schema()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sidecar.schemas")
    ap.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = ap.parse_args(argv)
    stale = [p for p, text in files().items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            sys.stderr.write(f"{p} is stale: run python3 dev.py schemas\n")
        return 1 if stale else 0
    ROOT.mkdir(exist_ok=True)
    for p, text in files().items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
