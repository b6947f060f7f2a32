"""The stdout writer: the single owner of the protocol's output stream.

Queueing a line costs a list append on the loop; once per loop turn one callback joins the
turn's lines into a single blob and puts it on a thread-safe queue. A daemon thread writes the
queued blobs (merging what has piled up) and flushes once per write. Lines count against
``max_queued`` from queueing until written, so a client that stops reading stdout blocks only
the thread, never the event loop, and senders wait or are refused instead of filling memory;
the fill level (:meth:`LineWriter.statistics`) lets upper layers coalesce what may be
coalesced. The thread calls back into the loop only to wake senders waiting for room, to
report a broken stream, and to say that it stopped. Reading lines is :mod:`sidecar.framing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, Literal

import anyio
import anyio.lowlevel
import msgspec
import structlog
from anyio.abc import TaskGroup

__all__ = ["LineWriter", "WriterStatistics", "call_soon_threadsafe"]

_log = structlog.get_logger("sidecar.framing")


def call_soon_threadsafe(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any
) -> bool:
    """Schedule ``callback`` on ``loop`` from another thread; False once the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # "Event loop is closed": nobody is listening any more
        return False
    return True


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
            call_soon_threadsafe(loop, self._done.set)

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
                call_soon_threadsafe(loop, self._broke, repr(exc))
                return
            self._writing_bytes = 0
            self._lines_written += lines
            self._bytes_written += size
            self._flushes += 1
            with self._lock:
                self._settled += lines
                wake, self._room_wanted = self._room_wanted, False
            if wake:
                call_soon_threadsafe(loop, self._wake_senders)


def _write_all(stream: BinaryIO, data: bytes) -> None:
    """Write all of ``data``; a raw (unbuffered) stream may accept only part per call."""
    view = memoryview(data)
    while view:
        written: int | None = stream.write(view)
        if written is None:  # a non-blocking raw stream that would block
            raise OSError("stream would block")
        view = view[written:]
