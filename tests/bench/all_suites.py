"""``python -m tests.bench all``: every registered suite in turn, with the options they share.

Each suite is run with its own defaults plus whichever of ``--quick``, ``--rounds``, ``--tmp``
and ``--keep`` were given here (a suite that does not know an option simply does not get it);
each writes its own ``bench-results/<suite>.json``. The exit status is the worst of theirs.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="each suite's smoke run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds for every suite")
    parser.add_argument("--tmp", help="directory for the temp databases (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp databases")


def main(args: argparse.Namespace, suites: Mapping[str, Any]) -> int:
    shared: list[str] = []
    if args.quick:
        shared.append("--quick")
    if args.rounds is not None:
        shared += ["--rounds", str(args.rounds)]
    if args.tmp is not None:
        shared += ["--tmp", args.tmp]
    if args.keep:
        shared.append("--keep")
    worst = 0
    for name, suite in suites.items():
        if name == "all":
            continue
        print(f"=== suite {name} ===", flush=True)
        parser = argparse.ArgumentParser(prog=f"python -m tests.bench {name}")
        suite.add_arguments(parser)
        suite_args, _unknown = parser.parse_known_args(shared)
        worst = max(worst, suite.main(suite_args))
        print(flush=True)
    return worst
