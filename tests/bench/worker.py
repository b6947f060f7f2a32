"""Child-process entry: run ONE measurement and print its result as one JSON line.

    python -m tests.bench.worker '{"scenario": "A", "contender": "huey-normal", ...}'

A fresh interpreter per measurement keeps contenders from sharing threads, heap, caches or
GC state, makes resident-memory readings comparable, and contains a crash or hang of a
contender to its own row.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench import peers, taskmill_runs

RESULT_PREFIX = "BENCH-RESULT "

Runner = Callable[[dict[str, Any]], dict[str, Any]]


def _dir(p: dict[str, Any]) -> Path:
    return Path(p["dir"])


RUNNERS: dict[tuple[str, str], Runner] = {
    ("A", "taskmill"): lambda p: asyncio.run(taskmill_runs.sequential(_dir(p), p["n"], "normal")),
    ("A", "taskmill-full"): lambda p: asyncio.run(
        taskmill_runs.sequential(_dir(p), p["n"], "full")
    ),
    ("A", "huey"): lambda p: peers.huey_sequential(
        _dir(p), p["n"], p["sync"], p["workers"], p["timeout"]
    ),
    ("A", "persist-queue"): lambda p: peers.persistqueue_sequential(
        _dir(p), p["n"], p["workers"], p["timeout"]
    ),
    ("A", "raw-sqlite"): lambda p: peers.raw_sqlite_sequential(
        _dir(p), p["n"], p["workers"], p["timeout"]
    ),
    ("B", "taskmill"): lambda p: asyncio.run(
        taskmill_runs.concurrent(_dir(p), p["n"], p["submitters"])
    ),
    ("B", "huey"): lambda p: peers.huey_concurrent(
        _dir(p), p["n"], p["sync"], p["workers"], p["submitters"], p["timeout"]
    ),
    ("C", "taskmill"): lambda p: asyncio.run(taskmill_runs.batch(_dir(p), p["n"])),
    ("E", "build"): lambda p: asyncio.run(taskmill_runs.scale_build(Path(p["db"]), p["n"])),
    ("E", "probe"): lambda p: asyncio.run(
        taskmill_runs.scale_probe(Path(p["db"]), p["probes"], p["drain"], p["timeout"])
    ),
}


def run(params: dict[str, Any]) -> dict[str, Any]:
    runner = RUNNERS.get((params["scenario"], params["runner"]))
    if runner is None:
        return {"status": "error", "error": f"no runner for {params!r}"}
    try:
        return runner(params)
    except taskmill_runs.Unavailable as exc:
        return {"status": "unavailable", "reason": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}


def main() -> None:
    params = json.loads(sys.argv[1])
    result = run(params)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
