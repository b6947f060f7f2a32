"""The sidecar's command line: parse it, set up logging, serve, and return the exit code.

Exit codes (PROTOCOL.md): 0 clean, 2 bad command line, 3 database held by another sidecar,
4 database unreadable or not a taskmill database, 1 anything else. Every non-zero exit writes
one human sentence to stderr first. stdout carries the protocol and nothing else.

:mod:`sidecar.__main__` runs this after making stderr and early signals safe; importing this
module is the expensive part of start-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import anyio
import structlog

from sidecar.dbpath import MISSING_SENTENCE, add_db_arguments, resolve_db
from sidecar.frozen import watch_bootloader
from sidecar.server import ExitCode, Options, Sidecar, stderr_sentence
from sidecar.signals import StartupSignals
from taskmill_core import __version__

__all__ = ["configure_logging", "parse_args", "run"]

LEVELS = ("debug", "info", "warning", "error")


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


def parse_args(argv: list[str] | None = None) -> tuple[Options, str, Path | None]:
    """The sidecar's options, its log level and its ``--log-file`` (or None)."""
    p = _Parser(
        prog="taskmill-sidecar",
        description="Taskmill's JSON-RPC 2.0 sidecar: newline-delimited JSON on stdin/stdout, "
        "JSON logs on stderr.",
    )
    add_db_arguments(p)  # --db PATH or --app-id ID: no shared default database
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
    p.add_argument("--log-file", type=Path, default=None, metavar="PATH",  # 1 MiB x 4
                   help="also keep the JSON log lines in PATH (rotated, bounded)")  # fmt: skip
    p.add_argument("--check-tls", action="store_true",
                   help="print which CA store http.* verify against and how many CAs it "
                   "holds (JSON), then exit: 0 if it holds any")  # fmt: skip
    p.add_argument("--version", action="version", version=f"taskmill-sidecar {__version__}")
    a = p.parse_args(argv)
    db = resolve_db(a)
    if db is None:
        if not a.check_tls:  # (--check-tls serves no database)
            p.error(MISSING_SENTENCE)
        db = Path(os.devnull)
    opts = Options(
        db=db,
        allow_paths=a.allow_path,
        allow_programs=a.allow_program,
        plugins=a.plugin,
        parent_pid=a.parent_pid,
        max_concurrency=a.max_concurrency,
        durability=a.durability,
        check_tls=a.check_tls,
        max_message_bytes=a.max_message_bytes,
    )
    return opts, a.log_level, a.log_file


def configure_logging(level: str, log_file: Path | None = None) -> None:
    """JSON lines on stderr (and in ``log_file``), for structlog and the stdlib alike.

    Everything goes through the stdlib ``logging`` module: structlog's events are rendered
    by the same :class:`structlog.stdlib.ProcessorFormatter` as records from other
    libraries (asyncio's, for example) and Python warnings, so every stderr line is one
    JSON object. The stderr handler writes to ``sys.stderr`` as it is when this runs: in
    the sidecar, the :class:`~sidecar.logsink.LogSink` that :mod:`sidecar.__main__`
    installed, so a log call never blocks and never raises; ``log_file`` gets a
    :class:`~sidecar.logfile.FileLogHandler` held to the same discipline. Never stdout.

    The stdlib route costs ~32 us per line written against ~11 us for structlog writing
    directly (measured into a LogSink on /dev/null); lines below the level are still
    filtered by structlog before any of it, and at ``info`` the sidecar writes a handful of
    lines per run, none per task.
    """
    from sidecar.logfile import open_log_file

    numeric = getattr(logging, level.upper())
    shared: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(stderr)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    if log_file is not None:
        handler = open_log_file(log_file.expanduser().absolute())  # warns when it cannot
        if handler is not None:
            handler.setFormatter(formatter)
            root.addHandler(handler)


def check_tls() -> int:
    """``--check-tls``: the trust store of ``http.*`` on this machine, as one JSON line on
    stdout (like ``--version``, it serves no protocol). Exit 1 when it holds no CA at all."""
    import json

    from sidecar.builtin._http import trust_store

    store = trust_store()
    report = {"store": store.kind, "source": store.source, "caCount": store.ca_count}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 1 if store.ca_count == 0 else 0


def run(argv: list[str] | None, startup: StartupSignals) -> int:
    """Parse the command line, serve until shutdown and return the exit code.

    ``startup`` holds the SIGTERM/SIGINT that arrived before the sidecar watched for them;
    the sidecar turns them into its usual graceful shutdown.
    """
    watch_bootloader()  # a onefile child leaves with its bootloader, even when it is SIGKILLed
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["admin"]:  # the admin command line, for the frozen build (no `taskmill`)
        from sidecar.admin.__main__ import main as admin

        admin(args[1:], prog="taskmill-sidecar admin")  # (ends with SystemExit(code))
    opts, level, log_file = parse_args(args)
    if opts.check_tls:
        return check_tls()
    configure_logging(level, log_file)
    # Unbuffered stdin: the reader thread may still be blocked in a read when we exit, and a
    # blocked BufferedReader would hold a lock that interpreter shutdown needs.
    stdin = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False)  # noqa: SIM115
    sidecar = Sidecar(opts, stdin, sys.stdout.buffer, startup=startup)
    try:
        return anyio.run(sidecar.run)
    except ExitCode as exc:
        stderr_sentence(exc.message)
        return exc.code
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # the sidecar must say why it died
        structlog.get_logger("taskmill.sidecar").exception("fatal error")
        stderr_sentence(f"taskmill-sidecar stopped on an unexpected error: {exc!r}.")
        return 1
