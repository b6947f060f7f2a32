"""Task ids: handed out in order, never reused, not even after the newest tasks are pruned.

New rows get SQLite's max(id) + 1 (schema version 2 dropped AUTOINCREMENT, whose
``sqlite_sequence`` row cost every commit a page). When the newest tasks are deleted, the
highest id is recorded in the setting ``id_floor`` and the next insert takes an explicit id
above it; until then no insert pays for a lookup.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from taskmill_core.store.connection import Tx

__all__ = ["ID_FLOOR_KEY", "IdFloor", "InsertRow", "insert_sql", "max_id"]

ID_FLOOR_KEY = "id_floor"

# A new row binds only the columns it has a value for (see submit.insert_params).
InsertRow = tuple[tuple[str, ...], tuple[Any, ...]]


@functools.cache
def insert_sql(columns: tuple[str, ...]) -> str:
    """The INSERT of these columns (cached: the statement text is also the key of the
    sqlite3 module's prepared-statement cache)."""
    return f"INSERT INTO tasks({', '.join(columns)}) VALUES({','.join('?' * len(columns))})"


def max_id(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0])


class IdFloor:
    """The highest id ever handed out when it is above every stored id (else 0)."""

    __slots__ = ("floor",)

    def __init__(self) -> None:
        self.floor = 0

    def load(self, db: sqlite3.Connection) -> None:
        """Read the recorded floor when the store opens."""
        row = db.execute("SELECT value FROM settings WHERE key=?", (ID_FLOOR_KEY,)).fetchone()
        if row is not None and int(row[0]) > max_id(db):
            self.floor = int(row[0])

    def first_id(self, db: sqlite3.Connection) -> int | None:
        """The id the next new row must take, when the newest tasks were deleted and SQLite's
        max(id) + 1 would hand out an id again; None otherwise (with no query at all unless
        the newest tasks were deleted since the store was opened)."""
        if not self.floor or max_id(db) >= self.floor:
            return None
        return self.floor + 1

    def insert_row(self, db: sqlite3.Connection, row: InsertRow) -> int:
        """Insert one task row; returns its id. ``db`` is a ``Tx``, or the writer for an
        autocommitted INSERT."""
        columns, values = row
        first = self.first_id(db)
        if first is None:
            cur = db.execute(insert_sql(columns), values)
        else:
            cur = db.execute(insert_sql(("id", *columns)), (first, *values))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def before_delete(self, tx: Tx, ids: list[int]) -> None:
        """Record the highest id when the rows about to be deleted include it."""
        newest = max_id(tx)
        if newest in ids and newest > self.floor:
            tx.execute(
                "INSERT INTO settings(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (ID_FLOOR_KEY, str(newest).encode()),
            )
            self.floor = newest
