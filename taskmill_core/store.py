"""The store: the only module that speaks SQL.

A domain-level interface over one SQLite file (``submit``, ``ready``, ``start``, ``complete``,
``fail``, ``interrupt``, ``recover``, ...). Time is always passed in; the store never reads a
clock.

Short writes run synchronously on the event loop through a plain ``sqlite3`` connection: each
is a fraction of a millisecond, while a thread hop per call (what aiosqlite does) costs more
than the write itself. Anything that can take long — listing, statistics, WAL checkpoints —
goes through a second, aiosqlite connection, off the loop. WAL mode lets those readers run
beside the writer; automatic checkpoints are disabled on the writer so a checkpoint never
stalls the loop.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import aiosqlite
import anyio.to_thread
import msgspec

from taskmill_core.errors import (
    DamagedDatabase,
    DuplicateRejected,
    InvalidParams,
    InvalidState,
    NotATaskmillDatabase,
    PayloadTooLarge,
    StorageError,
    TaskNotFound,
    is_damage,
)
from taskmill_core.types import (
    ACTIVE_STATES,
    FINAL_STATES,
    ErrorInfo,
    IoBytes,
    Outcome,
    TaskInfo,
    TaskSpec,
)

__all__ = ["MAX_PAYLOAD_BYTES", "Prepared", "SqliteStore", "Submitted"]

APPLICATION_ID = 0x544D494C  # "TMIL": marks a file as a taskmill database
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # bytes the WAL file keeps when it starts over
MAX_PAYLOAD_BYTES = 1024 * 1024
SQLITE_HEADER = b"SQLite format 3\x00"

_encode = msgspec.json.Encoder().encode
_encode_sorted = msgspec.json.Encoder(order="sorted").encode
_decode = msgspec.json.decode
_decode_io = msgspec.json.Decoder(IoBytes).decode
_decode_error = msgspec.json.Decoder(ErrorInfo).decode
_decode_tags = msgspec.json.Decoder(dict[str, str]).decode

_ACTIVE_SQL = "('pending','running','paused','waiting','blocked')"
_FINAL_SQL = "('completed','failed','deadLetter','cancelled','superseded','expired')"

_TASK_COLUMNS_V1 = """
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused
        type TEXT NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        payload BLOB NOT NULL,
        dedup_key TEXT,
        grp TEXT,
        tags BLOB,
        label TEXT,
        io_cost BLOB,
        io_actual BLOB,
        attempt INTEGER NOT NULL DEFAULT 0,
        max_retries INTEGER NOT NULL,
        backoff BLOB,
        created_at INTEGER NOT NULL,
        run_at INTEGER,
        expires_at INTEGER,
        timeout_ms INTEGER,
        started_at INTEGER,
        finished_at INTEGER,
        duration_ms INTEGER,
        parent_id INTEGER,
        checkpoint BLOB,
        result BLOB,
        error BLOB,
        requeue INTEGER NOT NULL DEFAULT 0,
        requeue_priority INTEGER,
        has_children INTEGER NOT NULL DEFAULT 0,   -- lets completion skip the child lookup
        has_dependents INTEGER NOT NULL DEFAULT 0  -- lets completion skip the deps lookup
    """
# Version 2 drops AUTOINCREMENT, whose sqlite_sequence row added a page to every commit
# (about a third of a single submit's commit). New rows get max(id) + 1; ids stay unique
# forever because deleting the newest rows records the highest id in the setting
# ``id_floor`` and the next insert takes an explicit id above it (see _explicit_first_id).
_TASK_COLUMNS_V2 = _TASK_COLUMNS_V1.replace(
    "id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused",
    "id INTEGER PRIMARY KEY,  -- never reused: see id_floor",
)
_TASK_INDEXES = f"""
    -- At most one active task per (type, dedup key): racing submits cannot create two.
    CREATE UNIQUE INDEX tasks_dedup ON tasks(type, dedup_key)
        WHERE dedup_key IS NOT NULL AND state IN {_ACTIVE_SQL};
    -- The queue is this index: dispatch walks each runnable type in (priority, id) order,
    -- so a backlog of a type nobody runs (yet) costs nothing.
    CREATE INDEX tasks_ready ON tasks(type, priority, id) WHERE state = 'pending';
    CREATE INDEX tasks_delayed ON tasks(run_at) WHERE state = 'pending' AND run_at IS NOT NULL;
    CREATE INDEX tasks_expiry ON tasks(expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX tasks_parent ON tasks(parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX tasks_history ON tasks(type, finished_at) WHERE state = 'completed';
    CREATE INDEX tasks_finished ON tasks(finished_at) WHERE finished_at IS NOT NULL;
"""

# Forward migrations, applied in order; PRAGMA user_version is the number applied.
MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE tasks ({_TASK_COLUMNS_V1});
    {_TASK_INDEXES}
    CREATE TABLE task_deps (
        task_id INTEGER NOT NULL,
        dep_id INTEGER NOT NULL,
        PRIMARY KEY (task_id, dep_id)
    ) WITHOUT ROWID;
    CREATE INDEX task_deps_dep ON task_deps(dep_id);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    """,
    f"""
    CREATE TABLE tasks_v2 ({_TASK_COLUMNS_V2});
    INSERT INTO tasks_v2 SELECT * FROM tasks;
    -- AUTOINCREMENT remembered the ids of deleted rows above today's highest.
    INSERT OR REPLACE INTO settings(key, value)
        SELECT 'id_floor', CAST(CAST(seq AS TEXT) AS BLOB) FROM sqlite_sequence
        WHERE name = 'tasks' AND seq > (SELECT coalesce(max(id), 0) FROM tasks_v2);
    DROP TABLE tasks;
    ALTER TABLE tasks_v2 RENAME TO tasks;
    {_TASK_INDEXES}
    """,
    # Version 3 puts every final task in one index, by type, state and finish time: the
    # history of a type (durations, IO) and pruning by age both read it. Two indexes
    # (completed tasks by type; every final task by time) cost a completion two index
    # pages in each commit.
    """
    DROP INDEX tasks_history;
    DROP INDEX tasks_finished;
    CREATE INDEX tasks_final ON tasks(type, state, finished_at) WHERE finished_at IS NOT NULL;
    """,
]

_COLUMNS = (
    "id, type, state, priority, payload, dedup_key, grp, tags, label, io_cost, io_actual, "
    "attempt, max_retries, created_at, run_at, started_at, finished_at, duration_ms, "
    "parent_id, result, error"
)


def _app_id_of(path: Path) -> int | None:
    """The application id in an SQLite file's header (bytes 68-71), read without SQLite:
    a damaged file still says whose it is."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError:
        return None
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        return None
    return int.from_bytes(header[68:72], "big")


def _dispatch_order(row: Sequence[Any]) -> tuple[int, int]:
    return (row[2], row[0])  # (priority, id) of a ready row


def _row_to_info(row: Sequence[Any]) -> TaskInfo:
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
    )


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


# Prepared and Submitted are made per task, thousands at a time, and hold no cycles: as
# msgspec Structs with gc=False the cyclic GC does not track them (a batch of 10,000 used to
# set off dozens of collections, now and then a full one of ~10 ms, mid-batch).
class Prepared(msgspec.Struct, gc=False):
    """A validated spec with everything derived that the store needs."""

    spec: TaskSpec
    payload_json: bytes
    priority: int
    dedup_key: str | None
    run_at: int | None
    expires_at: int | None


class Submitted(msgspec.Struct, gc=False):
    """What one submit did. ``replaced`` is the task a supersede ended (id, its old state)."""

    id: int
    outcome: Outcome
    info: TaskInfo | None = None  # the new or changed task (None for a plain duplicate)
    replaced: tuple[int, str] | None = None
    changed_priority: bool = False


@dataclass(slots=True)
class Ready:
    """A dispatch candidate, as read from the ready index."""

    id: int
    type: str
    priority: int
    group: str | None
    io_cost: bytes | None = None
    """The declared ``ioCost`` as stored (JSON), decoded only by whoever needs it."""


@dataclass(slots=True)
class Started:
    id: int
    type: str
    priority: int
    group: str | None
    payload: Any
    attempt: int
    max_retries: int
    backoff: bytes | None
    timeout_ms: int | None
    checkpoint: Any
    parent_id: int | None


@dataclass(slots=True)
class Follow:
    """Consequences of a task reaching a final state: parents and dependents that moved."""

    completed_parents: list[tuple[int, str, int, Any]] = field(default_factory=list)
    unblocked: list[int] = field(default_factory=list)
    failed_dependents: list[tuple[int, str]] = field(default_factory=list)

    def merge(self, other: Follow) -> None:
        self.completed_parents += other.completed_parents
        self.unblocked += other.unblocked
        self.failed_dependents += other.failed_dependents


def prepare(spec: TaskSpec, now: int) -> Prepared:
    """Derive the stored form of a spec (already validated by msgspec)."""
    try:
        payload_json = _encode(spec.payload)
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidParams(f"payload is not JSON-serializable: {exc}", "$.payload") from None
    if len(payload_json) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"payload is {len(payload_json)} bytes encoded; the limit is {MAX_PAYLOAD_BYTES}",
            path="$.payload",
        )
    key: str | None
    if spec.dedup_key is True:
        key = hashlib.sha256(_encode_sorted(spec.payload)).hexdigest()
    elif spec.dedup_key is False or spec.dedup_key is None:
        key = None
    else:
        key = spec.dedup_key
    run_at = spec.run_at
    if spec.delay_ms is not None:
        run_at = max(run_at or 0, now + spec.delay_ms)
    expires_at = now + spec.ttl_ms if spec.ttl_ms is not None else None
    return Prepared(spec, payload_json, spec.priority_value, key, run_at, expires_at)


# A new row binds only the columns it has a value for: each bound parameter costs the
# sqlite3 module ~0.3 us, and a plain task leaves ten of the sixteen NULL (half an insert).
_InsertRow = tuple[tuple[str, ...], tuple[Any, ...]]


@functools.cache
def _insert_sql(columns: tuple[str, ...]) -> str:
    return f"INSERT INTO tasks({', '.join(columns)}) VALUES({','.join('?' * len(columns))})"


def _insert_params(p: Prepared, state: str, now: int) -> _InsertRow:
    """The columns a new task row sets, and their values."""
    spec = p.spec
    cols = ["type", "state", "priority", "payload", "max_retries", "created_at"]
    vals = [spec.type, state, p.priority, p.payload_json, spec.max_retries, now]
    optional = (
        ("dedup_key", p.dedup_key),
        ("grp", spec.group),
        ("tags", _encode(spec.tags) if spec.tags else None),
        ("label", spec.label),
        ("io_cost", _encode(spec.io_cost) if spec.io_cost is not None else None),
        ("backoff", _encode(spec.backoff) if spec.backoff is not None else None),
        ("run_at", p.run_at),
        ("expires_at", p.expires_at),
        ("timeout_ms", spec.timeout_ms),
        ("parent_id", spec.parent_id),
    )
    for col, val in optional:
        if val is not None:
            cols.append(col)
            vals.append(val)
    return tuple(cols), tuple(vals)


def _new_info(p: Prepared, task_id: int, state: str, now: int) -> TaskInfo:
    spec = p.spec
    return TaskInfo(
        id=task_id,
        type=spec.type,
        state=state,  # type: ignore[arg-type]
        priority=p.priority,
        payload=spec.payload,
        tags=spec.tags,
        io_cost=spec.io_cost or IoBytes(),
        attempt=0,
        max_retries=spec.max_retries,
        created_at=now,
        dedup_key=p.dedup_key,
        group=spec.group,
        label=spec.label,
        run_at=p.run_at,
        parent_id=spec.parent_id,
    )


def _is_plain(p: Prepared) -> bool:
    """No dedup key, parent or dependency: nothing to look up before inserting it."""
    return p.dedup_key is None and p.spec.parent_id is None and not p.spec.depends_on


class SqliteStore:
    """Tasks, dependencies and settings in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "normal") -> None:
        self.path = Path(path)
        self.durability = durability
        self._db: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._in_txn = False
        self._id_floor = 0  # ids up to this one were handed out: new ids must be above it
        self.commits = 0  # committed write transactions (durability "full": to sync)
        self.wal_pages = 0  # the WAL's length when it was last checkpointed
        self._wal_fd: int | None = None
        self._ready_sql: dict[int, str] = {}  # by the number of paused groups

    # --- opening, migrations, closing ---------------------------------------------------

    def _check_existing(self) -> None:
        """Refuse a file that is not a taskmill database, without writing to it and without
        creating anything beside it."""
        try:
            size = self.path.stat().st_size
            if self.path.is_dir():
                raise NotATaskmillDatabase(f"{self.path} is a directory, not a database file")
            if size == 0:
                return
            with open(self.path, "rb") as f:
                header = f.read(16)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise NotATaskmillDatabase(f"{self.path} cannot be read: {exc.strerror}") from None
        if header != SQLITE_HEADER:
            raise NotATaskmillDatabase(f"{self.path} is not an SQLite database")
        # A read-only connection to a WAL database creates its -wal and -shm files (and
        # cannot remove them): without a -wal, nothing has the file open and the file alone
        # is the whole database, so read it as immutable, which creates nothing.
        wal = Path(f"{self.path}-wal").exists()
        uri = f"{self.path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
        try:
            ro = sqlite3.connect(uri, uri=True)
            try:
                app_id = ro.execute("PRAGMA application_id").fetchone()[0]
                tables = ro.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            finally:
                ro.close()
        except sqlite3.DatabaseError as exc:
            damaged = is_damage(exc) and _app_id_of(self.path) == APPLICATION_ID
            error = DamagedDatabase if damaged else NotATaskmillDatabase
            raise error(f"{self.path} cannot be read: {exc}") from None
        if app_id != APPLICATION_ID and tables > 0:
            raise NotATaskmillDatabase(f"{self.path} is an SQLite database of another program")

    async def open(self) -> None:
        """Open (or create and migrate) the file; the slow parts run in a worker thread."""
        try:
            await anyio.to_thread.run_sync(self._open_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            async with self._reader.execute("PRAGMA busy_timeout=5000") as cur:
                await cur.fetchall()
        except sqlite3.DatabaseError as exc:
            await self.close()
            error = DamagedDatabase if is_damage(exc) else NotATaskmillDatabase
            raise error(f"{self.path} cannot be opened: {exc}") from None

    def _open_writer(self) -> None:
        self._check_existing()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: opened here in a worker thread, used on the event loop.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
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
        self._migrate()
        floor = self.get_setting("id_floor")
        if floor and int(floor) > self._max_id(db):
            self._id_floor = int(floor)
        if self.durability == "full":
            self.sync_wal()  # what migration and recovery wrote (this runs in a thread)

    def _migrate(self) -> None:
        db = self._conn
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise NotATaskmillDatabase(
                f"{self.path} has schema version {version}; this build knows {len(MIGRATIONS)}"
            )
        for number in range(version, len(MIGRATIONS)):
            db.execute("BEGIN IMMEDIATE")
            try:
                # Not executescript: it would COMMIT behind our back.
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={number + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._reader is not None:
            # Fold the WAL in and empty it, off the loop (tens of milliseconds after a burst).
            with suppress(sqlite3.Error):
                async with self._reader.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                    await cur.fetchall()
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the store is closed")
        return self._db

    @property
    def _rd(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StorageError("the store is closed")
        return self._reader

    @property
    def changes(self) -> int:
        """Rows written through this store so far (a checkpoint is due when it moved)."""
        return self._conn.total_changes

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (nested uses join the outer one)."""
        db = self._conn
        if self._in_txn:
            yield db
            return
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot write to the database: {exc}") from None
        self._in_txn = True
        try:
            yield db
            db.execute("COMMIT")
            self.commits += 1
        except sqlite3.OperationalError as exc:
            db.execute("ROLLBACK")
            raise StorageError(f"database write failed: {exc}") from None
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            self._in_txn = False

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
        async with self._rd.execute("PRAGMA wal_checkpoint(PASSIVE)") as cur:
            row = await cur.fetchone()
        assert row is not None
        self.wal_pages = row[1]

    # --- settings ----------------------------------------------------------------------

    def get_setting(self, key: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_setting(self, key: str, value: bytes) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO settings(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    # --- submit ------------------------------------------------------------------------

    def submit(
        self,
        batch: Sequence[Prepared],
        now: int,
        follow: Follow | None = None,
        index_base: int | None = None,
    ) -> list[Submitted]:
        """Insert or deduplicate every entry in one transaction; all or nothing.

        Errors name the entry (``data.index``, ``$.tasks[i]``) when the batch has more than
        one entry, or always when ``index_base`` (the chunk's offset in a larger batch) is set.
        """
        numbered = index_base is not None or len(batch) > 1
        if not numbered and not self._in_txn and _is_plain(batch[0]):
            return [self._submit_alone(batch[0], now)]
        base = index_base or 0
        out: list[Submitted] = []
        nested = self._in_txn
        with self.transaction() as db:
            # Inside a group commit, a savepoint lets one failing submit undo only itself.
            if nested:
                db.execute("SAVEPOINT submit")
            local = Follow()
            plain: list[Prepared] = []
            try:
                for index, p in enumerate(batch):
                    if _is_plain(p) and numbered:
                        plain.append(p)
                        continue
                    out.extend(self._insert_plain(db, plain, now))
                    try:
                        out.append(self._submit_one(db, p, now, local))
                    except (DuplicateRejected, InvalidParams) as exc:
                        if numbered:
                            exc.data["index"] = base + index
                            if isinstance(exc, InvalidParams):
                                path = f"$.tasks[{base + index}]" + exc.path[1:]
                                exc.path = exc.data["path"] = path
                        raise
                out.extend(self._insert_plain(db, plain, now))
            except BaseException:
                if nested:
                    db.execute("ROLLBACK TO submit")
                    db.execute("RELEASE submit")
                raise
            if nested:
                db.execute("RELEASE submit")
        if follow is not None:
            follow.merge(local)
        return out

    def _submit_alone(self, p: Prepared, now: int) -> Submitted:
        """One plain entry outside any transaction: a single INSERT, which SQLite commits
        by itself (the BEGIN and COMMIT statements are a fifth of a lone submit's cost)."""
        try:
            task_id = self._insert_row(self._conn, _insert_params(p, "pending", now))
        except sqlite3.OperationalError as exc:
            raise StorageError(f"database write failed: {exc}") from None
        self.commits += 1
        return Submitted(task_id, "inserted", _new_info(p, task_id, "pending", now))

    def submit_each(
        self, items: Sequence[tuple[Sequence[Prepared], int]], follow: Follow
    ) -> list[list[Submitted] | Exception]:
        """Many independent submits ``(entries, now)`` in one transaction, each all or
        nothing on its own: its outcome is its results, or the exception that undid only it.

        Runs of single plain entries (no dedup key, parent or dependency: nothing can fail
        them but the database itself) are inserted with one ``executemany``, in order.
        """
        out: list[list[Submitted] | Exception] = []
        plain: list[Prepared] = []
        plain_now = 0
        with self.transaction() as db:
            for entries, now in items:
                if len(entries) == 1 and _is_plain(entries[0]):
                    if plain and now != plain_now:
                        out.extend([r] for r in self._insert_plain(db, plain, plain_now))
                    plain.append(entries[0])
                    plain_now = now
                    continue
                out.extend([r] for r in self._insert_plain(db, plain, plain_now))
                try:
                    out.append(self.submit(entries, now, follow))
                except Exception as exc:
                    out.append(exc)
            out.extend([r] for r in self._insert_plain(db, plain, plain_now))
        return out

    def _insert_plain(
        self, db: sqlite3.Connection, plain: list[Prepared], now: int
    ) -> list[Submitted]:
        """Insert a run of plain entries with one ``executemany``; clears ``plain``.

        Inside our write transaction SQLite gives each new row max(id) + 1, so the ids are
        consecutive after the highest one and follow without a read per row.
        """
        if not plain:
            return []
        rows = [_insert_params(p, "pending", now) for p in plain]
        # With an id floor the first row may have to take its id explicitly.
        before = self._insert_row(db, rows.pop(0)) - 1 if self._id_floor else self._max_id(db)
        for columns, group in itertools.groupby(rows, key=itemgetter(0)):
            db.executemany(_insert_sql(columns), [values for _, values in group])
        if self._max_id(db) != before + len(plain):  # pragma: no cover - SQLite invariant
            raise StorageError("task ids were not assigned consecutively")
        out = [
            Submitted(before + 1 + k, "inserted", _new_info(p, before + 1 + k, "pending", now))
            for k, p in enumerate(plain)
        ]
        plain.clear()
        return out

    def _max_id(self, db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0])

    def _insert_row(self, db: sqlite3.Connection, row: _InsertRow) -> int:
        """Insert one task row (``_insert_params``); returns its id."""
        columns, values = row
        first = self._explicit_first_id(db)
        if first is None:
            cur = db.execute(_insert_sql(columns), values)
        else:
            cur = db.execute(_insert_sql(("id", *columns)), (first, *values))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def _explicit_first_id(self, db: sqlite3.Connection) -> int | None:
        """The id the next new row must take, when the newest tasks were deleted and SQLite's
        max(id) + 1 would hand out an id again; None otherwise (with no query at all unless
        the newest tasks were deleted since the store was opened)."""
        if not self._id_floor or self._max_id(db) >= self._id_floor:
            return None
        return self._id_floor + 1

    def _submit_one(
        self, db: sqlite3.Connection, p: Prepared, now: int, follow: Follow
    ) -> Submitted:
        spec = p.spec
        replaced: tuple[int, str] | None = None
        if p.dedup_key is not None:
            row = db.execute(
                "SELECT id, state, priority, requeue_priority FROM tasks "
                f"WHERE type=? AND dedup_key=? AND state IN {_ACTIVE_SQL}",
                (spec.type, p.dedup_key),
            ).fetchone()
            if row is not None:
                old_id, old_state, old_priority, old_requeue = row
                if spec.on_duplicate == "reject":
                    raise DuplicateRejected(
                        f"task {old_id} of type {spec.type!r} already has this dedup key",
                        existing_id=old_id,
                    )
                if spec.on_duplicate == "supersede":
                    db.execute(
                        "UPDATE tasks SET state='superseded', finished_at=?, expires_at=NULL "
                        "WHERE id=?",
                        (now, old_id),
                    )
                    replaced = (old_id, old_state)
                    self._after_final(db, old_id, "superseded", now, follow)
                elif old_state == "running":
                    prio = min(
                        old_priority, p.priority, 255 if old_requeue is None else old_requeue
                    )
                    db.execute(
                        "UPDATE tasks SET requeue=1, requeue_priority=? WHERE id=?",
                        (prio, old_id),
                    )
                    return Submitted(old_id, "requeued", self._get(db, old_id))
                elif p.priority < old_priority and old_state in ("pending", "paused", "blocked"):
                    db.execute("UPDATE tasks SET priority=? WHERE id=?", (p.priority, old_id))
                    return Submitted(
                        old_id, "upgraded", self._get(db, old_id), changed_priority=True
                    )
                else:
                    return Submitted(old_id, "duplicate")
        state = "pending"
        if spec.parent_id is not None:
            parent = db.execute("SELECT state FROM tasks WHERE id=?", (spec.parent_id,)).fetchone()
            if parent is None:
                raise InvalidParams(f"parent task {spec.parent_id} does not exist", "$.parentId")
            if parent[0] not in ACTIVE_STATES:
                raise InvalidParams(
                    f"parent task {spec.parent_id} is already {parent[0]}", "$.parentId"
                )
        deps = sorted(set(spec.depends_on or ()))
        for i, dep in enumerate(deps):
            dep_row = db.execute("SELECT state FROM tasks WHERE id=?", (dep,)).fetchone()
            if dep_row is None:
                raise InvalidParams(f"task {dep} does not exist", f"$.dependsOn[{i}]")
            if dep_row[0] in FINAL_STATES and dep_row[0] != "completed":
                raise InvalidParams(
                    f"task {dep} ended {dep_row[0]}; nothing can depend on it",
                    f"$.dependsOn[{i}]",
                )
            if dep_row[0] != "completed":
                state = "blocked"
        new_id = self._insert_row(db, _insert_params(p, state, now))
        if deps:
            db.executemany(
                "INSERT INTO task_deps(task_id, dep_id) VALUES(?, ?)",
                [(new_id, d) for d in deps],
            )
            db.execute(
                f"UPDATE tasks SET has_dependents=1 WHERE id IN ({','.join('?' * len(deps))})",
                deps,
            )
        if spec.parent_id is not None:
            db.execute("UPDATE tasks SET has_children=1 WHERE id=?", (spec.parent_id,))
        info = _new_info(p, new_id, state, now)
        return Submitted(new_id, "superseded" if replaced else "inserted", info, replaced)

    # --- reads -------------------------------------------------------------------------

    def _get(self, db: sqlite3.Connection, task_id: int) -> TaskInfo:
        row = db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}", id=task_id)
        return _row_to_info(row)

    def get(self, task_id: int) -> TaskInfo:
        return self._get(self._conn, task_id)

    def state_of(self, task_id: int) -> str:
        row = self._conn.execute("SELECT state FROM tasks WHERE id=?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}", id=task_id)
        return str(row[0])

    def ready(
        self,
        now: int,
        types: Sequence[str],
        paused_groups: Sequence[str],
        paused_types: Sequence[str],
        limit: int,
    ) -> list[Ready]:
        """Due pending tasks in dispatch order, that some executor can run and no pause covers.

        Per runnable type, the first ``limit`` rows of its slice of the ready index, merged
        here in (priority, id) order. (One ``UNION ALL`` statement had SQLite sort every
        slice in a temporary b-tree: ~300 µs for seven types against ~45 µs for seven seeks.)
        """
        sql = self._ready_sql.get(len(paused_groups))
        if sql is None:
            sql = (
                "SELECT id, type, priority, grp, io_cost FROM tasks INDEXED BY tasks_ready "
                "WHERE state='pending' AND type=? AND (run_at IS NULL OR run_at <= ?)"
            )
            if paused_groups:
                sql += f" AND (grp IS NULL OR grp NOT IN ({','.join('?' * len(paused_groups))}))"
            sql += " ORDER BY priority, id LIMIT ?"
            self._ready_sql[len(paused_groups)] = sql
        execute = self._conn.execute
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

    def next_due(self, now: int) -> int | None:
        """The earliest future ``run_at`` of a pending task."""
        row = self._conn.execute(
            "SELECT min(run_at) FROM tasks INDEXED BY tasks_delayed "
            "WHERE state='pending' AND run_at IS NOT NULL AND run_at > ?",
            (now,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def next_expiry(self) -> int | None:
        row = self._conn.execute(
            "SELECT min(expires_at) FROM tasks WHERE expires_at IS NOT NULL"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def recent_durations(self, task_type: str, n: int) -> list[int]:
        rows = self._conn.execute(
            "SELECT duration_ms FROM tasks INDEXED BY tasks_final WHERE type=? "
            "AND state='completed' AND finished_at IS NOT NULL AND duration_ms IS NOT NULL "
            "ORDER BY finished_at DESC LIMIT ?",
            (task_type, n),
        ).fetchall()
        return [int(r[0]) for r in reversed(rows)]

    def average_io(self, task_type: str, n: int = 20) -> IoBytes | None:
        rows = self._conn.execute(
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

    async def list_tasks(
        self,
        *,
        states: Sequence[str] = (),
        task_type: str | None = None,
        group: str | None = None,
        tags: dict[str, str] | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[TaskInfo]:
        """Tasks by id descending, off the loop."""
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        _match(where, args, task_type, group, tags)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        sql = f"SELECT {_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        async with self._rd.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [_row_to_info(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        async with self._rd.execute("SELECT state, count(*) FROM tasks GROUP BY state") as cur:
            rows = await cur.fetchall()
        counts = {s: 0 for s in (*ACTIVE_STATES, *FINAL_STATES)}
        counts.update({str(r[0]): int(r[1]) for r in rows})
        return counts

    async def history(self, task_type: str | None) -> list[tuple[str, str, int | None, bytes]]:
        """(type, state, duration, io_actual) of every final task, for statistics."""
        sql = "SELECT type, state, duration_ms, io_actual FROM tasks WHERE state IN " + _FINAL_SQL
        args: tuple[Any, ...] = ()
        if task_type is not None:
            sql += " AND type=?"
            args = (task_type,)
        async with self._rd.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [(str(r[0]), str(r[1]), r[2], r[3]) for r in rows]

    async def find_ids(
        self, *, task_type: str | None, group: str | None, tags: dict[str, str] | None
    ) -> list[int]:
        """Active tasks matching every given filter (a scan: read off the loop)."""
        where = [f"state IN {_ACTIVE_SQL}"]
        args: list[Any] = []
        _match(where, args, task_type, group, tags)
        sql = "SELECT id FROM tasks WHERE " + " AND ".join(where) + " ORDER BY id"
        async with self._rd.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [int(r[0]) for r in rows]

    # --- transitions -------------------------------------------------------------------

    def start(self, ids: Sequence[int], now: int) -> list[Started]:
        """Claim pending tasks: one UPDATE for the whole set, then one read of what their
        runs need. (``UPDATE ... RETURNING`` every column cost about twice as much; the full
        :class:`TaskInfo` is read only if an executor asks for it: ``TaskContext.task``.)"""
        if not ids:
            return []
        db = self._conn
        marks = ",".join("?" * len(ids))
        db.execute(
            f"UPDATE tasks SET state='running', started_at=?, expires_at=NULL "
            f"WHERE id IN ({marks}) AND state='pending'",
            (now, *ids),
        )
        # The ones this UPDATE claimed (an id that was no longer pending is left out).
        rows = db.execute(
            "SELECT id, type, priority, grp, payload, attempt, max_retries, backoff, "
            f"timeout_ms, checkpoint, parent_id FROM tasks WHERE id IN ({marks}) "
            "AND state='running' AND started_at=? ORDER BY priority, id",
            (*ids, now),
        ).fetchall()
        return [
            Started(
                id=r[0],
                type=r[1],
                priority=r[2],
                group=r[3],
                payload=_decode(r[4]),
                attempt=r[5],
                max_retries=r[6],
                backoff=r[7],
                timeout_ms=r[8],
                checkpoint=_decode(r[9]) if r[9] is not None else None,
                parent_id=r[10],
            )
            for r in rows
        ]

    def save_checkpoint(self, task_id: int, state: Any) -> None:
        with self.transaction() as db:
            db.execute("UPDATE tasks SET checkpoint=? WHERE id=?", (_encode(state), task_id))

    def _take_requeue(self, db: sqlite3.Connection, task_id: int) -> int | None:
        row = db.execute(
            "SELECT requeue, requeue_priority FROM tasks WHERE id=?", (task_id,)
        ).fetchone()
        if row is None or not row[0]:
            return None
        return int(row[1])

    def _back_to_pending(
        self, db: sqlite3.Connection, task_id: int, priority: int, error: ErrorInfo | None
    ) -> None:
        db.execute(
            "UPDATE tasks SET state='pending', priority=?, attempt=0, run_at=NULL, "
            "started_at=NULL, checkpoint=NULL, requeue=0, requeue_priority=NULL, error=? "
            "WHERE id=?",
            (priority, _encode(error) if error else None, task_id),
        )

    def complete_plain(
        self, done: Sequence[tuple[int, int, bytes, IoBytes | None]], now: int
    ) -> set[int]:
        """Complete successful runs ``(id, duration_ms, result JSON, io_actual)`` that need
        nothing else (no requeue asked for, no parent, no children, no dependents) with one
        ``executemany``; returns the ids it completed. :meth:`complete` does the rest."""
        db = self._conn
        before = db.total_changes
        db.executemany(
            "UPDATE tasks SET state='completed', finished_at=?, duration_ms=?, result=?, "
            "io_actual=?, error=NULL, checkpoint=NULL WHERE id=? AND requeue=0 "
            "AND has_children=0 AND has_dependents=0 AND parent_id IS NULL",
            [
                (now, duration, result, _encode(io) if io is not None else None, tid)
                for tid, duration, result, io in done
            ],
        )
        ids = [d[0] for d in done]
        if db.total_changes - before == len(ids):
            return set(ids)
        rows = db.execute(
            f"SELECT id FROM tasks WHERE id IN ({','.join('?' * len(ids))}) AND state='completed'",
            ids,
        ).fetchall()
        return {r[0] for r in rows}

    def complete(
        self,
        task_id: int,
        now: int,
        *,
        result: bytes,
        duration_ms: int,
        io_actual: IoBytes | None,
        follow: Follow,
    ) -> str:
        """A run succeeded (``result`` is its JSON). Returns the new state: completed,
        waiting, or pending (requeued)."""
        db = self._conn
        io = _encode(io_actual) if io_actual is not None else None
        # The common case in one statement: no requeue asked for, never had children.
        row = db.execute(
            "UPDATE tasks SET state='completed', finished_at=?, duration_ms=?, result=?, "
            "io_actual=?, error=NULL, checkpoint=NULL "
            "WHERE id=? AND requeue=0 AND has_children=0 RETURNING parent_id, has_dependents",
            (now, duration_ms, result, io, task_id),
        ).fetchone()
        if row is not None:
            if row[0] is not None or row[1]:
                self._after_final(db, task_id, "completed", now, follow, (row[0], row[1]))
            return "completed"
        requeue = self._take_requeue(db, task_id)
        if requeue is not None:
            self._back_to_pending(db, task_id, requeue, None)
            return "pending"
        children = db.execute(
            f"SELECT count(*) FROM tasks WHERE parent_id=? AND state IN {_ACTIVE_SQL}",
            (task_id,),
        ).fetchone()[0]
        state = "waiting" if children else "completed"
        db.execute(
            "UPDATE tasks SET state=?, finished_at=?, duration_ms=?, result=?, io_actual=?, "
            "error=NULL, checkpoint=NULL WHERE id=?",
            (
                state,
                now if state == "completed" else None,
                duration_ms,
                result,
                io,
                task_id,
            ),
        )
        if state == "completed":
            self._after_final(db, task_id, "completed", now, follow)
        return state

    def fail(
        self,
        task_id: int,
        now: int,
        *,
        error: ErrorInfo,
        retry_at: int | None,
        final_state: str,
        duration_ms: int,
        io_actual: IoBytes | None,
        follow: Follow,
    ) -> str:
        """A run failed. ``retry_at`` set: back to pending with one more attempt consumed.

        A requeue requested while the run was going survives even a permanent failure: the
        task goes back to ``pending`` with attempt 0 and runs once more.
        """
        db = self._conn
        requeue = self._take_requeue(db, task_id)
        if requeue is not None:
            self._back_to_pending(db, task_id, requeue, error)
            return "pending"
        io = _encode(io_actual) if io_actual is not None else None
        if retry_at is not None:
            db.execute(
                "UPDATE tasks SET state='pending', attempt=attempt+1, run_at=?, "
                "started_at=NULL, error=? WHERE id=?",
                (retry_at, _encode(error), task_id),
            )
            return "pending"
        db.execute(
            "UPDATE tasks SET state=?, finished_at=?, duration_ms=?, error=?, io_actual=? "
            "WHERE id=?",
            (final_state, now, duration_ms, _encode(error), io, task_id),
        )
        self._after_final(db, task_id, final_state, now, follow)
        return final_state

    def interrupt(self, task_id: int, to_state: str) -> None:
        """A run was interrupted (preempted, paused, shut down): no retry consumed."""
        self._conn.execute(
            "UPDATE tasks SET state=?, started_at=NULL WHERE id=? AND state='running'",
            (to_state, task_id),
        )

    def cancel(self, task_id: int, now: int, follow: Follow) -> tuple[str, list[tuple[int, str]]]:
        """Cancel an active task and its active descendants.

        Returns the task's previous state and every (id, type) cancelled, the task first.
        """
        with self.transaction() as db:
            row = db.execute("SELECT state, type FROM tasks WHERE id=?", (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(f"no task with id {task_id}", id=task_id)
            prev, task_type = row
            if prev not in ACTIVE_STATES:
                raise InvalidState(f"task {task_id} is already {prev}", id=task_id, state=prev)
            cancelled = [(task_id, str(task_type))]
            self._finalize(db, task_id, "cancelled", now)
            frontier = [task_id]
            while frontier:
                parent = frontier.pop()
                for cid, ctype in db.execute(
                    f"SELECT id, type FROM tasks WHERE parent_id=? AND state IN {_ACTIVE_SQL}",
                    (parent,),
                ).fetchall():
                    self._finalize(db, cid, "cancelled", now)
                    cancelled.append((int(cid), str(ctype)))
                    frontier.append(cid)
            for cid, _ in cancelled:
                self._after_final(db, cid, "cancelled", now, follow)
        return str(prev), cancelled

    def _finalize(self, db: sqlite3.Connection, task_id: int, state: str, now: int) -> None:
        db.execute(
            "UPDATE tasks SET state=?, finished_at=?, expires_at=NULL, requeue=0 WHERE id=?",
            (state, now, task_id),
        )

    def _after_final(
        self,
        db: sqlite3.Connection,
        task_id: int,
        state: str,
        now: int,
        follow: Follow,
        known: tuple[int | None, int] | None = None,
    ) -> None:
        """Move the parent and the dependents of a task that just became final.

        ``known`` is (parent_id, has_dependents) when the caller already read them.
        """
        if known is None:
            row = db.execute(
                "SELECT parent_id, has_dependents FROM tasks WHERE id=?", (task_id,)
            ).fetchone()
            known = (row[0], row[1]) if row else (None, 0)
        parent_id, has_dependents = known
        if parent_id is not None:
            prow = db.execute(
                "SELECT state, type, attempt, result FROM tasks WHERE id=?", (parent_id,)
            ).fetchone()
            if prow is not None and prow[0] == "waiting":
                left = db.execute(
                    f"SELECT count(*) FROM tasks WHERE parent_id=? AND state IN {_ACTIVE_SQL}",
                    (parent_id,),
                ).fetchone()[0]
                if not left:
                    db.execute(
                        "UPDATE tasks SET state='completed', finished_at=? WHERE id=?",
                        (now, parent_id),
                    )
                    result = _decode(prow[3]) if prow[3] is not None else None
                    follow.completed_parents.append((parent_id, prow[1], prow[2], result))
                    self._after_final(db, parent_id, "completed", now, follow)
        if not has_dependents:
            return
        dependents = db.execute(
            "SELECT d.task_id, t.type FROM task_deps d JOIN tasks t ON t.id = d.task_id "
            "WHERE d.dep_id=? AND t.state='blocked'",
            (task_id,),
        ).fetchall()
        for dep_id, dep_type in dependents:
            if state == "completed":
                left = db.execute(
                    "SELECT count(*) FROM task_deps d JOIN tasks t ON t.id = d.dep_id "
                    "WHERE d.task_id=? AND t.state != 'completed'",
                    (dep_id,),
                ).fetchone()[0]
                if not left:
                    db.execute("UPDATE tasks SET state='pending' WHERE id=?", (dep_id,))
                    follow.unblocked.append(int(dep_id))
            else:
                err = ErrorInfo(f"task {task_id} it depends on ended {state}", "dependency", False)
                db.execute(
                    "UPDATE tasks SET state='failed', finished_at=?, error=? WHERE id=?",
                    (now, _encode(err), dep_id),
                )
                follow.failed_dependents.append((int(dep_id), str(dep_type)))
                self._after_final(db, dep_id, "failed", now, follow)

    def set_priority(self, task_id: int, priority: int) -> TaskInfo:
        with self.transaction() as db:
            state = self.state_of(task_id)
            if state not in ACTIVE_STATES:
                raise InvalidState(f"task {task_id} is already {state}", id=task_id, state=state)
            db.execute("UPDATE tasks SET priority=? WHERE id=?", (priority, task_id))
            return self._get(db, task_id)

    def pause_pending(self, task_id: int) -> None:
        self._conn.execute(
            "UPDATE tasks SET state='paused' WHERE id=? AND state='pending'", (task_id,)
        )

    def resume(self, task_id: int) -> TaskInfo:
        with self.transaction() as db:
            state = self.state_of(task_id)
            if state != "paused":
                raise InvalidState(
                    f"task {task_id} is {state}, not paused", id=task_id, state=state
                )
            db.execute("UPDATE tasks SET state='pending' WHERE id=?", (task_id,))
            return self._get(db, task_id)

    def retry(self, task_id: int) -> tuple[int, Outcome, TaskInfo | None]:
        """Manual retry of a failed or dead-lettered task (same id, attempt 0)."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT state, type, dedup_key FROM tasks WHERE id=?", (task_id,)
            ).fetchone()
            if row is None:
                raise TaskNotFound(f"no task with id {task_id}", id=task_id)
            state, task_type, key = row
            if state not in ("failed", "deadLetter"):
                raise InvalidState(
                    f"task {task_id} is {state}; only failed or deadLetter tasks can be retried",
                    id=task_id,
                    state=state,
                )
            if key is not None:
                holder = db.execute(
                    f"SELECT id FROM tasks WHERE type=? AND dedup_key=? AND state IN {_ACTIVE_SQL}",
                    (task_type, key),
                ).fetchone()
                if holder is not None:
                    return int(holder[0]), "duplicate", None
            db.execute(
                "UPDATE tasks SET state='pending', attempt=0, run_at=NULL, started_at=NULL, "
                "finished_at=NULL, duration_ms=NULL, error=NULL, result=NULL WHERE id=?",
                (task_id,),
            )
            return task_id, "inserted", self._get(db, task_id)

    def expire_due(self, now: int) -> list[tuple[int, str]]:
        rows = self._conn.execute(
            "UPDATE tasks SET state='expired', finished_at=?, expires_at=NULL "
            "WHERE expires_at <= ? AND state IN ('pending','paused','blocked') "
            "RETURNING id, type",
            (now, now),
        ).fetchall()
        # Expiry only matters before a task starts; drop stale marks of other states.
        self._conn.execute(
            "UPDATE tasks SET expires_at=NULL WHERE expires_at <= ? "
            "AND state NOT IN ('pending','paused','blocked')",
            (now,),
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def recover(self) -> int:
        """Crash recovery: interrupted runs go back to pending, keeping checkpoint and attempt."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE tasks SET state='pending', started_at=NULL WHERE state='running'"
            )
            return cur.rowcount

    async def prunable(
        self, now: int, max_count: int | None, max_age_ms: int | None, limit: int
    ) -> list[int]:
        """Ids of final tasks too old or beyond the newest ``max_count`` (read off the loop)."""
        try:
            return await self._prunable(now, max_count, max_age_ms, limit)
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from None

    async def _prunable(
        self, now: int, max_count: int | None, max_age_ms: int | None, limit: int
    ) -> list[int]:
        ids: list[int] = []
        if max_age_ms is not None:
            # Type by type (one seek each to find the next type), then the slices of its
            # final states older than the cut.
            task_type = ""
            while len(ids) < limit:
                async with self._rd.execute(
                    "SELECT type FROM tasks INDEXED BY tasks_final "
                    "WHERE finished_at IS NOT NULL AND type > ? ORDER BY type LIMIT 1",
                    (task_type,),
                ) as cur:
                    row = await cur.fetchone()
                if row is None:
                    break
                task_type = row[0]
                async with self._rd.execute(
                    "SELECT id FROM tasks INDEXED BY tasks_final "
                    f"WHERE type=? AND state IN {_FINAL_SQL} AND finished_at IS NOT NULL "
                    "AND finished_at < ? LIMIT ?",
                    (task_type, now - max_age_ms, limit - len(ids)),
                ) as cur:
                    ids.extend(int(r[0]) for r in await cur.fetchall())
        if max_count is not None and len(ids) < limit:
            async with self._rd.execute(
                f"SELECT id FROM tasks WHERE state IN {_FINAL_SQL} "
                "ORDER BY id DESC LIMIT ? OFFSET ?",
                (limit - len(ids), max_count),
            ) as cur:
                ids.extend(int(r[0]) for r in await cur.fetchall())
        return sorted(set(ids))

    def delete_final(self, ids: Sequence[int]) -> int:
        """Delete these tasks if they are (still) final; a short write on the loop."""
        if not ids:
            return 0
        with self.transaction() as db:
            marks = ",".join("?" * len(ids))
            final = [
                int(r[0])
                for r in db.execute(
                    f"SELECT id FROM tasks WHERE id IN ({marks}) AND state IN {_FINAL_SQL}",
                    list(ids),
                ).fetchall()
            ]
            return self._delete(db, final)

    def _delete(self, db: sqlite3.Connection, ids: list[int]) -> int:
        if not ids:
            return 0
        newest = self._max_id(db)
        if newest in ids and newest > self._id_floor:
            # New rows get max(id) + 1: remember the highest id so it is never handed out again.
            self.put_setting("id_floor", str(newest).encode())
            self._id_floor = newest
        marks = ",".join("?" * len(ids))
        db.execute(f"DELETE FROM task_deps WHERE task_id IN ({marks})", ids)
        return db.execute(f"DELETE FROM tasks WHERE id IN ({marks})", ids).rowcount

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r}, durability={self.durability!r})"
