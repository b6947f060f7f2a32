"""A real crash while a schedule fires: a child process is SIGKILLed at a random moment, again
and again, and the database must show every firing exactly once.

The child runs a scheduler on a clock 100 times faster than real time (a 1 s schedule fires
every 10 ms), so a kill often lands while a firing is being written. A firing and the task it
submits are one transaction: after each kill the schedule's counters and its tasks must agree
(no task without its count, no count without its task), and no grid slot may hold two tasks.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from .helpers import sigkill_when_ready

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

EVERY_MS = 1000
SPEED = 100

# argv: db path, readiness marker, base epoch ms, base real time (s).
CHILD = r"""
import sys
import time
from pathlib import Path

import anyio

from taskmill_core import Scheduler, ScheduleNotFound, TaskSpec

DB, MARKER = sys.argv[1], Path(sys.argv[2])
BASE_MS, BASE_S = int(sys.argv[3]), float(sys.argv[4])
SPEED, EVERY = int(sys.argv[5]), int(sys.argv[6])


class FastClock:
    def now_ms(self):
        return BASE_MS + int((time.time() - BASE_S) * 1000 * SPEED)

    async def wait(self, event, deadline_ms):
        if deadline_ms is None:
            await event.wait()
            return
        delay = (deadline_ms - self.now_ms()) / 1000 / SPEED
        if delay <= 0:
            return
        with anyio.move_on_after(delay):
            await event.wait()

    async def sleep(self, ms):
        await anyio.sleep(ms / 1000 / SPEED)


async def main():
    async with Scheduler(DB, clock=FastClock(), load_entry_points=False, io_monitor=False) as s:
        try:
            await s.get_schedule("tick")
        except ScheduleNotFound:
            await s.schedule(TaskSpec(type="noop"), every_ms=EVERY, name="tick")
        MARKER.write_text("ready")
        await anyio.sleep_forever()


anyio.run(main)
"""


def _run_and_kill(script: Path, db: Path, marker: Path, base_ms: int, base_s: float) -> None:
    marker.unlink(missing_ok=True)
    args = [str(db), str(marker), str(base_ms), str(base_s), str(SPEED), str(EVERY_MS)]
    # some firings, then a kill anywhere
    then = random.uniform(0.05, 0.4)
    sigkill_when_ready([str(script), *args], marker, db.with_suffix(".out"), then_wait=then)


def _check(db: Path) -> int:
    """The schedule and its tasks agree; returns how many firings there were."""
    con = sqlite3.connect(db)
    try:
        sid, start_at, next_at, runs, last_task_id = con.execute(
            "SELECT id, start_at, next_at, runs, last_task_id FROM schedules WHERE name='tick'"
        ).fetchone()
        tasks = con.execute(
            "SELECT id, created_at FROM tasks WHERE json_extract(tags, '$.schedule') = ? "
            "ORDER BY id",
            (str(sid),),
        ).fetchall()
    finally:
        con.close()
    assert runs == len(tasks)  # no firing lost, none counted twice
    if tasks:
        assert last_task_id == tasks[-1][0]
        slots = [(created - start_at) // EVERY_MS for _, created in tasks]
        assert len(set(slots)) == len(slots)  # no grid slot fired twice
        assert next_at > tasks[-1][1]
    assert (next_at - start_at) % EVERY_MS == 0  # still on the grid
    return len(tasks)


def test_sigkill_never_loses_or_doubles_a_firing(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db, marker = tmp_path / "tasks.db", tmp_path / "ready"
    base_ms, base_s = 1_700_000_000_000, time.time()
    seen = 0
    for _ in range(4):
        _run_and_kill(script, db, marker, base_ms, base_s)
        firings = _check(db)
        assert firings >= seen  # what was committed stays
        seen = firings
    assert seen >= 10  # the kills landed among many firings
