"""``python -m tests.bench schedules``: what recurring schedules cost (issue 14).

Two parts, each against its own baseline in the same run:

  idle   CPU of a real sidecar process (psutil) over a quiet window: with no schedule, then
         with 1,000 schedules none of which is due within the window. Target: the one with
         1,000 schedules stays <= 0.5 % of a core (the sidecar suite's idle target).
  fire   1,000 schedules fall due at the same millisecond in an in-process scheduler; the
         stall watchdog of the core suite (scenario D: the loop thread's CPU time within a
         late 1 ms sleep, excl. GC) measures how long any piece of the firing held the loop.
         Target: <= 5 ms (the core suite's loop-stall target). Baseline: one submit_batch of
         the same 1,000 tasks, measured the same way.

Medians of ``--rounds`` rounds. Results go to bench-results/schedules.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from pathlib import Path
from typing import Any

import psutil

from tests.bench.harness import ROOT, TempRoot
from tests.bench.sidecar_proc import SidecarProcess
from tests.bench.sidecar_suite import TARGET_IDLE_CPU_PCT, _idle_window, _request
from tests.bench.stall import StallWatch

__all__ = ["add_arguments", "main"]

TARGET_STALL_MS = 5.0  # the core suite's D target
SCHEDULES = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, 5 s idle")
    parser.add_argument("--rounds", type=int, help="rounds per part (default 3; quick 1)")
    parser.add_argument("--idle-s", type=float, help="idle window, seconds (default 20)")
    parser.add_argument("--n", type=int, default=SCHEDULES, help="schedules (default 1000)")
    parser.add_argument("--tmp", help="where the databases go")
    parser.add_argument("--keep", action="store_true", help="keep the databases")


def _say(msg: str) -> None:
    print(msg, flush=True)


# --- idle --------------------------------------------------------------------------------------


def idle_cpu(workdir: Path, n: int, seconds: float) -> dict[str, Any]:
    """Idle CPU of a sidecar holding ``n`` schedules due in an hour or later."""
    sc = SidecarProcess(workdir / "sidecar.db")
    try:
        sc.wait_ready()
        now = int(time.time() * 1000)
        for i in range(n):  # pipelined: every request written, then every answer read
            params = {
                "task": {"type": "noop"},
                "everyMs": 3_600_000,
                "startAt": now + 3_600_000 + i,
            }
            sc.write(_request(i + 1, "schedule.create", params))
        answered = 0
        while answered < n:
            _, msg = sc.next_message(60)
            if "id" in msg and ("result" in msg or "error" in msg):
                if "error" in msg:
                    raise RuntimeError(f"schedule.create failed: {msg['error']}")
                answered += 1
        time.sleep(0.5)  # let the last commits and their WAL checkpoint pass
        window = _idle_window(psutil.Process(sc.pid), seconds)
        sc.shutdown()
        return {"status": "ok", "schedules": n, **window}
    except Exception as exc:
        sc.kill()
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}


# --- fire ------------------------------------------------------------------------------------


async def fire_at_once(workdir: Path, n: int) -> dict[str, Any]:
    """``n`` schedules due at the same time: the worst loop stall while they fire and their
    tasks run, and how long until every one fired."""
    from taskmill_core import Scheduler, SchedulerConfig, TaskSpec
    from taskmill_core.types import ScheduleFired

    config = SchedulerConfig(max_concurrency=8)
    ran = 0

    async def noop(ctx: Any, payload: Any) -> None:
        nonlocal ran
        ran += 1

    async with StallWatch() as watch:
        async with Scheduler(str(workdir / "fire.db"), config, io_monitor=False) as sched:
            sched.register("bench.noop", noop)
            watch.phase("create")
            due = int(time.time() * 1000) + 2000 + n // 2  # after all n are created
            for _ in range(n):
                await sched.schedule(TaskSpec(type="bench.noop"), every_ms=3_600_000, start_at=due)
            gc.collect()
            gc.freeze()  # as the sidecar does after startup
            sub = sched.subscribe()
            await asyncio.sleep(max(0.0, (due - time.time() * 1000) / 1000 - 0.2))
            watch.phase("fire")
            fired = 0
            t0 = time.perf_counter()
            async for event in sub:
                if isinstance(event, ScheduleFired):
                    fired += 1
                    if fired == n:
                        break
            t_fired = time.perf_counter()
            await sched.wait_idle()
            watch.phase("close")
            sub.close()
        gc.unfreeze()
    stall = watch.summary()
    return {
        "status": "ok" if ran == n else "error",
        "error": None if ran == n else f"{ran}/{n} tasks ran",
        "fired": fired,
        "fire_s": t_fired - t0,
        "busy_fire_ms": stall["phases_held"].get("fire"),
        "late_fire_ms": stall["phases"].get("fire"),
        "stall": stall,
    }


async def batch_at_once(workdir: Path, n: int) -> dict[str, Any]:
    """The baseline: the same ``n`` tasks as one ``submit_batch``, watched the same way."""
    from taskmill_core import Scheduler, SchedulerConfig, TaskSpec

    config = SchedulerConfig(max_concurrency=8)

    async def noop(ctx: Any, payload: Any) -> None:
        return None

    async with StallWatch() as watch:
        async with Scheduler(str(workdir / "batch.db"), config, io_monitor=False) as sched:
            sched.register("bench.noop", noop)
            gc.collect()
            gc.freeze()
            await asyncio.sleep(0.2)
            watch.phase("fire")
            await sched.submit_batch([TaskSpec(type="bench.noop") for _ in range(n)])
            await sched.wait_idle()
            watch.phase("close")
        gc.unfreeze()
    stall = watch.summary()
    return {"status": "ok", "busy_fire_ms": stall["phases_held"].get("fire"), "stall": stall}


# --- main --------------------------------------------------------------------------------------


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get("status") == "ok" and r.get(key) is not None]
    return statistics.median(values) if values else None


def main(args: argparse.Namespace) -> int:
    rounds = args.rounds or (1 if args.quick else 3)
    idle_s = args.idle_s or (5.0 if args.quick else 20.0)
    n = args.n
    root = TempRoot(str(args.tmp) if args.tmp else None, keep=args.keep)
    idle_empty: list[dict[str, Any]] = []
    idle_full: list[dict[str, Any]] = []
    fire: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    try:
        for r in range(rounds):
            _say(f"round {r + 1}/{rounds}")
            with root.measurement(f"idle0-{r}") as d:
                idle_empty.append(idle_cpu(d, 0, idle_s))
            with root.measurement(f"idle-{r}") as d:
                idle_full.append(idle_cpu(d, n, idle_s))
            _say(
                f"  idle CPU: no schedule {idle_empty[-1].get('cpu_pct', float('nan')):.3f} %, "
                f"{n} schedules {idle_full[-1].get('cpu_pct', float('nan')):.3f} %"
            )
            with root.measurement(f"fire-{r}") as d:
                fire.append(asyncio.run(fire_at_once(d, n)))
            with root.measurement(f"batch-{r}") as d:
                batch.append(asyncio.run(batch_at_once(d, n)))
            _say(
                f"  loop busy: {n} due schedules {fire[-1].get('busy_fire_ms')} ms "
                f"(all fired in {fire[-1].get('fire_s', float('nan')):.3f} s), "
                f"a batch of {n} tasks {batch[-1].get('busy_fire_ms')} ms"
            )
    finally:
        root.close()
    summary = {
        "idle_cpu_pct_no_schedule": _median(idle_empty, "cpu_pct"),
        "idle_cpu_pct_schedules": _median(idle_full, "cpu_pct"),
        "idle_wakeups_per_s_schedules": _median(idle_full, "wakeups_per_s"),
        "fire_busy_ms": _median(fire, "busy_fire_ms"),
        "fire_s": _median(fire, "fire_s"),
        "batch_busy_ms": _median(batch, "busy_fire_ms"),
    }
    idle_ok = (summary["idle_cpu_pct_schedules"] or 1e9) <= TARGET_IDLE_CPU_PCT
    fire_ok = (summary["fire_busy_ms"] or 1e9) <= TARGET_STALL_MS
    _say("\nschedules (medians)")
    _say(
        f"  idle CPU, {n} schedules none due: {summary['idle_cpu_pct_schedules']} % "
        f"(no schedule: {summary['idle_cpu_pct_no_schedule']} %), target <= "
        f"{TARGET_IDLE_CPU_PCT} %: {'met' if idle_ok else 'MISSED'}"
    )
    _say(
        f"  loop busy while {n} due schedules fire: {summary['fire_busy_ms']} ms "
        f"(one batch of {n}: {summary['batch_busy_ms']} ms), target <= {TARGET_STALL_MS} ms: "
        f"{'met' if fire_ok else 'MISSED'}"
    )
    out = ROOT / "bench-results" / "schedules.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "summary": summary,
                "rounds": rounds,
                "idle_s": idle_s,
                "n": n,
                "runs": {"idle_empty": idle_empty, "idle": idle_full, "fire": fire},
                "batch": batch,
            },
            indent=2,
            default=str,
        )
    )
    _say(f"  wrote {out.relative_to(ROOT)}")
    return 0 if idle_ok and fire_ok else 1
