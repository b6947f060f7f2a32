"""``taskmill repair --db PATH``: save what is readable of a damaged database.

The sidecar refuses a damaged file (exit 4) and names this command; the salvage itself is
:func:`taskmill_core.repair.repair`. It needs the database lock, so it never runs beside a
sidecar that uses the file.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from sidecar.admin.output import Output
from sidecar.lock import AlreadyLocked, DatabaseLock

__all__ = ["add_arguments", "repair_command", "run"]

NAME = "repair"
HELP = "save every readable row of a damaged database into a fresh one"
DESCRIPTION = """\
Check the database (PRAGMA quick_check); if it is damaged, copy every readable task,
dependency and setting (every table the schema has) into a fresh database, keep the damaged
file beside it as <name>.corrupt-<time> (with its -wal), and put the fresh one in its place.
Reports what it saved and what it lost. Refuses to run while a sidecar uses the database."""


def repair_command(db: Path) -> str:
    """The command line a person runs to repair ``db``, as this installation spells it (the
    frozen build has no ``taskmill`` script: its own binary takes ``admin``)."""
    if getattr(sys, "frozen", False):
        argv = [sys.executable, "admin", NAME, "--db", str(db)]
    else:
        argv = ["taskmill", NAME, "--db", str(db)]
    return subprocess.list2cmdline(argv) if sys.platform == "win32" else shlex.join(argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sidecar.__main__ import default_db

    p.add_argument("--db", type=Path, default=None,
                   help=f"the database file (default: {default_db()})")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="report what a repair would save; change nothing")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="rebuild even a sound file, or one whose first page is gone")  # fmt: skip


def run(args: argparse.Namespace, out: Output) -> int:
    from sidecar.__main__ import default_db
    from taskmill_core.errors import NotATaskmillDatabase
    from taskmill_core.repair import repair

    db: Path = (args.db or default_db()).expanduser().absolute()
    if db.is_dir():
        out.fail(f"{db} is a directory, not a database file; nothing was changed.")
        return 4
    if not db.exists():
        out.fail(f"{db} does not exist; nothing to repair.")
        return 4
    lock = DatabaseLock(db)
    try:
        lock.acquire()
    except AlreadyLocked:
        out.fail(f"A taskmill sidecar is using {db}; quit the app that runs it, then repair.")
        return 3
    try:
        report = repair(db, force=args.force, dry_run=args.dry_run)
    except NotATaskmillDatabase as exc:
        out.fail(f"{exc.message}; the file was left untouched.")
        return 4
    finally:
        lock.release(remove_created=True)
    out.document(report.to_json() | {"dryRun": args.dry_run})
    if report.healthy and not report.tables:
        out.line(f"{db} is sound (quick_check: ok): nothing to repair.")
        return 0
    verb = "Would save" if args.dry_run else "Saved"
    out.line(f"{db}: damaged ({'; '.join(report.problems[:3])}).")
    for t in report.tables:
        text = f"  {t.name}: {verb.lower()} {t.saved} row{'s' if t.saved != 1 else ''}"
        if t.rejected:
            text += f", refused {t.rejected} unreadable or invalid"
        if t.unreadable:
            text += ", the rest is unreadable (lost)"
        elif t.lost_ranges:
            bound = t.lost_at_most
            ranges = ", ".join(
                f"{a + 1}-{b}" if b is not None else f"after {a}" for a, b in t.lost_ranges
            )
            text += f", lost {'an unknown number' if bound is None else f'at most {bound}'}"
            text += f" (rowids {ranges})"
        elif t.lost_unknown:
            text += ", lost the rows between two damaged spots (count unknown)"
        out.line(text)
    if args.dry_run:
        out.line(f"Dry run: nothing was changed ({report.elapsed_ms} ms).")
    else:
        out.line(f"The damaged file is kept as {report.kept}.")
        out.line(f"{db} is a fresh database now; the app can start ({report.elapsed_ms} ms).")
    return 0
