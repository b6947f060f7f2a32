"""``taskmill list``: the newest tasks, filtered by state and type (read-only)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import msgspec

from sidecar.admin.common import add_db_arguments, read_only, table, when
from sidecar.admin.output import Output

if TYPE_CHECKING:
    from taskmill_core.store import ReadOnlyStore

__all__ = ["add_arguments", "run"]

NAME = "list"
HELP = "the newest tasks, filtered by state and type (read-only)"
DESCRIPTION = """\
List tasks, newest first. Read-only: works while the app runs."""


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text} is not between 1 and 10000")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    from taskmill_core.types import ACTIVE_STATES, FINAL_STATES

    p.add_argument("--state", action="append", default=[], metavar="S",
                   choices=(*ACTIVE_STATES, *FINAL_STATES),
                   help="only tasks in this state (repeatable): "
                   + ", ".join((*ACTIVE_STATES, *FINAL_STATES)))  # fmt: skip
    p.add_argument("--type", default=None, metavar="T", help="only tasks of this type")
    p.add_argument("--limit", type=_limit, default=50, metavar="N",
                   help="at most N tasks (default 50)")  # fmt: skip


def run(args: argparse.Namespace, out: Output) -> int:
    return read_only(args, out, lambda store, db: _list(store, args, out))


async def _list(store: ReadOnlyStore, args: argparse.Namespace, out: Output) -> int:
    tasks = await store.list_tasks(states=args.state, task_type=args.type, limit=args.limit)
    out.document({"tasks": msgspec.to_builtins(tasks)})
    if not tasks:
        out.line("no tasks match")
        return 0
    rows = [
        (t.id, t.type, t.state, t.priority, t.attempt, when(t.created_at), t.label or "")
        for t in tasks
    ]
    table(out, ["id", "type", "state", "priority", "attempt", "created", "label"], rows)
    return 0
