"""The ``scale`` suite (issue 18): a large library over the wire, side by side at two sizes.

For each size (default 10,000 and 1,000,000 tasks) a fresh sidecar on a fresh database:

1. runs 1,000 ``noop`` tasks to completion (so ``history.stats`` has a history to summarise);
2. turns on ``events.configure {batchSubmitted: true}`` and submits the backlog, a type nobody
   runs (it stays ``pending``), as ``task.submitBatch`` calls of 10,000, each answered before
   the next is sent (an app's import loop); the batches are built before the clock starts;
3. measures, each call answered before the next: ``scheduler.status``, ``history.stats``,
   ``task.list {limit: 100}``, and ``task.list`` pages filtered by ``state`` (``pending``, the
   newest tasks; ``completed``, the oldest) and by ``type`` (``noop``, the oldest): median of
   ``--calls``;
4. reads the sidecar's RSS (psutil) with the backlog pending.

In the same run, a child process submits the big size in process through ``submit_batch`` in
chunks of 10,000 (the core suite's E build): the batch rate over the wire is compared with it.

Targets: status and history.stats at the big size within 2x of the small and under 10 ms; a
``task.list`` page under 5 ms; the batch rate over the wire >= 60 % of the in-process rate;
RSS at the big size <= 80 MB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from tests.bench.harness import (
    RESULTS_DIR,
    TempRoot,
    environment,
    render_table,
    run_child,
    write_json,
)
from tests.bench.sidecar_proc import SidecarError, SidecarProcess

BACKLOG = "bench.pending"  # nobody runs it: the backlog stays pending
BATCH = 10_000
HISTORY = 1_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--small", type=int, default=10_000, help="the small database's tasks")
    parser.add_argument("--big", type=int, default=1_000_000, help="the big database's tasks")
    parser.add_argument("--calls", type=int, default=31, help="calls per read (median)")
    parser.add_argument("--quick", action="store_true", help="small 2,000, big 100,000")
    parser.add_argument("--tmp", type=Path, default=None, help="where the databases go")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "scale.json")
    parser.add_argument("--rounds", type=int, default=1, help="(shared option; one round)")


def _say(msg: str) -> None:
    print(msg, flush=True)


class _Client:
    """Requests answered one at a time over the sidecar's stdio."""

    def __init__(self, sc: SidecarProcess) -> None:
        self.sc = sc
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.call_raw(self.request(method, params))

    def request(self, method: str, params: dict[str, Any] | None = None) -> bytes:
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        return json.dumps(msg, separators=(",", ":")).encode() + b"\n"

    def call_raw(self, line: bytes) -> Any:
        rid = self.next_id
        self.sc.write(line)
        _, msg = self.sc.wait_for(lambda m: m.get("id") == rid, 300.0)
        if "error" in msg:
            raise SidecarError(f"request {rid} failed: {msg['error']}")
        return msg["result"]

    def timed(self, method: str, params: dict[str, Any], calls: int) -> float:
        """Median milliseconds of ``calls`` calls (after one warm-up call)."""
        self.call(method, params)
        times = []
        for _ in range(calls):
            line = self.request(method, params)
            t0 = time.perf_counter()
            self.call_raw(line)
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)


def _drain_events(sc: SidecarProcess) -> None:
    """Forget what the reader queued (events nobody here reads)."""
    while not sc.messages.empty():
        item = sc.messages.get_nowait()
        if item is None:
            sc.messages.put(None)
            return


def run_size(workdir: Path, total: int, calls: int) -> dict[str, Any]:
    import psutil

    sc = SidecarProcess(workdir / "tasks.db", "--max-concurrency", "8")
    try:
        sc.wait_ready()
        client = _Client(sc)
        # 1. a history: HISTORY noop tasks, run to completion.
        client.call("task.submitBatch", {"tasks": [{"type": "noop"}] * HISTORY})
        deadline = time.monotonic() + 120
        while True:
            counts = client.call("scheduler.status")["counts"]
            if counts["completed"] >= HISTORY:
                break
            if time.monotonic() > deadline:
                raise SidecarError(f"the history did not complete: {counts}")
            time.sleep(0.05)
        # 2. the backlog, in batches, with batchSubmitted.
        client.call("events.configure", {"batchSubmitted": True})
        entry = {"type": BACKLOG, "payload": {"path": "/library/some/folder/file.jpg"}}
        sizes = [min(BATCH, total - k) for k in range(0, total, BATCH)]
        lines = {size: json.dumps({"tasks": [entry] * size}) for size in set(sizes)}
        submit_s = 0.0
        for size in sizes:
            client.next_id += 1
            line = (
                f'{{"jsonrpc":"2.0","id":{client.next_id},"method":"task.submitBatch",'
                f'"params":{lines[size]}}}\n'
            ).encode()
            t0 = time.perf_counter()
            client.call_raw(line)
            submit_s += time.perf_counter() - t0
            _drain_events(sc)
        time.sleep(1.0)  # let the batch events and any upkeep settle
        _drain_events(sc)
        ps = psutil.Process(sc.pid)
        status = client.call("scheduler.status")
        pending = status["counts"]["pending"]
        if pending != total:
            raise SidecarError(f"{pending} pending after submitting {total}")
        res: dict[str, Any] = {
            "status": "ok",
            "total": total,
            "submit_rate": total / submit_s,
            "submit_s": submit_s,
            "status_ms": client.timed("scheduler.status", {}, calls),
            "stats_ms": client.timed("history.stats", {}, calls),
            "list_ms": client.timed("task.list", {"limit": 100}, calls),
            "list_pending_ms": client.timed("task.list", {"state": "pending", "limit": 100}, calls),
            "list_completed_ms": client.timed(
                "task.list", {"state": "completed", "limit": 100}, calls
            ),
            "list_type_ms": client.timed("task.list", {"type": "noop", "limit": 100}, calls),
            "rss_mb": ps.memory_info().rss / 2**20,
        }
        res["shutdown"] = sc.shutdown()
        return res
    except Exception as exc:
        return {"status": "error", "error": repr(exc), "stderr_tail": sc.error_context()}
    finally:
        sc.kill()


def _fmt(x: Any, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def main(args: argparse.Namespace) -> int:
    small, big = (2_000, 100_000) if args.quick else (args.small, args.big)
    root = TempRoot(str(args.tmp) if args.tmp else None, keep=args.keep)
    results: dict[str, Any] = {"environment": environment(), "sizes": {}}
    failed = False
    try:
        for total in (small, big):
            _say(f"scale: {total:,} tasks over the wire ...")
            res = run_size(root.fresh(f"wire-{total}"), total, args.calls)
            results["sizes"][str(total)] = res
            failed |= res.get("status") != "ok"
            _say(f"  {res}")
        _say(f"scale: {big:,} tasks in process (submit_batch in chunks of {BATCH:,}) ...")
        inproc = run_child(
            {
                "scenario": "E",
                "runner": "build",
                "db": str(root.fresh("inproc") / "tasks.db"),
                "n": big,
            },
            timeout=1800,
        )
        results["in_process"] = inproc
        failed |= inproc.get("status") != "ok"
    finally:
        root.close()
    s, b = results["sizes"].get(str(small), {}), results["sizes"].get(str(big), {})
    rows = []
    for key, label in (
        ("status_ms", "`scheduler.status` ms"),
        ("stats_ms", "`history.stats` ms"),
        ("list_ms", "`task.list {limit: 100}` ms"),
        ("list_pending_ms", "`task.list {state: pending, limit: 100}` ms"),
        ("list_completed_ms", "`task.list {state: completed, limit: 100}` ms"),
        ("list_type_ms", "`task.list {type: noop, limit: 100}` ms"),
        ("submit_rate", "`task.submitBatch` of 10,000, batchSubmitted: tasks/s"),
        ("rss_mb", "sidecar RSS, MB"),
    ):
        sv, bv = s.get(key), b.get(key)
        ratio = bv / sv if sv and bv else None
        digits = 0 if key == "submit_rate" else 2
        rows.append([label, _fmt(sv, digits), _fmt(bv, digits), _fmt(ratio)])
    in_rate = inproc.get("batch_rate") if isinstance(inproc, dict) else None
    rows.append(["in-process `submit_batch` of 10,000: tasks/s", "", _fmt(in_rate, 0), ""])
    table = render_table(["", f"{small:,} tasks", f"{big:,} tasks", "ratio"], rows)
    _say(table)
    targets: list[dict[str, Any]] = []

    def target(name: str, ok: bool | None, value: str) -> None:
        targets.append({"target": name, "pass": ok, "value": value})

    for key, name in (("status_ms", "scheduler.status"), ("stats_ms", "history.stats")):
        sv, bv = s.get(key), b.get(key)
        ok = None if sv is None or bv is None else bool(bv <= 2 * sv and bv < 10)
        target(f"{name}: big <= 2x small and < 10 ms", ok, f"{_fmt(sv)} / {_fmt(bv)} ms")
    lv = b.get("list_ms")
    target("task.list page of 100 < 5 ms", None if lv is None else lv < 5, f"{_fmt(lv)} ms")
    wire = b.get("submit_rate")
    share = wire / in_rate if wire and in_rate else None
    target(
        "batches over the wire >= 60 % of in process",
        None if share is None else share >= 0.6,
        f"{_fmt(wire, 0)} vs {_fmt(in_rate, 0)} tasks/s ({_fmt((share or 0) * 100, 0)} %)",
    )
    rss = b.get("rss_mb")
    target("sidecar RSS at the big size <= 80 MB", None if rss is None else rss <= 80, _fmt(rss))
    results["targets"] = targets
    _say(
        render_table(
            ["target", "value", "result"],
            [
                [t["target"], t["value"], {True: "pass", False: "MISS", None: "-"}[t["pass"]]]
                for t in targets
            ],
        )
    )
    write_json(args.out, results)
    _say(f"results: {args.out}")
    return 1 if failed else 0
