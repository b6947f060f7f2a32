"""The ``io`` suite (issue 4, "Benchmark"): does the IO governor keep a busy machine responsive?

Real disk, side by side in one run. Background work really writes files: a queue of 16 copies
of a 64 MB file (the sidecar's own paced ``fs.copy`` executor, fsync every 8 MB and at the end;
each finished copy is deleted and replaced by a new one, so the queue never runs dry) at
concurrency 4, while a foreground probe — a process of its own, see ``io_probe.py`` — writes
and fsyncs a 4 KiB file every 50 ms and records each save's latency. Phases, each with a fresh
database and scheduler:

0. ``idle``: the probe alone (context for the latencies).
1. ``ungoverned``: no budget, ``auto`` off. Measures D, the disk's sustained write rate: the
   median of the device's write rate (psutil, whole disks) over 1-s windows.
2. ``governed``: ``diskWriteBps`` = B = D / 2. Targets: the background write rate (the bytes
   the copies moved, from their progress reports) per 1-s window <= 1.15 x B at p95 and >= 0.8 x
   B on average; the probe's p95 latency <= 50 % of its ungoverned p95.
3. ``auto``: no budget, ``auto`` on. Target: the learned capacity (``status().io.capacity``,
   enforced once established) within 25 % of D.

The copies run through a real :class:`~taskmill_core.Scheduler` in this process (real clock,
real psutil sampler) with the executor the sidecar registers, ``paced=True``: the governor,
the sampler and the executor are exactly the sidecar's, and ``status().io`` and the per-window
byte counts are read without a JSON-RPC hop perturbing the timing. (The sidecar process adds
only stdio framing, which moves no file bytes.)

Windows: the first ``--warmup`` seconds of each phase are left out of the statistics (queue
filling, page cache warming); so are probe saves outside the measured span.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from sidecar.builtin import PathScope, builtin_executors
from taskmill_core import IoBytes, IoConfig, Scheduler, SchedulerConfig, TaskSpec
from taskmill_core.iomonitor import PsutilSampler
from taskmill_core.types import TaskCancelled, TaskCompleted, TaskFailed, TaskProgress
from tests.bench.harness import RESULTS_DIR, ROOT, environment, render_table, write_json

MB = 1_000_000
MiB = 1 << 20
PROBE_INTERVAL_MS = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="shorter phases (smoke run)")
    parser.add_argument("--seconds", type=float, default=30.0, help="ungoverned phase length")
    parser.add_argument("--governed-seconds", type=float, default=40.0)
    parser.add_argument("--auto-seconds", type=float, default=40.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out per phase")
    parser.add_argument("--copies", type=int, default=16, help="copies kept queued")
    parser.add_argument("--file-mb", type=int, default=64, help="size of each copy (MiB)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tmp", help="directory for the files (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp files")
    parser.add_argument("--out", default=str(RESULTS_DIR / "io.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "io-bench.png"))
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)  # accepted from 'all'


# --- statistics -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def windows(samples: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(window end in s since the phase began, bytes/s) for consecutive 1-s samples."""
    out = []
    for a, b in itertools.pairwise(samples):
        dt = b["t"] - a["t"]
        if dt > 0:
            out.append((b["t"], (b[key] - a[key]) / dt))
    return out


# --- one phase ------------------------------------------------------------------------------


def _start_probe(directory: Path, seconds: float) -> subprocess.Popen[str]:
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "tests.bench.io_probe",
        str(directory),
        str(seconds),
        str(PROBE_INTERVAL_MS),
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _probe_result(proc: subprocess.Popen[str], t0: float) -> list[tuple[float, float]]:
    out, _ = proc.communicate(timeout=60)
    samples = json.loads(out.strip().splitlines()[-1])["samples"]
    return [(float(t) - t0, float(ms)) for t, ms in samples]


async def _idle_phase(work: Path, seconds: float) -> dict[str, Any]:
    t0 = time.time()
    proc = _start_probe(work / "probe-idle", seconds)
    await anyio.to_thread.run_sync(proc.wait)
    return {"name": "idle", "probe": _probe_result(proc, t0), "samples": []}


async def _copy_phase(
    name: str, io: IoConfig, seconds: float, work: Path, src: Path, args: argparse.Namespace
) -> dict[str, Any]:
    out_dir = work / f"{name}-out"
    size = await anyio.to_thread.run_sync(_prepare, out_dir, src)
    config = SchedulerConfig(max_concurrency=args.concurrency, io=io, progress_hz=20)
    sched = Scheduler(
        work / f"{name}.db", config, load_entry_points=False, close_grace_ms=0
    )  # real clock, real psutil sampler: exactly what the sidecar runs
    device = PsutilSampler()
    own = 0
    seen: dict[int, int] = {}
    seq = 0
    completed = 0
    samples: list[dict[str, Any]] = []
    capacity_trace: list[tuple[float, float | None, float]] = []
    async with sched:
        for reg in builtin_executors(PathScope([work]), []):
            sched.register(reg.type, reg.fn, builtin=True, paced=reg.paced)
        sub = sched.subscribe()

        async def submit_one() -> None:
            nonlocal seq
            seq += 1
            spec = TaskSpec(
                type="fs.copy",
                payload={"src": str(src), "dst": str(out_dir / f"copy-{seq}.bin")},
                priority=192,  # background work
                io_cost=IoBytes(disk_read=size, disk_write=size),
            )
            await sched.submit(spec)

        deadline = time.monotonic() + seconds

        async def follow() -> None:
            nonlocal own, completed
            async for ev in sub:
                if isinstance(ev, TaskProgress):
                    done = ev.progress.bytes_done
                    if done is not None and done >= seen.get(ev.id, 0):
                        own += done - seen.get(ev.id, 0)
                        seen[ev.id] = done
                elif isinstance(ev, TaskCompleted):
                    result = ev.result if isinstance(ev.result, dict) else {}
                    final = int(result.get("bytes", size))
                    own += final - seen.pop(ev.id, 0)
                    completed += 1
                    dst = Path(str(result.get("dst", "")))
                    await anyio.to_thread.run_sync(_unlink, dst)
                    if time.monotonic() < deadline:
                        await submit_one()
                elif isinstance(ev, TaskFailed | TaskCancelled):
                    seen.pop(ev.id, None)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            t0 = time.time()
            probe = _start_probe(work / f"probe-{name}", seconds)
            for _ in range(args.copies):
                await submit_one()
            for i in range(int(seconds) + 1):
                delay = t0 + i - time.time()
                if delay > 0:
                    await anyio.sleep(delay)
                counters = await anyio.to_thread.run_sync(device.sample)
                st = (await sched.status()).io
                gov = {r.resource: r for r in sched.io_governor.statistics().resources}
                disk = gov["diskWrite"]
                samples.append(
                    {
                        "t": time.time() - t0,
                        "device": counters.totals()["diskWrite"],
                        "own": own,
                        "observed_bps": st.disk_write_bps,
                        "capacity": st.capacity.get("diskWrite"),
                        "learned_bps": disk.learned_bps,
                        "established": disk.established,
                        "throttling": st.throttling,
                    }
                )
                capacity_trace.append((samples[-1]["t"], samples[-1]["capacity"], own))
            await sched.cancel_many(type="fs.copy")
            tg.cancel_scope.cancel()
        probe_samples = await anyio.to_thread.run_sync(_probe_result, probe, t0)
    await anyio.to_thread.run_sync(shutil.rmtree, out_dir, True)
    await anyio.to_thread.run_sync(os.sync)
    await anyio.sleep(2)  # let the disk settle before the next phase
    return {
        "name": name,
        "io": {"diskWriteBps": io.disk_write_bps, "auto": io.auto},
        "copies_completed": completed,
        "samples": samples,
        "probe": probe_samples,
    }


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _prepare(out_dir: Path, src: Path) -> int:
    out_dir.mkdir()
    return src.stat().st_size


def _write_source(src: Path, mib: int) -> None:
    with open(src, "wb") as f:  # incompressible, written once; read back from the page cache
        for _ in range(mib):
            f.write(os.urandom(MiB))
        f.flush()
        os.fsync(f.fileno())


def _summarize(phase: dict[str, Any], warmup: float, end: float | None) -> dict[str, Any]:
    def keep(t: float) -> bool:
        return t > warmup and (end is None or t <= end + 0.5)

    own = [r for t, r in windows(phase["samples"], "own") if keep(t)]
    dev = [r for t, r in windows(phase["samples"], "device") if keep(t)]
    lat = [ms for t, ms in phase["probe"] if keep(t)]
    return {
        "own_bps": {"mean": mean(own), "p50": pct(own, 50), "p95": pct(own, 95), "n": len(own)},
        "device_bps": {"mean": mean(dev), "p50": pct(dev, 50), "p95": pct(dev, 95)},
        "probe_ms": {
            "p50": pct(lat, 50),
            "p95": pct(lat, 95),
            "p99": pct(lat, 99),
            "max": max(lat) if lat else None,
            "n": len(lat),
        },
    }


# --- the plot -------------------------------------------------------------------------------


def _plot(path: Path, phases: dict[str, dict[str, Any]], d: float, b: float) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[dev]'): no plot"
    styles = {
        "ungoverned": ("tab:red", "ungoverned"),
        "governed": ("tab:blue", f"governed (B = {b / MB:.0f} MB/s)"),
        "auto": ("tab:green", "auto (learned capacity)"),
    }
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    for name, (color, label) in styles.items():
        ph = phases.get(name)
        if ph is None:
            continue
        w = windows(ph["samples"], "own")
        top.plot([t for t, _ in w], [r / MB for _, r in w], color=color, lw=1.8, label=label)
        if name == "auto":
            cap = [(s["t"], s["capacity"] / MB) for s in ph["samples"] if s["capacity"]]
            if cap:
                top.plot(
                    *zip(*cap, strict=True),
                    color=color,
                    ls=":",
                    lw=1.5,
                    label="auto: learned capacity",
                )
    top.axhline(d / MB, color="gray", ls="--", lw=1, label=f"D = {d / MB:.0f} MB/s (ungoverned)")
    top.axhline(1.15 * b / MB, color="tab:blue", ls=":", lw=1, label="1.15 x B")
    top.axhline(0.8 * b / MB, color="tab:blue", ls="-.", lw=0.8, label="0.8 x B")
    top.set_ylabel("background writes, MB/s (1-s windows)")
    top.set_ylim(bottom=0)
    top.legend(loc="upper right", fontsize=8, ncol=2)
    top.set_title("16 x 64 MB paced fs.copy (fsync) vs. a 4 KiB write+fsync every 50 ms")
    for name in ("idle", "ungoverned", "governed"):
        ph = phases.get(name)
        if ph is None:
            continue
        color, label = styles.get(name, ("black", "idle (no background writes)"))
        t = [x for x, _ in ph["probe"]]
        ms = [y for _, y in ph["probe"]]
        bottom.plot(t, ms, ".", ms=3, color=color, alpha=0.6, label=label)
        p95 = pct([y for x, y in ph["probe"] if x > 3], 95)
        if p95 is not None and name != "idle":
            bottom.axhline(p95, color=color, ls="--", lw=1, label=f"{name} p95 {p95:.1f} ms")
    bottom.set_yscale("log")
    bottom.set_ylabel("probe save latency, ms (log)")
    bottom.set_xlabel("seconds since the phase began")
    bottom.legend(loc="upper right", fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --- main -----------------------------------------------------------------------------------


def _fmt_mb(x: float | None) -> str:
    return "-" if x is None else f"{x / MB:.1f}"


def _fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


async def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    src = work / "src.bin"
    await anyio.to_thread.run_sync(_write_source, src, args.file_mb)
    phases: dict[str, dict[str, Any]] = {}
    print(f"idle probe ({args.idle_seconds:.0f} s) ...", flush=True)
    phases["idle"] = await _idle_phase(work, args.idle_seconds)
    print(f"ungoverned ({args.seconds:.0f} s) ...", flush=True)
    phases["ungoverned"] = await _copy_phase(
        "ungoverned", IoConfig(auto=False), args.seconds, work, src, args
    )
    ung = _summarize(phases["ungoverned"], args.warmup, args.seconds)
    d = ung["device_bps"]["p50"] or 0.0
    b = max(1, int(d / 2))
    print(f"D = {d / MB:.1f} MB/s; governed at B = {b / MB:.1f} MB/s ...", flush=True)
    phases["governed"] = await _copy_phase(
        "governed", IoConfig(disk_write_bps=b, auto=False), args.governed_seconds, work, src, args
    )
    print(f"auto ({args.auto_seconds:.0f} s) ...", flush=True)
    phases["auto"] = await _copy_phase(
        "auto", IoConfig(auto=True), args.auto_seconds, work, src, args
    )
    return {"phases": phases, "D": d, "B": b}


def main(args: argparse.Namespace) -> int:
    if args.quick:
        args.seconds, args.governed_seconds, args.auto_seconds = 12.0, 15.0, 25.0
        args.idle_seconds = 3.0
    base = Path(tempfile.mkdtemp(prefix="taskmill-io-bench-", dir=args.tmp))
    free = shutil.disk_usage(base).free
    need = (args.copies + 2) * args.file_mb * MiB
    if free < 2 * need:
        print(f"not enough free space in {base}: {free / MB:.0f} MB free, want {2 * need / MB:.0f}")
        shutil.rmtree(base, ignore_errors=True)
        return 1
    try:
        data = anyio.run(_run, args, base)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    phases, d, b = data["phases"], data["D"], data["B"]
    ends = {"idle": None, "ungoverned": args.seconds, "governed": args.governed_seconds}
    ends["auto"] = args.auto_seconds
    summary = {
        n: _summarize(ph, 0.0 if n == "idle" else args.warmup, ends[n]) for n, ph in phases.items()
    }

    rows = []
    for n, s in summary.items():
        rows.append(
            [
                n,
                _fmt_mb(s["own_bps"]["mean"]),
                _fmt_mb(s["own_bps"]["p95"]),
                _fmt_mb(s["device_bps"]["mean"]),
                _fmt_mb(s["device_bps"]["p95"]),
                _fmt_ms(s["probe_ms"]["p50"]),
                _fmt_ms(s["probe_ms"]["p95"]),
                _fmt_ms(s["probe_ms"]["p99"]),
                _fmt_ms(s["probe_ms"]["max"]),
                str(s["probe_ms"]["n"]),
            ]
        )
    print()
    print(
        render_table(
            [
                "phase",
                "bg MB/s mean",
                "bg p95",
                "disk MB/s mean",
                "disk p95",
                "probe p50 ms",
                "p95",
                "p99",
                "max",
                "saves",
            ],
            rows,
        )
    )

    gov, ung = summary["governed"], summary["ungoverned"]
    auto_samples = phases["auto"]["samples"]
    learned = auto_samples[-1]["capacity"] if auto_samples else None
    established_at = next((s["t"] for s in auto_samples if s["capacity"]), None)
    estimate = auto_samples[-1]["learned_bps"] if auto_samples else None
    p95_rate, mean_rate = gov["own_bps"]["p95"], gov["own_bps"]["mean"]
    p95_gov, p95_ung = gov["probe_ms"]["p95"], ung["probe_ms"]["p95"]
    targets = [
        (
            "governed bg writes p95 of 1-s windows <= 1.15 x B",
            f"{_fmt_mb(p95_rate)} MB/s vs <= {_fmt_mb(1.15 * b)}",
            p95_rate is not None and p95_rate <= 1.15 * b,
        ),
        (
            "governed bg writes mean >= 0.8 x B",
            f"{_fmt_mb(mean_rate)} MB/s vs >= {_fmt_mb(0.8 * b)}",
            mean_rate is not None and mean_rate >= 0.8 * b,
        ),
        (
            "probe p95 governed <= 50 % of ungoverned",
            f"{_fmt_ms(p95_gov)} ms vs {_fmt_ms(p95_ung)} ms"
            + (f" ({100 * p95_gov / p95_ung:.0f} %)" if p95_gov and p95_ung else ""),
            p95_gov is not None and p95_ung is not None and p95_gov <= 0.5 * p95_ung,
        ),
        (
            "auto: learned capacity within 25 % of D",
            f"{_fmt_mb(learned)} MB/s vs D {_fmt_mb(d)}"
            + (f" ({100 * (learned - d) / d:+.0f} %)" if learned and d else "")
            + (f", established at {established_at:.0f} s" if established_at else ""),
            learned is not None and d > 0 and abs(learned - d) <= 0.25 * d,
        ),
    ]
    print()
    print(f"D (ungoverned disk write rate, median of 1-s windows) = {d / MB:.1f} MB/s; B = D/2")
    print(
        render_table(
            ["target", "measured", "result"],
            [[t, m, "PASS" if ok else "FAIL"] for t, m, ok in targets],
        )
    )
    if learned is None:
        print(f"(auto: capacity not established; learner estimate {_fmt_mb(estimate)} MB/s)")

    problem = _plot(Path(args.plot), phases, d, b)
    print(problem or f"plot: {args.plot}")
    write_json(
        Path(args.out),
        {
            "suite": "io",
            "environment": environment(),
            "settings": {
                k: getattr(args, k)
                for k in (
                    "seconds",
                    "governed_seconds",
                    "auto_seconds",
                    "idle_seconds",
                    "warmup",
                    "copies",
                    "file_mb",
                    "concurrency",
                )
            },
            "probe_interval_ms": PROBE_INTERVAL_MS,
            "D_bps": d,
            "B_bps": b,
            "learned_capacity_bps": learned,
            "learned_established_at_s": established_at,
            "summary": summary,
            "targets": [{"target": t, "measured": m, "pass": ok} for t, m, ok in targets],
            "phases": phases,
        },
    )
    print(f"results: {args.out}")
    return 0
