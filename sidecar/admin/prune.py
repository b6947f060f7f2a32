"""``taskmill prune``: remove old finished tasks (needs the lock)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidecar.admin.common import add_db_arguments, exclusive, open_scheduler
from sidecar.admin.output import Output

__all__ = ["add_arguments", "run"]

NAME = "prune"
HELP = "remove old finished tasks (app must be closed)"
DESCRIPTION = """\
Remove finished tasks older than --older-than-days or beyond the newest --keep; with
neither, the app's configured retention applies (as the protocol's task.prune). Ids are
never reused. Changes the database: refuses (exit 3) while a sidecar uses it."""

DAY_MS = 24 * 3600 * 1000


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    p.add_argument("--older-than-days", type=_non_negative, default=None, metavar="N",
                   help="remove finished tasks that finished more than N days ago")  # fmt: skip
    p.add_argument("--keep", type=_non_negative, default=None, metavar="N",
                   help="keep only the newest N finished tasks")  # fmt: skip


def run(args: argparse.Namespace, out: Output) -> int:
    days: int | None = args.older_than_days

    async def work(db: Path) -> int:
        async with open_scheduler(db) as scheduler:
            removed = await scheduler.prune(
                older_than_ms=None if days is None else days * DAY_MS, keep=args.keep
            )
        out.document({"removed": removed})
        out.line(f"removed {removed} finished task{'' if removed == 1 else 's'}.")
        return 0

    return exclusive(args, out, work)
