"""``taskmill get ID``: one task, every field (read-only)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

import msgspec

from sidecar.admin.common import REFUSED, add_db_arguments, read_only, when
from sidecar.admin.output import Output

if TYPE_CHECKING:
    from taskmill_core.store import ReadOnlyStore

__all__ = ["add_arguments", "run"]

NAME = "get"
HELP = "one task, every field (read-only)"
DESCRIPTION = """\
Show one task as stored. Read-only: works while the app runs. Exit 5 if there is no such
task."""

_TIMES = ("createdAt", "runAt", "startedAt", "finishedAt")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    p.add_argument("id", type=int, help="the task's id")


def run(args: argparse.Namespace, out: Output) -> int:
    return read_only(args, out, lambda store, db: _get(store, args.id, out))


async def _get(store: ReadOnlyStore, task_id: int, out: Output) -> int:
    from taskmill_core.errors import TaskNotFound

    try:
        task = store.get(task_id)
    except TaskNotFound:
        out.fail(f"There is no task {task_id} in {store.path}.")
        return REFUSED
    doc = msgspec.to_builtins(task)
    out.document(doc)
    width = max(len(k) for k in doc)
    for key, value in doc.items():
        text = when(value) if key in _TIMES else value
        if not isinstance(text, str):
            text = json.dumps(text)
        out.line(f"{key.ljust(width)}  {text}")
    return 0
