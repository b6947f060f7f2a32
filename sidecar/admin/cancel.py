"""``taskmill cancel ID``: cancel an active task and its active children (needs the lock)."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec

from sidecar.admin.common import add_db_arguments, exclusive, open_scheduler
from sidecar.admin.output import Output

__all__ = ["add_arguments", "run"]

NAME = "cancel"
HELP = "cancel an active task and its active children (app must be closed)"
DESCRIPTION = """\
Cancel an active task (and its active children), as the protocol's task.cancel does.
Changes the database: refuses (exit 3) while a sidecar uses it. Exit 5 if there is no such
task or it has already finished."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    p.add_argument("id", type=int, help="the task's id")


def run(args: argparse.Namespace, out: Output) -> int:
    async def work(db: Path) -> int:
        async with open_scheduler(db) as scheduler:
            await scheduler.cancel(args.id)
            task = await scheduler.get(args.id)
        out.document({"task": msgspec.to_builtins(task)})
        out.line(f"task {args.id} ({task.type}) is {task.state}.")
        return 0

    return exclusive(args, out, work)
