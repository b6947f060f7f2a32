"""Damaged databases for tests: a real taskmill file, one page overwritten with random bytes
(what a bad sector or a power cut on cheap storage leaves behind)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

import anyio

from taskmill_core import TaskSpec

from .helpers import open_scheduler

UNRUN = "nobody.runs"  # a type no executor takes: its tasks stay pending


def build_database(path: Path, tasks: int = 3000) -> None:
    """A real database made through the scheduler and closed cleanly: ``tasks`` pending
    tasks, a few completed ones, dependencies and a persisted setting."""

    async def build() -> None:
        async with open_scheduler(path) as (sched, _, _):
            await sched.configure(max_concurrency=3)
            done = await sched.submit_batch([TaskSpec(type="noop") for _ in range(20)])
            await sched.wait_idle()
            first = done[0].id
            for start in range(0, tasks, 10_000):  # (a batch holds at most 10,000)
                specs = [
                    TaskSpec(type=UNRUN, payload={"i": i, "note": f"task number {i:06d}"})
                    for i in range(start, min(tasks, start + 10_000))
                ]
                await sched.submit_batch(specs)
            await sched.submit(TaskSpec(type=UNRUN, depends_on=[first + 1, first + 2]))

    anyio.run(build)


def page_size(path: Path) -> int:
    size = int.from_bytes(path.read_bytes()[16:18], "big")
    return 65536 if size == 1 else size


def readable_tasks(path: Path) -> dict[int, tuple[Any, ...]]:
    """Every task row that can still be read, probed one id at a time (each probe is a
    b-tree descent of its own, so damage elsewhere does not hide it)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    db.execute("PRAGMA writable_schema=ON")  # tolerate a header that promises more pages
    rows: dict[int, tuple[Any, ...]] = {}
    try:
        for task_id in range(1, 200_000):
            try:
                row = db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
            except sqlite3.DatabaseError:
                continue
            if row is not None:
                rows[task_id] = tuple(row)
            elif task_id > max(rows, default=0) + 1000:
                break
    finally:
        db.close()
    return rows


def a_page_of_tasks(path: Path, first: int | None = None, seed: int = 4) -> int:
    """The number (0-based) of the first page from ``first`` (default: the middle of the
    file) whose loss makes task rows unreadable, found on a scratch copy of the file."""
    size = page_size(path)
    data = path.read_bytes()
    before = len(readable_tasks(path))
    pages = len(data) // size
    scratch = path.with_name(path.name + ".scratch")
    rnd = random.Random(seed)
    try:
        for page in range(pages // 2 if first is None else first, pages):
            spoiled = bytearray(data)
            spoiled[page * size : (page + 1) * size] = rnd.randbytes(size)
            scratch.write_bytes(spoiled)
            if len(readable_tasks(scratch)) < before:
                return page
    finally:
        scratch.unlink(missing_ok=True)
    raise AssertionError("no page of the file holds task rows")


def overwrite_page(path: Path, page: int, seed: int = 4) -> None:
    """Overwrite page ``page`` (0-based) of the file in place with random bytes."""
    size = page_size(path)
    with open(path, "r+b") as f:
        f.seek(page * size)
        f.write(random.Random(seed).randbytes(size))


def overwrite_a_page(path: Path) -> int:
    """Overwrite one page in the middle of the file that holds task rows with random bytes;
    returns its number (0-based). The file must be closed (no ``-wal``)."""
    assert not Path(f"{path}-wal").exists()
    page = a_page_of_tasks(path)
    overwrite_page(path, page)
    return page


def build_dependencies(path: Path, dependents: int = 8, each: int = 1000) -> None:
    """A real database whose ``task_deps`` table spans many pages: ``dependents`` tasks that
    each wait for ``each`` tasks of their own."""

    async def build() -> None:
        async with open_scheduler(path) as (sched, _, _):
            for _ in range(dependents):
                deps = await sched.submit_batch([TaskSpec(type=UNRUN) for _ in range(each)])
                await sched.submit(TaskSpec(type=UNRUN, depends_on=[r.id for r in deps]))

    anyio.run(build)


def readable_dependencies(path: Path, pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The (task, dependency) rows of ``pairs`` that can still be read, one lookup each in
    the table's own b-tree (its primary key, not the index on ``dep_id``)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    found: set[tuple[int, int]] = set()
    try:
        for pair in pairs:
            try:
                row = db.execute(
                    "SELECT 1 FROM task_deps INDEXED BY sqlite_autoindex_task_deps_1 "
                    "WHERE task_id=? AND dep_id=?",
                    pair,
                ).fetchone()
            except sqlite3.DatabaseError:
                continue
            if row is not None:
                found.add(pair)
    finally:
        db.close()
    return found
