"""Metrics: counters of what the scheduler did since it opened, for ``scheduler.metrics``.

A support engineer wants counters, not a database dump. The counters live in memory (nothing
is written per event) and start at zero when the scheduler opens. Most are counted from the
events the scheduler publishes — each lifecycle event is published once per transition, so
one event is one count (:meth:`Metrics.observe`); the rest are counted where they are
decided, through :meth:`Metrics.count`: ``deduplicated`` by the submitter (a duplicate sends
no event), and the hold reasons (``ioDeferred``, ``rateLimited``, ``throttled``) by the
dispatcher, once per task per hold (:class:`HoldCounter`). The gauges are the status counts
of the states that wait or run, read when asked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from taskmill_core.types import (
    Event,
    MetricCounters,
    MetricGauges,
    MetricsReport,
    TaskCancelled,
    TaskCompleted,
    TaskExpired,
    TaskFailed,
    TaskPreempted,
    TaskStarted,
    TaskSubmitted,
    TaskSuperseded,
)

__all__ = ["COUNTERS", "HOLD_COUNTERS", "OBSERVED", "HoldCounter", "Metrics"]

COUNTERS: tuple[str, ...] = tuple(f.encode_name for f in msgspec.structs.fields(MetricCounters))
"""The counter names, as on the wire (camelCase)."""

HOLD_COUNTERS: frozenset[str] = frozenset(("ioDeferred", "rateLimited", "throttled"))
"""The dispatch hold reasons (``dispatch.Decision.held``) that have a counter."""

_BY_EVENT: dict[type, str] = {
    TaskSubmitted: "submitted",
    TaskStarted: "started",
    TaskCompleted: "completed",
    TaskCancelled: "cancelled",
    TaskSuperseded: "superseded",
    TaskExpired: "expired",
    TaskPreempted: "preempted",
}
_FAILED = {"failed": "failed", "deadLetter": "deadLettered"}


OBSERVED: frozenset[type] = frozenset((TaskFailed,))
"""The events :meth:`Metrics.observe` must see one by one; the others are tallied by type."""


class Metrics:
    """The counters, and the seams that feed them: :meth:`count`, :meth:`observe` and the
    event bus's tally of events by type (``tally``; read when the counters are)."""

    __slots__ = ("_counted", "since_at", "tally")

    def __init__(self, since_at: int, tally: Mapping[type, int] | None = None) -> None:
        self.since_at = since_at
        self._counted: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.tally: Mapping[type, int] = tally if tally is not None else {}

    @property
    def counters(self) -> dict[str, int]:
        """Every counter by its wire name: those counted here plus the tallied events."""
        out = dict(self._counted)
        tally = self.tally
        for kind, name in _BY_EVENT.items():
            out[name] += tally.get(kind, 0)
        return out

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (a wire name, e.g. ``"ioDeferred"``)."""
        if name not in self._counted:
            raise KeyError(f"no counter named {name!r}")
        self._counted[name] += n

    def observe(self, event: Event) -> None:
        """Count a published event of the :data:`OBSERVED` types (the bus calls this for
        them; the events of ``_BY_EVENT`` are counted from the bus's tally instead)."""
        if isinstance(event, TaskFailed):
            self._counted["retried" if event.will_retry else _FAILED[event.state]] += 1

    def report(self, counts: Mapping[str, int]) -> MetricsReport:
        """The counters, with gauges from the status ``counts`` per state."""
        gauges = MetricGauges(
            pending=counts.get("pending", 0),
            running=counts.get("running", 0),
            waiting=counts.get("waiting", 0),
            blocked=counts.get("blocked", 0),
            paused=counts.get("paused", 0),
        )
        counters = msgspec.convert(self.counters, MetricCounters)
        return MetricsReport(since_at=self.since_at, counters=counters, gauges=gauges)

    def __repr__(self) -> str:
        busy = {k: v for k, v in self.counters.items() if v}
        return f"Metrics(since_at={self.since_at}, {busy})"


class HoldCounter:
    """Counts each task once per hold: a task held back for the same reason in consecutive
    dispatch steps is one hold; it ends when a step no longer holds it for that reason.
    Remembers only the holds of the last step (bounded by the dispatch window)."""

    __slots__ = ("_held", "_metrics")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._held: dict[int, str] = {}

    def step(self, held: Iterable[tuple[int, str]]) -> None:
        """The holds one dispatch step decided: ``(task id, reason)``."""
        now = {tid: reason for tid, reason in held if reason in HOLD_COUNTERS}
        before = self._held
        for tid, reason in now.items():
            if before.get(tid) != reason:
                self._metrics.count(reason)
        self._held = now
