"""The ``core`` suite: issue 2's performance targets for taskmill_core, side by side with peers.

Scenarios (README.md has the details):
  A  sequential: N awaited submits, then drain at concurrency 8 (taskmill vs huey FULL/NORMAL,
     persist-queue, raw sqlite3 floor)
  B  concurrent: 200 submitters in flight, N in total, live drain at concurrency 8
  C  ``submit_batch`` of N
  D  worst event-loop stall during every taskmill run (derived from A, B, C and E)
  E  scale: claim latency, drain time and RSS with 1,000 vs ``--scale-n`` pending tasks

Every measurement is a fresh child process on a fresh database in a fresh temp directory;
rounds interleave the contenders in rotating order and the tables report medians.
"""

from __future__ import annotations

import argparse
import sys
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

SCALE_SMALL = 1_000
PROBES = 20
DRAIN_FIRST = 1_000
SUBMITTERS = 200

TARGET_VS_HUEY = 1.5
TARGET_CONCURRENT = 10_000.0
TARGET_BATCH = 100_000.0
TARGET_STALL_MS = 5.0
TARGET_SCALE_RATIO = 2.0
TARGET_RSS_MB = 30.0


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    runner: str
    family: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_taskmill(self) -> bool:
        return self.family.startswith("taskmill")


def _huey(sync: str, workers: int, note: str = "") -> Contender:
    return Contender(
        key=f"huey-{sync}-w{workers}",
        label=f"huey SqliteHuey {sync.upper()}{note}, consumer -w {workers}",
        runner="huey",
        family=f"huey-{sync}",
        params={"sync": sync, "workers": workers},
    )


TASKMILL = Contender("taskmill", "taskmill_core NORMAL", "taskmill", "taskmill")
TASKMILL_FULL = Contender("taskmill-full", "taskmill_core FULL", "taskmill-full", "taskmill-full")
A_CONTENDERS = (
    TASKMILL,
    TASKMILL_FULL,
    _huey("full", 1, " (huey default)"),
    _huey("full", 8),
    _huey("normal", 1),
    _huey("normal", 8),
    Contender(
        "persist-queue-w8",
        "persist-queue SQLiteAckQueue (FULL), 8 threads",
        "persist-queue",
        "persist-queue",
        {"workers": 8},
    ),
    Contender("raw-w1", "raw sqlite3 floor NORMAL, 1 thread", "raw-sqlite", "raw", {"workers": 1}),
    Contender("raw-w8", "raw sqlite3 floor NORMAL, 8 threads", "raw-sqlite", "raw", {"workers": 8}),
)
B_CONTENDERS = (TASKMILL, _huey("normal", 1), _huey("normal", 8))
C_CONTENDERS = (TASKMILL,)
CONTENDERS = {"A": A_CONTENDERS, "B": B_CONTENDERS, "C": C_CONTENDERS}

TITLES = {
    "A": "A. sequential: {n:,} awaited submits, then drain at concurrency 8 (end-to-end tasks/s)",
    "B": "B. concurrent: {s} submitters in flight, {n:,} tasks, live drain at concurrency 8",
    "C": "C. submit_batch of {n:,} tasks (batch call only; end-to-end incl. drain alongside)",
    "D": "D. worst event-loop stall during taskmill runs (1 ms watchdog; whole scheduler life)",
    "E": "E. scale: {small:,} vs {big:,} pending tasks (fresh process per measurement)",
}


@dataclass
class Options:
    n: int
    rounds: int
    scale_n: int
    only: set[str]
    out: Path
    tmp: str | None
    keep: bool
    submitters: int = SUBMITTERS
    probes: int = PROBES
    quick: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: N=2,000, 2 rounds, --scale-n 50,000"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 2)")
    parser.add_argument("--n", type=int, help="tasks per run in A, B, C (default 10,000)")
    parser.add_argument(
        "--scale-n",
        type=int,
        help="pending tasks in E's big database (default 1,000,000; quick 50,000); "
        f"a value <= {SCALE_SMALL:,} runs only the small case",
    )
    parser.add_argument(
        "--only", help="comma-separated scenarios to run, e.g. A,C (default: A,B,C,D,E)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR / "core.json",
        help="JSON results file (default bench-results/core.json)",
    )
    parser.add_argument("--tmp", help="directory for the temp databases (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp databases")


def options_from(args: argparse.Namespace) -> Options:
    only = {s.strip().upper() for s in (args.only or "A,B,C,D,E").split(",") if s.strip()}
    unknown = only - set("ABCDE")
    if unknown:
        raise SystemExit(f"--only: unknown scenario(s) {','.join(sorted(unknown))}")
    for name in ("rounds", "n"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"--{name} must be >= 1")
    return Options(
        n=args.n or (2_000 if args.quick else 10_000),
        rounds=args.rounds or (2 if args.quick else 5),
        scale_n=args.scale_n if args.scale_n is not None else (50_000 if args.quick else 1_000_000),
        only=only,
        out=args.out,
        tmp=args.tmp,
        keep=args.keep,
        quick=args.quick,
    )


def taskmill_unavailable() -> str | None:
    """``None`` if the API the benchmark needs imports, else why not (checked in-process once,
    so the harness does not spawn children only to learn the module is not there yet)."""
    try:
        from tests.bench.taskmill_runs import Unavailable, load_api

        load_api()
    except Unavailable as exc:
        return str(exc)
    return None


def _say(msg: str) -> None:
    print(msg, flush=True)


def _describe(res: dict[str, Any], key: str = "rate") -> str:
    status = res.get("status")
    if status == "ok":
        value = res.get(key)
        return f"{value:,.0f} tasks/s" if isinstance(value, int | float) else "ok"
    if status == "unavailable":
        return "unavailable"
    return f"ERROR {res.get('error')}"


# --- running ------------------------------------------------------------------------------


def run_throughput(
    scenario: str,
    contenders: tuple[Contender, ...],
    opts: Options,
    root: TempRoot,
    tm_missing: str | None,
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {c.key: [] for c in contenders}
    active = [c for c in contenders if not (c.is_taskmill and tm_missing)]
    inner_timeout = max(120.0, opts.n / 100)
    for r in range(opts.rounds):
        for c in rotated(active, r):
            with root.measurement(f"{scenario}-r{r + 1}-{c.key}") as d:
                params = {
                    "scenario": scenario,
                    "runner": c.runner,
                    "n": opts.n,
                    "dir": str(d),
                    "timeout": inner_timeout,
                    "submitters": opts.submitters,
                    **c.params,
                }
                res = run_child(params, timeout=inner_timeout + 60)
            res["round"] = r + 1
            runs[c.key].append(res)
            _say(f"  {scenario} round {r + 1}/{opts.rounds}  {c.key:<18} {_describe(res)}")
    for c in contenders:
        if c.is_taskmill and tm_missing:
            runs[c.key] = [{"status": "unavailable", "reason": tm_missing}]
    return runs


def run_scale(opts: Options, root: TempRoot, tm_missing: str | None) -> dict[str, Any]:
    if tm_missing:
        return {"status": "unavailable", "reason": tm_missing}
    sizes = {"small": SCALE_SMALL}
    if opts.scale_n > SCALE_SMALL:
        sizes["big"] = opts.scale_n
    builds: dict[str, list[dict[str, Any]]] = {k: [] for k in sizes}
    probes: dict[str, list[dict[str, Any]]] = {k: [] for k in sizes}
    probe_timeout = 120.0
    probe_params = {"probes": opts.probes, "drain": DRAIN_FIRST, "timeout": probe_timeout}

    big_dir: Path | None = None
    if "big" in sizes:
        big_dir = root.fresh("E-big")
        _say(f"  E building the {sizes['big']:,}-task database ...")
        build = run_child(
            {"scenario": "E", "runner": "build", "n": sizes["big"], "db": str(big_dir / "t.db")},
            timeout=max(900.0, sizes["big"] / 500),
        )
        builds["big"].append(build)
        _say(f"  E build big  {_describe(build)}")
        if build.get("status") != "ok":
            del sizes["big"]

    order = list(sizes)
    for r in range(opts.rounds):
        for size in rotated(order, r):
            if size == "small":
                with root.measurement(f"E-r{r + 1}-small") as d:
                    db = str(d / "t.db")
                    build = run_child(
                        {"scenario": "E", "runner": "build", "n": sizes["small"], "db": db},
                        timeout=300,
                    )
                    builds["small"].append(build)
                    res = (
                        run_child(
                            {"scenario": "E", "runner": "probe", "db": db, **probe_params},
                            timeout=probe_timeout + 120,
                        )
                        if build.get("status") == "ok"
                        else {"status": "error", "error": f"build failed: {build.get('error')}"}
                    )
            else:
                assert big_dir is not None
                res = run_child(
                    {
                        "scenario": "E",
                        "runner": "probe",
                        "db": str(big_dir / "t.db"),
                        **probe_params,
                    },
                    timeout=probe_timeout + 300,
                )
            res["round"] = r + 1
            probes[size].append(res)
            detail = (
                f"claim {res['probe_median_ms']:.2f} ms, drain {DRAIN_FIRST:,} in "
                f"{res['drain_s']:.3f} s, RSS {res['rss_open_mb']:.1f} MB"
                if res.get("status") == "ok"
                else _describe(res)
            )
            _say(f"  E round {r + 1}/{opts.rounds}  {size:<6} {detail}")
    if big_dir is not None:
        root.discard(big_dir)
    return {"status": "ok", "sizes": sizes, "builds": builds, "probes": probes}


# --- reporting ----------------------------------------------------------------------------


def _failure_note(runs: list[dict[str, Any]]) -> str:
    for r in runs:
        if r.get("status") == "unavailable":
            return str(r.get("reason"))
    errors = [r for r in runs if r.get("status") == "error"]
    if errors:
        return f"error: {errors[0].get('error')}"
    return "no runs"


def _best_median(summaries: dict[str, dict[str, Any]], family: str, keys: list[str]) -> float:
    values = [median_of(summaries[k], "rate") for k in keys if k.startswith(family)]
    return max((v for v in values if v is not None), default=0.0)


def table_throughput(
    scenario: str,
    contenders: tuple[Contender, ...],
    summaries: dict[str, dict[str, Any]],
    runs: dict[str, list[dict[str, Any]]],
) -> str:
    keys = [c.key for c in contenders]
    huey_normal = _best_median(summaries, "huey-normal", keys)
    raw = _best_median(summaries, "raw", keys)
    headers = ["contender", "tasks/s median", "min - max"]
    if scenario == "C":
        headers += ["end-to-end/s"]
    else:
        headers += ["submit/s", "drain/s"]
    if huey_normal:
        headers.append("vs huey NORMAL*")
    if raw:
        headers.append("vs raw floor*")
    headers.append("stall max")
    rows: list[list[str]] = []
    for c in contenders:
        s = summaries[c.key]
        rate = median_of(s, "rate")
        if rate is None:
            rows.append([c.label, _failure_note(runs[c.key])])
            continue
        lo, hi = s["rate"]["min"], s["rate"]["max"]
        row = [c.label, fmt_int(rate), f"{lo:,.0f} - {hi:,.0f}"]
        if scenario == "C":
            row.append(fmt_int(median_of(s, "e2e_rate")))
        else:
            row += [fmt_int(median_of(s, "submit_rate")), fmt_int(median_of(s, "drain_rate"))]
        if huey_normal:
            row.append(fmt_ratio(rate / huey_normal))
        if raw:
            row.append(fmt_ratio(rate / raw))
        stall = s.get("stall_worst_ms")
        row.append(fmt_num(stall["max"], 2, " ms") if stall else "-")
        if s["ok_runs"] < s["runs"]:
            row[0] += f" ({s['runs'] - s['ok_runs']} failed)"
        rows.append(row)
    notes = []
    if huey_normal or raw:
        notes.append(
            "* ratios against the better thread count of that peer (see README: fairness)."
        )
    if scenario != "C":
        notes.append(
            "  drain/s: peers drain after all submits; taskmill's scheduler runs during submits."
        )
    return render_table(headers, rows) + ("\n" + "\n".join(notes) if notes else "")


def _probe_summary(probes: list[dict[str, Any]]) -> dict[str, Any]:
    return numeric_summary(probes)


def table_scale(scale: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if scale.get("status") != "ok":
        return f"  {scale.get('reason')}", {}
    sizes: dict[str, int] = scale["sizes"]
    builds, probes = scale["builds"], scale["probes"]
    summary: dict[str, Any] = {}
    headers = [
        "pending tasks",
        "build s",
        "build tasks/s",
        "open s",
        "urgent claim ms",
        "claim max ms",
        f"drain first {DRAIN_FIRST:,} s",
        "RSS open MB",
        "RSS drained MB",
        "stall max",
    ]
    rows: list[list[str]] = []
    for size, count in sizes.items():
        b = numeric_summary(builds[size])
        p = _probe_summary(probes[size])
        summary[size] = {"pending": count, "build": b, "probe": p}
        if median_of(p, "probe_median_ms") is None:
            rows.append([f"{count:,}", _failure_note(probes[size] or builds[size])])
            continue
        stalls = [x for x in (b.get("stall_worst_ms"), p.get("stall_worst_ms")) if x]
        rows.append(
            [
                f"{count:,}",
                fmt_num(median_of(b, "build_s"), 2),
                fmt_int(median_of(b, "rate")),
                fmt_num(median_of(p, "open_s"), 3),
                fmt_num(median_of(p, "probe_median_ms"), 2),
                fmt_num(median_of(p, "probe_max_ms"), 2),
                fmt_num(median_of(p, "drain_s"), 3),
                fmt_num(median_of(p, "rss_open_mb"), 1),
                fmt_num(median_of(p, "rss_after_drain_mb"), 1),
                fmt_num(max(s["max"] for s in stalls), 2, " ms") if stalls else "-",
            ]
        )
    small = summary.get("small", {}).get("probe", {})
    big = summary.get("big", {}).get("probe", {})
    ratios: dict[str, float | None] = {}
    for key in ("probe_median_ms", "drain_s", "open_s"):
        a, b_ = median_of(small, key), median_of(big, key)
        ratios[key] = b_ / a if a and b_ is not None else None
    for key in ("rss_open_mb", "rss_after_drain_mb"):
        a, b_ = median_of(small, key), median_of(big, key)
        ratios[key] = b_ - a if a is not None and b_ is not None else None
    summary["big_vs_small"] = ratios
    if "big" in summary:
        rows.append(
            [
                "big vs small",
                "",
                "",
                fmt_ratio(ratios["open_s"]),
                fmt_ratio(ratios["probe_median_ms"]),
                "",
                fmt_ratio(ratios["drain_s"]),
                fmt_num(ratios["rss_open_mb"], 1, " MB"),
                fmt_num(ratios["rss_after_drain_mb"], 1, " MB"),
                "",
            ]
        )
    note = (
        f"  urgent claim = submit(priority 0) -> executor start, median of {PROBES} probes "
        "while the backlog (an\n  unregistered type, so it stays pending) sits in the queue; "
        f"drain = time for the first {DRAIN_FIRST:,}\n  backlog tasks once their executor is "
        "registered. RSS via psutil in a fresh process per database."
    )
    return render_table(headers, rows) + "\n" + note, summary


def stall_rows(
    summaries: dict[str, dict[str, dict[str, Any]]], scale_summary: dict[str, Any]
) -> tuple[str, float | None]:
    headers = [
        "taskmill run",
        "worst",
        "worst excl. GC",
        "loop busy (CPU), excl. GC",
        "GC pause max",
        "longest submit call",
        "runs",
        "worst excl. GC per phase (ms)",
    ]
    rows: list[list[str]] = []
    worst: float | None = None
    worst_all: float | None = None
    worst_wall: float | None = None
    items: list[tuple[str, dict[str, Any]]] = []
    for scenario in ("A", "B", "C"):
        for key, s in summaries.get(scenario, {}).items():
            if key.startswith("taskmill"):
                items.append((f"{scenario} {key}", s))
    for size in ("small", "big"):
        entry = scale_summary.get(size)
        if entry:
            items.append((f"E build {entry['pending']:,}", entry["build"]))
            items.append((f"E probe {entry['pending']:,}", entry["probe"]))
    for name, s in items:
        st = s.get("stall_worst_ms")
        if not st:
            continue
        nogc = st.get("nogc_max")
        held = st.get("held_max")
        worst_all = st["max"] if worst_all is None else max(worst_all, st["max"])
        if nogc is not None:
            worst_wall = nogc if worst_wall is None else max(worst_wall, nogc)
        if held is not None:
            worst = held if worst is None else max(worst, held)
        phases = ", ".join(f"{k} {v:.1f}" for k, v in (st.get("phases_nogc_max") or {}).items())
        rows.append(
            [
                name,
                fmt_num(st["max"], 2, " ms"),
                fmt_num(nogc, 2, " ms"),
                fmt_num(held, 2, " ms"),
                fmt_num(st.get("gc_max"), 2, " ms"),
                fmt_num((s.get("submit_max_ms") or {}).get("max"), 2, " ms"),
                str(s["ok_runs"]),
                phases,
            ]
        )
    if not rows:
        return "  no taskmill runs measured", None
    note = (
        "\n  Lateness of a 1 ms watchdog sleep; worst over all runs "
        f"{fmt_num(worst_all, 2, ' ms')}. "
        "'excl. GC' subtracts the\n  cyclic garbage collector's pauses inside each sleep "
        "(gc.callbacks): a full collection walks\n  every object of the process (~8 ms here for "
        "the ~28,000 that importing the stack creates),\n  whoever allocated them; the target "
        "is about what the store holds the loop for. An app can\n  take those pauses off the "
        "loop's path with gc.freeze() after startup, as the sidecar does. 'loop busy' counts\n"
        "  only the loop thread's CPU time within the late sleep (time.thread_time): wall-clock "
        "lateness also\n  counts time the OS did not run the process at all, which on this "
        f"shared VM reaches 10+ ms (worst\n  wall-clock excl. GC: {fmt_num(worst_wall, 2, ' ms')}"
        "). The D target is judged on loop busy.\n  Phases: open = "
        "entering the Scheduler,\n  then the timed work (submit/batch/build/probe/drain), "
        "close = leaving it. "
        "'a->b' means the loop\n  was held while the phase changed, e.g. 'open->drain': the "
        "watchdog could not run at all during\n  the submit phase because no submit() call "
        "suspended. longest submit call: one await (A, B),\n  the whole batch (C), "
        "one 10,000-task chunk (E build)."
    )
    return render_table(headers, rows) + note, worst


def evaluate_targets(
    summaries: dict[str, dict[str, dict[str, Any]]],
    scale_summary: dict[str, Any],
    worst_stall: float | None,
    tm_missing: str | None,
    selected: set[str],
) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(
        name: str, value: float | None, goal: str, ok: bool | None, fmt: str, note: str = ""
    ) -> None:
        if value is None:
            result = "n/a"
            note = note or (tm_missing or "not measured")
        else:
            result = "PASS" if ok else "FAIL"
        targets.append(
            {
                "target": name,
                "value": value,
                "shown": fmt if value is not None else "-",
                "goal": goal,
                "result": result,
                "note": note,
            }
        )

    a = summaries.get("A", {})
    if "A" in selected and a:
        keys = [c.key for c in A_CONTENDERS]
        tm = median_of(a.get("taskmill", {}), "rate")
        hn = _best_median(a, "huey-normal", keys)
        hd = median_of(a.get("huey-full-w1", {}), "rate")
        ratio = tm / hn if tm is not None and hn else None
        add(
            "A taskmill / best huey NORMAL",
            ratio,
            f">= {TARGET_VS_HUEY}x",
            ratio is not None and ratio >= TARGET_VS_HUEY,
            fmt_ratio(ratio),
        )
        ratio_d = tm / hd if tm is not None and hd else None
        add(
            "A taskmill / huey default (FULL, -w 1)",
            ratio_d,
            "several x (info)",
            ratio_d is not None and ratio_d >= 3.0,
            fmt_ratio(ratio_d),
        )
    if "B" in selected and summaries.get("B"):
        v = median_of(summaries["B"].get("taskmill", {}), "rate")
        add(
            "B concurrent end-to-end tasks/s",
            v,
            f">= {TARGET_CONCURRENT:,.0f}",
            v is not None and v >= TARGET_CONCURRENT,
            fmt_int(v),
        )
    if "C" in selected and summaries.get("C"):
        v = median_of(summaries["C"].get("taskmill", {}), "rate")
        add(
            "C submit_batch tasks/s",
            v,
            f">= {TARGET_BATCH:,.0f}",
            v is not None and v >= TARGET_BATCH,
            fmt_int(v),
        )
    add(
        "D worst event-loop stall: loop busy, excl. GC",
        worst_stall,
        f"<= {TARGET_STALL_MS:.0f} ms",
        worst_stall is not None and worst_stall <= TARGET_STALL_MS,
        fmt_num(worst_stall, 2, " ms"),
    )
    if "E" in selected:
        ratios = scale_summary.get("big_vs_small", {})
        big = scale_summary.get("big", {}).get("pending")
        note = "" if big else (tm_missing or "big case not run (--scale-n)")
        label = f"{big:,}" if big else "big"
        for key, name in (
            ("probe_median_ms", "urgent claim latency"),
            ("drain_s", f"drain first {DRAIN_FIRST:,}"),
        ):
            v = ratios.get(key)
            add(
                f"E {name}, {label} vs 1,000",
                v,
                f"<= {TARGET_SCALE_RATIO:.0f}x",
                v is not None and v <= TARGET_SCALE_RATIO,
                fmt_ratio(v),
                note,
            )
        for key, name in (
            ("rss_open_mb", "RSS after open"),
            ("rss_after_drain_mb", "RSS after drain"),
        ):
            v = ratios.get(key)
            add(
                f"E {name}, {label} - 1,000",
                v,
                f"<= {TARGET_RSS_MB:.0f} MB",
                v is not None and v <= TARGET_RSS_MB,
                fmt_num(v, 1, " MB"),
                note,
            )
    return targets


def table_targets(targets: list[dict[str, Any]]) -> str:
    rows = [[t["target"], t["shown"], t["goal"], t["result"], t["note"]] for t in targets]
    return render_table(["target", "measured", "goal", "result", "note"], rows)


# --- entry --------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    opts = options_from(args)
    selected = set(opts.only)
    if "D" in selected and not selected & set("ABCE"):
        selected.add("A")  # D is measured during taskmill runs; A (taskmill rows) provides them
        only_taskmill = True
    else:
        only_taskmill = False
    env = environment()
    tm_missing = taskmill_unavailable()
    root = TempRoot(opts.tmp, opts.keep)
    _say(
        f"taskmill bench core: N={opts.n:,}, rounds={opts.rounds}, scale-n={opts.scale_n:,}, "
        f"scenarios={','.join(sorted(selected))}"
    )
    _say(f"  temp dir {root.path} (filesystem: {root.fs_type or 'unknown'})")
    if root.fs_type in {"tmpfs", "ramfs"}:
        _say("  WARNING: temp dir is in RAM; fsync is free there, so durability costs vanish.")
    if tm_missing:
        _say(f"  {tm_missing}: taskmill rows will say so; peers still run.")

    summaries: dict[str, dict[str, dict[str, Any]]] = {}
    all_runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    scale: dict[str, Any] = {}
    try:
        for scenario in ("A", "B", "C"):
            if scenario not in selected:
                continue
            contenders = CONTENDERS[scenario]
            if only_taskmill:
                contenders = tuple(c for c in contenders if c.is_taskmill)
            runs = run_throughput(scenario, contenders, opts, root, tm_missing)
            all_runs[scenario] = runs
            summaries[scenario] = {k: numeric_summary(v) for k, v in runs.items()}
        if "E" in selected:
            scale = run_scale(opts, root, tm_missing)
    finally:
        root.close()

    fmt = {"n": opts.n, "s": opts.submitters, "small": SCALE_SMALL, "big": opts.scale_n}
    _say("")
    for scenario in ("A", "B", "C"):
        if scenario in summaries:
            contenders = tuple(c for c in CONTENDERS[scenario] if c.key in summaries[scenario])
            _say(TITLES[scenario].format(**fmt) + f"  [{opts.rounds} rounds, medians]")
            _say(table_throughput(scenario, contenders, summaries[scenario], all_runs[scenario]))
            _say("")
    scale_summary: dict[str, Any] = {}
    if "E" in selected:
        _say(TITLES["E"].format(**fmt) + f"  [{opts.rounds} rounds, medians]")
        text, scale_summary = table_scale(scale)
        _say(text)
        _say("")
    _say(TITLES["D"])
    stall_text, worst_stall = stall_rows(summaries, scale_summary)
    _say(stall_text)
    _say("")
    targets = evaluate_targets(summaries, scale_summary, worst_stall, tm_missing, selected)
    _say("Targets (issue 2, Performance)")
    _say(table_targets(targets))

    data = {
        "suite": "core",
        "environment": env,
        "config": {
            "n": opts.n,
            "rounds": opts.rounds,
            "scale_n": opts.scale_n,
            "scale_small": SCALE_SMALL,
            "submitters": opts.submitters,
            "concurrency": 8,
            "probes": opts.probes,
            "drain_first": DRAIN_FIRST,
            "scenarios": sorted(selected),
            "quick": opts.quick,
            "temp_fs": root.fs_type,
        },
        "taskmill_available": tm_missing is None,
        "taskmill_unavailable_reason": tm_missing,
        "scenarios": {
            scenario: {
                "title": TITLES[scenario].format(**fmt),
                "contenders": {
                    c.key: {
                        "label": c.label,
                        "params": c.params,
                        "summary": summaries[scenario][c.key],
                        "runs": all_runs[scenario][c.key],
                    }
                    for c in CONTENDERS[scenario]
                    if c.key in summaries[scenario]
                },
            }
            for scenario in summaries
        },
        "scale": {"raw": scale, "summary": scale_summary} if scale else None,
        "worst_stall_ms": worst_stall,
        "targets": targets,
    }
    write_json(opts.out, data)
    _say(f"\nresults written to {opts.out}")
    errors = [
        r
        for runs in all_runs.values()
        for rs in runs.values()
        for r in rs
        if r.get("status") == "error"
    ]
    if errors:
        print(f"{len(errors)} measurement(s) failed; see the JSON for details.", file=sys.stderr)
        return 1
    return 0
