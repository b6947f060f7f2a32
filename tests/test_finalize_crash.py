"""A real crash between a parent's last child and its finalize phase.

A child process runs a parent whose run fans out three parts. While they run, the child pauses
the parent's type, so that once the last part completes the parent is due for its finalize
phase but cannot start it; the child then signals readiness and is killed with SIGKILL. The
test reopens the file in-process: the parent resumes in its finalize phase (not its first run),
which runs exactly once, to completion, with the counts of its children.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from taskmill_core import Scheduler, TaskContext

from .helpers import sigkill_when_ready

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
    pytest.mark.anyio,
]


CHILD = r"""
import json
import sys

import anyio

from taskmill_core import Scheduler, TaskSpec

DB, LOG, MARKER = sys.argv[1:4]


def record(**fields):
    with open(LOG, "a") as f:
        f.write(json.dumps(fields) + "\n")


parts_started = anyio.Event()
release_parts = anyio.Event()


async def upload(ctx, payload):
    record(ev="upload", phase=ctx.phase, attempt=ctx.attempt)
    if ctx.phase == "run":
        for n in range(3):
            await ctx.submit_child(TaskSpec(type="part", payload={"n": n}))
        return {"phase": "run"}
    return {"committed": ctx.children.completed, "where": "child"}


async def part(ctx, payload):
    record(ev="part", n=payload["n"])
    parts_started.set()
    await release_parts.wait()
    return payload["n"]


async def main():
    async with Scheduler(DB, load_entry_points=False) as sched:
        sched.register("upload", upload)
        sched.register("part", part)
        parent = await sched.submit(TaskSpec(type="upload", finalize=True))
        with anyio.fail_after(20):
            await parts_started.wait()
            while (await sched.get(parent.id)).state != "waiting":
                await anyio.sleep(0.005)
        await sched.pause_all(type="upload")
        release_parts.set()
        with anyio.fail_after(20):
            while (await sched.get(parent.id)).state != "pending":
                await anyio.sleep(0.005)
        record(ev="crashpoint", id=parent.id)
        open(MARKER, "w").close()
        await anyio.sleep_forever()


anyio.run(main)
"""


def _crash(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    db, log, marker = tmp_path / "tasks.db", tmp_path / "effects.jsonl", tmp_path / "ready"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    sigkill_when_ready(
        [str(script), str(db), str(log), str(marker)], marker, tmp_path / "child.out"
    )
    return db, [json.loads(line) for line in log.read_text().splitlines()]


async def test_sigkill_between_the_last_child_and_finalize_runs_finalize_once(
    tmp_path: Path,
) -> None:
    db, records = _crash(tmp_path)
    assert records[-1]["ev"] == "crashpoint"
    parent_id = records[-1]["id"]
    assert [r for r in records if r["ev"] == "upload"] == [
        {"ev": "upload", "phase": "run", "attempt": 0}
    ]
    assert sorted(r["n"] for r in records if r["ev"] == "part") == [0, 1, 2]

    finalized: list[tuple[str, int, int]] = []

    async def upload(ctx: TaskContext, payload: Any) -> Any:
        finalized.append((ctx.phase, ctx.attempt, ctx.children.completed))
        return {"committed": ctx.children.completed, "where": "reopened"}

    async with Scheduler(db, load_entry_points=False) as sched:
        info = await sched.get(parent_id)
        assert (info.state, info.phase) == ("pending", "finalize")
        sched.register("upload", upload)
        await sched.resume_all(type="upload")  # (the child's pause was persisted)
        await sched.wait_idle()
        info = await sched.get(parent_id)
        assert info.state == "completed"
        assert info.result == {"committed": 3, "where": "reopened"}
        kids = (await sched.list_tasks(parent_id=parent_id)).tasks
        assert sorted(k.state for k in kids) == ["completed"] * 3
    assert finalized == [("finalize", 0, 3)]
