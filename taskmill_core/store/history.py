"""Per-type statistics of final tasks, kept as tasks finish: ``history.stats`` without reading
every final task per call.

For each type: how many tasks completed and how many failed (``failed`` and ``deadLetter``),
and over the completed ones the sums behind the averages (duration, the four IO figures) and a
histogram of durations for the p95.

**The p95 sketch** is a log-bucketed histogram: durations below 64 ms each have a bucket of
their own (exact), longer ones fall into buckets 2^(1/32) wide (about 2.2 %), and a quantile
is answered with its bucket's geometric middle, clamped to the largest duration added since
the store opened. So the
p95 is the exact nearest-rank p95 below 64 ms and within 1.1 % of it above. A type has at most
~1,600 buckets (durations up to 2^53 ms), whatever the number of tasks. Unlike a reservoir or
most streaming sketches, a histogram is subtractable: a pruned or retried task is taken out
exactly.

**How it stays exact.** The aggregates are built from the file when the store opens (only the
final tasks are read, through the ``tasks_final`` index: the default retention keeps at most
100,000). After that, a transaction that finishes tasks journals their ids (one list append per
statement, no read: the hot path pays nothing more), and the ids of committed ones wait in
``fresh`` until the next ``history.stats`` reads their rows by id (a primary-key seek each) and
adds them in. A task leaving ``completed``/``failed``/``deadLetter`` (a retry, pruning) is taken
out with the values read before the change, or simply dropped from ``fresh`` if it was never
added. ``fresh`` is folded in by the store whenever it passes :data:`FOLD_AT` ids, a chunk at a
time, so it stays bounded without a stats call.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from taskmill_core.types import IoBytes

__all__ = ["FOLD_AT", "Aggregate", "History", "bucket_of", "bucket_value"]

_decode_io = msgspec.json.Decoder(IoBytes).decode

EXACT_BELOW = 64  # ms: each shorter duration has a bucket of its own
STEPS = 32  # buckets per doubling above EXACT_BELOW
FOLD_AT = 10_000  # fresh ids beyond which the store folds them in without being asked
FOLD_CHUNK = 500  # ids read per statement when folding

COUNTED = ("completed", "failed", "deadLetter")
# IoBytes as stored: JSON text in a BLOB, read as TEXT (SQLite 3.45+ takes a BLOB for JSONB).
_IO_KEYS = ("diskRead", "diskWrite", "netRx", "netTx")


def bucket_of(duration: int) -> int:
    if duration < EXACT_BELOW:
        return max(duration, 0)
    return EXACT_BELOW + int(STEPS * math.log2(duration / EXACT_BELOW))


def bucket_value(bucket: int) -> float:
    """The duration a bucket stands for: itself below EXACT_BELOW, else its geometric middle."""
    if bucket < EXACT_BELOW:
        return float(bucket)
    return EXACT_BELOW * 2 ** ((bucket - EXACT_BELOW + 0.5) / STEPS)


@dataclass(slots=True)
class Aggregate:
    """One type's final tasks, summed."""

    completed: int = 0
    failed: int = 0
    durations: int = 0  # completed tasks with a duration
    duration_sum: int = 0
    max_duration: int = 0
    ios: int = 0  # completed tasks with measured IO
    io_sum: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    histogram: dict[int, int] = field(default_factory=dict)

    def add(self, state: str, duration: int | None, io: bytes | None, sign: int) -> None:
        if state != "completed":
            if state in ("failed", "deadLetter"):
                self.failed += sign
            return
        self.completed += sign
        if duration is not None:
            self.durations += sign
            self.duration_sum += sign * duration
            if sign > 0:
                self.max_duration = max(self.max_duration, duration)
            b = bucket_of(duration)
            left = self.histogram.get(b, 0) + sign
            if left:
                self.histogram[b] = left
            else:
                self.histogram.pop(b, None)
        if io:
            i = _decode_io(io)
            self.ios += sign
            s = self.io_sum
            s[0] += sign * i.disk_read
            s[1] += sign * i.disk_write
            s[2] += sign * i.net_rx
            s[3] += sign * i.net_tx

    def p95(self) -> float | None:
        """The nearest-rank 95th percentile of the durations, from the histogram."""
        if self.durations <= 0:
            return None
        rank = max(1, math.ceil(0.95 * self.durations))
        seen = 0
        for b in sorted(self.histogram):
            seen += self.histogram[b]
            if seen >= rank:
                value = bucket_value(b)
                if b >= EXACT_BELOW and self.max_duration:
                    value = min(value, float(self.max_duration))
                return value
        return None  # pragma: no cover - the histogram holds `durations` entries

    def avg_io(self) -> IoBytes:
        n = max(1, self.ios)
        s = self.io_sum
        return IoBytes(
            disk_read=s[0] // n, disk_write=s[1] // n, net_rx=s[2] // n, net_tx=s[3] // n
        )

    @property
    def empty(self) -> bool:
        return not (self.completed or self.failed)


class History:
    """The aggregates per type, and the ids of finished tasks not yet added in."""

    __slots__ = ("by_type", "fresh")

    def __init__(self) -> None:
        self.by_type: dict[str, Aggregate] = {}
        self.fresh: dict[int, None] = {}  # ids, in order (a dict: O(1) removal)

    def load(self, db: sqlite3.Connection) -> None:
        """Sum every completed, failed and dead-lettered task (when the store opens), in SQL:
        per (type, state) the counts and sums, and per (type, duration) the number of
        completed tasks, which the histogram then buckets (a few thousand distinct durations
        rather than a row per task: 100,000 tasks in ~60 ms instead of ~350 ms)."""
        self.by_type = {}
        self.fresh = {}
        final = (
            "FROM tasks INDEXED BY tasks_final WHERE finished_at IS NOT NULL AND state IN "
            f"({','.join(repr(s) for s in COUNTED)})"
        )
        for row in db.execute(
            "SELECT type, state, count(*), count(duration_ms), coalesce(sum(duration_ms), 0), "
            "coalesce(max(duration_ms), 0), count(io_actual), "
            + ", ".join(
                f"coalesce(sum(json_extract(CAST(io_actual AS TEXT), '$.{k}')), 0)"
                for k in _IO_KEYS
            )
            + f" {final} GROUP BY type, state"
        ):
            task_type, state, n, durations, total, longest, ios, *io = row
            agg = self.by_type.get(task_type)
            if agg is None:
                agg = self.by_type[task_type] = Aggregate()
            if state != "completed":
                agg.failed += n
                continue
            agg.completed += n
            agg.durations += durations
            agg.duration_sum += total
            agg.max_duration = max(agg.max_duration, longest)
            agg.ios += ios
            agg.io_sum = [int(x) for x in io]
        for task_type, duration, n in db.execute(
            f"SELECT type, duration_ms, count(*) {final} AND state='completed' "
            "AND duration_ms IS NOT NULL GROUP BY type, duration_ms"
        ):
            hist = self.by_type[task_type].histogram
            b = bucket_of(duration)
            hist[b] = hist.get(b, 0) + n

    def _add_rows(self, rows: Iterable[Sequence[Any]], sign: int) -> None:
        by_type = self.by_type
        for task_type, state, duration, io in rows:
            agg = by_type.get(task_type)
            if agg is None:
                agg = by_type[task_type] = Aggregate()
            agg.add(state, duration, io, sign)
            if agg.empty and sign < 0:
                del by_type[task_type]

    # --- changes, applied when their transaction commits ---------------------------------

    def finished(self, ids: Iterable[int]) -> None:
        """These tasks reached a final state: added in at the next fold."""
        fresh = self.fresh
        for i in ids:
            fresh[i] = None

    def removed(self, rows: Iterable[tuple[int, str, str, int | None, bytes | None]]) -> None:
        """These tasks ``(id, type, state, duration, io)`` left their final state (retried) or
        the database (pruned); the values are those they had."""
        for task_id, task_type, state, duration, io in rows:
            if task_id in self.fresh:
                del self.fresh[task_id]  # never added in
            else:
                self._add_rows([(task_type, state, duration, io)], -1)

    def fold(self, db: sqlite3.Connection, limit: int | None = None) -> None:
        """Add in the rows of (up to ``limit``) fresh ids, read by id through ``db`` (the
        writer, outside any transaction: it sees what committed)."""
        fresh = self.fresh
        while fresh and (limit is None or limit > 0):
            take = min(len(fresh), FOLD_CHUNK if limit is None else min(limit, FOLD_CHUNK))
            it = iter(fresh)
            ids = [next(it) for _ in range(take)]
            for i in ids:
                del fresh[i]
            if limit is not None:
                limit -= take
            rows = db.execute(
                "SELECT type, state, duration_ms, io_actual FROM tasks "
                f"WHERE id IN ({','.join('?' * len(ids))}) "
                "AND state IN ('completed','failed','deadLetter')",
                ids,
            ).fetchall()
            self._add_rows(rows, 1)
