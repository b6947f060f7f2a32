"""Recurring schedules as rows: the ``schedules`` table's reads and writes.

A schedule's row holds its definition (the task as JSON, ``every_ms`` or ``cron`` with its
``timezone``, ``start_at``, ``max_runs``) and its state: ``next_at`` (NULL while paused or once
ended), ``runs``, ``last_at`` and ``last_task_id``. The index ``schedules_due`` over
``next_at`` answers "when is the next firing" and "which are due now" without a scan, so a
thousand idle schedules cost one indexed read when something changes, and nothing otherwise.

Writes take the caller's :data:`~taskmill_core.store.connection.Tx`: a firing updates its row
in the same transaction that submits its task. Time is passed in.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from taskmill_core.errors import ScheduleNotFound
from taskmill_core.store.connection import Tx
from taskmill_core.types import Schedule, TaskSpec

__all__ = [
    "delete",
    "due",
    "find",
    "get",
    "insert",
    "list_all",
    "next_at",
    "record_firing",
    "set_next",
]

_encode = msgspec.json.Encoder().encode
_decode_task = msgspec.json.Decoder(TaskSpec).decode

_COLUMNS = (
    "id, name, task, every_ms, cron, timezone, start_at, next_at, last_at, last_task_id, "
    "runs, max_runs, paused"
)


def _row(row: Sequence[Any]) -> Schedule:
    paused = bool(row[12])
    return Schedule(
        id=row[0],
        name=row[1],
        task=_decode_task(row[2]),
        every_ms=row[3],
        cron=row[4],
        timezone=row[5],
        start_at=row[6],
        next_at=row[7],
        last_at=row[8],
        last_task_id=row[9],
        runs=row[10],
        max_runs=row[11],
        paused=paused,
    )


def insert(tx: Tx, s: Schedule, now: int) -> int:
    """Store a new schedule (its ``id`` is ignored); returns the new id."""
    cur = tx.execute(
        "INSERT INTO schedules(name, task, every_ms, cron, timezone, start_at, next_at, "
        "runs, max_runs, paused, created_at) VALUES(?, ?, ?, ?, ?, ?, ?, 0, ?, 0, ?)",
        (
            s.name,
            _encode(s.task),
            s.every_ms,
            s.cron,
            s.timezone,
            s.start_at,
            s.next_at,
            s.max_runs,
            now,
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def get(db: sqlite3.Connection, schedule_id: int) -> Schedule:
    row = db.execute(f"SELECT {_COLUMNS} FROM schedules WHERE id=?", (schedule_id,)).fetchone()
    if row is None:
        raise ScheduleNotFound(f"no schedule with id {schedule_id}", id=schedule_id)
    return _row(row)


def find(db: sqlite3.Connection, name: str) -> Schedule | None:
    """The schedule called ``name``, if any."""
    row = db.execute(f"SELECT {_COLUMNS} FROM schedules WHERE name=?", (name,)).fetchone()
    return None if row is None else _row(row)


def list_all(db: sqlite3.Connection) -> list[Schedule]:
    """Every schedule, by id."""
    return [_row(r) for r in db.execute(f"SELECT {_COLUMNS} FROM schedules ORDER BY id")]


def next_at(db: sqlite3.Connection) -> int | None:
    """The earliest ``next_at`` of any schedule that will fire (an index lookup)."""
    row = db.execute("SELECT min(next_at) FROM schedules WHERE next_at IS NOT NULL").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def due(db: sqlite3.Connection, now: int, limit: int) -> list[Schedule]:
    """Up to ``limit`` schedules due at ``now``, the most overdue first."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM schedules WHERE next_at IS NOT NULL AND next_at <= ? "
        "ORDER BY next_at, id LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_row(r) for r in rows]


def record_firing(
    tx: Tx, schedule_id: int, next_at: int | None, task_id: int | None, now: int
) -> None:
    """A firing happened at ``now``: move ``next_at``; if it submitted ``task_id``, count it."""
    if task_id is None:
        tx.execute("UPDATE schedules SET next_at=? WHERE id=?", (next_at, schedule_id))
    else:
        tx.execute(
            "UPDATE schedules SET next_at=?, runs=runs+1, last_at=?, last_task_id=? WHERE id=?",
            (next_at, now, task_id, schedule_id),
        )


def set_next(tx: Tx, schedule_id: int, next_at: int | None, *, paused: bool) -> None:
    """Pause (``next_at`` None) or resume a schedule."""
    tx.execute(
        "UPDATE schedules SET next_at=?, paused=? WHERE id=?",
        (next_at, int(paused), schedule_id),
    )


def delete(tx: Tx, schedule_id: int) -> bool:
    """Remove a schedule; False if there was none. Its tasks stay."""
    return tx.execute("DELETE FROM schedules WHERE id=?", (schedule_id,)).rowcount > 0
