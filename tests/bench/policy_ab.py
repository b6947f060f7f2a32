"""The scheduling policy's cost on the sidecar's pipelined throughput (issue 13, "Performance").

    python -m tests.bench.policy_ab [--pairs 6] [--n 5000]

Each pair runs the sidecar's pipelined scenario (N ``task.submit`` of ``noop`` over stdio, all
events on, concurrency 8; the tasks spread over four groups) twice, back to back in alternating
order, each in a fresh process on a fresh database: once with no policy configured, once with a
rate limit on another type (``sleep``: 5/s, burst 2) and fair share over the four groups
(weights 1..4, one ``minSlots``). The target: the configured run keeps ≥ 90 % of the plain
run's tasks/s (the median of the per-pair ratios). The cost of the policy code when nothing is
configured is the interleaved A/B of ``tests.bench.ab`` against the commit before it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

POLICY: dict[str, Any] = {
    "rateLimits": {"types": {"sleep": {"perSecond": 5, "burst": 2}}},
    "fairShare": {"weights": {"g0": 1, "g1": 2, "g2": 3, "g3": 4}, "minSlots": {"g0": 1}},
}

_CHILD = """
import json, sys
from pathlib import Path
from tests.bench.sidecar_suite import sidecar_throughput
cfg = json.loads(sys.argv[3])
res = sidecar_throughput(Path(sys.argv[1]), int(sys.argv[2]), "normal", 8, 120.0, cfg, 4)
print("PA-RESULT " + json.dumps({k: res.get(k) for k in ("status", "rate", "error")}))
"""


def _run(n: int, configure: dict[str, Any] | None, workdir: Path) -> float | None:
    cmd = [sys.executable, "-c", _CHILD, str(workdir), str(n), json.dumps(configure)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("PA-RESULT "):
            res = json.loads(line[len("PA-RESULT ") :])
            if res.get("status") == "ok":
                return float(res["rate"])
            print(f"    {res.get('error')}", file=sys.stderr)
            return None
    print(f"    exit {proc.returncode}: {proc.stderr[-800:]}", file=sys.stderr)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    plain: list[float] = []
    policy: list[float] = []
    ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="taskmill-policy-ab-") as tmp:
        for i in range(args.pairs):
            order = [None, POLICY] if i % 2 == 0 else [POLICY, None]
            got: dict[bool, float | None] = {}
            for j, cfg in enumerate(order):
                work = Path(tmp) / f"p{i}-{j}"
                work.mkdir()
                got[cfg is not None] = _run(args.n, cfg, work)
            a, b = got.get(False), got.get(True)
            print(f"pair {i + 1}: no policy {a and round(a)} /s, policy {b and round(b)} /s")
            if a and b:
                plain.append(a)
                policy.append(b)
                ratios.append(b / a)
    if not ratios:
        print("no complete pair")
        return 1
    ratio = statistics.median(ratios)
    print(
        f"no policy: median {statistics.median(plain):,.0f} tasks/s; "
        f"policy configured: median {statistics.median(policy):,.0f} tasks/s; "
        f"median ratio {ratio:.3f} (target >= 0.90: {'met' if ratio >= 0.9 else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
