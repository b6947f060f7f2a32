"""``taskmill-sidecar`` / ``python -m sidecar``: the command line.

Exit codes (PROTOCOL.md): 0 clean, 2 bad command line, 3 database held by another sidecar,
4 database unreadable or not a taskmill database, 1 anything else. Every non-zero exit writes
one human sentence to stderr first. stdout carries the protocol and nothing else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import anyio
import structlog

from sidecar.frozen import watch_bootloader
from sidecar.server import ExitCode, Options, Sidecar, stderr_sentence
from taskmill_core import __version__

__all__ = ["main", "parse_args"]

LEVELS = ("debug", "info", "warning", "error")


def default_db() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("taskmill", appauthor=False)) / "tasks.db"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        stderr_sentence(f"taskmill-sidecar: bad command line: {message}.")
        raise SystemExit(2)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def parse_args(argv: list[str] | None = None) -> tuple[Options, str]:
    p = _Parser(
        prog="taskmill-sidecar",
        description="Taskmill's JSON-RPC 2.0 sidecar: newline-delimited JSON on stdin/stdout, "
        "JSON logs on stderr.",
    )
    p.add_argument("--db", type=Path, default=None, help="database file (default: tasks.db "
                   "in the platform's user data directory)")  # fmt: skip
    p.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                   help="a root the file executors may touch (repeatable)")  # fmt: skip
    p.add_argument("--allow-program", action="append", default=[], metavar="PROGRAM",
                   help="a program process.run may start (repeatable)")  # fmt: skip
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="register the @executor functions of MODULE (repeatable)")  # fmt: skip
    p.add_argument("--parent-pid", type=_positive, default=None,
                   help="shut down gracefully when this process exits")  # fmt: skip
    p.add_argument("--max-concurrency", type=_positive, default=None,
                   help="tasks running at once (persisted; default 4)")  # fmt: skip
    p.add_argument("--durability", choices=("normal", "full"), default="normal",
                   help="SQLite synchronous mode: normal survives app crashes, full also "
                   "power loss")  # fmt: skip
    p.add_argument("--max-message-bytes", type=_positive, default=4 * 1024 * 1024,
                   help="longest accepted input line (default 4 MiB)")  # fmt: skip
    p.add_argument("--log-level", choices=LEVELS, default="info")
    p.add_argument("--version", action="version", version=f"taskmill-sidecar {__version__}")
    a = p.parse_args(argv)
    opts = Options(
        db=(a.db or default_db()).expanduser().absolute(),
        allow_paths=a.allow_path,
        allow_programs=a.allow_program,
        plugins=a.plugin,
        parent_pid=a.parent_pid,
        max_concurrency=a.max_concurrency,
        durability=a.durability,
        max_message_bytes=a.max_message_bytes,
    )
    return opts, a.log_level


def configure_logging(level: str) -> None:
    """JSON lines on stderr, for structlog and the stdlib alike; never stdout."""
    numeric = getattr(logging, level.upper())
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def main(argv: list[str] | None = None) -> None:
    watch_bootloader()  # a onefile child leaves with its bootloader, even when it is SIGKILLed
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["admin"]:  # the admin command line, for the frozen build (no `taskmill`)
        from sidecar.admin.__main__ import main as admin

        admin(args[1:], prog="taskmill-sidecar admin")
    opts, level = parse_args(args)
    configure_logging(level)
    # Unbuffered stdin: the reader thread may still be blocked in a read when we exit, and a
    # blocked BufferedReader would hold a lock that interpreter shutdown needs.
    stdin = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115
    sidecar = Sidecar(opts, stdin, sys.stdout.buffer)
    try:
        code = anyio.run(sidecar.run)
    except ExitCode as exc:
        stderr_sentence(exc.message)
        code = exc.code
    except KeyboardInterrupt:
        code = 0
    except BaseException as exc:  # the sidecar must say why it died
        structlog.get_logger("taskmill.sidecar").exception("fatal error")
        stderr_sentence(f"taskmill-sidecar stopped on an unexpected error: {exc!r}.")
        code = 1
    # Leave without waiting for the daemon threads (the stdin reader may be blocked in a
    # read forever); everything that matters has been flushed and closed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
