"""The built-in executors every scheduler has: ``noop`` and ``sleep`` (PROTOCOL.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from taskmill_core.context import TaskContext
from taskmill_core.errors import PermanentError, RetryableError
from taskmill_core.executors import Registration

__all__ = ["BUILTINS", "SleepPayload", "noop", "sleep"]


async def noop(ctx: TaskContext, payload: Any) -> Any:
    """Does nothing and returns ``{}``."""
    return {}


class SleepPayload(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    ms: Annotated[int, Meta(ge=0, le=24 * 3600 * 1000)]
    steps: Annotated[int, Meta(ge=0, le=10_000)] = 0
    fail_attempts: Annotated[int, Meta(ge=0)] | None = None
    fail: Literal["retryable", "permanent"] | None = None
    result: Any = None


def decode_payload(payload: Any, kind: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.convert(payload, kind)
    except msgspec.ValidationError as exc:
        raise PermanentError(f"invalid payload: {exc}", kind="invalidPayload") from None


async def sleep(ctx: TaskContext, payload: Any) -> Any:
    """Sleep ``ms`` in ``steps`` slices, reporting progress after each; fail on request.

    With ``fail`` set, the first ``failAttempts`` attempts fail with that kind of error
    (every attempt when ``failAttempts`` is omitted); ``failAttempts`` alone fails retryably.
    """
    p: SleepPayload = decode_payload(payload, SleepPayload)
    failing = p.fail_attempts if p.fail_attempts is not None else (1 << 30 if p.fail else 0)
    steps = max(1, p.steps)
    for step in range(steps):
        await ctx.sleep(p.ms / steps)
        if p.steps:
            ctx.progress((step + 1) / steps, message=f"step {step + 1} of {steps}")
    if ctx.attempt < failing:
        if p.fail == "permanent":
            raise PermanentError(f"sleep failed permanently on attempt {ctx.attempt}")
        raise RetryableError(f"sleep failed on attempt {ctx.attempt}")
    return p.result if p.result is not None else {}


BUILTINS = [
    Registration("noop", noop, builtin=True),
    Registration("sleep", sleep, builtin=True),
]
