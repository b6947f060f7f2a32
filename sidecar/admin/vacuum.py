"""``taskmill vacuum``: rebuild the file compactly, giving free pages back (needs the lock)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidecar.admin.common import add_db_arguments, exclusive
from sidecar.admin.output import Output

__all__ = ["add_arguments", "run"]

NAME = "vacuum"
HELP = "rebuild the database compactly (app must be closed)"
DESCRIPTION = """\
Rebuild the database file (SQLite's VACUUM), giving the space of deleted tasks back to the
file system; run it after a large prune. Changes the database: refuses (exit 3) while a
sidecar uses it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)


def _size(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return db.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)


def run(args: argparse.Namespace, out: Output) -> int:
    async def work(db: Path) -> int:
        from taskmill_core.store import SqliteStore

        before = _size(db)
        store = SqliteStore(db)
        await store.open()
        try:
            await store.vacuum()
        finally:
            await store.close()
        after = _size(db)
        out.document({"beforeBytes": before, "afterBytes": after})
        out.line(f"{db}: {before} bytes before, {after} after.")
        return 0

    return exclusive(args, out, work)
