"""The retry decision (:func:`taskmill_core.retry.decide_failure`), with plain data.

What becomes of a failed run is a pure function of the error, the attempt, the task's retry
settings and the time: permanent errors fail the task, retryable ones retry while retries
are left (after the executor's ``retry_after``, else the backoff) and are dead-lettered after.
"""

from __future__ import annotations

import random

import pytest

from taskmill_core import PermanentError, RetryableError
from taskmill_core.retry import FailureOutcome, decide_failure
from taskmill_core.types import Backoff, ErrorInfo

NOW = 1_000_000


def decide(
    exc: BaseException | None,
    attempt: int = 0,
    max_retries: int = 3,
    backoff: Backoff | None = None,
) -> FailureOutcome:
    return decide_failure(
        exc,
        attempt=attempt,
        max_retries=max_retries,
        backoff=backoff,
        now=NOW,
        rng=random.Random(7),
    )


def test_a_permanent_error_fails_the_task_at_once_whatever_retries_are_left() -> None:
    out = decide(PermanentError("bad input", kind="badInput"), attempt=0, max_retries=5)
    assert out == FailureOutcome(ErrorInfo("bad input", "badInput", False), None, "failed")


def test_a_retryable_error_retries_after_the_backoff_while_retries_are_left() -> None:
    constant = Backoff(kind="constant", initial_ms=250)
    out = decide(RetryableError("busy"), attempt=1, max_retries=3, backoff=constant)
    assert out.retry_at == NOW + 250 and out.error.retryable and out.error.kind == "error"


def test_the_executors_retry_after_wins_over_the_backoff() -> None:
    out = decide(RetryableError("rate limited", retry_after=2.5), backoff=Backoff())
    assert out.retry_at == NOW + 2500


def test_retries_used_up_dead_letter_the_task() -> None:
    out = decide(RetryableError("busy"), attempt=3, max_retries=3)
    assert (out.retry_at, out.final_state) == (None, "deadLetter")
    assert decide(RetryableError("busy"), attempt=0, max_retries=0).final_state == "deadLetter"


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (ValueError("no such file"), "ValueError: no such file"),
        (None, "executor failed"),
        (RetryableError(), "RetryableError"),
    ],
)
def test_any_other_exception_is_retryable_and_named_in_the_message(
    exc: BaseException | None, message: str
) -> None:
    out = decide(exc)
    assert out.error.message == message and out.error.retryable and out.retry_at is not None


def test_without_a_backoff_the_default_exponential_backoff_applies() -> None:
    first, second = decide(RetryableError("x"), attempt=0), decide(RetryableError("x"), attempt=1)
    assert first.retry_at is not None and second.retry_at is not None
    assert NOW < first.retry_at < second.retry_at


def test_only_a_retryable_error_says_when_to_retry() -> None:
    """A library's own exception with a ``retry_after`` attribute (of any type) is just an
    exception: the task's backoff applies."""

    class Throttled(Exception):
        retry_after = "tomorrow"

    constant = Backoff(kind="constant", initial_ms=250)
    assert decide(Throttled("slow down"), backoff=constant).retry_at == NOW + 250
