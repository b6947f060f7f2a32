"""Tasks per state, kept in memory as they change: ``scheduler.status`` costs the same with a
thousand tasks or a million.

The counts are read from the database once, when the store opens (one ``GROUP BY state``;
about 0.2 s per million tasks, in the opening worker thread), and from then on every write
that changes a task's state says so (:meth:`StateCounts.move`). The moves of an open
transaction are journalled and applied when it commits; a rollback drops them, a rolled-back
savepoint drops its own (:meth:`mark` / :meth:`rewind`). So the counts are exact after every
commit and, since they are rebuilt from the file at each open, after a crash too.

Why not SQLite triggers on ``tasks``: a trigger per changed row, even into a TEMP table that
is never written to disk, cost the hot paths far more than the 3 % budget (measured: a batch
submit 33 % slower, pipelined submits over the wire 29 %), while a move here is one list
append per statement, not per row.

Every write to ``tasks.state`` must report its move (see :mod:`.transitions`, :mod:`.submit`);
``tests/store/test_counts.py`` compares the counts with a full recount after every kind of
change.
"""

from __future__ import annotations

import sqlite3

from taskmill_core.types import ACTIVE_STATES, FINAL_STATES

__all__ = ["StateCounts", "Writer"]

_STATES = (*ACTIVE_STATES, *FINAL_STATES)


class StateCounts:
    """Committed tasks per state, and the moves of the open transaction."""

    __slots__ = ("_committed", "_journal")

    def __init__(self) -> None:
        self._committed: dict[str, int] = dict.fromkeys(_STATES, 0)
        self._journal: list[tuple[str | None, str | None, int]] = []

    def load(self, db: sqlite3.Connection) -> None:
        """Count every task (when the store opens)."""
        counts = dict.fromkeys(_STATES, 0)
        for state, n in db.execute("SELECT state, count(*) FROM tasks GROUP BY state"):
            counts[str(state)] = int(n)
        self._committed = counts
        self._journal.clear()

    def snapshot(self) -> dict[str, int]:
        """Committed tasks per state, every state included (zeros too)."""
        return dict(self._committed)

    # --- changes -----------------------------------------------------------------------

    def move(self, old: str | None, new: str | None, n: int = 1) -> None:
        """``n`` tasks went from ``old`` to ``new`` in the open transaction (None: a task
        that did not exist before, or no longer exists)."""
        if n and old != new:
            self._journal.append((old, new, n))

    def commit(self) -> None:
        """The open transaction committed: its moves count."""
        counts = self._committed
        for old, new, n in self._journal:
            if old is not None:
                counts[old] -= n
            if new is not None:
                counts[new] = counts.get(new, 0) + n
        self._journal.clear()

    def rollback(self) -> None:
        """The open transaction rolled back: its moves never happened."""
        self._journal.clear()

    def mark(self) -> int:
        """Where a savepoint begins, for :meth:`rewind`."""
        return len(self._journal)

    def rewind(self, mark: int) -> None:
        """The savepoint begun at ``mark`` was rolled back: drop its moves."""
        del self._journal[mark:]


class Writer(sqlite3.Connection):
    """The writer connection, carrying the counts its transactions change (``tx.counts``)."""

    counts: StateCounts
