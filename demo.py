"""``python3 dev.py demo``: what Taskmill is for, in under a minute, non-interactively.

It does what a Tauri app does: starts the sidecar as a child process (``--parent-pid``,
``--allow-path``, a database of its own) and talks JSON-RPC over its stdin/stdout. It builds
a sample media library in a temp folder, submits a background scan that fans out into hash
tasks, normal-priority copies, then a user-initiated urgent task that jumps the queue. It
shows live progress, SIGKILLs the sidecar mid-run, restarts it and shows the work resuming,
and ends with a summary. Plain line output when stdout is not a terminal; ``--keep`` keeps
the temp folder and database.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
TTY = sys.stdout.isatty()
FINAL = {"completed", "failed", "deadLetter", "cancelled", "superseded", "expired"}


class Sidecar:
    """The sidecar child process, as the Tauri shell plugin would run it."""

    def __init__(self, db: Path, library: Path) -> None:
        cmd = os.environ.get("TASKMILL_SIDECAR_CMD")
        base = cmd.split() if cmd else [sys.executable, "-m", "sidecar"]
        self.proc = subprocess.Popen(
            [
                *base,
                f"--db={db}",
                f"--allow-path={library}",
                f"--parent-pid={os.getpid()}",
                "--log-level=warning",
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ids = 0
        self._replies: dict[int, Any] = {}
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            if "id" in msg and "method" not in msg:
                with self._cond:
                    self._replies[msg["id"]] = msg
                    self._cond.notify_all()
            else:
                self.inbox.put(msg)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self._ids += 1
        rid = self._ids
        assert self.proc.stdin is not None
        line = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}
        self.proc.stdin.write(json.dumps(line).encode() + b"\n")
        self.proc.stdin.flush()
        with self._cond:
            if not self._cond.wait_for(lambda: rid in self._replies, timeout=30):
                raise TimeoutError(f"{method}: no answer")
            reply = self._replies.pop(rid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']['message']}")
        return reply["result"]

    def answer(self, request_id: Any, result: Any) -> None:
        """Answer a request of the sidecar's (``task.execute`` for a host executor)."""
        assert self.proc.stdin is not None
        line = {"jsonrpc": "2.0", "id": request_id, "result": {"result": result}}
        self.proc.stdin.write(json.dumps(line).encode() + b"\n")
        self.proc.stdin.flush()

    def wait_ready(self) -> dict[str, Any]:
        while True:
            msg = self.inbox.get(timeout=30)
            if msg["method"] == "sidecar.ready":
                return dict(msg["params"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(TimeoutError, RuntimeError, OSError):
                self.call("shutdown", {"graceMs": 2000})
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class View:
    """Live state from the events: what a frontend would render."""

    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}
        self.io: dict[str, Any] = {}
        self.completed = 0
        self.preempted = 0
        self.first_done: float | None = None
        self.fired = 0  # schedule.fired: the recurring backup submitted its task
        self.skipped = 0  # schedule.skipped: its previous run was still going

    def apply(self, msg: dict[str, Any]) -> None:
        m, p = msg["method"], msg.get("params", {})
        if m in ("task.submitted", "task.updated"):
            t = p["task"]
            path = t["payload"].get("path") if isinstance(t.get("payload"), dict) else None
            label = t.get("label") or (f"{t['type']} {Path(path).name}" if path else t["type"])
            self.tasks.setdefault(t["id"], {}).update(
                id=t["id"], type=t["type"], label=label, state=t["state"], priority=t["priority"]
            )
        elif m == "task.started":
            self.tasks.setdefault(p["id"], {"label": p["type"]}).update(
                state="running", progress=None, type=p["type"], priority=p["priority"]
            )
        elif m == "task.progress":
            self.tasks.setdefault(p["id"], {"label": p["type"]})["progress"] = p["progress"]
        elif m == "task.completed":
            self.tasks.setdefault(p["id"], {"label": p["type"]})["state"] = "completed"
            self.completed += 1
            self.first_done = self.first_done or time.monotonic()
        elif m == "task.failed":
            self.tasks.setdefault(p["id"], {"label": p["type"]})["state"] = p["state"]
        elif m == "task.cancelled":
            self.tasks.setdefault(p["id"], {"label": p["type"]})["state"] = "cancelled"
        elif m == "task.preempted":
            self.tasks.setdefault(p["id"], {"label": p["type"]})["state"] = "pending"
            self.preempted += 1
        elif m == "io.pressure":
            self.io = p
        elif m == "schedule.fired":
            self.fired += 1
        elif m == "schedule.skipped":
            self.skipped += 1

    def counts(self) -> Counter[str]:
        return Counter(t.get("state", "pending") for t in self.tasks.values())

    def running(self) -> list[dict[str, Any]]:
        return [t for t in self.tasks.values() if t.get("state") == "running"]


def bar(fraction: float, width: int = 24) -> str:
    full = int(fraction * width)
    return "█" * full + "░" * (width - full)


def render(view: View, title: str, drawn: list[int]) -> None:
    c = view.counts()
    lines = [
        f"{title}",
        "  " + "  ".join(f"{s}: {c.get(s, 0)}" for s in ("pending", "running", "waiting",
                                                        "completed", "failed")),
    ]  # fmt: skip
    if view.io:
        io = view.io
        cap = io.get("capacity", {}).get("diskRead")
        lines.append(
            f"  io: disk read {io.get('diskReadBps', 0) / 1e6:5.1f} MB/s"
            f" (budget {cap / 1e6:.0f} MB/s)"
            if cap
            else "  io: learning"
        )
        lines[-1] += f", write {io.get('diskWriteBps', 0) / 1e6:5.1f} MB/s"
        if io.get("throttling"):
            lines[-1] += f"  THROTTLING, {io.get('deferred', 0)} held back"
    for t in sorted(view.running(), key=lambda t: (t.get("priority", 128), t.get("id", 0)))[:6]:
        p = t.get("progress") or {}
        frac = float(p.get("fraction", 0.0))
        eta = p.get("etaMs")
        eta_s = f"ETA {eta / 1000:4.1f}s" if eta is not None else "         "
        est = "~" if p.get("estimated") else " "
        lines.append(
            f"  [{t.get('priority', 128):3}] {str(t.get('label'))[:30]:30} {bar(frac)} "
            f"{est}{frac:4.0%} {eta_s}"
        )
    if TTY:
        if drawn[0]:
            sys.stdout.write(f"\x1b[{drawn[0]}F\x1b[J")
        sys.stdout.write("\n".join(lines) + "\n")
        drawn[0] = len(lines)
    else:
        io = [line for line in lines if line.startswith("  io:")]
        sys.stdout.write(lines[0] + " |" + lines[1] + (" |" + io[0][1:] if io else "") + "\n")
    sys.stdout.flush()


def pump(sc: Sidecar, view: View, seconds: float, title: str, until: Any = None) -> None:
    """Apply events and redraw for ``seconds`` (or until ``until(view)`` is true)."""
    drawn = [0]
    end = time.monotonic() + seconds
    next_draw = 0.0
    interval = 0.15 if TTY else 1.0
    next_status = 0.0
    while time.monotonic() < end:
        with contextlib.suppress(queue.Empty):
            view.apply(sc.inbox.get(timeout=0.05))
        if time.monotonic() >= next_status:  # the IO gauge, as a UI would poll it
            view.io = sc.call("scheduler.status")["io"]
            next_status = time.monotonic() + 1.0
        if time.monotonic() >= next_draw:
            render(view, title, drawn)
            next_draw = time.monotonic() + interval
        if until is not None and until(view):
            break
    render(view, title, drawn)


def make_library(root: Path, n: int) -> int:
    """A few hundred files of mixed sizes, like a small photo/video folder."""
    rng = random.Random(7)
    total = 0
    for album in range(6):
        d = root / "library" / f"album-{album}"
        d.mkdir(parents=True)
        for i in range(n // 6):
            size = rng.choice([4_000, 60_000, 400_000, 1_500_000])
            (d / f"IMG_{album}{i:03}.jpg").write_bytes(rng.randbytes(size))
            total += size
    video = root / "library" / "holiday.mp4"
    video.write_bytes(rng.randbytes(40_000_000))
    return total + 40_000_000


def fan_out_with_finalize(sc: Sidecar, view: View, parts: int = 8) -> dict[str, Any]:
    """A multipart upload, as an app would run it with a host executor: its run fans out the
    parts (simulated), and its finalize phase commits them once every part is final. The
    parent is ``failParent``: a part that failed for good would cancel the others."""
    sc.call("executor.register", {"type": "demo.upload"})
    upload = sc.call(
        "task.submit",
        {"type": "demo.upload", "label": "upload holiday.mp4 (multipart)", "priority": "high",
         "finalize": True, "onChildFailure": "failParent"},
    )  # fmt: skip
    print(f"\nFan-out with finalize: task {upload['id']} uploads in {parts} parts")
    end = time.monotonic() + 30
    while time.monotonic() < end:
        msg = sc.inbox.get(timeout=30)
        view.apply(msg)
        params = msg.get("params", {})
        if msg.get("method") == "task.execute" and params["task"]["id"] == upload["id"]:
            if params["phase"] == "run":
                chunks = [
                    {"type": "sleep", "label": f"part {n + 1}/{parts}", "parentId": upload["id"],
                     "payload": {"ms": 150, "steps": 3}}
                    for n in range(parts)
                ]  # fmt: skip
                sc.call("task.submitBatch", {"tasks": chunks})
                print(f"  run: {parts} parts submitted; the upload waits for them")
                sc.answer(msg["id"], {"uploadId": "demo-1"})
            else:
                kids = params["children"]
                print(f"  finalize: children {kids}")
                sc.answer(msg["id"], {"uploadId": "demo-1", "committed": kids["completed"]})
        elif msg.get("method") == "task.completed" and params["id"] == upload["id"]:
            print(f"  completed with the finalize phase's result: {params['result']}")
            return dict(params["result"])
    raise TimeoutError("the multipart upload did not finish")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--keep", action="store_true", help="keep the temp folder and database")
    ap.add_argument("--files", type=int, default=300)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="taskmill-demo-"))
    db = tmp / "tasks.db"
    started = time.monotonic()
    print(f"Taskmill demo: sample library and database in {tmp}")
    size = make_library(tmp, args.files)
    lib = tmp / "library"
    (tmp / "library" / "backup").mkdir()
    print(f"  {args.files} photos + 1 video, {size / 1e6:.0f} MB")

    sc = Sidecar(db, lib)
    view = View()
    ready = sc.wait_ready()
    print(f"  sidecar pid {ready['pid']} ready; executors: {', '.join(ready['executors'])}")

    # 3 tasks at a time, and at most 80 MB/s of disk reads for our background work, so the
    # machine stays responsive while the library is hashed (the built-ins pace themselves).
    sc.call("scheduler.configure", {"maxConcurrency": 3, "io": {"diskReadBps": 80_000_000}})
    # 1. background: scan the library and hash every photo (fan-out children)
    scan = {"type": "fs.scan", "priority": "background", "label": "scan library",
            "payload": {"root": str(lib), "glob": "*.jpg", "childType": "fs.hash",
                        "childPriority": 200}}  # fmt: skip
    sc.call("task.submit", scan)
    # 2. normal priority: thumbnails (simulated work that reports progress) and a backup
    rng = random.Random(1)
    thumbs = [
        {"type": "sleep", "label": f"thumbnail album-{i % 6} (simulated)",
         "payload": {"ms": rng.randint(1500, 3000), "steps": 20}}
        for i in range(12)
    ]  # fmt: skip
    sc.call("task.submitBatch", {"tasks": thumbs})
    album = sorted((lib / "album-0").iterdir())
    copies = [
        {"type": "fs.copy", "label": f"backup {p.name}", "dedupKey": p.name,
         "payload": {"src": str(p), "dst": str(lib / "backup" / p.name)}}
        for p in album
    ]  # fmt: skip
    sc.call("task.submitBatch", {"tasks": copies})
    # the user clicks "back up" again: every copy is already queued, nothing is added
    again = sc.call("task.submitBatch", {"tasks": copies})["results"]
    dedup_hits = sum(r["outcome"] in ("duplicate", "upgraded") for r in again)
    # a recurring backup of the catalog, every 2 s (a real app: "every night at 2:00", i.e.
    # {"cron": "0 2 * * *"}); a firing is skipped while the previous copy still runs
    catalog = album[0]
    now = sc.call("ping")["now"]
    backup = sc.call(
        "schedule.create",
        {"name": "catalog backup", "everyMs": 2000, "startAt": now + 500,
         "task": {"type": "fs.copy", "label": f"scheduled backup {catalog.name}",
                  "priority": "high",
                  "payload": {"src": str(catalog), "dst": str(lib / "backup" / "catalog.jpg"),
                              "overwrite": True}}},
    )  # fmt: skip
    pump(sc, view, 3, "Background scan + hashing, thumbnails, backup (3 at a time)")

    # 3. the user opens the video: an urgent hash jumps the queue / preempts
    urgent = sc.call(
        "task.submit",
        {"type": "fs.hash", "priority": "realtime", "label": "URGENT: verify holiday.mp4",
         "payload": {"path": str(lib / "holiday.mp4")}},
    )  # fmt: skip
    pump(
        sc, view, 8, "User opened holiday.mp4: urgent task first",
        until=lambda v: v.tasks.get(urgent["id"], {}).get("state") == "completed",
    )  # fmt: skip
    pump(sc, view, 1.5, "Work continues")

    # 4. crash: SIGKILL the sidecar mid-run, then start it again
    before = view.counts()
    print(f"\nSIGKILL sidecar pid {sc.proc.pid} with {before.get('running', 0)} tasks running "
          f"and {before.get('pending', 0)} pending…")  # fmt: skip
    sc.proc.send_signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
    sc.proc.wait()
    sc.stop()
    sc = Sidecar(db, lib)
    ready = sc.wait_ready()
    recovered = ready["recovered"]["requeued"]
    print(f"restarted: pid {ready['pid']}, {recovered} interrupted tasks requeued, "
          "nothing lost\n")  # fmt: skip
    for state in ("pending", "running", "waiting"):
        for t in sc.call("task.list", {"state": state, "limit": 1000})["tasks"]:
            view.tasks.setdefault(t["id"], {}).update(
                id=t["id"], type=t["type"], label=t.get("label") or t["type"], state=state,
                priority=t["priority"],
            )  # fmt: skip

    def done(v: View) -> bool:
        c = v.counts()
        return not (c.get("pending") or c.get("running") or c.get("waiting"))

    kept = sc.call("schedule.get", {"id": backup["id"]})
    print(f"the recurring backup survived the crash: {kept['runs']} runs so far, "
          f"missed firings collapse into one; pausing it now\n")  # fmt: skip
    sc.call("schedule.pause", {"name": "catalog backup"})
    pump(sc, view, 30, "Resumed after the crash", until=done)
    backup = sc.call("schedule.get", {"id": backup["id"]})
    committed = fan_out_with_finalize(sc, view)
    metrics = sc.call("scheduler.metrics")["counters"]
    status = sc.call("scheduler.status")
    stats = sc.call("history.stats")["byType"]
    sc.stop()
    elapsed = time.monotonic() - started
    counts = status["counts"]
    print("\nSummary")
    print(f"  tasks: {sum(counts.values())} ({counts['completed']} completed, "
          f"{counts['failed']} failed, {counts['pending']} pending)")  # fmt: skip
    for t, s in sorted(stats.items()):
        avg = s.get("avgDurationMs") or 0
        print(f"    {t:12} {s['completed']:4} done, avg {avg:6.1f} ms")
    print(f"  throughput: {counts['completed'] / elapsed:.0f} tasks/s over {elapsed:.1f} s")
    print(f"  dedup hits: {dedup_hits} of {len(again)} backup copies submitted twice")
    print(f"  preemptions: {view.preempted}; recovered after SIGKILL: {recovered}")
    print(f"  recurring backup: {backup['runs']} runs every 2 s ({view.fired} seen fired, "
          f"{view.skipped} skipped while the previous copy still ran)")  # fmt: skip
    print(f"  multipart upload: {committed['committed']} parts committed by its finalize phase")
    print("  since the restart: " + ", ".join(f"{k} {v}" for k, v in metrics.items() if v))
    if args.keep:
        print(f"  kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
