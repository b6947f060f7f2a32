"""``taskmill doctor``: is the database sound, and who uses it (read-only).

Reports the integrity check (``PRAGMA quick_check``), the schema version against the one
this build knows, the size of the file and of its write-ahead log, and which process holds
the database lock (as the lock file records it: :func:`sidecar.lock.read_holder`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sidecar.admin.common import add_db_arguments, database
from sidecar.admin.output import Output

__all__ = ["add_arguments", "run"]

NAME = "doctor"
HELP = "integrity, schema version, WAL size, who holds the lock (read-only)"
DESCRIPTION = """\
Check the database (PRAGMA quick_check) and report its schema version, the size of the file
and of its write-ahead log (-wal), and which process holds the database lock. Read-only:
works while the app runs. Exit 0 if the database is sound, 4 if it is damaged, missing or
not a taskmill database (the report says which; `taskmill repair` saves a damaged one)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)


def run(args: argparse.Namespace, out: Output) -> int:
    db = database(args, out)
    if db is None:
        return 2
    report = examine(db)
    out.document(report)
    holder = report["lock"]
    out.line(f"database:   {db}")
    if not report["exists"]:
        out.line("            does not exist")
        out.fail(f"{db} does not exist.")
        return 4
    out.line(f"size:       {report['sizeBytes']} bytes, WAL {report['walBytes']} bytes")
    version, known = report["schemaVersion"], report["schemaVersionKnown"]
    out.line(f"schema:     version {version} (this build knows {known})")
    problems: list[str] = report["problems"]
    out.line("integrity:  ok" if not problems else f"integrity:  DAMAGED: {problems[0]}")
    if holder["pid"] is None:
        out.line("lock:       free (no sidecar uses the database)")
    elif holder["alive"]:
        out.line(f"lock:       held by pid {holder['pid']}")
    else:
        out.line(f"lock:       free (pid {holder['pid']} held it and is gone)")
    if problems:
        from sidecar.admin.repair import repair_command

        out.fail(f"{db} is damaged; run `{repair_command(db)}` once the app has quit.")
        return 4
    if report["error"]:
        out.fail(f"{report['error']}.")
        return 4
    return 0


def examine(db: Path) -> dict[str, Any]:
    """Everything ``doctor`` reports, as the JSON document it prints with ``--json``."""
    from sidecar.lock import read_holder
    from taskmill_core.errors import NotATaskmillDatabase
    from taskmill_core.store import SCHEMA_VERSION, ReadOnlyStore
    from taskmill_core.store.repair import check

    holder = read_holder(db)
    wal = Path(f"{db}-wal")
    report: dict[str, Any] = {
        "db": str(db),
        "exists": db.is_file(),
        "sizeBytes": db.stat().st_size if db.is_file() else None,
        "walBytes": wal.stat().st_size if wal.is_file() else 0,
        "schemaVersion": None,
        "schemaVersionKnown": SCHEMA_VERSION,
        "problems": [],
        "error": None,
        "lock": {
            "pid": holder.pid if holder else None,
            "alive": holder.alive() if holder else False,
        },
    }
    if not report["exists"]:
        return report
    report["problems"] = check(db)
    if report["problems"]:
        return report
    import anyio

    async def version() -> int:
        store = ReadOnlyStore(db)
        await store.open()
        try:
            return store.schema_version()
        finally:
            await store.close()

    try:
        report["schemaVersion"] = anyio.run(version)
    except NotATaskmillDatabase as exc:
        report["error"] = exc.message
    return report
