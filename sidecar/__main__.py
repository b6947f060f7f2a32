"""``taskmill-sidecar`` / ``python -m sidecar``: the process around the command line.

What must hold for the process as a whole is set up here, before anything else (importing
the rest of the sidecar takes a few hundred milliseconds):

* stderr becomes a :class:`~sidecar.logsink.LogSink`: nothing written to it can block or
  raise, so a host that stops reading it, or closes it, cannot stop the protocol;
* SIGTERM and SIGINT are only noted until the sidecar watches for them
  (:class:`~sidecar.signals.StartupSignals`), so a signal during start-up leads to the same
  graceful exit as a later one;
* every way out ends in :func:`_leave`: a bounded flush (stdout, the log and its file),
  then ``os._exit``, whatever threads are left.

The command line itself is :mod:`sidecar.cli`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import NoReturn

from sidecar.logsink import LogSink
from sidecar.signals import StartupSignals

__all__ = ["main"]

# How long the exit waits for stdout, and then for the log, before it leaves anyway.
EXIT_FLUSH_S = 0.5


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the sidecar; always ends the process, within a bounded time, with its exit code."""
    sink = LogSink(sys.stderr.fileno() if sys.stderr is not None else 2)
    sys.stderr = sink
    startup = StartupSignals()
    startup.install()
    code = 1
    try:
        from sidecar import cli  # the expensive imports, once the above is in place

        code = cli.run(argv, startup)
    except SystemExit as exc:  # argparse: a bad command line (2) or --version (0)
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # the last resort: say why, whatever state logging is in
        with contextlib.suppress(BaseException):
            sink.write(f"taskmill-sidecar stopped on an unexpected error: {exc!r}.\n")
    finally:
        _leave(code, sink)


def _leave(code: int, sink: LogSink) -> NoReturn:
    """End the process now, whatever threads are left, after a bounded flush of the output.

    Everything that matters (the database, the last protocol lines) is closed and queued by
    now. Threads may still be blocked for good: the stdin reader in a read, the stdout writer
    in a write the host never reads, a database worker waiting on its queue. Interpreter
    shutdown would wait for the non-daemon ones forever, so it is skipped: stdout is flushed
    from a helper thread (a flush can block too) and the log gets a moment to drain.
    """
    flushed = threading.Thread(target=_flush_stdout, name="taskmill-exit-flush", daemon=True)
    flushed.start()
    flushed.join(EXIT_FLUSH_S)
    sink.drain(EXIT_FLUSH_S)
    _drain_log_file(EXIT_FLUSH_S)
    os._exit(code)


def _drain_log_file(timeout: float) -> None:
    """Give the ``--log-file`` writer (:mod:`sidecar.logfile`), if any, a bounded moment."""
    logging = sys.modules.get("logging")
    if logging is None:
        return
    with contextlib.suppress(Exception):
        for handler in logging.getLogger().handlers:
            drain = getattr(handler, "drain", None)
            if drain is not None:
                drain(timeout)


def _flush_stdout() -> None:
    with contextlib.suppress(Exception):  # EPIPE: the host is gone, nothing to flush to
        sys.stdout.flush()


if __name__ == "__main__":
    main()
