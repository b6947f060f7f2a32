"""NDJSON framing: the byte layer between the sidecar's stdio pipes and the JSON-RPC protocol.

The sidecar speaks newline-delimited JSON (PROTOCOL.md, "Transport"). This module knows
nothing about JSON-RPC; it moves lines:

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
* :class:`LineWriter` owns stdout. Queueing a line costs a list append on the loop; once per
  loop turn one callback joins the turn's lines into a single blob and puts it on a
  thread-safe queue. A daemon thread writes the queued blobs (merging what has piled up) and
  flushes once per write. Lines count against ``max_queued`` from queueing until written, so
  a client that stops reading stdout blocks only the thread, never the event loop, and
  senders wait or are refused instead of filling memory; the fill level
  (:meth:`LineWriter.statistics`) lets upper layers coalesce what may be coalesced. The
  thread calls back into the loop only to wake senders waiting for room, to report a broken
  stream, and to say that it stopped.

The hand-offs use asyncio primitives directly (the sidecar runs anyio on its asyncio
backend); the async API stays cancellable by anyio. Both threads are daemon threads: a read
or write stuck in the OS never keeps the process alive, and a thread that outlives its event
loop exits without touching it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, Final, Literal

import anyio
import anyio.lowlevel
import msgspec
import structlog
from anyio.abc import TaskGroup

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

# A line of JSON whitespace only (spaces, tabs, a stray "\r") holds no message: it is ignored
# like an empty line. (A match fails at the first other byte: a message costs nothing here.)
_BLANK: Final = re.compile(rb"[ \t\r]*")


def _call_soon_threadsafe(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any
) -> bool:
    """Schedule ``callback`` on ``loop`` from another thread; False once the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # "Event loop is closed": nobody is listening any more
        return False
    return True


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
                _call_soon_threadsafe(loop, self._deliver, [end])
            raise

    def _hand_over(self, loop: asyncio.AbstractEventLoop, items: list[ReaderItem]) -> bool:
        """Deliver one batch, first waiting for a place; False when the loop stopped listening."""
        self._slots.acquire()
        if self._stopping:
            return False
        return _call_soon_threadsafe(loop, self._deliver, items)

    def _read_function(self) -> Callable[[int], bytes | None]:
        # read1 returns what one underlying read yields (a pipe hands over what is there);
        # a raw stream's read already behaves that way.
        read1: Callable[[int], bytes | None] | None = getattr(self._stream, "read1", None)
        return read1 if read1 is not None else self._stream.read


@dataclass(frozen=True, slots=True)
class WriterStatistics:
    queued: int
    """Lines queued and not yet written, including those of the write in progress."""
    capacity: int
    queued_bytes: int
    """Bytes of queued lines not yet handed to a write (without their ``\\n``)."""
    writing_bytes: int
    """Bytes of the write in progress (0 when idle)."""
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


# A blob for the writing thread: the bytes (each line ending in "\n") and how many lines.
# None asks the thread to leave once everything before it is written.
_Blob = tuple[bytes, int] | None


class LineWriter:
    """The single writer of a binary stream (``sys.stdout.buffer``): bounded queue + thread.

    Messages are encoded with :mod:`msgspec.json` when they are queued (an unencodable value
    fails in the caller, not in the writer), each written as one compact line ending in
    ``\\n``. At most ``max_queued`` lines are queued and not yet written: :meth:`send` waits
    while that many are; :meth:`send_nowait` raises :class:`anyio.WouldBlock` instead. The
    lines of one loop turn are handed to the thread together; the thread merges blobs that
    piled up while it wrote into one write of up to ``max_batch_lines`` lines or
    ``max_batch_bytes`` bytes (one blob may exceed these), and flushes once per write.

    Run it with ``async with LineWriter(...)`` or start :meth:`run` in a task group and call
    :meth:`close` then :meth:`wait_closed`; either way closing writes out everything queued
    before it returns. If :meth:`run` is cancelled instead, the thread stops after the write
    it is in.

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
        self._encoder = msgspec.json.Encoder()
        self._state: Literal["idle", "running", "closing", "closed", "broken"] = "idle"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done = asyncio.Event()
        self._task_group: TaskGroup | None = None
        self._blobs: queue.SimpleQueue[_Blob] = queue.SimpleQueue()
        # Loop side. Lines queued this loop turn wait in _pending for the flush callback.
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._accepted = 0  # lines ever queued
        self._accepted_bytes = 0
        self._discarded = 0  # queued lines the loop threw away when the stream broke
        self._discarded_bytes = 0
        self._dropped = 0
        self._room_waiters: list[asyncio.Future[None]] = []
        # Thread side; the loop only reads these. _settled counts lines written or lost.
        self._settled = 0
        self._taken_bytes = 0
        self._writing_bytes = 0
        self._lines_written = 0
        self._bytes_written = 0
        self._flushes = 0
        self._lost = 0
        self._stopped = False  # set by the loop when run() ended: the thread should leave
        # Guards the hand-shake "the loop waits for room" / "the thread made room".
        self._lock = threading.Lock()
        self._room_wanted = False

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<LineWriter {s.state} queued={s.queued}/{s.capacity} written={s.lines_written}>"

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            queued=self._unwritten(),
            capacity=self._capacity,
            queued_bytes=self._accepted_bytes - self._discarded_bytes - self._taken_bytes,
            writing_bytes=self._writing_bytes,
            lines_written=self._lines_written,
            bytes_written=self._bytes_written,
            flushes=self._flushes,
            dropped=self._dropped + self._lost,
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
        await self.send_raw(self._encoder.encode(message))

    def send_nowait(self, message: Any) -> None:
        """Encode and queue one message or raise :class:`anyio.WouldBlock` if full."""
        self.send_raw_nowait(self._encoder.encode(message))

    async def send_raw(self, line: bytes) -> None:
        """Queue one already encoded JSON text (without the ``\\n``); waits while full.

        With room in the queue it does not yield: a burst of responses and events costs one
        loop turn, not one per line.
        """
        if not self._admit(line):
            return
        while self._unwritten() >= self._capacity:
            await self._wait_for_room()
            if not self._accepting():
                return
        self._queue(line)

    def send_raw_nowait(self, line: bytes) -> None:
        """Queue one encoded JSON text or raise :class:`anyio.WouldBlock` if the queue is full."""
        if not self._admit(line):
            return
        if self._unwritten() >= self._capacity:
            raise anyio.WouldBlock
        self._queue(line)

    def _admit(self, line: bytes) -> bool:
        """Whether ``line`` may be queued: False drops it (broken); raises when closed."""
        if b"\n" in line:
            raise ValueError("a message must not contain a raw newline")
        return self._accepting()

    def _accepting(self) -> bool:
        state = self._state
        if state == "running" or state == "idle":
            return True
        if state == "broken":
            self._dropped += 1
            return False
        raise anyio.ClosedResourceError

    def _unwritten(self) -> int:
        return self._accepted - self._discarded - self._settled

    def _queue(self, line: bytes) -> None:
        self._pending.append(line)
        self._accepted += 1
        self._accepted_bytes += len(line)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # queued outside the loop: run() or close() hands it over
            return
        self._flush_scheduled = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Runs on the loop, once per turn with lines queued: hand them over as one blob."""
        self._flush_scheduled = False
        lines = self._pending
        if not lines:
            return
        self._pending = []
        count = len(lines)
        lines.append(b"")
        self._blobs.put((b"\n".join(lines), count))

    async def _wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._unwritten() < self._capacity:
                return
            self._room_wanted = True
        waiter = loop.create_future()
        self._room_waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._room_waiters.remove(waiter)

    def _wake_senders(self) -> None:
        """Runs on the loop: senders waiting for room look again."""
        waiters, self._room_waiters = self._room_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Accept no more lines; :meth:`run` ends once everything queued is written."""
        if self._state not in ("idle", "running"):
            return
        self._state = "closing"
        self._flush()
        self._blobs.put(None)
        self._wake_senders()  # they fail with ClosedResourceError

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
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._flush()  # lines queued where no loop was running
        thread = threading.Thread(
            target=self._thread_main, args=(loop,), name=self._name, daemon=True
        )
        thread.start()
        try:
            await self._done.wait()
        finally:
            self._done.set()
            if not self.broken:  # (a property: mypy would narrow the attribute)
                self._state = "closed"
            # Cancelled rather than closed: a busy thread leaves after its write, an idle
            # one now.
            self._stopped = True
            self._blobs.put(None)
            self._wake_senders()

    def _broke(self, error: str) -> None:
        """Runs on the loop after the thread failed to write: drop what is still queued."""
        if self._state != "closed":
            self._state = "broken"
        lines, size = len(self._pending), sum(map(len, self._pending))
        self._pending = []
        while True:
            try:
                blob = self._blobs.get_nowait()
            except queue.Empty:
                break
            if blob is not None:
                lines += blob[1]
                size += len(blob[0]) - blob[1]
        self._discarded += lines
        self._discarded_bytes += size
        self._dropped += lines
        _log.warning("stdout write failed; discarding further output", error=error)
        self._wake_senders()  # they drop their lines

    # -- the writing thread ---------------------------------------------------------------

    def _thread_main(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            self._write_blobs(loop)
        finally:
            _call_soon_threadsafe(loop, self._done.set)

    def _write_blobs(self, loop: asyncio.AbstractEventLoop) -> None:
        blobs = self._blobs
        leaving = False
        while not leaving:
            blob = blobs.get()
            if blob is None or self._stopped:
                return
            data, lines = blob
            parts: list[bytes] | None = None
            size = len(data)
            # Merge what piled up while the last write was blocked.
            while lines < self._max_batch_lines and size < self._max_batch_bytes:
                try:
                    more = blobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    leaving = True
                    break
                if parts is None:
                    parts = [data]
                parts.append(more[0])
                lines += more[1]
                size += len(more[0])
            if parts is not None:
                data = b"".join(parts)
            self._taken_bytes += size - lines
            self._writing_bytes = size
            try:
                _write_all(self._stream, data)
                self._stream.flush()
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                self._writing_bytes = 0
                self._lost += lines
                with self._lock:
                    self._settled += lines
                _call_soon_threadsafe(loop, self._broke, repr(exc))
                return
            self._writing_bytes = 0
            self._lines_written += lines
            self._bytes_written += size
            self._flushes += 1
            with self._lock:
                self._settled += lines
                wake, self._room_wanted = self._room_wanted, False
            if wake:
                _call_soon_threadsafe(loop, self._wake_senders)


def _write_all(stream: BinaryIO, data: bytes) -> None:
    """Write all of ``data``; a raw (unbuffered) stream may accept only part per call."""
    view = memoryview(data)
    while view:
        written: int | None = stream.write(view)
        if written is None:  # a non-blocking raw stream that would block
            raise OSError("stream would block")
        view = view[written:]
