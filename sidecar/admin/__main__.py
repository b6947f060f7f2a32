"""``taskmill`` / ``python -m sidecar.admin`` / ``taskmill-sidecar admin``: the admin command line.

Subcommands are modules of :mod:`sidecar.admin` (see its docstring). The exit codes follow
the sidecar's where they mean the same thing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from sidecar.admin import (
    cancel,
    doctor,
    get,
    listing,
    prune,
    repair,
    retry,
    stats,
    status,
    vacuum,
)
from sidecar.admin.output import Output

__all__ = ["EXIT_CODES", "main"]

# Read-only (work while the app runs), then those that change the database (need the lock).
COMMANDS: list[ModuleType] = [status, listing, get, stats, doctor, retry, cancel, prune, vacuum,
                              repair]  # fmt: skip

EXIT_CODES = """which database: --db PATH, or --app-id ID for tasks.db in the data directory of
the app with that identifier (e.g. com.example.photos); one of them is required.

status, list, get, stats and doctor only read: they work while the app runs.
retry, cancel, prune, vacuum and repair change the database: they need the app closed.

exit codes:
  0  done (for repair: the database is sound, or was rebuilt; the report says what was lost)
  1  an unexpected error (the sentence on stderr says which)
  2  bad command line (also: neither --db nor --app-id)
  3  a running sidecar holds the database: quit the app first (retry, cancel, prune, vacuum,
     repair); nothing was changed
  4  not a taskmill database, missing or damaged (the file was left untouched)
  5  the task operation was refused: no such task, or its state does not allow it
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: bad command line: {message}.\n")
        raise SystemExit(2)


def build_parser(prog: str = "taskmill") -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser = _Parser(
        prog=prog,
        description="Taskmill's admin command line: look after an app's task database.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(
            command.NAME,
            help=command.HELP,
            description=command.DESCRIPTION,
            epilog=EXIT_CODES,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(p)
        p.set_defaults(run=command.run, prog=p.prog)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "taskmill") -> None:
    args = build_parser(prog).parse_args(argv)
    out = Output(json_mode=args.json)
    _quiet_logs()
    try:
        code = args.run(args, out)
    except KeyboardInterrupt:
        code = 1
    except Exception as exc:  # say why, in one sentence
        out.fail(f"{prog} {args.command} stopped on an unexpected error: {exc!r}.")
        code = 1
    sys.stdout.flush()
    raise SystemExit(code)


def _quiet_logs() -> None:
    """The scheduler and store log through structlog, whose default writes to stdout: send
    their warnings and errors to stderr as JSON lines, keep stdout for the command's output."""
    from sidecar.cli import configure_logging

    configure_logging("warning")


if __name__ == "__main__":
    main()
