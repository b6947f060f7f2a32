"""Salvage: copy every readable row of a damaged database into a fresh one.

A bad sector or a power cut on cheap storage leaves pages of the file unreadable; SQLite then
answers ``database disk image is malformed`` for any statement that walks over such a page,
and the sidecar refuses the file (exit 4). Nobody can mend a file by hand on a desktop, so
``taskmill repair`` (see :mod:`sidecar.admin`) calls :func:`repair`, which

1. checks the file (``PRAGMA quick_check``); a sound file is left alone;
2. builds a fresh database with the current schema beside it (the store's migrations);
3. copies each table's readable rows into it: rows are read in rowid order and, where a
   read fails, the first readable rowid after the damage is found by a doubling search and a
   bisection (each probe is one b-tree descent: skipping a bad page costs at most ~130),
   then the rowids of the skipped range are looked up one by one, so one bad page costs
   exactly the rows it held; the table's indexes (separate b-trees, usually intact) name the
   rows that were lost. Tables without rowid are read forwards, then backwards from their
   end: one bad page costs the rows between the two damaged spots (its own rows);
4. keeps the damaged file (with its ``-wal``) as ``<name>.corrupt-<time>`` and puts the
   fresh one in its place, so the sidecar opens it as usual (and requeues the rows that were
   ``running``).

The copy goes by table and column names, so tables and columns the schema gains later are
copied without changes here; rows written by an older schema get the new columns' defaults.
Everything here is synchronous and blocking: it runs in the admin command line, never in
the sidecar while it serves (it must hold the database lock; the caller takes it).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskmill_core.errors import NotATaskmillDatabase, is_damage
from taskmill_core.store.schema import APPLICATION_ID, MIGRATIONS, SQLITE_HEADER, migrate
from taskmill_core.types import ACTIVE_STATES, FINAL_STATES

__all__ = ["RepairReport", "TableReport", "check", "repair", "salvage"]

_MAX_ROWID = 2**63 - 1
_MIN_ROWID = -(2**63)
_BATCH = 1000  # rows per executemany; a rejected batch is retried row by row
_RESCUE_SPAN = 100_000  # rowids of a lost range looked up one by one (~3 us each)
_SIDE_FILES = ("-wal", "-shm", "-journal")
_STATES = set(ACTIVE_STATES) | set(FINAL_STATES)


def _valid_task(cols: Sequence[str]) -> Callable[[Sequence[Any]], bool] | None:
    if "state" not in cols or "type" not in cols:
        return None
    state, kind = cols.index("state"), cols.index("type")
    return lambda row: row[state] in _STATES and isinstance(row[kind], str)


# Rows that read back but cannot be a valid record of their table (a damaged page can still
# decode as a row of nonsense) are refused; they count as ``rejected``.
_VALID: dict[str, Callable[[Sequence[str]], Callable[[Sequence[Any]], bool] | None]] = {
    "tasks": _valid_task,
}


@dataclass
class TableReport:
    """What the salvage of one table saved and lost."""

    name: str
    saved: int = 0
    rejected: int = 0  # read, but refused as invalid or by the fresh schema's constraints
    # Rowid ranges ``(after, upto]`` that could not be read; ``upto`` None: to the end.
    lost_ranges: list[tuple[int, int | None]] = field(default_factory=list)
    # Rowids in the lost ranges that the table's indexes still list: rows known to be lost.
    lost_known: list[int] = field(default_factory=list)
    rescued: int = 0  # rows of the lost ranges that a lookup by rowid still read
    unreadable: bool = False  # not even the table's first row could be reached
    lost_unknown: bool = False  # a table without rowid lost rows it cannot count

    @property
    def lost_at_most(self) -> int | None:
        """An upper bound on the rows lost (rowids in the lost ranges; ids of tasks are
        dense, so for tasks it is close); None when it cannot be bounded."""
        if self.unreadable or self.lost_unknown:
            return None
        total = 0
        for after, upto in self.lost_ranges:
            if upto is None:
                return None
            total += upto - after
        return total - self.rescued

    @property
    def complete(self) -> bool:
        return not (self.lost_ranges or self.unreadable or self.lost_unknown or self.rejected)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.name,
            "saved": self.saved,
            "rejected": self.rejected,
            "lostAtMost": self.lost_at_most,
            "lostRanges": [[a, b] for a, b in self.lost_ranges],
            "lostKnown": len(self.lost_known),
            "lostKnownIds": self.lost_known[:1000],
            "unreadable": self.unreadable,
            "complete": self.complete,
        }


@dataclass
class RepairReport:
    """The outcome of :func:`repair`."""

    db: Path
    healthy: bool  # the check found nothing wrong (nothing was changed, unless forced)
    problems: list[str]  # what the check reported (first lines)
    tables: list[TableReport] = field(default_factory=list)
    kept: Path | None = None  # where the damaged file is now
    elapsed_ms: int = 0

    def table(self, name: str) -> TableReport:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "db": str(self.db),
            "healthy": self.healthy,
            "problems": self.problems,
            "kept": None if self.kept is None else str(self.kept),
            "tables": [t.to_json() for t in self.tables],
            "elapsedMs": self.elapsed_ms,
        }


# --- opening the damaged file -------------------------------------------------------------


def _header(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(100)


def _open_source(path: Path) -> sqlite3.Connection:
    """Read-only. With a ``-wal`` beside it (the last run ended without a checkpoint), the
    log holds committed work, so it is read through SQLite's normal locking; without one
    the file is opened immutable, which creates nothing beside it."""
    wal = Path(f"{path}-wal").exists()
    uri = f"{path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
    db = sqlite3.connect(uri, uri=True)
    # Tolerates a header that promises more pages than the file has (a truncated file is
    # otherwise refused whole); the connection is read-only, so nothing can be written.
    db.execute("PRAGMA writable_schema=ON")
    return db


def _vet(path: Path, force: bool) -> None:
    """Refuse what is not (recognisably) a damaged taskmill database."""
    if path.is_dir():
        raise NotATaskmillDatabase(f"{path} is a directory, not a database file")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    header = _header(path)
    if force:
        return
    if not header.startswith(SQLITE_HEADER):
        raise NotATaskmillDatabase(
            f"{path} is not an SQLite database (its first page is gone or it is another "
            "kind of file); repair --force starts a fresh database and keeps it aside"
        )
    app_id = int.from_bytes(header[68:72], "big") if len(header) >= 72 else 0
    version = int.from_bytes(header[60:64], "big") if len(header) >= 64 else 0
    if app_id != APPLICATION_ID:
        raise NotATaskmillDatabase(f"{path} is not a taskmill database")
    if version > len(MIGRATIONS):
        raise NotATaskmillDatabase(
            f"{path} has schema version {version}; this build knows {len(MIGRATIONS)}"
        )


def check(path: Path, limit: int = 20) -> list[str]:
    """``PRAGMA quick_check`` of a file (read-only): its problems, or [] when it is sound.

    O(size): ~37 ms for 100k tasks (17 MB), ~370 ms for 1M (168 MB) with a warm cache."""
    try:
        src = _open_source(path)
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    try:
        rows = src.execute(f"PRAGMA quick_check({limit})").fetchall()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        src.close()
    problems = [str(r[0]) for r in rows]
    return [] if problems == ["ok"] else problems


# --- the fresh database -------------------------------------------------------------------


def _create_fresh(path: Path, page_size: int) -> sqlite3.Connection:
    """A new file with the current schema, exactly as the store's migrations build it."""
    for suffix in ("", *_SIDE_FILES):
        Path(f"{path}{suffix}").unlink(missing_ok=True)  # an interrupted repair's leftovers
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size={page_size}")
    # A scratch file until it is fsynced and swapped in (a crash before that discards it):
    # no journal, no syncs, a cache that holds the indexes being built (100k tasks: 2.8 s
    # -> 2.0 s on a busy machine).
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-131072")  # 128 MiB at most
    migrate(db, path)
    return db


# --- copying ------------------------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tables(db: sqlite3.Connection) -> dict[str, str]:
    rows = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    return {str(name): str(sql or "") for name, sql in rows}


def _columns(db: sqlite3.Connection, table: str) -> list[tuple[str, int]]:
    """(name, position in the primary key: 0 if none) of each column."""
    return [(str(r[1]), int(r[5])) for r in db.execute(f"PRAGMA table_info({_q(table)})")]


class _Copier:
    """Inserts salvaged rows of one table into the fresh database, counting them."""

    def __init__(self, dst: sqlite3.Connection, report: TableReport, cols: Sequence[str]):
        self.dst = dst
        self.report = report
        self.cols = list(cols)
        make = _VALID.get(report.name)
        self.valid = None if make is None else make(self.cols)
        names = ", ".join(_q(c) for c in cols)
        marks = ", ".join("?" for _ in cols)
        self.sql = f"INSERT INTO {_q(report.name)} ({names}) VALUES ({marks})"
        self.pending: list[Sequence[Any]] = []

    def add(self, row: Sequence[Any]) -> None:
        if self.valid is not None and not self.valid(row):
            self.report.rejected += 1
            return
        self.pending.append(row)
        if len(self.pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        rows, self.pending = self.pending, []
        if not rows:
            return
        self.dst.execute("SAVEPOINT batch")
        try:
            self.dst.executemany(self.sql, rows)
            self.report.saved += len(rows)
        except sqlite3.IntegrityError:
            self.dst.execute("ROLLBACK TO batch")
            for row in rows:
                try:
                    self.dst.execute(self.sql, row)
                    self.report.saved += 1
                except sqlite3.IntegrityError:
                    self.report.rejected += 1
        self.dst.execute("RELEASE batch")


def _indexed_rowids(src: sqlite3.Connection, table: str, after: int, upto: int | None) -> list[int]:
    """The rowids in ``(after, upto]`` that any index of ``table`` still lists. An index is
    a b-tree of its own: it usually survives the loss of a table page, and it names the rows
    that page held (the indexes of tasks cover every pending and every finished task)."""
    found: set[int] = set()
    indexes = src.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name=? AND sql IS NOT NULL",
        (table,),
    ).fetchall()
    for name, sql in indexes:
        # A partial index is used only under its own condition (which it then implies).
        parts = re.split(r"\bWHERE\b", str(sql), maxsplit=1, flags=re.IGNORECASE)
        where = parts[1] if len(parts) > 1 else "1"
        query = (
            f"SELECT rowid FROM {_q(table)} INDEXED BY {_q(str(name))} "
            f"WHERE ({where}) AND rowid > ? AND rowid <= ?"
        )
        try:
            rows = src.execute(query, (after, _MAX_ROWID if upto is None else upto))
            found.update(int(r[0]) for r in rows)
        except sqlite3.DatabaseError:
            continue  # a damaged index (or one this query cannot use): it tells nothing
    return sorted(found)


def _salvage_rowid_table(
    src: sqlite3.Connection, copier: _Copier, table: str, cols: Sequence[str]
) -> None:
    report = copier.report
    names = ", ".join(_q(c) for c in cols)
    scan = f"SELECT rowid, {names} FROM {_q(table)} NOT INDEXED WHERE rowid > ? ORDER BY rowid"
    probe = scan + " LIMIT 1"
    lookup = f"SELECT rowid, {names} FROM {_q(table)} NOT INDEXED WHERE rowid = ?"

    def readable_after(x: int) -> bool:
        try:
            src.execute(probe, (x,)).fetchall()
            return True
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            return False

    def rescue(after: int, upto: int | None) -> list[int]:
        """Look up one by one the rowids of a lost range (those the indexes name, and the
        first ``_RESCUE_SPAN``): a range scan loses a readable row on each side of the damage
        (Python's cursor reads a row ahead and drops the row in hand when that read fails;
        a seek lands on the damaged page for a key just below the next page's first), a
        lookup by rowid does not. Returns the rowids still lost that the indexes name."""
        known = _indexed_rowids(src, table, after, upto)
        top = after + _RESCUE_SPAN if upto is None else min(upto, after + _RESCUE_SPAN)
        still: list[int] = []
        for rowid in sorted(set(range(after + 1, top + 1)) | set(known)):
            try:
                row = src.execute(lookup, (rowid,)).fetchone()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                row = None
            if row is not None:
                report.rescued += 1
                copier.add(row[1:])
            elif rowid in known:
                still.append(rowid)
        return still

    last = _MIN_ROWID
    while True:
        try:
            for row in src.execute(scan, (last,)):
                rowid = int(row[0])
                if rowid <= last:  # out of order: a damaged page decoded as rows
                    report.rejected += 1
                    continue
                last = rowid
                copier.add(row[1:])
            return
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
        # The first row after ``last`` is unreadable. Find the smallest x > last whose next
        # row reads: doubling steps, then a bisection; rows in (last, x] are lost, bar the
        # ones a lookup by rowid still reads.
        bad, step = last, 1
        good: int | None = None
        while good is None and bad < _MAX_ROWID:
            candidate = min(last + step, _MAX_ROWID)
            if readable_after(candidate):
                good = candidate
            else:
                bad, step = candidate, step * 2
        if good is None:
            if last == _MIN_ROWID:
                report.unreadable = True  # no seek reaches a row: the table's root is gone
                report.lost_known += _indexed_rowids(src, table, last, None)
            else:
                report.lost_ranges.append((last, None))
                report.lost_known += rescue(last, None)
            return
        while good - bad > 1:
            mid = (bad + good) // 2
            if readable_after(mid):
                good = mid
            else:
                bad = mid
        # Lost from the very first row: SQLite hands out positive rowids (taskmill's ids
        # too), so the range starts at 0 unless the bisection says otherwise.
        after = 0 if last == _MIN_ROWID and good > 0 else last
        report.lost_ranges.append((after, good))
        report.lost_known += rescue(after, good)
        last = good


def _salvage_keyed_table(
    src: sqlite3.Connection, copier: _Copier, table: str, cols: Sequence[str], key: Sequence[str]
) -> None:
    """A WITHOUT ROWID table: forwards in key order until the damage, then backwards from
    the end down to it (one bad page loses only its own rows). After each failed read,
    single-row probes from the last key read take the row that read dropped."""
    report = copier.report
    names = ", ".join(_q(c) for c in cols)
    keys = ", ".join(_q(k) for k in key)
    marks = ", ".join("?" for _ in key)
    at = [cols.index(k) for k in key]
    base = f"SELECT {names} FROM {_q(table)}"

    def read(descending: bool, stop: tuple[Any, ...] | None) -> tuple[bool, tuple[Any, ...] | None]:
        """(whether it read to the end, the last key read)."""
        order = ", ".join(f"{_q(k)}{' DESC' if descending else ''}" for k in key)
        beyond = f"WHERE ({keys}) {'<' if descending else '>'} ({marks})"
        last: tuple[Any, ...] | None = None

        def take(row: Sequence[Any]) -> bool:
            nonlocal last
            k = tuple(row[i] for i in at)
            try:
                if stop is not None and k <= stop:
                    return False  # the forward read has it
            except TypeError:  # keys of mixed types (a damaged row): not comparable here
                pass
            last = k
            copier.add(row)
            return True

        try:
            for row in src.execute(f"{base} ORDER BY {order}"):
                if not take(row):
                    return True, last
            return True, last
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
        while last is not None:
            try:
                row = src.execute(f"{base} {beyond} ORDER BY {order} LIMIT 1", last).fetchone()
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                break
            if row is None or not take(row):
                break
        return False, last

    whole, forward_last = read(descending=False, stop=None)
    if whole:
        return
    report.lost_unknown = True
    _, backward_last = read(descending=True, stop=forward_last)
    if forward_last is None and backward_last is None:
        report.unreadable = True


def salvage(
    src: sqlite3.Connection, dst: sqlite3.Connection, *, tail_room: int = 0
) -> list[TableReport]:
    """Copy every readable row of every table the fresh schema has (by column name).
    ``tail_room``: how many rows the damaged file could hold at most (see
    :func:`_keep_ids_unique`)."""
    reports: list[TableReport] = []
    try:
        src_tables = _tables(src)
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        src_tables = {}
    for table in _tables(dst):
        report = TableReport(table)
        reports.append(report)
        if table not in src_tables:
            report.unreadable = not src_tables  # else a table the old schema lacked
            continue
        src_cols = dict(_columns(src, table))
        cols = [c for c, _ in _columns(dst, table) if c in src_cols]
        copier = _Copier(dst, report, cols)
        dst.execute("BEGIN")
        if "WITHOUT ROWID" in src_tables[table].upper():
            key = [c for c, pk in sorted(src_cols.items(), key=lambda kv: kv[1]) if pk]
            _salvage_keyed_table(src, copier, table, cols, key)
        else:
            _salvage_rowid_table(src, copier, table, cols)
        copier.flush()
        dst.execute("COMMIT")
    _keep_ids_unique(dst, reports, tail_room)
    return reports


def _keep_ids_unique(dst: sqlite3.Connection, reports: list[TableReport], tail_room: int) -> None:
    """Ids are never reused: record the highest id known to have existed (a lost range's
    end included) as the store's ``id_floor`` when it is above every saved id. When the
    newest rows are lost and nothing names them, their ids are unknown: the next ids then
    start ``tail_room`` (as many rows as the file could hold) above the highest known one;
    ids only promise to grow, so the jump costs nothing."""
    tasks = next((r for r in reports if r.name == "tasks"), None)
    if tasks is None:
        return
    top = max([b for _, b in tasks.lost_ranges if b is not None] + tasks.lost_known, default=0)
    tail_lost = tasks.unreadable or any(b is None for _, b in tasks.lost_ranges)
    known = dst.execute(
        "SELECT max(coalesce((SELECT max(id) FROM tasks), 0), "
        "coalesce((SELECT max(parent_id) FROM tasks), 0), "
        "coalesce((SELECT max(dep_id) FROM task_deps), 0), "
        "coalesce((SELECT CAST(CAST(value AS TEXT) AS INTEGER) FROM settings "
        "WHERE key = 'id_floor'), 0))"
    ).fetchone()[0]
    floor = max(top, int(known))
    if tail_lost:
        floor += tail_room
    saved_top = dst.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0]
    if floor > saved_top:
        dst.execute(
            "INSERT OR REPLACE INTO settings(key, value) VALUES ('id_floor', ?)",
            (str(floor).encode(),),
        )


# --- the whole repair -----------------------------------------------------------------------


def _most_rows(path: Path, header: bytes, page_size: int) -> int:
    """How many rows the file (and its -wal) could hold at most: a cell takes at least four
    bytes of a page."""
    counted = int.from_bytes(header[28:32], "big") if len(header) >= 32 else 0
    pages = max(counted, path.stat().st_size // page_size)
    wal = Path(f"{path}-wal")
    if wal.exists():
        pages += wal.stat().st_size // page_size
    return pages * (page_size // 4)


def _kept_name(path: Path, now: datetime) -> Path:
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return kept


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(path: Path, fresh: Path, kept: Path) -> None:
    """Keep the damaged file (and its side files, whose names follow it) as ``kept``, then
    put ``fresh`` in its place. The database name never points at nothing: the damaged file
    is hard-linked to ``kept`` first and replaced atomically; its ``-wal`` moves before the
    fresh file arrives (SQLite would replay a stale log into the fresh file)."""
    try:
        os.link(path, kept)
        linked = True
    except OSError:  # a file system without hard links
        linked = False
    for suffix in _SIDE_FILES:
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{kept}{suffix}"))
    if not linked:
        os.replace(path, kept)
    os.replace(fresh, path)


def repair(
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RepairReport:
    """Salvage a damaged database in place (see the module docstring). The caller holds the
    database lock. ``force`` also repairs a file that is sound or no longer recognisable
    (its first page is gone); ``dry_run`` salvages into a scratch file and reports what a
    repair would save, changing nothing."""
    started = time.perf_counter()
    db = Path(path).absolute()
    _vet(db, force)
    problems = check(db)
    report = RepairReport(db=db, healthy=not problems, problems=problems)
    if report.healthy and not force:
        report.elapsed_ms = round((time.perf_counter() - started) * 1000)
        return report
    header = _header(db)
    page_size = int.from_bytes(header[16:18], "big") if header.startswith(SQLITE_HEADER) else 0
    page_size = 65536 if page_size == 1 else page_size if page_size >= 512 else 2048
    fresh = db.with_name(f"{db.name}.repairing")
    dst = _create_fresh(fresh, page_size)
    try:
        try:
            src = _open_source(db)
        except sqlite3.DatabaseError:
            src = sqlite3.connect(":memory:")  # nothing readable: every table is lost
        try:
            report.tables = salvage(src, dst, tail_room=_most_rows(db, header, page_size))
        finally:
            src.close()
    finally:
        dst.close()
    if dry_run:
        for suffix in ("", *_SIDE_FILES):
            Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    else:
        _fsync(fresh)
        report.kept = _kept_name(db, now or datetime.now(UTC))
        _swap(db, fresh, report.kept)
    report.elapsed_ms = round((time.perf_counter() - started) * 1000)
    return report
