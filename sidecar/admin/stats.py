"""``taskmill stats``: tasks per type and state, and how long finished ones ran (read-only)."""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.admin.common import add_db_arguments, read_only, table
from sidecar.admin.output import Output

if TYPE_CHECKING:
    from taskmill_core.store import ReadOnlyStore

__all__ = ["add_arguments", "run"]

NAME = "stats"
HELP = "tasks per type and state, and run times (read-only)"
DESCRIPTION = """\
For each task type: how many tasks are in each state, and the median and longest run time
of the finished ones. Read-only: works while the app runs."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_db_arguments(p)
    p.add_argument("--type", default=None, metavar="T", help="only this task type")


def run(args: argparse.Namespace, out: Output) -> int:
    return read_only(args, out, lambda store, db: _stats(store, db, args.type, out))


async def _stats(store: ReadOnlyStore, db: Path, only: str | None, out: Output) -> int:
    per_type: dict[str, dict[str, Any]] = defaultdict(lambda: {"counts": {}, "durations": []})
    for task_type, state, count in store.counts_by_type():
        if only is None or task_type == only:
            per_type[task_type]["counts"][state] = count
    for task_type, _state, duration, _io in await store.history(only):
        if duration is not None:
            per_type[task_type]["durations"].append(duration)
    types: dict[str, Any] = {}
    for task_type in sorted(per_type):
        entry = per_type[task_type]
        durations: list[int] = entry["durations"]
        types[task_type] = {
            "counts": entry["counts"],
            "total": sum(entry["counts"].values()),
            "finishedWithDuration": len(durations),
            "medianMs": int(statistics.median(durations)) if durations else None,
            "maxMs": max(durations) if durations else None,
        }
    out.document({"db": str(db), "types": types})
    if not types:
        out.line("no tasks")
        return 0
    rows = [
        (
            name,
            t["total"],
            ", ".join(f"{s} {n}" for s, n in sorted(t["counts"].items())),
            t["medianMs"],
            t["maxMs"],
        )
        for name, t in types.items()
    ]
    table(out, ["type", "tasks", "by state", "median ms", "max ms"], rows)
    return 0
