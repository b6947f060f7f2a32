"""The connections to the one SQLite file, and the transaction contract.

Short writes run synchronously on the event loop through a plain ``sqlite3`` connection (the
*writer*): each is a fraction of a millisecond, while a thread hop per call (what aiosqlite
does) costs more than the write itself. Anything that can take long — listing, statistics,
WAL checkpoints — goes through a second, aiosqlite connection (the *reader*), off the loop.
WAL mode lets those readers run beside the writer; automatic checkpoints are disabled on the
writer so a checkpoint never stalls the loop.

Every statement on the reader goes through :func:`read_all`: it runs to its end in one hop to
the reader's thread. The reader is shared by every coroutine, and a statement left open between
hops (``execute``, ``fetchone``, ``close``) holds a read transaction open: a read of another
coroutine that runs in between reads that old snapshot, without the writes committed since.

The transaction contract: every write runs in a transaction that its caller opened with
:meth:`Connection.transaction` and passes in as a :data:`Tx`. ``Tx`` is the writer connection
under another static type (``NewType``): proof, for the type checker, that a ``BEGIN
IMMEDIATE`` is open, at no cost at run time. Transactions do not nest (a part of one that
may fail alone is a savepoint). The one write without a ``Tx`` is a lone standalone submit, a
single INSERT that SQLite commits by itself. Any SQLite error that means the disk or the file failed
(full, I/O, locked, read-only, corrupt) leaves as :class:`StorageError`, after the
transaction was rolled back.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NewType

import aiosqlite
import anyio.to_thread

from taskmill_core.errors import DamagedDatabase, NotATaskmillDatabase, StorageError, is_damage
from taskmill_core.store.counts import StateCounts, Writer
from taskmill_core.store.schema import check_existing, migrate

__all__ = ["WAL_SIZE_LIMIT", "Connection", "Tx", "read_all", "storage_error"]

WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file keeps when it starts over

Tx = NewType("Tx", Writer)
"""The writer connection inside an open write transaction (see the module docstring)."""

# Primary result codes that mean the storage failed, not the statement: the caller may try
# again later (when the disk has room, the lock is gone), nothing was written.
_STORAGE_CODES = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
    }
)
# Not among them: CORRUPT and NOTADB. A damaged file does not heal by waiting; the error
# surfaces as it is (errors.is_damage) and the sidecar stops, naming `taskmill repair`.


def storage_error(exc: sqlite3.Error, doing: str) -> StorageError | None:
    """The :class:`StorageError` an SQLite error stands for, or None for a bug (a constraint,
    a misuse) that must surface as it is. Every ``OperationalError`` counts as storage (as it
    always has here): SQLite raises it for full disks and I/O errors alike."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.OperationalError) or (
        code is not None and code & 0xFF in _STORAGE_CODES
    ):
        return StorageError(f"{doing}: {exc}")
    return None


async def read_all(rd: aiosqlite.Connection, sql: str, args: Sequence[Any] = ()) -> list[Any]:
    """Every row of one statement on a reader, in one hop to its thread.

    The statement runs to its end there, and SQLite ends the read transaction it began before
    this returns — also when the awaiting task is cancelled, since the hop runs whole anyway.
    So the next read on the reader starts a fresh one and sees every commit made before it
    was asked for. (``execute`` then ``fetchone`` then ``close`` are three hops, and a
    statement stepped once keeps its transaction, and the snapshot it read, open between
    them: any other coroutine's read that ran in between saw that snapshot — ``prune`` then
    ``list`` listed the tasks just pruned while the amortized pruning was under way.)
    """
    return list(await rd.execute_fetchall(sql, args))


class Connection:
    """The writer and the reader of one database file, with the transaction contract."""

    def __init__(self, path: Path, durability: str) -> None:
        self.path = path
        self.durability = durability
        self._db: Writer | None = None
        self._reader: aiosqlite.Connection | None = None
        self._wal_fd: int | None = None
        self.commits = 0  # committed write transactions (durability "full": to sync)
        self.wal_pages = 0  # the WAL's length when it was last checkpointed

    # --- opening and closing -------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create and migrate) the file; the slow parts run in a worker thread."""
        try:
            await anyio.to_thread.run_sync(self._open_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await read_all(self._reader, "PRAGMA busy_timeout=5000")
        except sqlite3.DatabaseError as exc:
            await self.close()
            error = DamagedDatabase if is_damage(exc) else NotATaskmillDatabase
            raise error(f"{self.path} cannot be opened: {exc}") from None

    def _open_writer(self) -> None:
        check_existing(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: opened here in a worker thread, used on the event loop.
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, factory=Writer
        )
        db.counts = StateCounts()
        self._db = db
        # 2 KiB pages (for a new file; an existing one keeps its own): a commit writes whole
        # pages to the WAL, and a lone submit (a row and an index entry) costs ~16 us with
        # 2 KiB pages against ~19.4 us with 4 KiB. Rows up to ~2 KB still fit in a page, and
        # a million tasks still claim in 1.06x the time of a thousand (the E benchmark).
        db.execute("PRAGMA page_size=2048")
        db.execute("PRAGMA journal_mode=WAL")
        # "full" is NORMAL plus an fsync of the WAL after each commit, which the scheduler
        # runs in a worker thread (sync_wal) before it acknowledges anything: SQLite's own
        # FULL would fsync inside COMMIT, on the event loop (tens of milliseconds).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        # Checkpoints run off the loop (see checkpoint()); none inside a commit.
        db.execute("PRAGMA wal_autocheckpoint=0")
        # When the WAL starts over, SQLite trims its file to this size (else it stays at
        # its largest until the store closes).
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        migrate(db, self.path)
        db.counts.load(db)  # tasks per state, kept from here on (see counts.py)
        if self.durability == "full":
            self.sync_wal()  # what migration wrote (this runs in a thread)

    async def close(self) -> None:
        if self._reader is not None:
            # Fold the WAL in and empty it, off the loop (tens of milliseconds after a burst).
            with suppress(sqlite3.Error):
                await read_all(self._reader, "PRAGMA wal_checkpoint(TRUNCATE)")
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    @property
    def db(self) -> Writer:
        """The writer, for short reads on the loop (they see the open transaction's writes)."""
        if self._db is None:
            raise StorageError("the store is closed")
        return self._db

    @property
    def reader(self) -> aiosqlite.Connection:
        """The reader, for reads that may take long (off the loop)."""
        if self._reader is None:
            raise StorageError("the store is closed")
        return self._reader

    @property
    def changes(self) -> int:
        """Rows written through the writer so far (a checkpoint is due when it moved)."""
        return self.db.total_changes

    # --- writing -------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, or a rollback when the
        block raises. Transactions do not nest: a write inside one takes its ``Tx``.

        A failed COMMIT (a full disk) may have rolled back already; the rollback then is
        skipped, and a rollback that fails never hides the error that called for it.
        """
        db = self.db
        if db.in_transaction:
            raise RuntimeError("a write transaction is already open: pass its Tx in")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(exc, "cannot write to the database") or exc from None
        try:
            yield Tx(db)
            db.execute("COMMIT")
        except BaseException as exc:
            if db.counts.dirty:
                db.counts.rollback()
            self._roll_back(db, exc)
            if isinstance(exc, sqlite3.Error):
                mapped = storage_error(exc, "database write failed")
                if mapped is not None:
                    for note in getattr(exc, "__notes__", ()):
                        mapped.add_note(note)
                    raise mapped from None
            raise
        if db.counts.dirty:
            db.counts.commit(db)
        self.commits += 1

    @staticmethod
    def _roll_back(db: sqlite3.Connection, cause: BaseException) -> None:
        if not db.in_transaction:  # SQLite rolled back by itself (full disk, I/O error)
            return
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the error that got us here is the one to report
            cause.add_note(f"(the rollback failed too: {exc!r})")

    def autocommitted(self) -> None:
        """Count a write that SQLite committed by itself (a single statement outside any
        transaction: a lone standalone submit, where BEGIN and COMMIT would be a fifth of its
        cost). Its errors are the caller's to map with :func:`storage_error`."""
        self.commits += 1

    @staticmethod
    def savepoint_failed(tx: Tx, name: str, exc: BaseException) -> None:
        """Undo the savepoint ``name`` after ``exc``; the caller re-raises ``exc`` (a disk
        failure as :class:`StorageError`), and the rest of ``tx`` goes on. (The SAVEPOINT and
        RELEASE statements are the caller's, inline: a context manager would cost a submit
        ~1 us.)

        If SQLite rolled back the whole transaction (a full disk), there is nothing to go on
        with: this raises a :class:`StorageError` instead.
        """
        if not tx.in_transaction:
            if isinstance(exc, StorageError):
                raise exc
            mapped = (
                storage_error(exc, "database write failed")
                if isinstance(exc, sqlite3.Error)
                else None
            )
            raise mapped or StorageError(
                f"the database rolled the transaction back: {exc!r}"
            ) from exc
        try:
            tx.execute(f"ROLLBACK TO {name}")
            tx.execute(f"RELEASE {name}")
        except sqlite3.Error as rollback:  # tx cannot go on; exc is still the one to report
            raise StorageError(
                f"cannot undo a failed submit ({rollback}); it failed with: {exc!r}"
            ) from exc
        if isinstance(exc, sqlite3.Error):  # undone, and tx goes on: report it as storage
            mapped = storage_error(exc, "database write failed")
            if mapped is not None:
                raise mapped from None

    # --- durability ----------------------------------------------------------------------

    def sync_wal(self) -> None:
        """fsync the write-ahead log: every commit so far survives a power cut (blocking:
        run it in a worker thread)."""
        if self._wal_fd is None:
            try:
                self._wal_fd = os.open(f"{self.path}-wal", os.O_RDWR | getattr(os, "O_BINARY", 0))
            except FileNotFoundError:  # nothing written through the WAL yet
                return
        os.fsync(self._wal_fd)

    async def checkpoint(self) -> None:
        """Fold the WAL back into the database file, off the event loop; ``wal_pages`` is
        then how long the WAL was when it began (what it wrote while it ran is left)."""
        (row,) = await read_all(self.reader, "PRAGMA wal_checkpoint(PASSIVE)")
        self.wal_pages = row[1]
