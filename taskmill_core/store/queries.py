"""Reads: tasks, the ready queue, timers, history and settings.

Short reads (a task by id, the ready index, the next timer) run on the event loop through the
writer connection, and inside an open transaction see its writes. Reads that may scan
(listing, counts, statistics, pruning candidates) go through the aiosqlite reader, off the
loop. None of them writes.

Every statement on the reader runs to its end in one hop to the reader's thread
(:func:`.connection.read_all`). A statement stepped and left open between hops (``execute``,
then ``fetchone``, then ``close``: three hops) holds the reader's read transaction open, and the
reader is shared: any other read that ran in between read that transaction's snapshot, from
before writes that had committed since (``prune`` then ``list`` listed the pruned tasks while
the amortized pruning was under way).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from taskmill_core.errors import TaskNotFound
from taskmill_core.store.connection import read_all
from taskmill_core.store.schema import ACTIVE_SQL, DUE_SQL, FINAL_SQL
from taskmill_core.types import ACTIVE_STATES, FINAL_STATES, ErrorInfo, IoBytes, TaskInfo

__all__ = [
    "Ready",
    "aged",
    "average_io",
    "counts",
    "due_since_of",
    "find_ids",
    "get",
    "get_setting",
    "group_ready",
    "history",
    "list_tasks",
    "lookup",
    "next_due",
    "next_expiry",
    "prunable",
    "ready",
    "recent_durations",
    "state_of",
]

_decode = msgspec.json.decode
_decode_io = msgspec.json.Decoder(IoBytes).decode
_decode_error = msgspec.json.Decoder(ErrorInfo).decode
_decode_tags = msgspec.json.Decoder(dict[str, str]).decode

COLUMNS = (
    "id, type, state, priority, payload, dedup_key, grp, tags, label, io_cost, io_actual, "
    "attempt, max_retries, created_at, run_at, started_at, finished_at, duration_ms, "
    "parent_id, result, error, phase, finalize, on_child_failure, on_dependency_failure"
)


def row_to_info(row: Sequence[Any]) -> TaskInfo:
    """A :data:`COLUMNS` row as a :class:`TaskInfo`."""
    return TaskInfo(
        id=row[0],
        type=row[1],
        state=row[2],
        priority=row[3],
        payload=_decode(row[4]),
        dedup_key=row[5],
        group=row[6],
        tags=_decode_tags(row[7]) if row[7] else {},
        label=row[8],
        io_cost=_decode_io(row[9]) if row[9] else IoBytes(),
        io_actual=_decode_io(row[10]) if row[10] else None,
        attempt=row[11],
        max_retries=row[12],
        created_at=row[13],
        run_at=row[14],
        started_at=row[15],
        finished_at=row[16],
        duration_ms=row[17],
        parent_id=row[18],
        result=_decode(row[19]) if row[19] is not None else None,
        error=_decode_error(row[20]) if row[20] else None,
        phase=row[21] or "run",
        finalize=bool(row[22]),
        on_child_failure=row[23] or "ignore",
        on_dependency_failure=row[24] or "fail",
    )


# --- on the loop (the writer connection) --------------------------------------------------


def get(db: sqlite3.Connection, task_id: int) -> TaskInfo:
    row = db.execute(f"SELECT {COLUMNS} FROM tasks WHERE id=?", (task_id,)).fetchone()
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}", id=task_id)
    return row_to_info(row)


def lookup(db: sqlite3.Connection, task_type: str, key: str) -> TaskInfo:
    """``task.lookup``: the active task holding this dedup key, else the final one that
    finished last (ties: the higher id). One seek in ``tasks_dedup``, one in ``tasks_lookup``."""
    row = db.execute(
        f"SELECT {COLUMNS} FROM tasks WHERE type=? AND dedup_key=? AND state IN {ACTIVE_SQL}",
        (task_type, key),
    ).fetchone()
    if row is None:
        row = db.execute(
            f"SELECT {COLUMNS} FROM tasks INDEXED BY tasks_lookup WHERE type=? AND dedup_key=? "
            "AND finished_at IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT 1",
            (task_type, key),
        ).fetchone()
    if row is None:
        raise TaskNotFound(
            f"no task of type {task_type!r} with dedup key {key!r}", type=task_type, dedupKey=key
        )
    return row_to_info(row)


def state_of(db: sqlite3.Connection, task_id: int) -> str:
    row = db.execute("SELECT state FROM tasks WHERE id=?", (task_id,)).fetchone()
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}", id=task_id)
    return str(row[0])


def get_setting(db: sqlite3.Connection, key: str) -> bytes | None:
    row = db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
    return None if row is None else bytes(row[0])


@dataclass(slots=True)
class Ready:
    """A dispatch candidate, as read from the ready index."""

    id: int
    type: str
    priority: int
    group: str | None
    io_cost: bytes | None = None
    """The declared ``ioCost`` as stored (JSON), decoded only by whoever needs it."""
    due_since: int | None = None
    """When it last became due (aging); read only by :func:`aged` and :func:`group_ready`."""


def _dispatch_order(row: Sequence[Any]) -> tuple[int, int]:
    return (row[2], row[0])  # (priority, id) of a ready row


def ready(
    db: sqlite3.Connection,
    sql_cache: dict[int, str],
    now: int,
    types: Sequence[str],
    paused_groups: Sequence[str],
    paused_types: Sequence[str],
    limit: int,
) -> list[Ready]:
    """Due pending tasks in dispatch order, that some executor can run and no pause covers.

    Per runnable type, the first ``limit`` rows of its slice of the ready index, merged here
    in (priority, id) order. (One ``UNION ALL`` statement had SQLite sort every slice in a
    temporary b-tree: ~300 µs for seven types against ~45 µs for seven seeks.) The statement
    text is kept in ``sql_cache`` per number of paused groups, so it is built once.
    """
    sql = sql_cache.get(len(paused_groups))
    if sql is None:
        sql = (
            "SELECT id, type, priority, grp, io_cost FROM tasks INDEXED BY tasks_ready "
            "WHERE state='pending' AND type=? AND (run_at IS NULL OR run_at <= ?)"
        )
        if paused_groups:
            sql += f" AND (grp IS NULL OR grp NOT IN ({','.join('?' * len(paused_groups))}))"
        sql += " ORDER BY priority, id LIMIT ?"
        sql_cache[len(paused_groups)] = sql
    execute = db.execute
    rows: list[Any] = []
    found = 0
    for t in types:
        if t in paused_types:
            continue
        part = execute(sql, (t, now, *paused_groups, limit)).fetchall()
        if part:
            rows += part
            found += 1
    if found > 1:
        rows.sort(key=_dispatch_order)
        del rows[limit:]
    return [Ready(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def _not_paused(paused_groups: Sequence[str]) -> str:
    if not paused_groups:
        return ""
    return f" AND (grp IS NULL OR grp NOT IN ({','.join('?' * len(paused_groups))}))"


def aged(
    db: sqlite3.Connection,
    now: int,
    types: Sequence[str],
    paused_groups: Sequence[str],
    above: int,
    limit: int,
    max_levels: int = 32,
) -> list[Ready]:
    """Per type and stored priority level less urgent than ``above`` (least urgent first, at
    most ``max_levels``), the first ``limit`` due tasks in id order — the ones aging may have
    moved ahead of the window by stored priority.

    Within a level, the ready index is in id order, which is submission order: the longest
    due of a level come first (a task requeued, resumed or retried later is due later but
    keeps its place; it is then read early, never missed). Each level is one seek for the
    level (``max(priority) < previous``) and one for its rows, on ``tasks_ready`` — no index
    of its own, so a write costs nothing more with aging off.
    """
    level_sql = (
        "SELECT max(priority) FROM tasks INDEXED BY tasks_ready "
        "WHERE state='pending' AND type=? AND priority < ? AND priority > ?"
    )
    rows_sql = (
        f"SELECT id, type, priority, grp, io_cost, {DUE_SQL} FROM tasks INDEXED BY tasks_ready "
        "WHERE state='pending' AND type=? AND priority=? AND (run_at IS NULL OR run_at <= ?)"
        f"{_not_paused(paused_groups)} ORDER BY id LIMIT ?"
    )
    out: list[Ready] = []
    for t in types:
        below = 256
        for _ in range(max_levels):
            level = db.execute(level_sql, (t, below, above)).fetchone()[0]
            if level is None:
                break
            for r in db.execute(rows_sql, (t, level, now, *paused_groups, limit)):
                out.append(Ready(r[0], r[1], r[2], r[3], r[4], r[5]))
            below = level
    return out


def group_ready(db: sqlite3.Connection, now: int, groups: Sequence[str], limit: int) -> list[Ready]:
    """Per group, its ``limit`` most urgent due pending tasks (fair share: a group whose
    tasks sit behind another group's long backlog still competes). One seek per group on
    ``tasks_group_ready``; the caller drops the types nobody runs or that are paused."""
    sql = (
        f"SELECT id, type, priority, grp, io_cost, {DUE_SQL} FROM tasks "
        "INDEXED BY tasks_group_ready WHERE state='pending' AND grp=? "
        "AND (run_at IS NULL OR run_at <= ?) ORDER BY priority, id LIMIT ?"
    )
    out: list[Ready] = []
    for g in groups:
        for r in db.execute(sql, (g, now, limit)):
            out.append(Ready(r[0], r[1], r[2], r[3], r[4], r[5]))
    return out


def due_since_of(db: sqlite3.Connection, ids: Sequence[int]) -> dict[int, int]:
    """When each of these tasks became due (aging needs it for the window's candidates)."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.execute(f"SELECT id, {DUE_SQL} FROM tasks WHERE id IN ({marks})", tuple(ids))
    return {int(r[0]): int(r[1]) for r in rows}


def next_due(db: sqlite3.Connection, now: int) -> int | None:
    """The earliest future ``run_at`` of a pending task."""
    row = db.execute(
        "SELECT min(run_at) FROM tasks INDEXED BY tasks_delayed "
        "WHERE state='pending' AND run_at IS NOT NULL AND run_at > ?",
        (now,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def next_expiry(db: sqlite3.Connection) -> int | None:
    row = db.execute("SELECT min(expires_at) FROM tasks WHERE expires_at IS NOT NULL").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def recent_durations(db: sqlite3.Connection, task_type: str, n: int) -> list[int]:
    rows = db.execute(
        "SELECT duration_ms FROM tasks INDEXED BY tasks_final WHERE type=? "
        "AND state='completed' AND finished_at IS NOT NULL AND duration_ms IS NOT NULL "
        "ORDER BY finished_at DESC LIMIT ?",
        (task_type, n),
    ).fetchall()
    return [int(r[0]) for r in reversed(rows)]


def average_io(db: sqlite3.Connection, task_type: str, n: int = 20) -> IoBytes | None:
    rows = db.execute(
        "SELECT io_actual FROM tasks INDEXED BY tasks_final WHERE type=? "
        "AND state='completed' AND finished_at IS NOT NULL AND io_actual IS NOT NULL "
        "ORDER BY finished_at DESC LIMIT ?",
        (task_type, n),
    ).fetchall()
    if not rows:
        return None
    ios = [_decode_io(r[0]) for r in rows]
    k = len(ios)
    return IoBytes(
        disk_read=sum(i.disk_read for i in ios) // k,
        disk_write=sum(i.disk_write for i in ios) // k,
        net_rx=sum(i.net_rx for i in ios) // k,
        net_tx=sum(i.net_tx for i in ios) // k,
    )


# --- off the loop (the aiosqlite reader) --------------------------------------------------


def _match(
    where: list[str],
    args: list[Any],
    task_type: str | None,
    group: str | None,
    tags: dict[str, str] | None,
) -> None:
    """Add the SQL conditions for the type, group and tag filters of list/cancelMany."""
    if task_type is not None:
        where.append("type=?")
        args.append(task_type)
    if group is not None:
        where.append("grp=?")
        args.append(group)
    for k, v in (tags or {}).items():
        where.append("json_extract(tags, ?) = ?")
        args.extend([f'$."{k}"', v])


async def list_tasks(
    rd: aiosqlite.Connection,
    *,
    states: Sequence[str] = (),
    task_type: str | None = None,
    group: str | None = None,
    tags: dict[str, str] | None = None,
    limit: int = 100,
    before_id: int | None = None,
    dedup_key: str | None = None,
    parent_id: int | None = None,
) -> list[TaskInfo]:
    """Tasks by id descending."""
    where: list[str] = []
    args: list[Any] = []
    if states:
        where.append(f"state IN ({','.join('?' * len(states))})")
        args.extend(states)
    _match(where, args, task_type, group, tags)
    if dedup_key is not None:
        where.append("dedup_key=?")
        args.append(dedup_key)
    if parent_id is not None:
        where.append("parent_id=?")
        args.append(parent_id)
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    sql = f"SELECT {COLUMNS} FROM tasks"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return [row_to_info(r) for r in await read_all(rd, sql, args)]


async def counts(rd: aiosqlite.Connection) -> dict[str, int]:
    found = await read_all(rd, "SELECT state, count(*) FROM tasks GROUP BY state")
    out = {s: 0 for s in (*ACTIVE_STATES, *FINAL_STATES)}
    out.update({str(r[0]): int(r[1]) for r in found})
    return out


async def history(
    rd: aiosqlite.Connection, task_type: str | None
) -> list[tuple[str, str, int | None, bytes]]:
    """(type, state, duration, io_actual) of every final task, for statistics."""
    sql = "SELECT type, state, duration_ms, io_actual FROM tasks WHERE state IN " + FINAL_SQL
    args: tuple[Any, ...] = ()
    if task_type is not None:
        sql += " AND type=?"
        args = (task_type,)
    return [(str(r[0]), str(r[1]), r[2], r[3]) for r in await read_all(rd, sql, args)]


async def find_ids(
    rd: aiosqlite.Connection,
    *,
    task_type: str | None,
    group: str | None,
    tags: dict[str, str] | None,
) -> list[int]:
    """Active tasks matching every given filter (a scan)."""
    where = [f"state IN {ACTIVE_SQL}"]
    args: list[Any] = []
    _match(where, args, task_type, group, tags)
    sql = "SELECT id FROM tasks WHERE " + " AND ".join(where) + " ORDER BY id"
    return [int(r[0]) for r in await read_all(rd, sql, args)]


async def prunable(
    rd: aiosqlite.Connection, now: int, max_count: int | None, max_age_ms: int | None, limit: int
) -> list[int]:
    """Ids of final tasks too old or beyond the newest ``max_count``."""
    ids: list[int] = []
    if max_age_ms is not None:
        # Type by type (one seek each to find the next type), then the slices of its final
        # states older than the cut.
        task_type = ""
        while len(ids) < limit:
            found = await read_all(
                rd,
                "SELECT type FROM tasks INDEXED BY tasks_final "
                "WHERE finished_at IS NOT NULL AND type > ? ORDER BY type LIMIT 1",
                (task_type,),
            )
            if not found:
                break
            task_type = found[0][0]
            found = await read_all(
                rd,
                "SELECT id FROM tasks INDEXED BY tasks_final "
                f"WHERE type=? AND state IN {FINAL_SQL} AND finished_at IS NOT NULL "
                "AND finished_at < ? LIMIT ?",
                (task_type, now - max_age_ms, limit - len(ids)),
            )
            ids.extend(int(r[0]) for r in found)
    if max_count is not None and len(ids) < limit:
        found = await read_all(
            rd,
            f"SELECT id FROM tasks WHERE state IN {FINAL_SQL} ORDER BY id DESC LIMIT ? OFFSET ?",
            (limit - len(ids), max_count),
        )
        ids.extend(int(r[0]) for r in found)
    return sorted(set(ids))


# --- for the admin command line (a read-only connection; see sqlite.ReadOnlyStore) --------


def read_only_uri(path: Path) -> str:
    """A URI that opens ``path`` for reading only, as a WAL reader beside a running writer.

    Without a ``-wal`` file nothing has the database open and the file alone is the whole
    database: it is read as immutable, which creates nothing beside it (see
    :func:`.schema.check_existing`).
    """
    wal = Path(f"{path}-wal").exists()
    return f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def counts_by_type(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """(type, state, count) of every task, for the admin's statistics."""
    rows = db.execute("SELECT type, state, count(*) FROM tasks GROUP BY type, state").fetchall()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]
