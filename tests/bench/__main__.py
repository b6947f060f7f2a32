"""``python -m tests.bench [SUITE] [options]``: run a benchmark suite (default: ``core``).

Suites are registered in ``SUITES``; adding one (e.g. the ``io`` suite another issue asks for)
means writing a module with ``add_arguments(parser)`` and ``main(args) -> int`` and listing it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from tests.bench import all_suites, core, io_suite, scale_suite, schedules_suite, sidecar_suite


class Suite(NamedTuple):
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]


SUITES: dict[str, Suite] = {
    "core": Suite(
        "taskmill_core vs huey, persist-queue and a raw sqlite3 floor (issue 2 targets)",
        core.add_arguments,
        core.main,
    ),
    "sidecar": Suite(
        "the JSON-RPC stdio sidecar vs huey in-process; latency, startup, idle CPU (issue 3)",
        sidecar_suite.add_arguments,
        sidecar_suite.main,
    ),
    "io": Suite(
        "IO governor on the real disk: paced fs.copy vs a foreground fsync probe (issue 4)",
        io_suite.add_arguments,
        io_suite.main,
    ),
    "scale": Suite(
        "a large library over the wire: status, stats, list, batches at 10k vs 1M (issue 18)",
        scale_suite.add_arguments,
        scale_suite.main,
    ),
    "schedules": Suite(
        "recurring schedules: idle CPU with 1,000 of them, loop stall while 1,000 fire (issue 14)",
        schedules_suite.add_arguments,
        schedules_suite.main,
    ),
    "all": Suite(
        "every suite in turn (shared options: --quick, --rounds, --tmp, --keep)",
        all_suites.add_arguments,
        lambda args: all_suites.main(args, SUITES),
    ),
}
DEFAULT_SUITE = "core"


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or (args_in[0] not in SUITES and args_in[0] not in {"-h", "--help"}):
        args_in.insert(0, DEFAULT_SUITE)
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Taskmill benchmarks (not tests). Results go to bench-results/<suite>.json.",
    )
    sub = parser.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for name, suite in SUITES.items():
        suite.add_arguments(sub.add_parser(name, help=suite.help, description=suite.help))
    args = parser.parse_args(args_in)
    return SUITES[args.suite].main(args)


if __name__ == "__main__":
    sys.exit(main())
