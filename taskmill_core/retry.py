"""Retry policy: when a failed run is tried again, and when it is given up (``deadLetter``)."""

from __future__ import annotations

import random

from taskmill_core.types import Backoff

__all__ = ["DEFAULT_BACKOFF", "backoff_delay_ms"]

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
