"""NDJSON framing: the byte layer between the sidecar's stdio pipes and the JSON-RPC protocol.

The sidecar speaks newline-delimited JSON (docs/protocol.md, "Transport"). This module knows
nothing about JSON-RPC; it reads lines (writing them is :mod:`sidecar.writer`):

* :class:`LineSplitter` is the pure part: it turns chunks of bytes into lines, strips a
  trailing ``\\r``, drops empty and whitespace-only lines and replaces a line longer than the
  limit by a :class:`MessageTooLarge` marker. While it skips such a line it keeps no more
  than the limit in memory, however long the line is.
* :class:`LineReader` reads a binary stream (``sys.stdin.buffer``) in a dedicated daemon
  thread, because blocking pipe reads are the one portable way to read stdin (asyncio's
  ``connect_read_pipe`` fails on Windows' Proactor loop). The thread hands each chunk's lines
  to the event loop with one ``call_soon_threadsafe``; a semaphore that the loop releases as
  it consumes bounds the batches in flight, so the thread stops reading when the consumer
  falls behind and the OS pipe pushes back on the client.

The hand-offs use asyncio primitives directly (the sidecar runs anyio on its asyncio
backend); the async API stays cancellable by anyio. The reader (like the writer) is a daemon
thread: a read stuck in the OS never keeps the process alive, and a thread that outlives its event
loop exits without touching it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Final

import anyio
import anyio.lowlevel
import structlog

from sidecar.writer import call_soon_threadsafe

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "EOF",
    "EndOfInput",
    "LineReader",
    "LineSplitter",
    "MessageTooLarge",
    "ReaderItem",
    "ReaderStatistics",
]

DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
DEFAULT_CHUNK_SIZE: Final = 64 * 1024

_log = structlog.get_logger("sidecar.framing")

# A line of JSON whitespace only (spaces, tabs, a stray "\r") holds no message: it is ignored
# like an empty line. (A match fails at the first other byte: a message costs nothing here.)
_BLANK: Final = re.compile(rb"[ \t\r]*")


@dataclass(frozen=True, slots=True)
class MessageTooLarge:
    """Stands in for a line that exceeded the limit; its bytes were discarded, not kept.

    ``size`` is the line's length in bytes without its line terminator.
    """

    size: int
    limit: int


@dataclass(frozen=True, slots=True)
class EndOfInput:
    """The stream ended (EOF, or a read error, then ``error`` says which)."""

    error: str | None = None


EOF: Final = EndOfInput()

ReaderItem = bytes | MessageTooLarge | EndOfInput


class LineSplitter:
    """Splits a byte stream into lines with bounded memory; pure and synchronous.

    ``feed`` returns the complete lines found so far (``bytes`` without the terminator, or a
    :class:`MessageTooLarge`); ``finish`` flushes a last line that had no terminator.
    A line's length is counted without its ``\\n`` and without a ``\\r`` before it.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        # While skipping an oversized line: how many of its bytes were seen; else None.
        self._skipped: int | None = None
        self._skipped_cr = False  # the last skipped byte was "\r" (not part of the size)

    def __repr__(self) -> str:
        state = "skipping" if self._skipped is not None else f"buffered={len(self._buffer)}"
        return f"<LineSplitter max={self.max_message_bytes} {state}>"

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held in memory (never more than the limit + 1)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray) -> list[bytes | MessageTooLarge]:
        out: list[bytes | MessageTooLarge] = []
        view = memoryview(data)
        start = 0
        while True:
            newline = data.find(b"\n", start)
            end = len(view) if newline == -1 else newline
            self._take(view[start:end])
            if newline == -1:
                return out
            self._end_line(out)
            start = newline + 1

    def finish(self) -> list[bytes | MessageTooLarge]:
        """End of input: a pending unterminated line counts as a last line."""
        out: list[bytes | MessageTooLarge] = []
        if self._buffer or self._skipped is not None:
            self._end_line(out)
        return out

    def _take(self, part: memoryview) -> None:
        if not part:
            return
        if self._skipped is not None:
            self._skipped += len(part)
            self._skipped_cr = part[-1] == 0x0D
            return
        # One byte of slack for a "\r" that the terminator will strip.
        if len(self._buffer) + len(part) > self.max_message_bytes + 1:
            self._skipped = len(self._buffer) + len(part)
            self._skipped_cr = part[-1] == 0x0D
            self._buffer = bytearray()  # release the memory, not just the length
            return
        self._buffer += part

    def _end_line(self, out: list[bytes | MessageTooLarge]) -> None:
        if self._skipped is not None:
            size = self._skipped - self._skipped_cr
            self._skipped = None
            out.append(MessageTooLarge(size=size, limit=self.max_message_bytes))
            return
        line = bytes(self._buffer)
        self._buffer.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_message_bytes:
            out.append(MessageTooLarge(size=len(line), limit=self.max_message_bytes))
        elif line and _BLANK.fullmatch(line) is None:
            out.append(line)


@dataclass(frozen=True, slots=True)
class ReaderStatistics:
    lines: int
    too_large: int
    bytes_read: int
    eof: bool


class LineReader:
    """Reads lines from a binary stream in a daemon thread; an async iterator of lines.

    Use it as an async context manager and iterate it::

        async with LineReader(sys.stdin.buffer, max_message_bytes=limit) as reader:
            async for item in reader:  # bytes | MessageTooLarge; ends at EOF
                ...

    Iteration stops at end of input; :meth:`receive` returns the :class:`EndOfInput`
    marker instead, for callers that want to see it. The thread delivers each chunk's lines
    as one batch; at most ``max_pending`` batches wait for the consumer, beyond that the
    thread blocks and stops reading. Leaving the context stops delivery; a thread still
    blocked in ``read`` stays parked until the stream yields data or EOF, and then exits
    without touching the loop.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_pending: int = 16,
        name: str = "taskmill-stdin-reader",
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be positive")
        self._stream = stream
        self._splitter = LineSplitter(max_message_bytes)
        self._chunk_size = chunk_size
        self._max_pending = max_pending
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        # Free places for delivered batches; the thread takes one per batch, the loop gives
        # it back when it starts on a batch.
        self._slots = threading.Semaphore(max_pending)
        self._stopping = False  # set by the loop when leaving; read by the thread
        # Loop side: delivered batches, the current batch reversed, waiting receivers.
        self._batches: collections.deque[list[ReaderItem]] = collections.deque()
        self._unread: list[ReaderItem] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._thread: threading.Thread | None = None
        self._lines = 0
        self._too_large = 0
        self._bytes_read = 0  # written by the thread
        self._eof = False

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<LineReader lines={s.lines} too_large={s.too_large} eof={s.eof}>"

    @property
    def max_message_bytes(self) -> int:
        return self._splitter.max_message_bytes

    def statistics(self) -> ReaderStatistics:
        return ReaderStatistics(
            lines=self._lines, too_large=self._too_large, bytes_read=self._bytes_read, eof=self._eof
        )

    async def __aenter__(self) -> LineReader:
        if self._loop is not None:
            raise RuntimeError("LineReader is already running")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._thread_main, args=(loop,), name=self._name, daemon=True
        )
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self._stopping = True
        self._batches.clear()
        # A thread blocked waiting for a place wakes up, sees _stopping and leaves.
        self._slots.release()
        self._wake_receivers()

    async def receive(self) -> ReaderItem:
        """The next line, :class:`MessageTooLarge`, or :class:`EndOfInput` (then forever)."""
        if self._eof:
            return EOF
        if self._loop is None:
            raise RuntimeError("LineReader is not running (use 'async with')")
        yielded = False
        while not self._unread:
            if self._stopping:
                raise anyio.ClosedResourceError
            if self._batches and yielded:
                batch = self._batches.popleft()
                self._slots.release()
                batch.reverse()
                self._unread = batch
                break
            yielded = True
            if self._batches:
                # One yield per chunk, as a channel's receive does: other tasks run between
                # chunks, the lines of one chunk go out together.
                await anyio.lowlevel.checkpoint()
                continue
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        item = self._unread.pop()
        if isinstance(item, EndOfInput):
            self._eof = True
        elif isinstance(item, MessageTooLarge):
            self._too_large += 1
        else:
            self._lines += 1
        return item

    def __aiter__(self) -> AsyncIterator[bytes | MessageTooLarge]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes | MessageTooLarge]:
        while True:
            item = await self.receive()
            if isinstance(item, EndOfInput):
                return
            yield item

    def _deliver(self, batch: list[ReaderItem]) -> None:
        """Runs on the loop: one batch from the thread arrives."""
        if self._stopping:
            return
        self._batches.append(batch)
        self._wake_receivers()

    def _wake_receivers(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- the reading thread ---------------------------------------------------------------

    def _thread_main(self, loop: asyncio.AbstractEventLoop) -> None:
        read = self._read_function()
        end = EndOfInput("reader stopped")  # unless we learn better below
        try:
            while True:
                try:
                    chunk = read(self._chunk_size)
                except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                    _log.warning("stdin read failed", error=repr(exc))
                    end = EndOfInput(repr(exc))
                    break
                if not chunk:
                    end = EOF
                    break
                self._bytes_read += len(chunk)
                items: list[ReaderItem] = list(self._splitter.feed(chunk))
                if items and not self._hand_over(loop, items):
                    return
            self._hand_over(loop, [*self._splitter.finish(), end])
        except BaseException:
            # An unexpected failure still ends the input, so the consumer does not wait forever.
            if not self._stopping:
                call_soon_threadsafe(loop, self._deliver, [end])
            raise

    def _hand_over(self, loop: asyncio.AbstractEventLoop, items: list[ReaderItem]) -> bool:
        """Deliver one batch, first waiting for a place; False when the loop stopped listening."""
        self._slots.acquire()
        if self._stopping:
            return False
        return call_soon_threadsafe(loop, self._deliver, items)

    def _read_function(self) -> Callable[[int], bytes | None]:
        # read1 returns what one underlying read yields (a pipe hands over what is there);
        # a raw stream's read already behaves that way.
        read1: Callable[[int], bytes | None] | None = getattr(self._stream, "read1", None)
        return read1 if read1 is not None else self._stream.read
