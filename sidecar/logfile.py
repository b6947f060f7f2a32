"""``--log-file PATH``: the sidecar's JSON log lines, also kept in a small rotating file.

An app points it at its log directory so a bug report can carry the sidecar's recent log.
The file is bounded (``MAX_BYTES`` per file, ``BACKUPS`` older files beside it: at most
4 MiB) and held to :class:`~sidecar.logsink.LogSink`'s discipline, since nothing that happens
to it may touch the protocol:

* a log call only puts the formatted line on a bounded queue (:class:`FileLogHandler`); a
  thread of its own writes and rotates the file, so a slow or stalled disk never blocks
  the event loop, and what does not fit in the queue is dropped and counted;
* a file that cannot be opened, written or rotated is dropped for the rest of the process,
  with one warning on stderr; the sidecar goes on without it.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Final

import structlog

__all__ = ["BACKUPS", "MAX_BYTES", "FileLogHandler", "open_log_file"]

MAX_BYTES: Final = 1024 * 1024
BACKUPS: Final = 3
QUEUE_RECORDS: Final = 10_000

_log = structlog.get_logger("taskmill.sidecar")


class _RotatingFile(logging.handlers.RotatingFileHandler):
    """The writing end: a rotating file that gives up (once, quietly) on its first failure."""

    def __init__(self, path: Path, max_bytes: int, backups: int, owner: FileLogHandler) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.setFormatter(logging.Formatter("%(message)s"))  # already JSON (see prepare)
        self._owner = owner

    def handleError(self, record: logging.LogRecord) -> None:
        self._owner.give_up(self)


class FileLogHandler(logging.handlers.QueueHandler):
    """Formats a record on the caller's thread and queues the line for the file's thread.

    Never blocks and never raises: a full queue drops the line (counted; the next line
    written says how many were lost), a failed file drops everything from then on.
    """

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        super().__init__(queue.Queue(QUEUE_RECORDS))
        self.path = path
        self.dropped = 0
        self.broken: str | None = None
        self._lock_gap = threading.Lock()
        self._reported = 0
        self._file = _RotatingFile(path, max_bytes, backups, self)  # may raise OSError
        self._listener = logging.handlers.QueueListener(self.queue, self._file)
        self._listener.start()

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken is not None:
            return
        try:
            prepared = self.prepare(record)  # the JSON line, formatted on this thread
        except Exception:
            self.handleError(record)
            return
        with self._lock_gap:
            gap = self.dropped - self._reported
            if gap:  # the first line after a gap says how many were lost
                note = f'{{"event": "log lines dropped", "count": {gap}, "level": "warning"}}'
                prepared.msg = f"{note}\n{prepared.msg}"
            try:
                self.queue.put_nowait(prepared)
            except queue.Full:
                self.dropped += 1
                return
            self._reported += gap

    def give_up(self, file: logging.Handler) -> None:
        """The file failed: drop it for good and say so once on stderr (from its thread)."""
        if self.broken is not None:
            return
        exc = sys.exc_info()[1]
        self.broken = repr(exc)
        with contextlib.suppress(Exception):
            file.close()
        _log.warning("log file dropped", path=str(self.path), error=self.broken)

    def handleError(self, record: logging.LogRecord) -> None:
        """Formatting or queueing failed: drop the line (never a traceback on stderr)."""
        with self._lock_gap:
            self.dropped += 1

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued line reached the file."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and self.broken is None:  # type: ignore[attr-defined]
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Write what is queued (bounded by the queue) and close the file."""
        with contextlib.suppress(Exception):
            self._listener.stop()
        with contextlib.suppress(Exception):
            self._file.close()
        super().close()


def open_log_file(path: Path) -> FileLogHandler | None:
    """A handler writing to ``path`` (its directory is created), or None with one warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLogHandler(path)
    except OSError as exc:
        _log.warning("log file not opened", path=str(path), error=repr(exc))
        return None
