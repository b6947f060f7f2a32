"""Interleaved A/B: the same scenarios from two source trees, side by side in one run.

    python -m tests.bench.ab --base d43c569 [--pairs 8] [--only A,B,C,S] [--n 10000]

A refactor must not cost speed, and this machine is shared and noisy: so each *pair* runs a
scenario once from the base commit (checked out in a temporary git worktree) and once from
this tree, back to back, in alternating order, each in a fresh interpreter on a fresh
database. The report gives, per scenario, the median and range of each side and the median
of the per-pair ratios (head / base), which cancels most of the drift between pairs.

Scenarios: A, B, C as in the core suite (sequential, 200 submitters, one batch) and S, the
sidecar's pipelined throughput (N ``task.submit`` over stdio, all events on, concurrency 8).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

_SIDECAR_CHILD = """
import json, sys
from pathlib import Path
from tests.bench.sidecar_suite import sidecar_throughput
res = sidecar_throughput(Path(sys.argv[1]), int(sys.argv[2]), "normal", 8, 120.0)
print("AB-RESULT " + json.dumps({k: res.get(k) for k in ("status", "rate", "error")}))
"""


def _run(tree: Path, scenario: str, n: int, workdir: Path) -> float | None:
    """One measurement of ``scenario`` with the code of ``tree``; tasks/s, or None."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if scenario == "S":
        cmd = [sys.executable, "-c", _SIDECAR_CHILD, str(workdir), str(n)]
        prefix = "AB-RESULT "
    else:
        params = {
            "scenario": scenario,
            "runner": "taskmill",
            "n": n,
            "dir": str(workdir),
            "timeout": 120.0,
            "submitters": 200,
        }
        cmd = [sys.executable, "-m", "tests.bench.worker", json.dumps(params)]
        prefix = "BENCH-RESULT "
    proc = subprocess.run(
        cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(prefix):
            res = json.loads(line[len(prefix) :])
            if res.get("status") == "ok":
                return float(res["rate"])
            print(f"    {tree.name} {scenario}: {res.get('error')}", file=sys.stderr)
            return None
    print(f"    {tree.name} {scenario}: exit {proc.returncode}", file=sys.stderr)
    print("\n".join(proc.stderr.splitlines()[-8:]), file=sys.stderr)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--only", default="A,B,C,S", help="scenarios, comma-separated")
    parser.add_argument("--n", type=int, default=10_000, help="tasks per run (S: half)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.only.split(",") if s.strip()]
    scratch = Path(tempfile.mkdtemp(prefix="taskmill-ab-"))
    base_tree = scratch / "base"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(base_tree), args.base],
        cwd=ROOT,
        check=True,
    )
    trees = {"base": base_tree, "head": ROOT}
    results: dict[str, dict[str, list[float | None]]] = {
        s: {"base": [], "head": []} for s in scenarios
    }
    try:
        for pair in range(args.pairs):
            for s in scenarios:
                order = ["base", "head"] if pair % 2 == 0 else ["head", "base"]
                n = args.n // 2 if s == "S" else args.n
                for side in order:
                    workdir = Path(tempfile.mkdtemp(dir=scratch))
                    results[s][side].append(_run(trees[side], s, n, workdir))
                    subprocess.run(["rm", "-rf", str(workdir)], check=False)
                b, h = results[s]["base"][-1], results[s]["head"][-1]
                print(f"pair {pair + 1} {s}: base {b or 0:,.0f}  head {h or 0:,.0f}", flush=True)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False
        )
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
    report: dict[str, Any] = {"base": args.base, "pairs": args.pairs, "scenarios": {}}
    print(
        f"\n| scenario | base {args.base} (median, range) | head (median, range) | "
        "median of per-pair ratios |"
    )
    print("|---|---:|---:|---:|")
    for s in scenarios:
        pairs = [
            (b, h) for b, h in zip(results[s]["base"], results[s]["head"], strict=True) if b and h
        ]
        if not pairs:
            print(f"| {s} | failed | failed | - |")
            continue
        bs, hs = [b for b, _ in pairs], [h for _, h in pairs]
        ratio = statistics.median(h / b for b, h in pairs)
        report["scenarios"][s] = {"base": bs, "head": hs, "ratio": ratio}
        print(
            f"| {s} | {statistics.median(bs):,.0f} ({min(bs):,.0f}-{max(bs):,.0f}) "
            f"| {statistics.median(hs):,.0f} ({min(hs):,.0f}-{max(hs):,.0f}) "
            f"| {ratio:.3f} ({len(pairs)} pairs) |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
