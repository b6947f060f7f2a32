"""``SqliteStore``: the scheduler's one door to the database, composed of the store's parts.

It owns the :class:`~taskmill_core.store.connection.Connection` (and through it the
transaction contract), the id floor and the cached ready query, and exposes the domain
operations by name: reads (:mod:`.queries`), submits (:mod:`.submit`) and state changes
(:mod:`.transitions`). Every write takes the open transaction, ``tx``, from
:meth:`SqliteStore.transaction`; the exceptions are :meth:`SqliteStore.submit`, which commits
on its own, and :meth:`SqliteStore.checkpoint`. Time is always passed in; the store never
reads a clock.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import aiosqlite
import anyio

from taskmill_core.errors import NotATaskmillDatabase, StorageError
from taskmill_core.store import queries, schedules, transitions
from taskmill_core.store.connection import Connection, Tx, read_all, storage_error
from taskmill_core.store.history import Aggregate
from taskmill_core.store.ids import IdFloor
from taskmill_core.store.queries import Ready
from taskmill_core.store.schema import check_existing
from taskmill_core.store.submit import (
    Prepared,
    Submitted,
    insert_params,
    insert_standalone,
    is_standalone,
    new_info,
    submit_entries,
)
from taskmill_core.store.transitions import Follow
from taskmill_core.types import IoBytes, Schedule, TaskInfo

__all__ = ["ReadOnlyStore", "SqliteStore"]


class SqliteStore:
    """Tasks, dependencies and settings in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "normal") -> None:
        self.path = Path(path)
        self.durability = durability
        self._conn = Connection(self.path, durability)
        self._ids = IdFloor()  # ids up to its floor were handed out: new ids go above it
        self._ready_sql: dict[int, str] = {}  # the ready query's text, by paused groups

    # --- the connection and the transaction contract -------------------------------------

    async def open(self) -> None:
        """Open (or create and migrate) the file; the slow parts run in a worker thread."""
        await self._conn.open()
        self._ids.load(self._conn.db)

    async def close(self) -> None:
        await self._conn.close()

    def transaction(self) -> AbstractContextManager[Tx]:
        """One write transaction, to pass to every write in it (see :mod:`.connection`)."""
        return self._conn.transaction()

    @property
    def commits(self) -> int:
        """Committed write transactions (durability "full": each to be synced)."""
        return self._conn.commits

    @property
    def wal_pages(self) -> int:
        """The WAL's length when it was last checkpointed."""
        return self._conn.wal_pages

    @property
    def changes(self) -> int:
        """Rows written through this store so far (a checkpoint is due when it moved)."""
        return self._conn.changes

    def sync_wal(self) -> None:
        """fsync the write-ahead log (blocking: run it in a worker thread)."""
        self._conn.sync_wal()

    async def checkpoint(self) -> None:
        """Fold the WAL back into the database file, off the event loop."""
        await self._conn.checkpoint()

    # --- settings ------------------------------------------------------------------------

    def get_setting(self, key: str) -> bytes | None:
        return queries.get_setting(self._conn.db, key)

    def put_setting(self, tx: Tx, key: str, value: bytes) -> None:
        tx.execute(
            "INSERT INTO settings(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    # --- submits: three ways, named --------------------------------------------------------

    def submit(
        self, batch: Sequence[Prepared], now: int, follow: Follow | None = None
    ) -> list[Submitted]:
        """Insert or deduplicate every entry and commit: all or nothing. Outside any
        transaction only.

        A single standalone entry is one INSERT that SQLite commits by itself (BEGIN and COMMIT
        are a fifth of a lone submit's cost); anything else is one transaction. Errors name
        the entry (``data.index``, ``$.tasks[i]``) when the batch has more than one.
        """
        if len(batch) == 1 and is_standalone(batch[0]):
            return [self._submit_alone(batch[0], now)]
        local = Follow()
        with self._conn.transaction() as tx:
            out = submit_entries(tx, self._ids, batch, now, local, len(batch) > 1)
        if follow is not None:
            follow.merge(local)
        return out

    def _submit_alone(self, p: Prepared, now: int) -> Submitted:
        db = self._conn.db
        if db.in_transaction:
            raise RuntimeError("a write transaction is open: use submit_in with its Tx")
        try:
            task_id = self._ids.insert_row(db, insert_params(p, "pending", now))
        except sqlite3.Error as exc:
            raise storage_error(exc, "database write failed") or exc from None
        self._conn.autocommitted()
        db.counts.inserted_alone()
        return Submitted(task_id, "inserted", new_info(p, task_id, "pending", now))

    def submit_in(
        self,
        tx: Tx,
        batch: Sequence[Prepared],
        now: int,
        follow: Follow,
        *,
        index_base: int | None = None,
    ) -> list[Submitted]:
        """Insert or deduplicate every entry inside ``tx``, all or nothing: under a savepoint,
        so that a failing submit undoes only itself and ``tx`` goes on.

        Errors name the entry when the batch has more than one, or always when
        ``index_base`` (the chunk's offset in a larger batch) is given.
        """
        numbered = index_base is not None or len(batch) > 1
        local = Follow()
        mark = tx.counts.mark()
        tx.execute("SAVEPOINT submit")
        try:
            out = submit_entries(tx, self._ids, batch, now, local, numbered, index_base or 0)
        except BaseException as exc:
            tx.counts.rewind(mark)
            self._conn.savepoint_failed(tx, "submit", exc)
            raise
        tx.execute("RELEASE submit")
        follow.merge(local)
        return out

    def submit_each(
        self, tx: Tx, items: Sequence[tuple[Sequence[Prepared], int]], follow: Follow
    ) -> list[list[Submitted] | Exception]:
        """Many independent submits ``(entries, now)`` inside ``tx``, each all or nothing on
        its own: its outcome is its results, or the exception that undid only it.

        Runs of single standalone entries (nothing can fail them but the database itself, which
        fails ``tx`` as a whole) are inserted with one ``executemany``, in order.
        """
        ids = self._ids
        out: list[list[Submitted] | Exception] = []
        standalone: list[Prepared] = []
        standalone_now = 0
        for entries, now in items:
            if len(entries) == 1 and is_standalone(entries[0]):
                if standalone and now != standalone_now:
                    out.extend([r] for r in insert_standalone(tx, ids, standalone, standalone_now))
                standalone.append(entries[0])
                standalone_now = now
                continue
            out.extend([r] for r in insert_standalone(tx, ids, standalone, standalone_now))
            try:
                out.append(self.submit_in(tx, entries, now, follow))
            except StorageError:
                raise  # the database failed tx as a whole: no submit of it is written
            except Exception as exc:
                out.append(exc)
        out.extend([r] for r in insert_standalone(tx, ids, standalone, standalone_now))
        return out

    # --- state changes (transitions.py), each in the caller's transaction -----------------

    start = staticmethod(transitions.start)
    save_checkpoint = staticmethod(transitions.save_checkpoint)
    complete_standalone = staticmethod(transitions.complete_standalone)
    complete = staticmethod(transitions.complete)
    fail = staticmethod(transitions.fail)
    interrupt = staticmethod(transitions.interrupt)
    recover = staticmethod(transitions.recover)
    pause_pending = staticmethod(transitions.pause_pending)
    resume = staticmethod(transitions.resume)
    set_priority = staticmethod(transitions.set_priority)
    cancel = staticmethod(transitions.cancel)
    retry = staticmethod(transitions.retry)
    expire_due = staticmethod(transitions.expire_due)

    def delete_final(self, tx: Tx, ids: Sequence[int]) -> int:
        """Delete these tasks if they are (still) final; ids stay never reused."""
        return transitions.delete_final(tx, ids, self._ids)

    # --- reads on the loop (queries.py) -------------------------------------------------------

    def get(self, task_id: int) -> TaskInfo:
        return queries.get(self._conn.db, task_id)

    def state_of(self, task_id: int) -> str:
        return queries.state_of(self._conn.db, task_id)

    def lookup(self, task_type: str, dedup_key: str) -> TaskInfo:
        """The active task with this dedup key, else the final one that finished last."""
        return queries.lookup(self._conn.db, task_type, dedup_key)

    def ready(
        self,
        now: int,
        types: Sequence[str],
        paused_groups: Sequence[str],
        paused_types: Sequence[str],
        limit: int,
    ) -> list[Ready]:
        """Due pending tasks in dispatch order (see :func:`.queries.ready`)."""
        return queries.ready(
            self._conn.db, self._ready_sql, now, types, paused_groups, paused_types, limit
        )

    def aged(
        self,
        now: int,
        types: Sequence[str],
        paused_groups: Sequence[str],
        above: int,
        limit: int,
        max_levels: int = 32,
    ) -> list[Ready]:
        """The longest-due pending tasks of each priority level (aging; see
        :func:`.queries.aged`)."""
        return queries.aged(self._conn.db, now, types, paused_groups, above, limit, max_levels)

    def group_ready(self, now: int, groups: Sequence[str], limit: int) -> list[Ready]:
        """Each group's most urgent due tasks (fair share; see :func:`.queries.group_ready`)."""
        return queries.group_ready(self._conn.db, now, groups, limit)

    def due_since_of(self, ids: Sequence[int]) -> dict[int, int]:
        return queries.due_since_of(self._conn.db, ids)

    def next_due(self, now: int) -> int | None:
        return queries.next_due(self._conn.db, now)

    def next_expiry(self) -> int | None:
        return queries.next_expiry(self._conn.db)

    def recent_durations(self, task_type: str, n: int) -> list[int]:
        return queries.recent_durations(self._conn.db, task_type, n)

    def average_io(self, task_type: str, n: int = 20) -> IoBytes | None:
        return queries.average_io(self._conn.db, task_type, n)

    # --- recurring schedules (schedules.py): writes take the caller's transaction -----------

    def insert_schedule(self, tx: Tx, schedule: Schedule, now: int) -> int:
        return schedules.insert(tx, schedule, now)

    def get_schedule(self, schedule_id: int) -> Schedule:
        return schedules.get(self._conn.db, schedule_id)

    def find_schedule(self, name: str) -> Schedule | None:
        return schedules.find(self._conn.db, name)

    def list_schedules(self) -> list[Schedule]:
        return schedules.list_all(self._conn.db)

    def next_schedule_at(self) -> int | None:
        return schedules.next_at(self._conn.db)

    def due_schedules(self, now: int, limit: int) -> list[Schedule]:
        return schedules.due(self._conn.db, now, limit)

    record_firing = staticmethod(schedules.record_firing)
    set_schedule_next = staticmethod(schedules.set_next)
    delete_schedule = staticmethod(schedules.delete)

    # --- reads off the loop -------------------------------------------------------------------

    async def list_tasks(
        self,
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
        return await queries.list_tasks(
            self._conn.reader,
            states=states,
            task_type=task_type,
            group=group,
            tags=tags,
            limit=limit,
            before_id=before_id,
            dedup_key=dedup_key,
            parent_id=parent_id,
        )

    def state_counts(self) -> dict[str, int]:
        """Tasks per state, as committed: kept in memory as tasks change (see counts.py), so
        as cheap with a million tasks as with ten; every state is present, zeros too."""
        return self._conn.db.counts.snapshot()

    async def counts(self) -> dict[str, int]:
        """Tasks per state (:meth:`state_counts`; no query)."""
        return self.state_counts()

    def check_counts(self) -> str | None:
        """Compare the kept counts with a full recount (a ``GROUP BY`` over every task: for
        tests and diagnostics, not for a hot path). None when they agree, else what differs."""
        db = self._conn.db
        if db.in_transaction:
            raise RuntimeError("the counts are compared outside a transaction")
        kept = {s: n for s, n in db.counts.snapshot().items() if n}
        counted = {
            str(s): int(n)
            for s, n in db.execute("SELECT state, count(*) FROM tasks GROUP BY state")
        }
        if kept == counted:
            return None
        return f"kept {kept}, counted {counted}"

    def fold_history(self, limit: int) -> int:
        """Add up to ``limit`` recently finished tasks into the history's aggregates (a read by
        id each; see history.py); returns how many are left to add."""
        db = self._conn.db
        if db.in_transaction:
            raise RuntimeError("the history folds committed tasks only, outside a transaction")
        history = db.counts.history
        history.fold(db, limit)
        return len(history.fresh)

    def history_aggregates(self, task_type: str | None) -> dict[str, Aggregate]:
        """The history per type (every type, or ``task_type`` only) as of the last fold: call
        :meth:`fold_history` until it returns 0 first."""
        by_type = self._conn.db.counts.history.by_type
        if task_type is not None:
            agg = by_type.get(task_type)
            return {} if agg is None else {task_type: agg}
        return dict(by_type)

    async def history(self, task_type: str | None) -> list[tuple[str, str, int | None, bytes]]:
        return await queries.history(self._conn.reader, task_type)

    async def find_ids(
        self, *, task_type: str | None, group: str | None, tags: dict[str, str] | None
    ) -> list[int]:
        return await queries.find_ids(
            self._conn.reader, task_type=task_type, group=group, tags=tags
        )

    async def prunable(
        self, now: int, max_count: int | None, max_age_ms: int | None, limit: int
    ) -> list[int]:
        """Ids of final tasks too old or beyond the newest ``max_count``."""
        try:
            return await queries.prunable(self._conn.reader, now, max_count, max_age_ms, limit)
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from None

    async def vacuum(self) -> None:
        """Rebuild the file compactly (``VACUUM``), off the loop; needs nothing else to use it."""

        def vacuum() -> None:
            try:
                self._conn.db.execute("VACUUM")
            except sqlite3.Error as exc:
                raise storage_error(exc, "vacuum") or StorageError(
                    f"vacuum failed: {exc}"
                ) from None

        await anyio.to_thread.run_sync(vacuum)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, durability={self.durability!r})"


class ReadOnlyStore:
    """The reads of :class:`SqliteStore` over a read-only connection (the admin's view).

    Opens nothing for writing and takes no lock: a WAL reader beside a running sidecar
    (:func:`.queries.read_only_uri`). ``open`` raises :class:`NotATaskmillDatabase` (or
    :class:`DamagedDatabase`) for a file that is not a sound taskmill database.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    async def open(self) -> None:
        check_existing(self.path)
        if not self.path.is_file():
            raise NotATaskmillDatabase(f"{self.path} does not exist")
        uri = queries.read_only_uri(self.path)
        try:
            self._db = sqlite3.connect(uri, uri=True)
            self._db.execute("PRAGMA busy_timeout=5000")
            self._reader = await aiosqlite.connect(uri, uri=True)
            await read_all(self._reader, "PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            await self.close()
            raise NotATaskmillDatabase(f"{self.path} cannot be read: {exc}") from None

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "the store is not open"
        return self._db

    @property
    def reader(self) -> aiosqlite.Connection:
        assert self._reader is not None, "the store is not open"
        return self._reader

    def schema_version(self) -> int:
        return queries.schema_version(self.db)

    def get(self, task_id: int) -> TaskInfo:
        return queries.get(self.db, task_id)

    def get_setting(self, key: str) -> bytes | None:
        return queries.get_setting(self.db, key)

    def counts_by_type(self) -> list[tuple[str, str, int]]:
        return queries.counts_by_type(self.db)

    async def counts(self) -> dict[str, int]:
        return await queries.counts(self.reader)

    async def list_tasks(
        self, *, states: Sequence[str] = (), task_type: str | None = None, limit: int = 100
    ) -> list[TaskInfo]:
        """Tasks by id descending."""
        return await queries.list_tasks(
            self.reader, states=states, task_type=task_type, limit=limit
        )

    async def history(self, task_type: str | None) -> list[tuple[str, str, int | None, bytes]]:
        return await queries.history(self.reader, task_type)

    def __repr__(self) -> str:
        return f"ReadOnlyStore({str(self.path)!r})"
