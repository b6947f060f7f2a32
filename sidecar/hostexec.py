"""Host executors: task types that the client runs itself (PROTOCOL.md "Host executors").

After ``executor.register {type}`` the scheduler dispatches that type to a proxy executor
that sends the client ``task.execute {task, checkpoint}`` and waits for its answer. While it
runs, the client's ``executor.progress`` / ``executor.checkpoint`` notifications reach the
task's context. When the run must stop (cancel, preemption, pause, shutdown, timeout) the
proxy sends ``executor.cancel {id, reason}`` and gives the client a short grace to answer,
so checkpoints sent on the way out are kept.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import structlog

from sidecar.jsonrpc import ConnectionClosed, JsonRpcProtocol, RemoteError
from sidecar.params import (
    ExecuteParams,
    ExecutorCancelParams,
    ExecutorCheckpointParams,
    ExecutorProgressParams,
)
from taskmill_core import Scheduler, TaskContext
from taskmill_core.errors import Forbidden, PermanentError, RetryableError

__all__ = ["HostExecutors"]

log = structlog.get_logger("taskmill.sidecar.hostexec")

_REASONS = {"cancelled", "preempted", "paused", "shutdown", "timeout"}


class HostExecutors:
    """The task types a client registered, and the runs in flight on the client."""

    def __init__(
        self,
        scheduler: Scheduler,
        protocol: JsonRpcProtocol,
        task_group: anyio.abc.TaskGroup,
        *,
        cancel_grace_s: float = 2.0,
    ) -> None:
        self._sched = scheduler
        self._proto = protocol
        self._tg = task_group
        self._grace = cancel_grace_s
        self._types: set[str] = set()
        self._runs: dict[int, TaskContext] = {}

    @property
    def types(self) -> list[str]:
        return sorted(self._types)

    def register(self, task_type: str, concurrency: int | None) -> None:
        if self._sched.is_builtin(task_type):
            raise Forbidden(
                f"{task_type!r} is a built-in executor type; a client cannot take it over",
                type=task_type,
            )
        self._types.add(task_type)
        self._sched.register(task_type, self._run, concurrency=concurrency)

    def unregister(self, task_type: str) -> None:
        if self._sched.is_builtin(task_type):
            raise Forbidden(f"{task_type!r} is a built-in executor type", type=task_type)
        if task_type in self._types:
            self._types.discard(task_type)
            self._sched.unregister(task_type)

    def progress(self, p: ExecutorProgressParams) -> None:
        ctx = self._runs.get(p.id)
        if ctx is None:
            log.debug("progress for a task that is not running here", id=p.id)
            return
        ctx.progress(
            p.fraction, bytes_done=p.bytes_done, bytes_total=p.bytes_total, message=p.message
        )

    def checkpoint(self, p: ExecutorCheckpointParams) -> None:
        ctx = self._runs.get(p.id)
        if ctx is None:
            log.debug("checkpoint for a task that is not running here", id=p.id)
            return
        ctx.checkpoint(p.state)

    async def _run(self, ctx: TaskContext, payload: Any) -> Any:
        done = anyio.Event()
        outcome: dict[str, Any] = {}
        finalize = ctx.phase == "finalize"
        params = ExecuteParams(
            task=ctx.task,
            phase=ctx.phase,
            checkpoint=ctx.resume_state,
            children=ctx.children if finalize else None,
        )

        async def call() -> None:
            try:
                outcome["result"] = await self._proto.request("task.execute", params)
            except Exception as exc:
                outcome["error"] = exc
            finally:
                done.set()

        self._runs[ctx.id] = ctx
        try:
            self._tg.start_soon(call)
            try:
                await done.wait()
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    reason = ctx.stop_reason or "cancelled"
                    if reason == "superseded":
                        reason = "cancelled"
                    if reason in _REASONS:
                        await self._proto.notify(
                            "executor.cancel",
                            ExecutorCancelParams(id=ctx.id, reason=reason),
                        )
                    with anyio.move_on_after(self._grace):
                        await done.wait()
                raise
        finally:
            self._runs.pop(ctx.id, None)
        if "error" in outcome:
            raise _executor_error(outcome["error"])
        result = outcome.get("result")
        return result.get("result") if isinstance(result, dict) else result


def _executor_error(exc: Exception) -> Exception:
    """Turn the client's error answer into the core's retryable/permanent errors."""
    if isinstance(exc, ConnectionClosed):
        return RetryableError("the host executor went away", kind="executorLost")
    if isinstance(exc, RemoteError):
        data = exc.data
        kind = data.get("kind") if isinstance(data.get("kind"), str) else "error"
        if data.get("retryable") is False:
            return PermanentError(exc.message, kind=str(kind) if kind != "error" else "permanent")
        after = data.get("retryAfterMs")
        retry_after = after / 1000 if isinstance(after, int | float) and after >= 0 else None
        return RetryableError(exc.message, retry_after=retry_after, kind=str(kind))
    return RetryableError(f"host executor failed: {exc}", kind="executorLost")
