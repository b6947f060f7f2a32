"""NDJSON framing: the byte layer between the sidecar's stdio pipes and the JSON-RPC protocol.

The sidecar speaks newline-delimited JSON (PROTOCOL.md, "Transport"). This module knows
nothing about JSON-RPC; it moves lines:

* :class:`LineSplitter` is the pure part: it turns chunks of bytes into lines, strips a
  trailing ``\\r``, drops empty lines and replaces a line longer than the limit by a
  :class:`MessageTooLarge` marker. While it skips such a line it keeps no more than the limit
  in memory, however long the line is.
* :class:`LineReader` reads a binary stream (``sys.stdin.buffer``) in a dedicated daemon
  thread, because blocking pipe reads are the one portable way to read stdin (asyncio's
  ``connect_read_pipe`` fails on Windows' Proactor loop). Lines reach the event loop through
  a bounded channel, so the thread stops reading when the consumer falls behind and the OS
  pipe pushes back on the client.
* :class:`LineWriter` owns stdout: one bounded queue of encoded lines, drained by a daemon
  thread that writes each batch of queued lines and flushes once per batch. A client that
  stops reading stdout blocks only that thread, never the event loop; the queue's fill level
  (:meth:`LineWriter.statistics`) lets upper layers coalesce what may be coalesced.

Both threads talk to the event loop through an :class:`anyio.from_thread.BlockingPortal`.
They are daemon threads: a read or write stuck in the OS never keeps the process alive.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import CancelledError as FutureCancelledError
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, Final, Literal

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "EOF",
    "EndOfInput",
    "LineReader",
    "LineSplitter",
    "LineWriter",
    "MessageTooLarge",
    "ReaderItem",
    "ReaderStatistics",
    "WriterStatistics",
]

DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
DEFAULT_CHUNK_SIZE: Final = 64 * 1024

_log = structlog.get_logger("sidecar.framing")

# What a thread may see when it calls into an event loop that has stopped listening:
# a stopped portal (RuntimeError), a closed channel, or a call cancelled by the loop.
_LOOP_GONE: Final = (
    RuntimeError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    FutureCancelledError,
)


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
        elif line:
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
    marker instead, for callers that want to see it. At most ``max_pending`` chunks' worth of
    lines wait in the channel; beyond that the thread blocks and stops reading.
    Leaving the context stops delivery; a thread still blocked in ``read`` stays parked until
    the stream yields data or EOF, and then exits without touching the loop.
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
        self._stream = stream
        self._splitter = LineSplitter(max_message_bytes)
        self._chunk_size = chunk_size
        self._max_pending = max_pending
        self._name = name
        self._portal: BlockingPortal | None = None
        self._send: MemoryObjectSendStream[list[ReaderItem]] | None = None
        self._receive: MemoryObjectReceiveStream[list[ReaderItem]] | None = None
        self._unread: list[ReaderItem] = []
        self._thread: threading.Thread | None = None
        self._lines = 0
        self._too_large = 0
        self._bytes_read = 0
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
        if self._portal is not None:
            raise RuntimeError("LineReader is already running")
        self._send, self._receive = anyio.create_memory_object_stream[list[ReaderItem]](
            self._max_pending
        )
        portal = BlockingPortal()
        await portal.__aenter__()
        self._portal = portal
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        assert self._portal is not None and self._receive is not None and self._send is not None
        # Closing the receiving side fails a send the thread is blocked in; cancelling the
        # portal's tasks covers a send that has not started yet.
        self._receive.close()
        await self._portal.stop(cancel_remaining=True)
        try:
            await self._portal.__aexit__(exc_type, exc_val, exc_tb)
        finally:
            self._send.close()

    async def receive(self) -> ReaderItem:
        """The next line, :class:`MessageTooLarge`, or :class:`EndOfInput` (then forever)."""
        if self._eof:
            return EOF
        if self._receive is None:
            raise RuntimeError("LineReader is not running (use 'async with')")
        while not self._unread:
            try:
                batch = await self._receive.receive()
            except anyio.EndOfStream:  # the thread died without saying why
                batch = [EndOfInput("reader stopped")]
            batch.reverse()
            self._unread = batch
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

    # -- the reading thread ---------------------------------------------------------------

    def _thread_main(self) -> None:
        assert self._send is not None
        send = self._send
        read = self._read_function()
        try:
            while True:
                try:
                    chunk = read(self._chunk_size)
                except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                    _log.warning("stdin read failed", error=repr(exc))
                    self._post(send, [*self._splitter.finish(), EndOfInput(repr(exc))])
                    return
                if not chunk:
                    self._post(send, [*self._splitter.finish(), EOF])
                    return
                self._bytes_read += len(chunk)
                items: list[ReaderItem] = list(self._splitter.feed(chunk))
                if items:
                    self._post(send, items)
        except _LoopGone:
            return
        finally:
            with contextlib.suppress(*_LOOP_GONE):
                self._call(send.close)

    def _read_function(self) -> Callable[[int], bytes | None]:
        # read1 returns what one underlying read yields (a pipe hands over what is there);
        # a raw stream's read already behaves that way.
        read1: Callable[[int], bytes | None] | None = getattr(self._stream, "read1", None)
        return read1 if read1 is not None else self._stream.read

    def _post(
        self, send: MemoryObjectSendStream[list[ReaderItem]], items: list[ReaderItem]
    ) -> None:
        try:
            self._call(send.send, items)
        except _LOOP_GONE as exc:
            raise _LoopGone from exc

    def _call(self, func: Callable[..., Any], *args: Any) -> Any:
        portal = self._portal
        if portal is None:
            raise RuntimeError("no portal")
        return portal.call(func, *args)


class _LoopGone(Exception):
    """The event loop stopped listening; the thread should exit quietly."""


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    queued: int
    """Lines waiting in the queue (not counting the batch being written)."""
    capacity: int
    queued_bytes: int
    writing_bytes: int
    """Bytes of the batch the thread is writing now (0 when idle)."""
    lines_written: int
    bytes_written: int
    flushes: int
    dropped: int
    """Lines discarded because the stream failed (the client went away)."""
    state: Literal["idle", "running", "closing", "closed", "broken"]

    @property
    def load(self) -> float:
        """Queue fill level in 0..1; upper layers coalesce progress when it is high."""
        return self.queued / self.capacity if self.capacity else 0.0


class LineWriter:
    """The single writer of a binary stream (``sys.stdout.buffer``): bounded queue + thread.

    Messages are encoded with :mod:`msgspec.json` when they are queued (an unencodable value
    fails in the caller, not in the writer), each written as one compact line ending in
    ``\\n``. :meth:`send` waits while the queue is full; :meth:`send_nowait` raises
    :class:`anyio.WouldBlock` instead. Run it with ``async with LineWriter(...)`` or start
    :meth:`run` in a task group and call :meth:`close` then :meth:`wait_closed`; either way
    closing writes out everything queued before it returns.

    If the stream fails (EPIPE: the client is gone) the writer logs once, turns ``broken``
    and discards further lines, counting them in ``dropped``.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        max_queued: int = 1024,
        max_batch_lines: int = 256,
        max_batch_bytes: int = 1024 * 1024,
        name: str = "taskmill-stdout-writer",
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be positive")
        self._stream = stream
        self._capacity = max_queued
        self._max_batch_lines = max_batch_lines
        self._max_batch_bytes = max_batch_bytes
        self._name = name
        self._send, self._receive = anyio.create_memory_object_stream[bytes](max_queued)
        self._encoder = msgspec.json.Encoder()
        self._queued_bytes = 0
        self._writing_bytes = 0
        self._lines_written = 0
        self._bytes_written = 0
        self._flushes = 0
        self._dropped = 0
        self._state: Literal["idle", "running", "closing", "closed", "broken"] = "idle"
        self._done = anyio.Event()
        self._task_group: TaskGroup | None = None

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<LineWriter {s.state} queued={s.queued}/{s.capacity} written={s.lines_written}>"

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            queued=self._send.statistics().current_buffer_used,
            capacity=self._capacity,
            queued_bytes=self._queued_bytes,
            writing_bytes=self._writing_bytes,
            lines_written=self._lines_written,
            bytes_written=self._bytes_written,
            flushes=self._flushes,
            dropped=self._dropped,
            state=self._state,
        )

    @property
    def load(self) -> float:
        return self.statistics().load

    @property
    def broken(self) -> bool:
        return self._state == "broken"

    def encode(self, message: Any) -> bytes:
        """Compact JSON for ``message`` (a msgspec Struct, dict, list, ...)."""
        return self._encoder.encode(message)

    async def send(self, message: Any) -> None:
        """Encode and queue one message; waits while the queue is full."""
        await self.send_raw(self.encode(message))

    def send_nowait(self, message: Any) -> None:
        """Encode and queue one message or raise :class:`anyio.WouldBlock` if full."""
        self.send_raw_nowait(self.encode(message))

    async def send_raw(self, line: bytes) -> None:
        """Queue one already encoded JSON text (without the ``\\n``); waits while full."""
        if not self._accept(line):
            return
        try:
            # With room in the queue, no yield: a burst of responses and events costs one
            # loop turn, not one per line.
            self._send.send_nowait(line)
            return
        except anyio.WouldBlock:
            pass
        except anyio.BrokenResourceError:
            self._unqueue(line)
            return
        except BaseException:
            self._queued_bytes -= len(line)
            raise
        try:
            await self._send.send(line)
        except anyio.BrokenResourceError:  # the writer stopped while we waited for room
            self._unqueue(line)
        except BaseException:
            self._queued_bytes -= len(line)
            raise

    def send_raw_nowait(self, line: bytes) -> None:
        """Queue one encoded JSON text or raise :class:`anyio.WouldBlock` if the queue is full."""
        if not self._accept(line):
            return
        try:
            self._send.send_nowait(line)
        except anyio.BrokenResourceError:
            self._unqueue(line)
        except BaseException:
            self._queued_bytes -= len(line)
            raise

    def _accept(self, line: bytes) -> bool:
        if b"\n" in line:
            raise ValueError("a message must not contain a raw newline")
        if self._state == "broken":
            self._dropped += 1
            return False
        # Counted before the hand-over: the writer may take the line before send() returns.
        self._queued_bytes += len(line)
        return True

    def _unqueue(self, line: bytes) -> None:
        self._queued_bytes -= len(line)
        self._dropped += 1

    def close(self) -> None:
        """Accept no more lines; :meth:`run` ends once everything queued is written."""
        if self._state in ("idle", "running"):
            self._state = "closing"
        self._send.close()

    async def wait_closed(self) -> None:
        await self._done.wait()

    async def __aenter__(self) -> LineWriter:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._task_group = tg
        tg.start_soon(self.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self.close()
        return await self._task_group.__aexit__(exc_type, exc_val, exc_tb)

    async def run(self) -> None:
        """Drive the writing thread until closed and drained (or the stream breaks)."""
        if self._state not in ("idle", "closing"):
            raise RuntimeError(f"LineWriter cannot run in state {self._state!r}")
        if self._state == "idle":
            self._state = "running"
        try:
            async with BlockingPortal() as portal:
                thread = threading.Thread(
                    target=self._thread_main, args=(portal,), name=self._name, daemon=True
                )
                thread.start()
                await self._done.wait()
        finally:
            self._done.set()
            if not self.broken:  # (a property: the thread may have changed the state)
                self._state = "closed"
            self._receive.close()
            self._send.close()

    async def _next_batch(self) -> bytes | None:
        """Runs on the loop: wait for a line, then take what else is queued, up to a cap."""
        self._writing_bytes = 0
        try:
            first = await self._receive.receive()
        except anyio.EndOfStream:
            return None
        parts = [first]
        size = len(first)
        while len(parts) < self._max_batch_lines and size < self._max_batch_bytes:
            try:
                line = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            parts.append(line)
            size += len(line)
        self._queued_bytes -= size
        parts.append(b"")
        data = b"\n".join(parts)
        self._writing_bytes = len(data)
        return data

    def _wrote(self, lines: int, size: int) -> None:
        self._lines_written += lines
        self._bytes_written += size
        self._flushes += 1

    def _broke(self, error: str) -> None:
        self._state = "broken"
        dropped = 0
        while True:
            try:
                line = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            dropped += 1
            self._queued_bytes -= len(line)
        self._dropped += dropped
        _log.warning("stdout write failed; discarding further output", error=error)

    def _thread_main(self, portal: BlockingPortal) -> None:
        try:
            while True:
                data: bytes | None = portal.call(self._next_batch)
                if data is None:
                    return
                try:
                    _write_all(self._stream, data)
                    self._stream.flush()
                except (OSError, ValueError) as exc:
                    lines = data.count(b"\n")
                    portal.call(self._broke, repr(exc))
                    portal.call(self._count_dropped, lines)
                    return
                portal.call(self._wrote, data.count(b"\n"), len(data))
        except _LOOP_GONE:
            return
        finally:
            with contextlib.suppress(*_LOOP_GONE):
                portal.call(self._done.set)

    def _count_dropped(self, lines: int) -> None:
        self._dropped += lines


def _write_all(stream: BinaryIO, data: bytes) -> None:
    """Write all of ``data``; a raw (unbuffered) stream may accept only part per call."""
    view = memoryview(data)
    while view:
        written: int | None = stream.write(view)
        if written is None:  # a non-blocking raw stream that would block
            raise OSError("stream would block")
        view = view[written:]
