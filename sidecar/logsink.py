"""The sidecar's stderr: a bounded, non-blocking text stream that logging can never stall.

stderr carries logs only (PROTOCOL.md), and nothing that happens to it may touch the protocol.
A plain ``sys.stderr`` fails both ways: a write into a pipe the host closed raises
``BrokenPipeError`` inside whatever task happened to log (which ended the server), and a host
that stops reading stderr fills the pipe (64 KiB on Linux) and blocks the next log call, and
with it the event loop, the scheduler and every answer.

:class:`LogSink` stands in front of the file descriptor instead. :meth:`LogSink.write` only
queues the encoded text (under a lock, never waiting for the descriptor); a daemon thread
writes what is queued. When more than ``max_bytes`` would be queued, or once the descriptor
failed (EPIPE, EBADF: nobody is reading), writes are dropped and counted, and the first line
written after a gap says how many lines were lost. The sidecar installs one as
``sys.stderr`` and routes structlog, the stdlib ``logging`` module and its exit sentences
through it; on the way out :meth:`LogSink.drain` gives the queue a bounded time to reach the
descriptor.
"""

from __future__ import annotations

import collections
import io
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Final

__all__ = ["DEFAULT_MAX_BYTES", "LogSink", "LogSinkStatistics"]

DEFAULT_MAX_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LogSinkStatistics:
    queued_bytes: int
    """Bytes accepted and not yet written (including the write in progress)."""
    lines_written: int
    lines_dropped: int
    """Lines discarded: the queue was full or the descriptor had failed."""
    broken: str | None
    """Why the descriptor failed (then everything is dropped), or None."""


class LogSink(io.TextIOBase):
    """A text stream that queues what is written and writes it to ``fd`` from a daemon thread.

    Never blocks and never raises on :meth:`write`: what does not fit in ``max_bytes`` of
    queue, or arrives after the descriptor failed, is dropped and counted. Safe to use from
    any thread.
    """

    # What the stream does with text: UTF-8, never an encoding error.
    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(
        self,
        fd: int = 2,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        name: str = "taskmill-stderr-writer",
    ) -> None:
        super().__init__()
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self._fd = fd
        self._max_bytes = max_bytes
        self._cond = threading.Condition(threading.Lock())
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes in _chunks plus the write in progress
        self._written = 0  # lines
        self._dropped = 0  # lines
        self._reported = 0  # of _dropped, lines the stream was told about
        self._broken: str | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<LogSink fd={self._fd} queued={s.queued_bytes} written={s.lines_written} "
            f"dropped={s.lines_dropped}{' broken' if s.broken else ''}>"
        )

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self._fd)
        except OSError:
            return False

    def statistics(self) -> LogSinkStatistics:
        with self._cond:
            return LogSinkStatistics(
                queued_bytes=self._queued,
                lines_written=self._written,
                lines_dropped=self._dropped,
                broken=self._broken,
            )

    def write(self, s: str) -> int:
        """Queue ``s`` for the descriptor, or drop it (counted) when there is no room."""
        data = s.encode("utf-8", "backslashreplace")
        if not data:
            return 0
        with self._cond:
            if self._broken is not None or self._queued + len(data) > self._max_bytes:
                self._dropped += data.count(b"\n") or 1
            else:
                self._chunks.append(data)
                self._queued += len(data)
                self._cond.notify_all()
        return len(s)

    def flush(self) -> None:
        """Nothing to do: the thread writes as soon as it can (see :meth:`drain`)."""

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything queued is written (or dropped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queued and self._broken is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # -- the writing thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._chunks:
                    self._cond.wait()
                data = b"".join(self._chunks)
                self._chunks.clear()
                gap = self._dropped - self._reported
                self._reported = self._dropped
            try:
                _write_all(self._fd, _dropped_note(gap) + data if gap else data)
            except OSError as exc:
                with self._cond:
                    self._broken = repr(exc)
                    self._dropped += sum(c.count(b"\n") for c in (data, *self._chunks))
                    self._chunks.clear()
                    self._queued = 0
                    self._cond.notify_all()
                return
            with self._cond:
                self._written += data.count(b"\n")
                self._queued -= len(data)
                self._cond.notify_all()


def _dropped_note(count: int) -> bytes:
    note = {"event": "log lines dropped", "count": count, "level": "warning"}
    return json.dumps(note).encode() + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:  # an inherited non-blocking descriptor: wait for room
            time.sleep(0.01)
            continue
        view = view[written:]
