"""The ``sidecar`` suite: issue 3's performance targets for the JSON-RPC stdio sidecar.

Measurements (README.md, "The sidecar suite", has the details):
  throughput  N ``task.submit`` requests for ``noop`` pipelined into a real ``python -m sidecar``
              (all events on; ``--max-concurrency 8`` as in the core suite, and the default 4
              for information), until every ``task.completed`` has arrived; side by side, in the
              same interleaved rounds, with huey in-process end to end (core suite's scenario A
              runner: fresh interpreter, submit N then drain) at NORMAL and at its default FULL
  latency     an idle sidecar, one noop task at a time: submit write -> ``task.started`` arrival
  startup     spawn -> ``sidecar.ready`` line, on fresh databases and on reopening one
  idle        the sidecar's CPU time over a quiet period after ``sidecar.ready`` (psutil)

The client lives in this process (``sidecar_proc.py``): a reader thread stamps every stdout
line as it arrives. The sidecar is always a fresh process on a fresh database in a fresh temp
directory, shut down gracefully (``shutdown`` request, stdin EOF, wait for exit).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.harness import (
    RESULTS_DIR,
    TempRoot,
    environment,
    fmt_int,
    fmt_num,
    fmt_ratio,
    median_of,
    numeric_summary,
    render_table,
    rotated,
    run_child,
    write_json,
)
from tests.bench.sidecar_proc import SidecarError, SidecarProcess

TARGET_VS_HUEY = 1.0
TARGET_LATENCY_P50_MS = 2.0
TARGET_STARTUP_MS = 500.0
TARGET_IDLE_CPU_PCT = 0.5

PARTS = ("throughput", "latency", "startup", "idle")
REOPEN_TASKS = 1_000  # tasks run once in the database that the "reopen" spawns open
AFTER_WORK_TASKS = 100  # tasks run between the two idle-CPU windows
IDLE_SETTLE_S = 0.5  # pause after ready before idle latency probes


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    kind: str  # "sidecar" | "huey"
    family: str
    params: dict[str, Any] = field(default_factory=dict)


def _huey(sync: str, workers: int, note: str = "") -> Contender:
    return Contender(
        key=f"huey-{sync}-w{workers}",
        label=f"huey in-process {sync.upper()}{note}, consumer -w {workers}",
        kind="huey",
        family=f"huey-{sync}",
        params={"sync": sync, "workers": workers},
    )


# The sidecar runs 8 tasks at once here, like taskmill_core in the core suite (huey gets the
# better of 1 and 8 consumer threads); its default of 4 is measured too, for information.
CONCURRENCY = 8
SIDECAR = Contender(
    "sidecar",
    f"sidecar NORMAL (stdio, all events), --max-concurrency {CONCURRENCY}",
    "sidecar",
    "sidecar",
    {"durability": "normal", "concurrency": CONCURRENCY},
)
SIDECAR_FULL = Contender(
    "sidecar-full",
    f"sidecar FULL (stdio, all events), --max-concurrency {CONCURRENCY}",
    "sidecar",
    "sidecar",
    {"durability": "full", "concurrency": CONCURRENCY},
)
SIDECAR_DEFAULT = Contender(
    "sidecar-c4",
    "sidecar NORMAL (stdio, all events), default --max-concurrency 4",
    "sidecar",
    "sidecar",
    {"durability": "normal", "concurrency": 4},
)
CONTENDERS = (
    SIDECAR,
    SIDECAR_DEFAULT,
    SIDECAR_FULL,
    _huey("normal", 1),
    _huey("normal", 8),
    _huey("full", 1, " (huey default)"),
    _huey("full", 8),
)


@dataclass
class Options:
    n: int
    rounds: int
    samples: int
    spawns: int
    idle_s: float
    parts: set[str]
    out: Path
    tmp: str | None
    keep: bool
    quick: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=2,000, 2 rounds, 100 latency samples, 5 spawns, 10 s idle",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 2)")
    parser.add_argument("--n", type=int, help="tasks per throughput run (default 5,000)")
    parser.add_argument(
        "--samples", type=int, help="idle-latency probes per round (default 200; quick 100)"
    )
    parser.add_argument(
        "--spawns", type=int, help="startups of each kind, fresh and reopen (default 10; quick 5)"
    )
    parser.add_argument(
        "--idle-s", type=float, help="idle-CPU window after ready, seconds (default 30; quick 10)"
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated parts to run (default: {','.join(PARTS)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR / "sidecar.json",
        help="JSON results file (default bench-results/sidecar.json)",
    )
    parser.add_argument("--tmp", help="directory for the temp databases (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp databases")


def options_from(args: argparse.Namespace) -> Options:
    parts = {s.strip().lower() for s in (args.only or ",".join(PARTS)).split(",") if s.strip()}
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"--only: unknown part(s) {','.join(sorted(unknown))}")
    for name in ("rounds", "n", "samples", "spawns", "idle_s"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be > 0")
    q = args.quick
    return Options(
        n=args.n or (2_000 if q else 5_000),
        rounds=args.rounds or (2 if q else 5),
        samples=args.samples or (100 if q else 200),
        spawns=args.spawns or (5 if q else 10),
        idle_s=args.idle_s or (10.0 if q else 30.0),
        parts=parts,
        out=args.out,
        tmp=args.tmp,
        keep=args.keep,
        quick=q,
    )


def _say(msg: str) -> None:
    print(msg, flush=True)


def _error(exc: BaseException, sc: SidecarProcess | None) -> dict[str, Any]:
    res: dict[str, Any] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    if sc is not None:
        res["stderr_tail"] = sc.error_context()
    return res


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of a non-empty list."""
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _request(rid: int | str, method: str, params: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def _cpu_s(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


# --- 1. throughput ------------------------------------------------------------------------


class _ThroughputCounter:
    """Runs in the reader thread: counts responses and final events without queueing."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.responses = 0
        self.errors: list[Any] = []
        self.started = 0
        self.completed: set[int] = set()
        self.failed: list[Any] = []
        self.t_responses: float | None = None
        self.t_first_completed: float | None = None
        self.t_done: float | None = None
        self.done = threading.Event()

    def __call__(self, msg: dict[str, Any], at: float) -> None:
        method = msg.get("method")
        if method is None:
            if "error" in msg:
                self.errors.append(msg)
                self.done.set()
            else:
                self.responses += 1
                if self.responses == self.n:
                    self.t_responses = at
        elif method == "task.completed":
            if self.t_first_completed is None:
                self.t_first_completed = at
            self.completed.add(msg["params"]["id"])
            if len(self.completed) == self.n:
                self.t_done = at
                self.done.set()
        elif method == "task.started":
            self.started += 1
        elif method == "task.failed":
            self.failed.append(msg.get("params"))
            self.done.set()


def sidecar_throughput(
    workdir: Path,
    n: int,
    durability: str,
    concurrency: int,
    timeout: float,
    configure: dict[str, Any] | None = None,
    groups: int = 0,
) -> dict[str, Any]:
    """Pipelined ``task.submit`` of ``n`` noop tasks; ``configure``: sent (and answered)
    first; ``groups``: the tasks spread over that many groups ``g0``, ``g1``... (0: none)."""
    import psutil

    sc: SidecarProcess | None = None
    try:
        sc = SidecarProcess(
            workdir / "sidecar.db",
            "--durability",
            durability,
            "--max-concurrency",
            str(concurrency),
        )
        sc.wait_ready()
        ps = psutil.Process(sc.pid)
        if configure is not None:
            sc.write(_request("cfg", "scheduler.configure", configure))
            _, answer = sc.wait_for(lambda m: m.get("id") == "cfg", timeout)
            if "error" in answer:
                raise SidecarError(f"scheduler.configure: {answer['error']}")
        payload = b"".join(
            _request(
                i,
                "task.submit",
                {"type": "noop", **({"group": f"g{i % groups}"} if groups else {})},
            )
            for i in range(1, n + 1)
        )  # built before the clock starts, like core's C
        counter = _ThroughputCounter(n)
        sc.handler = counter
        cpu0, client0 = _cpu_s(ps), time.process_time()
        t0 = time.perf_counter()
        sc.write(payload)  # pipelined: one write; the reader thread drains stdout meanwhile
        t_written = time.perf_counter()
        deadline = time.monotonic() + timeout
        while not counter.done.wait(0.2):
            if sc.proc.poll() is not None or time.monotonic() > deadline:
                break
        cpu1, client1 = _cpu_s(ps), time.process_time()
        res: dict[str, Any]
        if counter.t_done is None:
            what = (
                f"first error response {counter.errors[0]}"
                if counter.errors
                else f"task.failed {counter.failed[0]}"
                if counter.failed
                else f"timeout/exit {sc.proc.poll()}"
            )
            res = {
                "status": "error",
                "error": f"{len(counter.completed)}/{n} completed, "
                f"{counter.responses} responses; {what}",
                "stderr_tail": sc.error_context(),
            }
        else:
            elapsed = counter.t_done - t0
            res = {
                "status": "ok",
                "rate": n / elapsed,
                "elapsed_s": elapsed,
                "write_s": t_written - t0,
                "submit_rate": n / (counter.t_responses - t0) if counter.t_responses else None,
                "first_completed_ms": (
                    (counter.t_first_completed - t0) * 1000 if counter.t_first_completed else None
                ),
                "completed": len(counter.completed),
                "started": counter.started,
                "sidecar_cpu_pct": 100 * (cpu1 - cpu0) / elapsed,
                "client_cpu_pct": 100 * (client1 - client0) / elapsed,
                "bytes_written": len(payload),
            }
        res["shutdown"] = sc.shutdown()
        sc = None
        return res
    except Exception as exc:
        return _error(exc, sc)
    finally:
        if sc is not None:
            sc.kill()


def huey_throughput(workdir: Path, c: Contender, n: int, timeout: float) -> dict[str, Any]:
    """core's scenario-A huey runner in a fresh interpreter (same fairness conventions)."""
    params = {
        "scenario": "A",
        "runner": "huey",
        "n": n,
        "dir": str(workdir),
        "timeout": timeout,
        **c.params,
    }
    return run_child(params, timeout=timeout + 60)


def _describe(res: dict[str, Any]) -> str:
    if res.get("status") == "ok":
        extra = ""
        if isinstance(res.get("sidecar_cpu_pct"), float):
            extra = f" (sidecar CPU {res['sidecar_cpu_pct']:.0f} %)"
        return f"{res['rate']:,.0f} tasks/s{extra}"
    return f"ERROR {res.get('error')}"


def run_throughput(opts: Options, root: TempRoot) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {c.key: [] for c in CONTENDERS}
    timeout = max(120.0, opts.n / 100)
    for r in range(opts.rounds):
        for c in rotated(CONTENDERS, r):
            with root.measurement(f"T-r{r + 1}-{c.key}") as d:
                if c.kind == "sidecar":
                    res = sidecar_throughput(
                        d, opts.n, c.params["durability"], c.params["concurrency"], timeout
                    )
                else:
                    res = huey_throughput(d, c, opts.n, timeout)
            res["round"] = r + 1
            runs[c.key].append(res)
            _say(f"  throughput round {r + 1}/{opts.rounds}  {c.key:<14} {_describe(res)}")
    return runs


# --- 2. idle latency ----------------------------------------------------------------------


def sidecar_latency(workdir: Path, samples: int, seed: int) -> dict[str, Any]:
    """One task at a time into an idle sidecar: write -> task.started arrival. After each task
    completes, a random 10-30 ms pause lets the sidecar go idle again (and avoids phase-locking
    with any periodic timer)."""
    rng = random.Random(seed)
    sc: SidecarProcess | None = None
    try:
        sc = SidecarProcess(workdir / "sidecar.db")
        sc.wait_ready()
        time.sleep(IDLE_SETTLE_S)
        to_started: list[float] = []
        to_response: list[float] = []
        to_completed: list[float] = []
        for i in range(1, samples + 1):
            line = _request(i, "task.submit", {"type": "noop"})
            t_send = time.perf_counter()
            sc.write(line)
            t_started = t_resp = t_done = None
            task_id: int | None = None
            started_id: int | None = None
            while t_started is None or t_resp is None or t_done is None:
                at, msg = sc.next_message(30.0)
                method = msg.get("method")
                if method is None and msg.get("id") == i:
                    if "error" in msg:
                        raise SidecarError(f"task.submit failed: {msg['error']}")
                    t_resp = at
                    task_id = msg["result"]["id"]
                elif method == "task.started" and t_started is None:
                    t_started = at
                    started_id = msg["params"]["id"]
                elif method == "task.completed":
                    t_done = at
                elif method == "task.failed":
                    raise SidecarError(f"task failed: {msg.get('params')}")
            if task_id is not None and started_id != task_id:
                raise SidecarError(f"task.started for {started_id}, expected {task_id}")
            to_started.append((t_started - t_send) * 1000)
            to_response.append((t_resp - t_send) * 1000)
            to_completed.append((t_done - t_send) * 1000)
            time.sleep(rng.uniform(0.010, 0.030))
        res: dict[str, Any] = {
            "status": "ok",
            "samples": samples,
            "p50_ms": percentile(to_started, 50),
            "p95_ms": percentile(to_started, 95),
            "max_ms": max(to_started),
            "response_p50_ms": percentile(to_response, 50),
            "completed_p50_ms": percentile(to_completed, 50),
            "started_ms": to_started,
        }
        res["shutdown"] = sc.shutdown()
        sc = None
        return res
    except Exception as exc:
        return _error(exc, sc)
    finally:
        if sc is not None:
            sc.kill()


def run_latency(opts: Options, root: TempRoot) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    for r in range(opts.rounds):
        with root.measurement(f"L-r{r + 1}") as d:
            res = sidecar_latency(d, opts.samples, seed=r)
        res["round"] = r + 1
        runs.append(res)
        detail = (
            f"p50 {res['p50_ms']:.2f} ms, p95 {res['p95_ms']:.2f} ms, max {res['max_ms']:.2f} ms"
            if res.get("status") == "ok"
            else f"ERROR {res.get('error')}"
        )
        _say(f"  latency round {r + 1}/{opts.rounds}  {detail}")
    return runs


# --- 3. startup ---------------------------------------------------------------------------


def sidecar_startup(db: Path) -> dict[str, Any]:
    sc: SidecarProcess | None = None
    try:
        sc = SidecarProcess(db)
        at, params = sc.wait_ready()
        res: dict[str, Any] = {
            "status": "ok",
            "ready_ms": (at - sc.spawned_at) * 1000,
            "requeued": (params.get("recovered") or {}).get("requeued"),
        }
        res["shutdown"] = sc.shutdown()
        res["shutdown_ms"] = res["shutdown"]["shutdown_s"] * 1000
        sc = None
        return res
    except Exception as exc:
        return _error(exc, sc)
    finally:
        if sc is not None:
            sc.kill()


def prepare_existing_db(db: Path, tasks: int) -> dict[str, Any]:
    """A database that has seen work: ``tasks`` noop tasks run to completion, then shut down."""
    sc: SidecarProcess | None = None
    try:
        sc = SidecarProcess(db)
        sc.wait_ready()
        counter = _ThroughputCounter(tasks)
        sc.handler = counter
        sc.write(_request(1, "task.submitBatch", {"tasks": [{"type": "noop"}] * tasks}))
        counter.done.wait(120)
        done = len(counter.completed)
        shut = sc.shutdown()
        sc = None
        if done != tasks:
            return {"status": "error", "error": f"prepare: {done}/{tasks} tasks completed"}
        return {"status": "ok", "tasks": tasks, "shutdown": shut}
    except Exception as exc:
        return _error(exc, sc)
    finally:
        if sc is not None:
            sc.kill()


def run_startup(opts: Options, root: TempRoot) -> dict[str, Any]:
    existing = root.fresh("S-existing")
    prep = prepare_existing_db(existing / "sidecar.db", REOPEN_TASKS)
    fresh_runs: list[dict[str, Any]] = []
    reopen_runs: list[dict[str, Any]] = []
    for i in range(opts.spawns):
        order = ("fresh", "reopen") if i % 2 == 0 else ("reopen", "fresh")
        for kind in order:
            if kind == "fresh":
                with root.measurement(f"S-fresh-{i + 1}") as d:
                    res = sidecar_startup(d / "sidecar.db")
                fresh_runs.append(res)
            elif prep.get("status") == "ok":
                res = sidecar_startup(existing / "sidecar.db")
                reopen_runs.append(res)
            else:
                continue
            detail = (
                f"ready in {res['ready_ms']:.0f} ms"
                if res.get("status") == "ok"
                else f"ERROR {res.get('error')}"
            )
            _say(f"  startup {i + 1}/{opts.spawns}  {kind:<6} {detail}")
    if prep.get("status") != "ok":
        _say(f"  startup reopen: ERROR {prep.get('error')}")
        reopen_runs = [prep]
    root.discard(existing)
    return {"fresh": fresh_runs, "reopen": reopen_runs, "prepare": prep}


# --- 4. idle CPU --------------------------------------------------------------------------


def _idle_window(ps: Any, seconds: float) -> dict[str, Any]:
    c0, ctx0, t0 = _cpu_s(ps), ps.num_ctx_switches(), time.perf_counter()
    time.sleep(seconds)
    c1, ctx1, t1 = _cpu_s(ps), ps.num_ctx_switches(), time.perf_counter()
    wall = t1 - t0
    return {
        "wall_s": wall,
        "cpu_s": c1 - c0,
        "cpu_pct": 100 * (c1 - c0) / wall,
        "wakeups_per_s": (ctx1.voluntary - ctx0.voluntary) / wall,
        "threads": ps.num_threads(),
    }


def sidecar_idle(workdir: Path, seconds: float) -> dict[str, Any]:
    """CPU of an idle sidecar: right after ready (the target), then again after it has run
    a few tasks (information: timers that only start with work would show up there)."""
    import psutil

    sc: SidecarProcess | None = None
    try:
        sc = SidecarProcess(workdir / "sidecar.db")
        sc.wait_ready()
        ps = psutil.Process(sc.pid)
        after_ready = _idle_window(ps, seconds)
        counter = _ThroughputCounter(AFTER_WORK_TASKS)
        sc.handler = counter
        batch = {"tasks": [{"type": "noop"}] * AFTER_WORK_TASKS}
        sc.write(_request(1, "task.submitBatch", batch))
        if not counter.done.wait(60) or counter.t_done is None:
            raise SidecarError(f"{len(counter.completed)}/{AFTER_WORK_TASKS} tasks completed")
        sc.handler = None
        time.sleep(0.5)  # let it finish bookkeeping after the last event
        after_work = _idle_window(ps, min(seconds, 10.0))
        res: dict[str, Any] = {
            "status": "ok",
            "cpu_pct": after_ready["cpu_pct"],
            "wakeups_per_s": after_ready["wakeups_per_s"],
            "after_work_cpu_pct": after_work["cpu_pct"],
            "after_work_wakeups_per_s": after_work["wakeups_per_s"],
            "windows": {"after_ready": after_ready, "after_work": after_work},
        }
        res["shutdown"] = sc.shutdown()
        sc = None
        return res
    except Exception as exc:
        return _error(exc, sc)
    finally:
        if sc is not None:
            sc.kill()


def run_idle(opts: Options, root: TempRoot) -> dict[str, Any]:
    after = min(opts.idle_s, 10.0)
    _say(f"  idle CPU: {opts.idle_s:.0f} s after ready, then {after:.0f} s after work ...")
    with root.measurement("I") as d:
        res = sidecar_idle(d, opts.idle_s)
    detail = (
        f"{res['cpu_pct']:.3f} % after ready, {res['after_work_cpu_pct']:.3f} % after work"
        if res.get("status") == "ok"
        else f"ERROR {res.get('error')}"
    )
    _say(f"  idle CPU  {detail}")
    return res


# --- reporting ----------------------------------------------------------------------------


def _best(summaries: dict[str, dict[str, Any]], family: str) -> tuple[float | None, str | None]:
    best: tuple[float | None, str | None] = (None, None)
    for c in CONTENDERS:
        if c.family != family:
            continue
        v = median_of(summaries.get(c.key, {}), "rate")
        if v is not None and (best[0] is None or v > best[0]):
            best = (v, c.key)
    return best


def _failure_note(runs: list[dict[str, Any]]) -> str:
    errors = [r for r in runs if r.get("status") != "ok"]
    return f"error: {errors[0].get('error')}" if errors else "no runs"


def table_throughput(
    summaries: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]]
) -> str:
    hn, _ = _best(summaries, "huey-normal")
    hf, _ = _best(summaries, "huey-full")
    headers = [
        "contender",
        "tasks/s median",
        "min - max",
        "responses/s",
        "vs huey NORMAL*",
        "vs huey FULL*",
        "sidecar CPU",
        "client CPU",
    ]
    rows: list[list[str]] = []
    for c in CONTENDERS:
        s = summaries[c.key]
        rate = median_of(s, "rate")
        if rate is None:
            rows.append([c.label, _failure_note(runs[c.key])])
            continue
        row = [
            c.label + (f" ({s['runs'] - s['ok_runs']} failed)" if s["ok_runs"] < s["runs"] else ""),
            fmt_int(rate),
            f"{s['rate']['min']:,.0f} - {s['rate']['max']:,.0f}",
            fmt_int(median_of(s, "submit_rate")),
            fmt_ratio(rate / hn if hn else None),
            fmt_ratio(rate / hf if hf else None),
            fmt_num(median_of(s, "sidecar_cpu_pct"), 0, " %"),
            fmt_num(median_of(s, "client_cpu_pct"), 0, " %"),
        ]
        rows.append(row)
    notes = [
        "* ratios against the better consumer thread count of that huey setting (as in core).",
        "  tasks/s = N / (first write -> last task.completed read by the client); huey: N / "
        "(first enqueue ->\n  last SIGNAL_COMPLETE), submit all then drain, in one process. "
        "responses/s: sidecar answers\n  to all N task.submit; for huey, its enqueue rate. "
        "CPU: % of one core over the timed window\n  (sidecar process; the bench process with "
        "its reader thread).",
    ]
    return render_table(headers, rows) + "\n" + "\n".join(notes)


def table_latency(summary: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    headers = ["idle sidecar, one task at a time", "p50 ms", "p95 ms", "max ms", "rounds"]
    if median_of(summary, "p50_ms") is None:
        return render_table(headers, [["submit -> task.started", _failure_note(runs)]])
    pooled = [x for r in runs if r.get("status") == "ok" for x in r["started_ms"]]
    rows = [
        [
            "submit -> task.started (median of rounds)",
            fmt_num(median_of(summary, "p50_ms")),
            fmt_num(median_of(summary, "p95_ms")),
            fmt_num(median_of(summary, "max_ms")),
            str(summary["ok_runs"]),
        ],
        [
            f"submit -> task.started (all {len(pooled)} samples)",
            fmt_num(percentile(pooled, 50)),
            fmt_num(percentile(pooled, 95)),
            fmt_num(max(pooled)),
            "",
        ],
        [
            "submit -> response (median p50)",
            fmt_num(median_of(summary, "response_p50_ms")),
            "",
            "",
            "",
        ],
        [
            "submit -> task.completed (median p50)",
            fmt_num(median_of(summary, "completed_p50_ms")),
            "",
            "",
            "",
        ],
    ]
    return render_table(headers, rows)


def table_startup(startup: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    headers = ["spawn -> sidecar.ready", "p50 ms", "min ms", "max ms", "shutdown p50 ms", "runs"]
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    labels = {"fresh": "fresh database", "reopen": f"reopen ({REOPEN_TASKS:,} tasks in history)"}
    for kind in ("fresh", "reopen"):
        runs = startup.get(kind) or []
        ok = [r["ready_ms"] for r in runs if r.get("status") == "ok"]
        shut = [r["shutdown_ms"] for r in runs if r.get("status") == "ok"]
        s = {
            "ok_runs": len(ok),
            "runs": len(runs),
            "p50_ms": statistics.median(ok) if ok else None,
            "min_ms": min(ok) if ok else None,
            "max_ms": max(ok) if ok else None,
            "shutdown_p50_ms": statistics.median(shut) if shut else None,
        }
        summary[kind] = s
        if not ok:
            rows.append([labels[kind], _failure_note(runs)])
            continue
        rows.append(
            [
                labels[kind],
                fmt_num(s["p50_ms"], 0),
                fmt_num(s["min_ms"], 0),
                fmt_num(s["max_ms"], 0),
                fmt_num(s["shutdown_p50_ms"], 0),
                f"{len(ok)}/{len(runs)}",
            ]
        )
    note = (
        "  from just before Popen(python -m sidecar) to the ready line read by the client; "
        "shutdown: the\n  'shutdown' request until the process has exited."
    )
    return render_table(headers, rows) + "\n" + note, summary


def table_idle(idle: dict[str, Any]) -> str:
    headers = ["idle sidecar", "CPU % of a core", "wake-ups/s", "threads", "window s"]
    if idle.get("status") != "ok":
        return render_table(headers, [["idle CPU", _failure_note([idle])]])
    rows = []
    for key, label in (
        ("after_ready", "after sidecar.ready"),
        ("after_work", f"after {AFTER_WORK_TASKS} tasks ran (info)"),
    ):
        w = idle["windows"][key]
        rows.append(
            [
                label,
                fmt_num(w["cpu_pct"], 3),
                fmt_num(w["wakeups_per_s"], 1),
                str(w["threads"]),
                fmt_num(w["wall_s"], 1),
            ]
        )
    note = (
        "  psutil user+system CPU time delta / wall time (the kernel counts in 10 ms ticks, so "
        "over 30 s\n  the resolution is about 0.03 %); wake-ups = voluntary context switches/s."
    )
    return render_table(headers, rows) + "\n" + note


def evaluate_targets(
    tp: dict[str, dict[str, Any]] | None,
    lat: dict[str, Any] | None,
    start: dict[str, Any] | None,
    idle: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, shown: str, goal: str, ok: bool, note: str) -> None:
        if value is None:
            result = "n/a"
        elif goal == "(info)":
            result = "info"
        else:
            result = "PASS" if ok else "FAIL"
        targets.append(
            {
                "target": name,
                "value": value,
                "shown": shown if value is not None else "-",
                "goal": goal,
                "result": result,
                "note": note if value is not None else (note or "not measured"),
            }
        )

    if tp is not None:
        sc = median_of(tp.get("sidecar", {}), "rate")
        hn, hn_key = _best(tp, "huey-normal")
        hf, _ = _best(tp, "huey-full")
        ratio = sc / hn if sc is not None and hn else None
        add(
            "throughput: sidecar NORMAL / best huey NORMAL",
            ratio,
            fmt_ratio(ratio),
            f">= {TARGET_VS_HUEY:.1f}x",
            ratio is not None and ratio >= TARGET_VS_HUEY,
            f"{fmt_int(sc)} vs {fmt_int(hn)} tasks/s ({hn_key})" if ratio is not None else "",
        )
        c4 = median_of(tp.get("sidecar-c4", {}), "rate")
        ratio_4 = c4 / hn if c4 is not None and hn else None
        add(
            "throughput: sidecar at default concurrency 4 / best huey NORMAL",
            ratio_4,
            fmt_ratio(ratio_4),
            "(info)",
            True,
            f"{fmt_int(c4)} tasks/s" if ratio_4 is not None else "",
        )
        ratio_f = sc / hf if sc is not None and hf else None
        add(
            "throughput: sidecar NORMAL / best huey FULL",
            ratio_f,
            fmt_ratio(ratio_f),
            "(info)",
            True,
            "huey's default durability",
        )
    if lat is not None:
        p50 = median_of(lat, "p50_ms")
        add(
            "idle submit -> task.started p50",
            p50,
            fmt_num(p50, 2, " ms"),
            f"<= {TARGET_LATENCY_P50_MS:.0f} ms",
            p50 is not None and p50 <= TARGET_LATENCY_P50_MS,
            f"p95 {fmt_num(median_of(lat, 'p95_ms'), 2, ' ms')}" if p50 is not None else "",
        )
    if start is not None:
        for kind, label in (("fresh", "fresh db"), ("reopen", "existing db")):
            v = (start.get(kind) or {}).get("p50_ms")
            add(
                f"startup to sidecar.ready p50, {label}",
                v,
                fmt_num(v, 0, " ms"),
                f"<= {TARGET_STARTUP_MS:.0f} ms",
                v is not None and v <= TARGET_STARTUP_MS,
                "",
            )
    if idle is not None:
        v = idle.get("cpu_pct") if idle.get("status") == "ok" else None
        w = (idle.get("windows") or {}).get("after_ready", {})
        add(
            f"idle CPU after ready ({fmt_num(w.get('wall_s'), 0)} s)",
            v,
            fmt_num(v, 3, " %"),
            f"<= {TARGET_IDLE_CPU_PCT} %",
            v is not None and v <= TARGET_IDLE_CPU_PCT,
            f"after work: {fmt_num(idle.get('after_work_cpu_pct'), 3, ' %')}"
            if v is not None
            else "",
        )
    return targets


def table_targets(targets: list[dict[str, Any]]) -> str:
    rows = [[t["target"], t["shown"], t["goal"], t["result"], t["note"]] for t in targets]
    return render_table(["target", "measured", "goal", "result", "note"], rows)


# --- entry --------------------------------------------------------------------------------


def _all_results(*groups: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for g in groups:
        if isinstance(g, dict) and "status" in g:
            out.append(g)
        elif isinstance(g, dict):
            out += _all_results(*g.values())
        elif isinstance(g, list):
            out += _all_results(*g)
    return out


def main(args: argparse.Namespace) -> int:
    opts = options_from(args)
    env = environment()
    root = TempRoot(opts.tmp, opts.keep)
    _say(
        f"taskmill bench sidecar: N={opts.n:,}, rounds={opts.rounds}, samples={opts.samples}, "
        f"spawns={opts.spawns}, idle={opts.idle_s:.0f} s, parts={','.join(sorted(opts.parts))}"
    )
    _say(f"  temp dir {root.path} (filesystem: {root.fs_type or 'unknown'})")
    if root.fs_type in {"tmpfs", "ramfs"}:
        _say("  WARNING: temp dir is in RAM; fsync is free there, so durability costs vanish.")

    tp_runs: dict[str, list[dict[str, Any]]] | None = None
    lat_runs: list[dict[str, Any]] | None = None
    startup: dict[str, Any] | None = None
    idle: dict[str, Any] | None = None
    try:
        if "throughput" in opts.parts:
            tp_runs = run_throughput(opts, root)
        if "latency" in opts.parts:
            lat_runs = run_latency(opts, root)
        if "startup" in opts.parts:
            startup = run_startup(opts, root)
        if "idle" in opts.parts:
            idle = run_idle(opts, root)
    finally:
        root.close()

    tp_sum = {k: numeric_summary(v) for k, v in tp_runs.items()} if tp_runs is not None else None
    lat_sum = numeric_summary(lat_runs) if lat_runs is not None else None
    start_sum: dict[str, Any] | None = None
    _say("")
    if tp_runs is not None and tp_sum is not None:
        _say(
            f"1. throughput: {opts.n:,} noop tasks end to end (tasks/s)  "
            f"[{opts.rounds} interleaved rounds, medians]"
        )
        _say(table_throughput(tp_sum, tp_runs))
        _say("")
    if lat_runs is not None and lat_sum is not None:
        _say(
            f"2. idle latency: {opts.samples} tasks one at a time, per round  "
            f"[{opts.rounds} rounds, medians]"
        )
        _say(table_latency(lat_sum, lat_runs))
        _say("")
    if startup is not None:
        _say(f"3. startup: {opts.spawns} spawns each, interleaved")
        text, start_sum = table_startup(startup)
        _say(text)
        _say("")
    if idle is not None:
        _say("4. idle CPU")
        _say(table_idle(idle))
        _say("")
    targets = evaluate_targets(tp_sum, lat_sum, start_sum, idle)
    _say("Targets (issue 3, Performance)")
    _say(table_targets(targets))

    data = {
        "suite": "sidecar",
        "environment": env,
        "config": {
            "n": opts.n,
            "rounds": opts.rounds,
            "samples": opts.samples,
            "spawns": opts.spawns,
            "idle_s": opts.idle_s,
            "parts": sorted(opts.parts),
            "quick": opts.quick,
            "temp_fs": root.fs_type,
            "sidecar_argv": "python -m sidecar --db <fresh> --max-concurrency 8 (throughput; "
            "sidecar-c4: 4, the default; other parts: defaults, durability normal, log-level info)",
            "reopen_tasks": REOPEN_TASKS,
        },
        "throughput": (
            {
                c.key: {
                    "label": c.label,
                    "params": c.params,
                    "summary": tp_sum[c.key],
                    "runs": tp_runs[c.key],
                }
                for c in CONTENDERS
            }
            if tp_runs is not None and tp_sum is not None
            else None
        ),
        "latency": {"summary": lat_sum, "runs": lat_runs} if lat_runs is not None else None,
        "startup": {"summary": start_sum, **startup} if startup is not None else None,
        "idle": idle,
        "targets": targets,
    }
    write_json(opts.out, data)
    _say(f"\nresults written to {opts.out}")
    errors = [r for r in _all_results(tp_runs, lat_runs, startup, idle) if r["status"] == "error"]
    if errors:
        print(f"{len(errors)} measurement(s) failed; see the JSON for details.", file=sys.stderr)
        return 1
    return 0
