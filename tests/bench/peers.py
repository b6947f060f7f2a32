"""The peer contenders: huey ``SqliteHuey``, persist-queue ``SQLiteAckQueue``, raw sqlite3.

Every contender runs the same workload as taskmill: ``n`` durable submits (one transaction
each, returned one by one), then a drain by ``workers`` concurrent workers running a no-op task
function that only counts. Timings start just before the first submit (after the database is
created and opened) and stop when the last task has been recorded as done.

How each peer is driven, and why that is faithful to it:

* **huey** -- tasks are enqueued by calling the ``@huey.task()`` function (the documented
  producer API). The drain uses huey's *real* consumer machinery in-process:
  ``huey.create_consumer(workers=w, worker_type="thread", periodic=False)`` and
  ``consumer.start()``; its ``Worker.loop`` does ``huey.dequeue()`` + ``huey.execute(task)``,
  exactly what ``huey_consumer -w <w> -k thread`` does (its scheduler thread runs too; periodic
  tasks are off because there are none). Completion is counted with huey's ``SIGNAL_COMPLETE``
  signal, which fires after huey's own post-execute bookkeeping (revoke-key cleanup, result
  store), so "done" means what huey means by done. ``SqliteStorage`` opens one shared
  connection (guarded by a lock) in WAL mode (``journal_mode="wal"`` is its default).
  Durability: huey leaves ``synchronous`` at SQLite's default (FULL, 2) unless ``fsync=`` is
  given, and that switch only knows FULL (True) or OFF (False); NORMAL therefore needs a tiny
  storage subclass adding ``pragma synchronous=NORMAL`` to the connection it creates. Both
  settings are read back from the live connection and reported.
* **persist-queue** -- ``SQLiteAckQueue(path, multithreading=True)`` at its defaults (WAL,
  SQLite's default ``synchronous=FULL``, a commit per ``put`` and per status change); the drain
  is ``workers`` threads doing ``get(block=False)`` -> task -> ``ack(item)``.
* **raw sqlite3 floor** -- the least a durable queue must do: WAL, ``synchronous=NORMAL``, one
  autocommit transaction per state change (insert; claim = ``UPDATE ... RETURNING`` of the head
  of a partial (priority, id) index; complete), one connection shared under a lock (huey's
  model). No serialization framework, no bookkeeping.

Thread count: with the GIL on a 2-core machine, 8 Python threads hammering one locked SQLite
connection are markedly *slower* than 1 (huey NORMAL drains ~2x faster with ``-w 1``, which is
also huey's default). The harness therefore runs the thread-based peers both at the scenario's
concurrency (8) and at 1, and the targets compare taskmill against the *better* of the two, so
no peer is handicapped by the concurrency the scenario asks for.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class _Countdown:
    """Thread-safe completion counter that sets ``done`` when ``target`` tasks finished."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self.count += 1
            if self.count >= self.target:
                self.done.set()


def _shares(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


# --- huey ---------------------------------------------------------------------------------


def _make_huey(workdir: Path, sync: str, countdown: _Countdown) -> tuple[Any, Callable[[], Any]]:
    from huey import SqliteHuey
    from huey.signals import SIGNAL_COMPLETE
    from huey.storage import SqliteStorage

    class NormalSyncSqliteStorage(SqliteStorage):  # type: ignore[misc]
        """huey's SqliteStorage with ``synchronous=NORMAL`` (its ``fsync`` flag can't say so)."""

        def _create_connection(self) -> sqlite3.Connection:
            conn: sqlite3.Connection = super()._create_connection()
            conn.execute("pragma synchronous=NORMAL")
            return conn

    kwargs: dict[str, Any] = {}
    if sync == "normal":
        kwargs["storage_class"] = NormalSyncSqliteStorage
    elif sync != "full":
        raise ValueError(f"unknown huey durability {sync!r}")
    # journal_mode="wal" is SqliteStorage's default; spelled out so the comparison is explicit.
    huey = SqliteHuey("bench", filename=str(workdir / "huey.db"), journal_mode="wal", **kwargs)

    @huey.signal(SIGNAL_COMPLETE)
    def _on_complete(signal: str, task: Any, *args: Any, **kw: Any) -> None:
        countdown.tick()

    @huey.task()
    def noop() -> None:
        return None

    return huey, noop


def _huey_pragmas(huey: Any) -> dict[str, Any]:
    conn = huey.storage.conn
    return {
        "journal_mode": conn.execute("pragma journal_mode").fetchone()[0],
        "synchronous": conn.execute("pragma synchronous").fetchone()[0],
    }


def _start_consumer(huey: Any, workers: int) -> Any:
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False)
    consumer.start()
    return consumer


def huey_sequential(
    workdir: Path, n: int, sync: str, workers: int, timeout: float
) -> dict[str, Any]:
    countdown = _Countdown(n)
    huey, noop = _make_huey(workdir, sync, countdown)
    pragmas = _huey_pragmas(huey)
    t0 = time.perf_counter()
    for _ in range(n):
        noop()
    t_sub = time.perf_counter()
    consumer = _start_consumer(huey, workers)
    finished = countdown.done.wait(timeout)
    t_end = time.perf_counter()
    consumer.stop(graceful=True)
    huey.storage.close()
    if not finished:
        return {"status": "error", "error": f"timeout: {countdown.count}/{n} tasks completed"}
    return {
        "status": "ok",
        "rate": n / (t_end - t0),
        "elapsed_s": t_end - t0,
        "submit_rate": n / (t_sub - t0),
        "drain_rate": n / (t_end - t_sub),
        "completed": countdown.count,
        "pragmas": pragmas,
    }


def huey_concurrent(
    workdir: Path, n: int, sync: str, workers: int, submitters: int, timeout: float
) -> dict[str, Any]:
    """``submitters`` producer threads enqueue ``n`` tasks while the 8-thread consumer runs."""
    countdown = _Countdown(n)
    huey, noop = _make_huey(workdir, sync, countdown)
    pragmas = _huey_pragmas(huey)
    shares = _shares(n, submitters)
    gate = threading.Barrier(submitters + 1)

    def produce(count: int) -> None:
        gate.wait()
        for _ in range(count):
            noop()

    threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in shares]
    for t in threads:
        t.start()
    consumer = _start_consumer(huey, workers)
    t0 = time.perf_counter()
    gate.wait()
    for t in threads:
        t.join()
    t_sub = time.perf_counter()
    finished = countdown.done.wait(timeout)
    t_end = time.perf_counter()
    consumer.stop(graceful=True)
    huey.storage.close()
    if not finished:
        return {"status": "error", "error": f"timeout: {countdown.count}/{n} tasks completed"}
    return {
        "status": "ok",
        "rate": n / (t_end - t0),
        "elapsed_s": t_end - t0,
        "submit_rate": n / (t_sub - t0),
        "completed": countdown.count,
        "pragmas": pragmas,
    }


# --- persist-queue ------------------------------------------------------------------------


def persistqueue_sequential(workdir: Path, n: int, workers: int, timeout: float) -> dict[str, Any]:
    from persistqueue import SQLiteAckQueue
    from persistqueue.exceptions import Empty

    q = SQLiteAckQueue(str(workdir / "pq"), multithreading=True, auto_resume=False)
    pragmas = {
        "journal_mode": q._putter.execute("pragma journal_mode").fetchone()[0],
        "synchronous": q._putter.execute("pragma synchronous").fetchone()[0],
    }
    countdown = _Countdown(n)

    def task() -> None:
        countdown.tick()

    def worker() -> None:
        while True:
            try:
                item = q.get(block=False)
            except Empty:
                return
            task()
            q.ack(item)

    t0 = time.perf_counter()
    for _ in range(n):
        q.put({})
    t_sub = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    t_end = time.perf_counter()
    acked = q.acked_count()
    q.close()
    if countdown.count != n or acked != n:
        return {"status": "error", "error": f"ran {countdown.count}, acked {acked} of {n}"}
    return {
        "status": "ok",
        "rate": n / (t_end - t0),
        "elapsed_s": t_end - t0,
        "submit_rate": n / (t_sub - t0),
        "drain_rate": n / (t_end - t_sub),
        "completed": countdown.count,
        "pragmas": pragmas,
    }


# --- raw sqlite3 floor --------------------------------------------------------------------

_RAW_SCHEMA = """
create table task (
    id integer primary key autoincrement,
    type text not null,
    payload text not null,
    priority integer not null default 128,
    state integer not null default 0,          -- 0 pending, 1 running, 2 completed
    created_at real not null,
    started_at real,
    finished_at real
);
create index task_pending on task (priority, id) where state = 0;
"""
_RAW_INSERT = "insert into task (type, payload, priority, created_at) values (?, ?, ?, ?)"
_RAW_CLAIM = (
    "update task set state = 1, started_at = ? where id = "
    "(select id from task where state = 0 order by priority, id limit 1) "
    "returning id, type, payload"
)
_RAW_COMPLETE = "update task set state = 2, finished_at = ? where id = ?"


def raw_sqlite_sequential(workdir: Path, n: int, workers: int, timeout: float) -> dict[str, Any]:
    conn = sqlite3.connect(str(workdir / "raw.db"), isolation_level=None, check_same_thread=False)
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=NORMAL")
    conn.executescript(_RAW_SCHEMA)
    pragmas = {
        "journal_mode": conn.execute("pragma journal_mode").fetchone()[0],
        "synchronous": conn.execute("pragma synchronous").fetchone()[0],
    }
    lock = threading.Lock()
    countdown = _Countdown(n)

    def worker() -> None:
        while True:
            with lock:
                # fetchall(): a RETURNING statement only autocommits once it is fully stepped.
                rows = conn.execute(_RAW_CLAIM, (time.time(),)).fetchall()
            if not rows:
                return
            row = rows[0]
            countdown.tick()  # the no-op task
            with lock:
                conn.execute(_RAW_COMPLETE, (time.time(), row[0]))

    t0 = time.perf_counter()
    for _ in range(n):
        with lock:
            conn.execute(_RAW_INSERT, ("noop", "{}", 128, time.time()))
    t_sub = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    t_end = time.perf_counter()
    done = conn.execute("select count(*) from task where state = 2").fetchone()[0]
    conn.close()
    if done != n:
        return {"status": "error", "error": f"completed {done} of {n}"}
    return {
        "status": "ok",
        "rate": n / (t_end - t0),
        "elapsed_s": t_end - t0,
        "submit_rate": n / (t_sub - t0),
        "drain_rate": n / (t_end - t_sub),
        "completed": countdown.count,
        "pragmas": pragmas,
    }
