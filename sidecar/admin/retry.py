"""``taskmill retry ID``: run a failed or dead-lettered task again (needs the lock)."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from sidecar.admin.common import add_db_arguments, exclusive, open_scheduler
from sidecar.admin.output import Output

__all__ = ["add_arguments", "run"]

NAME = "retry"
HELP = "run a failed or dead-lettered task again (app must be closed)"
DESCRIPTION = """\
Put a failed or dead-lettered task back to pending (same id, attempt 0), as the protocol's
task.retry does; the app runs it when it next starts. Changes the database: refuses (exit 3)
while a sidecar uses it. Exit 5 if there is no such task or its state does not allow it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    p.add_argument("id", type=int, help="the task's id")


def run(args: argparse.Namespace, out: Output) -> int:
    async def work(db: Path) -> int:
        async with open_scheduler(db) as scheduler:
            result = await scheduler.retry(args.id)
            task = await scheduler.get(args.id)
        out.document(
            {"id": result.id, "outcome": result.outcome, "task": msgspec.to_builtins(task)}
        )
        out.line(
            f"task {args.id} ({task.type}) is {task.state} again; it runs when the app starts."
        )
        return 0

    return exclusive(args, out, work)
