"""The database's shape: DDL, the schema version, and the forward migrations that get an
older file there.

``PRAGMA user_version`` is the number of migrations applied; ``PRAGMA application_id`` marks
the file as ours. Opening refuses a file that is not a taskmill database without writing to
it (:func:`check_existing`), and a file from a newer build (:func:`migrate`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from taskmill_core.errors import DamagedDatabase, NotATaskmillDatabase, is_damage

__all__ = [
    "ACTIVE_SQL",
    "APPLICATION_ID",
    "DUE_SQL",
    "FINAL_SQL",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SQLITE_HEADER",
    "check_existing",
    "migrate",
]

APPLICATION_ID = 0x544D494C  # "TMIL": marks a file as a taskmill database
SQLITE_HEADER = b"SQLite format 3\x00"

# The states as SQL lists (types.ACTIVE_STATES and FINAL_STATES).
ACTIVE_SQL = "('pending','running','paused','waiting','blocked')"
FINAL_SQL = "('completed','failed','deadLetter','cancelled','superseded','expired')"
# When a pending task became due (aging; see the due_since migration).
DUE_SQL = "coalesce(due_since, run_at, created_at)"

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
# ``id_floor`` and the next insert takes an explicit id above it (see ids.IdFloor).
_TASK_COLUMNS_V2 = _TASK_COLUMNS_V1.replace(
    "id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused",
    "id INTEGER PRIMARY KEY,  -- never reused: see id_floor",
)
_TASK_INDEXES = f"""
    -- At most one active task per (type, dedup key): racing submits cannot create two.
    CREATE UNIQUE INDEX tasks_dedup ON tasks(type, dedup_key)
        WHERE dedup_key IS NOT NULL AND state IN {ACTIVE_SQL};
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
    # Recurring schedules (store/schedules.py). AUTOINCREMENT: a deleted schedule's id is
    # never reused (its tasks keep the tag {"schedule": id}); schedules are few, so the
    # sqlite_sequence row costs nothing that matters. next_at is NULL while paused or ended.
    """
    CREATE TABLE schedules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT UNIQUE,
        task BLOB NOT NULL,
        every_ms INTEGER,
        cron TEXT,
        timezone TEXT,
        start_at INTEGER,
        next_at INTEGER,
        last_at INTEGER,
        last_task_id INTEGER,
        runs INTEGER NOT NULL DEFAULT 0,
        max_runs INTEGER,
        paused INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX schedules_due ON schedules(next_at) WHERE next_at IS NOT NULL;
    """,
    # Workflows: a parent's finalize phase and its child and dependency policies. ``phase`` is
    # NULL for the first run and 'finalize' once the finalize phase is due (recovery resumes
    # it); ``child_failed`` marks a failParent parent one of whose children failed.
    # ``tasks_lookup`` finds the latest final task of a dedup key (task.lookup); it costs only
    # the final tasks that have a key, once.
    """
    ALTER TABLE tasks ADD COLUMN finalize INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN phase TEXT;
    ALTER TABLE tasks ADD COLUMN on_child_failure TEXT;
    ALTER TABLE tasks ADD COLUMN on_dependency_failure TEXT;
    ALTER TABLE tasks ADD COLUMN child_failed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_lookup ON tasks(type, dedup_key, finished_at)
        WHERE dedup_key IS NOT NULL AND finished_at IS NOT NULL;
    """,
    # Scheduling policy: ``due_since`` is when a pending task last became runnable, where that
    # is not its ``run_at`` (a retry's time) or else its creation: after a resume, a
    # preemption, a requeue, a rerun, an unblocking (NULL: coalesce(run_at, created_at), so a
    # submit writes nothing more). It is not indexed: aging reads the heads of each priority
    # level through tasks_ready (see queries.aged), so a write pays no index for it. Fair
    # share reads each configured group's most urgent tasks through tasks_group_ready, which
    # only grouped pending tasks are in.
    """
    ALTER TABLE tasks ADD COLUMN due_since INTEGER;
    CREATE INDEX tasks_group_ready ON tasks(grp, priority, id)
        WHERE state = 'pending' AND grp IS NOT NULL;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


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


def check_existing(path: Path) -> None:
    """Refuse a file that is not a taskmill database, without writing to it and without
    creating anything beside it."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise NotATaskmillDatabase(f"{path} is a directory, not a database file")
        if size == 0:
            return
        with open(path, "rb") as f:
            header = f.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise NotATaskmillDatabase(f"{path} cannot be read: {exc.strerror}") from None
    if header != SQLITE_HEADER:
        raise NotATaskmillDatabase(f"{path} is not an SQLite database")
    # A read-only connection to a WAL database creates its -wal and -shm files (and cannot
    # remove them): without a -wal, nothing has the file open and the file alone is the
    # whole database, so read it as immutable, which creates nothing.
    wal = Path(f"{path}-wal").exists()
    uri = f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
    try:
        ro = sqlite3.connect(uri, uri=True)
        try:
            app_id = ro.execute("PRAGMA application_id").fetchone()[0]
            version = ro.execute("PRAGMA user_version").fetchone()[0]
            tables = ro.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            ro.close()
    except sqlite3.DatabaseError as exc:
        damaged = is_damage(exc) and _app_id_of(path) == APPLICATION_ID
        error = DamagedDatabase if damaged else NotATaskmillDatabase
        raise error(f"{path} cannot be read: {exc}") from None
    if app_id != APPLICATION_ID and tables > 0:
        raise NotATaskmillDatabase(f"{path} is an SQLite database of another program")
    if version > SCHEMA_VERSION:  # (refused here, before opening it for writing changes it)
        raise NotATaskmillDatabase(
            f"{path} has schema version {version}; this build knows {SCHEMA_VERSION}"
        )


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations the file lacks, each in its own transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise NotATaskmillDatabase(
            f"{path} has schema version {version}; this build knows {SCHEMA_VERSION}"
        )
    for number in range(version, SCHEMA_VERSION):
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
            if db.in_transaction:  # (a failed COMMIT may have rolled back already)
                db.execute("ROLLBACK")
            raise
