"""Retry policy: when a failed run is tried again, and when it is given up (``deadLetter``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from taskmill_core.errors import ExecutorError, RetryableError
from taskmill_core.types import Backoff, ErrorInfo

__all__ = ["DEFAULT_BACKOFF", "FailureOutcome", "backoff_delay_ms", "decide_failure"]

DEFAULT_BACKOFF = Backoff()


def backoff_delay_ms(backoff: Backoff, retry: int, rng: random.Random) -> int:
    """Delay before retry number ``retry`` (1 for the first retry), capped at ``max_ms``.

    ``exponentialJitter`` uses "equal jitter": half the exponential delay is kept and the
    other half is random, so retries spread out but never come back almost at once.
    """
    n = max(1, retry)
    if backoff.kind == "constant":
        delay = float(backoff.initial_ms)
    elif backoff.kind == "linear":
        delay = float(backoff.initial_ms * n)
    else:
        delay = backoff.initial_ms * backoff.multiplier ** (n - 1)
    delay = min(delay, float(backoff.max_ms))
    if backoff.kind == "exponentialJitter":
        delay = delay / 2 + rng.random() * delay / 2
    return round(delay)


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    """What becomes of a failed run: retried at ``retry_at``, or final in ``final_state``."""

    error: ErrorInfo
    retry_at: int | None  # None: no retry; the task ends in final_state
    final_state: Literal["failed", "deadLetter"] = "failed"


def decide_failure(
    exc: BaseException | None,
    *,
    attempt: int,
    max_retries: int,
    backoff: Backoff | None,
    now: int,
    rng: random.Random,
) -> FailureOutcome:
    """The retry decision for a run that ended in ``exc``, as plain data.

    A permanent error fails the task. A retryable one (any exception that is not an
    :class:`~taskmill_core.errors.ExecutorError` counts as one) retries while retries are
    left — after the executor's ``retry_after`` if it gave one, else after the task's
    backoff — and is dead-lettered once they are used up.
    """
    if isinstance(exc, ExecutorError):
        kind, retryable = exc.kind, exc.retryable
        message = str(exc) or exc.__class__.__name__
    else:
        kind, retryable = "error", True
        message = f"{exc.__class__.__name__}: {exc}" if exc else "executor failed"
    error = ErrorInfo(message=message, kind=kind, retryable=retryable)
    if not retryable:
        return FailureOutcome(error, None, "failed")
    if attempt >= max_retries:
        return FailureOutcome(error, None, "deadLetter")
    after = exc.retry_after if isinstance(exc, RetryableError) else None
    if after is not None:
        delay = round(after * 1000)
    else:
        delay = backoff_delay_ms(backoff or DEFAULT_BACKOFF, attempt + 1, rng)
    return FailureOutcome(error, now + delay)
