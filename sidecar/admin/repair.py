"""``taskmill repair --db PATH``: save what is readable of a damaged database.

The sidecar refuses a damaged file (exit 4) and names this command; the salvage itself is
:func:`taskmill_core.store.repair.repair`. It needs the database lock, so it never runs beside a
sidecar that uses the file.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sidecar.admin.common import add_db_arguments, database, take_lock
from sidecar.admin.output import Output

if TYPE_CHECKING:  # the sidecar imports this module for repair_command alone
    from taskmill_core.store.repair import TableReport

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
    add_db_arguments(p)
    p.add_argument("--dry-run", action="store_true",
                   help="report what a repair would save; change nothing")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="rebuild even a sound file, or one whose first page is gone")  # fmt: skip


def run(args: argparse.Namespace, out: Output) -> int:
    from taskmill_core.errors import NotATaskmillDatabase
    from taskmill_core.store.repair import repair  # (imports the store: only when it runs)

    db = database(args, out)
    if db is None:
        return 2
    if db.is_dir():
        out.fail(f"{db} is a directory, not a database file; nothing was changed.")
        return 4
    if not db.exists():
        out.fail(f"{db} does not exist; nothing to repair.")
        return 4
    lock = take_lock(
        db, out, f"A taskmill sidecar is using {db}; quit the app that runs it, then repair."
    )
    if lock is None:
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
    verb = "would save" if args.dry_run else "saved"
    if report.healthy:
        out.line(f"{db} is sound; rebuilt as asked (--force).")
    else:
        out.line(f"{db} is damaged ({report.problems[0].splitlines()[-1]}).")
    for t in sorted(report.tables, key=lambda t: t.name != "tasks"):
        out.line(f"  {t.name}: {verb} {t.saved}{_losses(t)}")
    if args.dry_run:
        out.line(f"Dry run: nothing was changed ({report.elapsed_ms} ms).")
    else:
        out.line(f"The old file is kept as {report.kept}.")
        out.line(f"{db} is a fresh database now; the app can start ({report.elapsed_ms} ms).")
    return 0


def _losses(t: TableReport) -> str:
    """What a table lost, for people: counts and the rowid ranges."""
    text = f", refused {t.rejected} unreadable or invalid" if t.rejected else ""
    known = len(t.lost_known)
    if t.unreadable:
        named = f"; its indexes name {known} of the lost rows" if known else ""
        return text + f", the rest is unreadable{named}"
    if t.lost_unknown:
        return text + ", lost the rows between two damaged spots (how many is unknown)"
    if not t.lost_ranges:
        return text
    ranges = ", ".join(f"{a + 1}-{b}" if b is not None else f"above {a}" for a, b in t.lost_ranges)
    bound = t.lost_at_most
    if bound is not None and bound == known:
        return text + f", lost {bound} (rowids {_runs(t.lost_known)})"
    if bound is not None:
        return text + f", lost {known} to {bound} (rowids {ranges})"
    return text + f", lost {known} or more (rowids {ranges})"


def _runs(ids: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)
