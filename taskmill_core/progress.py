"""Progress: what executors report, and what the scheduler extrapolates when they don't.

Explicit reports win: once an executor reports in a run, estimates stop for that run.
Otherwise the fraction is the elapsed time over the type's expected duration (an EWMA of
recent durations), capped below 1.0 so an estimate never claims a task is done. With byte
counts, rate and ETA follow from bytes moved over elapsed time. Within one run the fraction
never decreases.
"""

from __future__ import annotations

from collections.abc import Iterable

from taskmill_core.types import Progress

__all__ = ["ESTIMATE_CAP", "DurationModel", "RunProgress"]

ESTIMATE_CAP = 0.99


class DurationModel:
    """Expected duration per task type: an EWMA over recent completed runs."""

    def __init__(self, alpha: float = 0.3) -> None:
        self.alpha = alpha
        self._ewma: dict[str, float] = {}

    def seed(self, task_type: str, durations: Iterable[int]) -> None:
        for d in durations:
            self.observe(task_type, d)

    def observe(self, task_type: str, duration_ms: int) -> None:
        old = self._ewma.get(task_type)
        self._ewma[task_type] = (
            float(duration_ms) if old is None else old + self.alpha * (duration_ms - old)
        )

    def expected_ms(self, task_type: str) -> float | None:
        return self._ewma.get(task_type)

    def known(self, task_type: str) -> bool:
        return task_type in self._ewma


class RunProgress:
    """Progress of one run of one task, and when it was last sent."""

    __slots__ = (
        "_fraction",
        "dirty",
        "explicit",
        "last",
        "last_sent_ms",
        "started_ms",
    )

    def __init__(self, started_ms: int) -> None:
        self.started_ms = started_ms
        self.explicit = False
        self._fraction = 0.0
        self.last: Progress | None = None
        self.last_sent_ms: int | None = None
        self.dirty = False

    def report(
        self,
        now: int,
        fraction: float | None = None,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        message: str | None = None,
    ) -> Progress:
        """Record an executor's report; returns the progress to publish."""
        self.explicit = True
        if fraction is None and bytes_done is not None and bytes_total:
            fraction = bytes_done / bytes_total
        if fraction is not None:
            self._fraction = max(self._fraction, min(1.0, max(0.0, fraction)))
        elapsed = max(1, now - self.started_ms)
        rate = eta = None
        if bytes_done is not None:
            rate = bytes_done * 1000 / elapsed
            if bytes_total is not None and rate > 0:
                eta = round(max(0, bytes_total - bytes_done) * 1000 / rate)
        elif 0 < self._fraction < 1:
            eta = round(elapsed * (1 - self._fraction) / self._fraction)
        self.last = Progress(
            fraction=self._fraction,
            estimated=False,
            bytes_done=bytes_done,
            bytes_total=bytes_total,
            rate_bps=rate,
            eta_ms=eta,
            message=message,
        )
        self.dirty = True
        return self.last

    def estimate(self, now: int, expected_ms: float | None) -> Progress | None:
        """An extrapolated progress, or None when there is nothing to extrapolate from."""
        if self.explicit or not expected_ms or expected_ms <= 0:
            return None
        elapsed = now - self.started_ms
        fraction = min(ESTIMATE_CAP, elapsed / expected_ms)
        if fraction <= self._fraction:
            return None
        self._fraction = fraction
        eta = max(0, round(expected_ms - elapsed))
        self.last = Progress(fraction=fraction, estimated=True, eta_ms=eta)
        self.dirty = True
        return self.last
