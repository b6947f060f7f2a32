"""What the admin commands share: which database, how they open it, and human tables.

Two ways in, chosen by what a command does:

* :func:`read_only` — status, list, get, stats, doctor: a read-only connection
  (:class:`~taskmill_core.store.ReadOnlyStore`), a WAL reader beside a running sidecar. It
  never takes the lock and never writes, so it works while the app runs.
* :func:`exclusive` — retry, cancel, prune, vacuum: the database lock first (a running
  sidecar holds it: exit 3, nothing done), then the real :class:`~taskmill_core.Scheduler`
  (:func:`open_scheduler`) or store, so the same rules apply as in the sidecar.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sidecar.admin.output import Output
from sidecar.dbpath import MISSING_SENTENCE, add_db_arguments, resolve_db

if TYPE_CHECKING:
    from sidecar.lock import DatabaseLock
    from taskmill_core.scheduler import Scheduler
    from taskmill_core.store import ReadOnlyStore

__all__ = [
    "REFUSED",
    "add_db_arguments",
    "database",
    "exclusive",
    "open_scheduler",
    "read_only",
    "table",
    "take_lock",
    "when",
]

# The exit code of an operation the scheduler refused (no such task, or a state that does
# not allow it); see EXIT_CODES in sidecar.admin.__main__.
REFUSED: Final = 5


def database(args: argparse.Namespace, out: Output) -> Path | None:
    """The database ``--db``/``--app-id`` name; None (after one sentence) if neither."""
    db = resolve_db(args)
    if db is None:
        out.fail(f"{args.prog}: bad command line: {MISSING_SENTENCE}.")
    return db


def read_only(
    args: argparse.Namespace,
    out: Output,
    work: Callable[[ReadOnlyStore, Path], Awaitable[int]],
) -> int:
    """Run ``work`` over a read-only view of the database; the exit code."""
    import anyio

    from taskmill_core.errors import NotATaskmillDatabase
    from taskmill_core.store import ReadOnlyStore

    db = database(args, out)
    if db is None:
        return 2

    async def main() -> int:
        store = ReadOnlyStore(db)
        await store.open()
        try:
            return await work(store, db)
        finally:
            await store.close()

    try:
        return anyio.run(main)
    except NotATaskmillDatabase as exc:
        out.fail(f"{exc.message}.")
        return 4


def take_lock(db: Path, out: Output, refusal: str) -> DatabaseLock | None:
    """The database lock, or None after saying ``refusal`` (a sidecar holds it: exit 3)."""
    from sidecar.lock import AlreadyLocked, DatabaseLock

    lock = DatabaseLock(db)
    try:
        lock.acquire()
    except AlreadyLocked:
        out.fail(refusal)
        return None
    return lock


def exclusive(
    args: argparse.Namespace,
    out: Output,
    work: Callable[[Path], Awaitable[int]],
) -> int:
    """Take the database lock, run ``work``, release; exit 3 if a sidecar holds the lock."""
    import anyio

    from taskmill_core.errors import InvalidState, NotATaskmillDatabase, TaskNotFound

    db = database(args, out)
    if db is None:
        return 2
    if not db.is_file():
        out.fail(f"{db} does not exist or is not a file; nothing was changed.")
        return 4
    lock = take_lock(
        db,
        out,
        f"A taskmill sidecar is using {db}; {args.command} changes the database, so quit "
        "the app that runs it first (status, list, get, stats and doctor work meanwhile).",
    )
    if lock is None:
        return 3
    try:
        return anyio.run(work, db)
    except (TaskNotFound, InvalidState) as exc:
        out.fail(f"{exc.message}; nothing was changed.")
        return REFUSED
    except NotATaskmillDatabase as exc:
        out.fail(f"{exc.message}; the file was left untouched.")
        return 4
    finally:
        lock.release(remove_created=True)


@asynccontextmanager
async def open_scheduler(db: Path) -> AsyncIterator[Scheduler]:
    """The real scheduler over ``db``, running nothing: every executor is unregistered, so
    pending tasks stay pending; operations follow the sidecar's rules. (Opening recovers
    interrupted work, as a sidecar's start would.)"""
    from taskmill_core.scheduler import Scheduler

    scheduler = Scheduler(db, load_entry_points=False, io_monitor=False)
    for task_type in scheduler.executor_types():
        scheduler.unregister(task_type)
    await scheduler.open()
    try:
        yield scheduler
    finally:
        await scheduler.close(grace_ms=0)


def table(out: Output, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain text table: left-aligned columns, a header line, '-' for None."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    out.line("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in cells:
        out.line("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def when(ms: int | None) -> str | None:
    """A time in milliseconds since the epoch, for people (UTC, to the second)."""
    if ms is None:
        return None
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%SZ")
