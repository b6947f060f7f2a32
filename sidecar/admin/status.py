"""``taskmill status``: how many tasks in each state, and whether a sidecar has the file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar.admin.common import add_db_arguments, read_only, table
from sidecar.admin.output import Output

if TYPE_CHECKING:
    from taskmill_core.store import ReadOnlyStore

__all__ = ["add_arguments", "run"]

NAME = "status"
HELP = "tasks per state, and the sidecar using the database (read-only)"
DESCRIPTION = """\
Count the tasks in each state and name the sidecar that holds the database, if one does.
Read-only: works while the app runs."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)


def run(args: argparse.Namespace, out: Output) -> int:
    return read_only(args, out, lambda store, db: _status(store, db, out))


async def _status(store: ReadOnlyStore, db: Path, out: Output) -> int:
    from sidecar.lock import read_holder

    counts = await store.counts()
    holder = read_holder(db)
    live = holder if holder is not None and holder.alive() else None
    out.document(
        {
            "db": str(db),
            "sidecar": live.to_json() if live else None,
            "counts": counts,
            "total": sum(counts.values()),
        }
    )
    out.line(f"database: {db}")
    out.line(f"in use by: pid {live.pid}" if live else "in use by: nobody (no sidecar runs)")
    out.line()
    table(out, ["state", "tasks"], [*counts.items(), ("total", sum(counts.values()))])
    return 0
