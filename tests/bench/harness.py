"""Generic benchmark plumbing shared by suites: child processes, temp dirs, stats, tables."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.bench.worker import RESULT_PREFIX

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "bench-results"


def run_child(params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its result dict."""
    cmd = [sys.executable, "-m", "tests.bench.worker", json.dumps(params)]
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            if result.get("status") == "error" and proc.stderr.strip():
                result["stderr_tail"] = proc.stderr.strip().splitlines()[-12:]
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
    return {"status": "error", "error": f"child exited {proc.returncode}", "stderr_tail": tail}


def rotated(items: Sequence[Any], round_no: int) -> list[Any]:
    """``items`` rotated by ``round_no``: each contender leads a different round."""
    if not items:
        return []
    k = round_no % len(items)
    return [*items[k:], *items[:k]]


class TempRoot:
    """A fresh temporary directory per benchmark run, with one fresh subdirectory per
    measurement; everything is deleted afterwards unless ``keep``."""

    def __init__(self, base: str | None, keep: bool) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="taskmill-bench-", dir=base))
        self.keep = keep
        self.fs_type = filesystem_type(self.path)

    def fresh(self, name: str) -> Path:
        d = self.path / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def discard(self, d: Path) -> None:
        if not self.keep:
            shutil.rmtree(d, ignore_errors=True)

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)

    @contextmanager
    def measurement(self, name: str) -> Iterator[Path]:
        d = self.fresh(name)
        try:
            yield d
        finally:
            self.discard(d)


def filesystem_type(path: Path) -> str | None:
    """The filesystem type holding ``path`` (Linux only; ``None`` elsewhere)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best, fs = "", None
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fs = mount, parts[2]
    return fs


def numeric_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median/min/max of every numeric field over the successful runs."""
    ok = [r for r in runs if r.get("status") == "ok"]
    out: dict[str, Any] = {"ok_runs": len(ok), "runs": len(runs)}
    if not ok:
        return out
    keys = [k for k, v in ok[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    for key in keys:
        values = [r[key] for r in ok if isinstance(r.get(key), int | float)]
        if values:
            out[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    stalls = [r["stall"] for r in ok if (r.get("stall") or {}).get("worst_ms") is not None]
    if stalls:
        worsts = [st["worst_ms"] for st in stalls]
        per_phase: dict[str, float] = {}
        for st in stalls:
            for phase, ms in (st.get("phases") or {}).items():
                per_phase[phase] = max(per_phase.get(phase, 0.0), ms)
        nogc = [st["worst_nogc_ms"] for st in stalls if "worst_nogc_ms" in st]
        per_phase_nogc: dict[str, float] = {}
        for st in stalls:
            for phase, ms in (st.get("phases_nogc") or {}).items():
                per_phase_nogc[phase] = max(per_phase_nogc.get(phase, 0.0), ms)
        out["stall_worst_ms"] = {
            "median": statistics.median(worsts),
            "max": max(worsts),
            "phase": max(per_phase, key=lambda k: per_phase[k]) if per_phase else None,
            "phases_max": per_phase,
            "nogc_max": max(nogc) if nogc else None,
            "nogc_median": statistics.median(nogc) if nogc else None,
            "phases_nogc_max": per_phase_nogc,
            "gc_max": max((st.get("gc_worst_ms") or 0.0) for st in stalls),
            "held_max": max((st.get("held_ms") or 0.0) for st in stalls),
        }
    return out


def median_of(summary: dict[str, Any], key: str) -> float | None:
    entry = summary.get(key)
    return float(entry["median"]) if isinstance(entry, dict) else None


def fmt_int(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def fmt_num(x: float | None, digits: int = 2, unit: str = "") -> str:
    return "-" if x is None else f"{x:,.{digits}f}{unit}"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table; the first column left-aligned, the rest right-aligned.
    A row with a single cell is a note spanning the numeric columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) == len(headers):
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    for row in rows:
        if len(row) == len(headers):
            out.append(line(row))
        else:
            out.append(f"{row[0].ljust(widths[0])}  {' '.join(row[1:])}".rstrip())
    return "\n".join(out)


def environment() -> dict[str, Any]:
    """What the numbers depend on: interpreter, SQLite, machine, peer versions, commit."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "versions": {
            "taskmill": version("taskmill"),
            "huey": version("huey"),
            "persist-queue": version("persist-queue"),
        },
        "commit": commit or None,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
