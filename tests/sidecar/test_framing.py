"""NDJSON framing: line splitting, the reader thread and the stdout writer."""

from __future__ import annotations

import io
import os
import threading
import tracemalloc
from collections.abc import Callable, Iterable, Iterator

import anyio
import anyio.lowlevel
import msgspec
import pytest
import structlog.testing

from sidecar.framing import (
    EOF,
    EndOfInput,
    LineReader,
    LineSplitter,
    MessageTooLarge,
)
from sidecar.writer import LineWriter

from .conftest import Pipe

pytestmark = pytest.mark.anyio


# -- LineSplitter ---------------------------------------------------------------------------


def split_all(chunks: Iterable[bytes], limit: int = 100) -> list[bytes | MessageTooLarge]:
    splitter = LineSplitter(limit)
    out: list[bytes | MessageTooLarge] = []
    for chunk in chunks:
        out += splitter.feed(chunk)
    return out + splitter.finish()


def test_splits_lines_and_strips_cr() -> None:
    assert split_all([b'{"a":1}\n{"b":2}\r\n{"c":3}\n']) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_ignores_empty_lines() -> None:
    assert split_all([b"\n\r\n\n a \n\n"]) == [b" a "]


def test_ignores_lines_of_only_spaces_and_tabs() -> None:
    """Whitespace around a JSON text is no text: such a line is as empty as an empty one."""
    lines = [b"  \n", b"\t\n", b" \t \r\n", b'  {"a":1}\t\r\n', b" \t", b"\r"]
    assert split_all(lines) == [b'  {"a":1}\t']
    assert split_all([b" " * 100 + b"\n"], limit=100) == []


def test_lines_split_across_chunks_byte_by_byte() -> None:
    data = b'{"x":"first"}\r\n\n{"x":"second"}\n'
    assert split_all([data[i : i + 1] for i in range(len(data))]) == [
        b'{"x":"first"}',
        b'{"x":"second"}',
    ]


def test_cr_and_lf_in_different_chunks() -> None:
    assert split_all([b"abc\r", b"\ndef\r", b"\n"]) == [b"abc", b"def"]


def test_unterminated_last_line_is_delivered_at_finish() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"one\ntwo") == [b"one"]
    assert splitter.finish() == [b"two"]
    assert splitter.finish() == []


def test_limit_is_inclusive_and_excludes_the_terminator() -> None:
    assert split_all([b"x" * 10 + b"\r\n"], limit=10) == [b"x" * 10]
    assert split_all([b"x" * 10 + b"\n"], limit=10) == [b"x" * 10]
    assert split_all([b"x" * 11 + b"\n"], limit=10) == [MessageTooLarge(size=11, limit=10)]
    assert split_all([b"x" * 11 + b"\r\n"], limit=10) == [MessageTooLarge(size=11, limit=10)]


def test_oversized_line_is_skipped_with_bounded_buffer() -> None:
    splitter = LineSplitter(1000)
    out: list[bytes | MessageTooLarge] = []
    out += splitter.feed(b"ok\n" + b"y" * 500)
    for _ in range(1000):
        out += splitter.feed(b"y" * 1000)
        assert splitter.buffered <= 1001
    out += splitter.feed(b"y" * 500 + b"\r\nnext\n")
    assert out == [b"ok", MessageTooLarge(size=1_001_000, limit=1000), b"next"]


def test_oversized_unterminated_line_at_eof() -> None:
    splitter = LineSplitter(4)
    assert splitter.feed(b"123456") == []
    assert splitter.finish() == [MessageTooLarge(size=6, limit=4)]


def test_rejects_nonpositive_limit() -> None:
    with pytest.raises(ValueError):
        LineSplitter(0)


# -- LineReader -----------------------------------------------------------------------------


class ChunkStream(io.RawIOBase):
    """A raw stream that returns the given chunks one read at a time, then EOF."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        if not self.chunks:
            return 0
        chunk = self.chunks.pop(0)
        assert len(chunk) <= len(buffer), "test chunk larger than the reader's chunk size"
        buffer[: len(chunk)] = chunk
        return len(chunk)


async def collect(reader: LineReader) -> list[bytes | MessageTooLarge]:
    return [item async for item in reader]


async def test_reader_over_bytesio() -> None:
    stream = io.BytesIO(b'{"a":1}\r\n\n{"b":2}\n' + b"z" * 50 + b"\nlast")
    async with LineReader(stream, max_message_bytes=20, chunk_size=7) as reader:
        items = await collect(reader)
        assert await reader.receive() is EOF  # the end stays the end
    assert items == [b'{"a":1}', b'{"b":2}', MessageTooLarge(size=50, limit=20), b"last"]
    stats = reader.statistics()
    assert (stats.lines, stats.too_large, stats.eof) == (3, 1, True)
    assert stats.bytes_read == len(stream.getvalue())


async def test_reader_sees_lines_split_across_reads() -> None:
    stream = ChunkStream([b'{"id":', b"1}\r", b"\n", b'{"id":2', b"}\n\n"])
    async with LineReader(stream) as reader:  # type: ignore[arg-type]
        assert await collect(reader) == [b'{"id":1}', b'{"id":2}']
    assert stream.reads == 6


async def test_receive_reports_end_of_input_distinctly() -> None:
    async with LineReader(io.BytesIO(b"x\n")) as reader:
        assert await reader.receive() == b"x"
        end = await reader.receive()
        assert isinstance(end, EndOfInput) and end.error is None


async def test_read_error_ends_input_with_the_error() -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            raise OSError("boom")

    async with LineReader(Failing()) as reader:  # type: ignore[arg-type]
        end = await reader.receive()
    assert isinstance(end, EndOfInput) and end.error is not None and "boom" in end.error


async def test_reader_over_pipe(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    async with LineReader(pipe.reader) as reader:
        pipe.writer.write(b'{"n":1}\n{"n":')
        pipe.writer.flush()
        assert await reader.receive() == b'{"n":1}'
        pipe.writer.write(b"2}\r\n")
        pipe.writer.flush()
        assert await reader.receive() == b'{"n":2}'
        pipe.close_writer()
        assert await reader.receive() is EOF


async def test_oversized_line_over_pipe_keeps_memory_bounded(make_pipe: type[Pipe]) -> None:
    """10 MB line, 1 MiB limit: skipped, reported, the next line served; peak memory ≪ 10 MB."""
    limit = 1024 * 1024
    line_size = 10 * 1000 * 1000
    piece = b"x" * 65536
    pipe = make_pipe()

    def produce() -> None:
        remaining = line_size
        while remaining:
            n = min(remaining, len(piece))
            pipe.writer.write(piece[:n] if n < len(piece) else piece)
            remaining -= n
        pipe.writer.write(b'\n{"after":true}\n')
        pipe.close_writer()

    tracemalloc.start()
    try:
        async with LineReader(pipe.reader, max_message_bytes=limit) as reader:
            producer = threading.Thread(target=produce)
            producer.start()
            items = await collect(reader)
            await anyio.to_thread.run_sync(producer.join)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert items == [MessageTooLarge(size=line_size, limit=limit), b'{"after":true}']
    assert peak < 2.5 * limit, f"peak {peak} bytes while skipping a {line_size}-byte line"


async def test_reader_stops_reading_when_the_consumer_lags() -> None:
    class Endless(io.RawIOBase):
        def __init__(self) -> None:
            self.reads = 0
            self.stop = False

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            if self.stop:
                return 0
            self.reads += 1
            buffer[:2] = b"x\n"
            return 2

    stream = Endless()
    async with LineReader(stream, max_pending=2) as reader:  # type: ignore[arg-type]
        assert await reader.receive() == b"x"
        await anyio.sleep(0.05)
        # 2 batches buffered + 1 blocked in send + the one consumed: the thread is parked.
        assert stream.reads <= 5
        for _ in range(10):  # consuming lets it read again
            assert await reader.receive() == b"x"
        assert stream.reads >= 11
        stream.stop = True
        async for _ in reader:
            pass
    assert reader.statistics().eof


async def test_leaving_early_releases_a_blocked_thread(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    pipe.writer.write(b"a\n" * 1000)
    pipe.writer.flush()
    async with LineReader(pipe.reader, max_pending=1, chunk_size=2) as reader:
        assert await reader.receive() == b"a"
    # The thread was blocked handing over a line; it must not wedge the loop or raise.
    pipe.close_writer()
    await anyio.sleep(0.01)


# -- LineWriter -----------------------------------------------------------------------------


class CountingBuffer(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class Event(msgspec.Struct, rename="camel"):
    task_id: int
    message: str


async def test_writer_writes_compact_lines_and_flushes_per_batch() -> None:
    out = CountingBuffer()
    writer = LineWriter(out)
    for i in range(100):
        writer.send_nowait({"jsonrpc": "2.0", "method": "e", "params": {"i": i}})
    assert writer.statistics().queued == 100
    async with writer:
        await writer.send(Event(task_id=7, message="héllo"))
    lines = out.getvalue().split(b"\n")
    assert lines[-1] == b""
    assert lines[0] == b'{"jsonrpc":"2.0","method":"e","params":{"i":0}}'
    assert lines[100] == '{"taskId":7,"message":"héllo"}'.encode()
    assert len(lines) == 102
    stats = writer.statistics()
    assert stats.lines_written == 101 and stats.bytes_written == len(out.getvalue())
    # The first 100 were queued before the thread started: written as one batch.
    assert stats.flushes == out.flushes <= 2
    assert stats.state == "closed" and stats.queued == 0 and stats.queued_bytes == 0


async def test_writer_raw_lines_and_run_in_task_group() -> None:
    out = io.BytesIO()
    writer = LineWriter(out)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await writer.send_raw(b"[1,2]")
        await writer.send_raw(b"{}")
        writer.close()
        await writer.wait_closed()
    assert out.getvalue() == b"[1,2]\n{}\n"
    with pytest.raises(anyio.ClosedResourceError):
        await writer.send_raw(b"{}")
    with pytest.raises(ValueError):
        writer.send_raw_nowait(b"{}\n{}")
    assert writer.statistics().queued_bytes == 0


async def test_unencodable_message_fails_in_the_caller() -> None:
    async with LineWriter(io.BytesIO()) as writer:
        with pytest.raises(TypeError):
            await writer.send(object())
        assert writer.statistics().queued == 0


async def test_stalled_reader_blocks_neither_loop_nor_memory(make_pipe: type[Pipe]) -> None:
    """Nobody reads stdout: the queue fills, the loop keeps running, send_nowait refuses."""
    pipe = make_pipe()
    writer = LineWriter(pipe.writer, max_queued=8, max_batch_lines=4)
    line = b'"' + b"p" * 16382 + b'"'  # 16 KiB: 4 of them fill a Linux pipe (64 KiB)
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        with anyio.fail_after(5):
            while True:
                try:
                    writer.send_raw_nowait(line)
                except anyio.WouldBlock:
                    break
                await anyio.lowlevel.checkpoint()  # one flush per loop turn
        # The thread takes the lines when it gets the GIL; wait until it is stuck in a write.
        await wait_until(lambda: writer.statistics().writing_bytes > 0)
        stats = writer.statistics()
        assert stats.queued == 8 and stats.load == 1.0
        assert stats.writing_bytes > 0  # a batch is stuck in the blocked write
        ticks = 0
        with anyio.move_on_after(0.02):
            while True:
                await anyio.lowlevel.checkpoint()
                ticks += 1
        assert ticks > 10  # the event loop is alive

        received: list[int] = []

        def read_all() -> None:
            total = 0
            while data := pipe.reader.read1(65536):
                total += len(data)
            received.append(total)

        reading = threading.Thread(target=read_all)
        reading.start()
        writer.close()
        with anyio.fail_after(5):
            await writer.wait_closed()
        pipe.close_writer()
        await anyio.to_thread.run_sync(reading.join)
    stats = writer.statistics()
    assert stats.state == "closed" and stats.dropped == 0
    assert received == [stats.bytes_written]
    assert stats.bytes_written == stats.lines_written * (len(line) + 1)


async def test_broken_stream_drops_output_and_says_so() -> None:
    class Broken(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: object) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    writer = LineWriter(Broken())  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await writer.send_raw(b"{}")
        with anyio.fail_after(5):
            await writer.wait_closed()
    assert writer.broken
    await writer.send_raw(b"{}")  # silently dropped, never raises
    writer.send_raw_nowait(b"{}")
    stats = writer.statistics()
    assert stats.state == "broken" and stats.dropped == 3 and stats.lines_written == 0


# -- hand-offs between the loop and the threads ----------------------------------------------


class CountingWrites(io.BytesIO):
    """Counts write calls and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, data: object) -> int:
        self.writes += 1
        return super().write(data)  # type: ignore[call-overload, no-any-return]

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (state that a thread changes) until it holds, for up to 5 s."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 (another thread: nothing to await)
            await anyio.sleep(0.001)


@pytest.fixture
def raw_pipe() -> Iterator[tuple[io.FileIO, io.FileIO]]:
    """An ``os.pipe()`` with unbuffered ends: closing them never flushes (or fails)."""
    r, w = os.pipe()
    ends = io.FileIO(r, "rb"), io.FileIO(w, "wb")
    yield ends
    for end in ends:
        end.close()


def thread_named(name: str) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t.name == name]
    return thread


async def test_lines_of_one_loop_turn_are_one_write() -> None:
    out = CountingWrites()
    async with LineWriter(out) as writer:
        await anyio.sleep(0.01)  # the thread is up and idle
        for i in range(500):
            await writer.send_raw(b"%d" % i)  # room in the queue: no yield
        stats = writer.statistics()
        assert (stats.queued, stats.queued_bytes, stats.lines_written) == (500, 1390, 0)
        await wait_until(lambda: writer.statistics().lines_written == 500)
        assert (out.writes, out.flushes, writer.statistics().flushes) == (1, 1, 1)
    assert out.getvalue() == b"".join(b"%d\n" % i for i in range(500))


async def test_send_raw_waits_for_the_thread_to_write(make_pipe: type[Pipe]) -> None:
    """A full pipe blocks the thread; senders wait (cancellably) and resume as the client reads."""
    pipe = make_pipe()
    writer = LineWriter(pipe.writer, max_queued=4)
    line = b'"' + b"q" * 16382 + b'"'  # 16 KiB: 4 of them fill a Linux pipe (64 KiB)
    sent: list[int] = []

    async def sender(first: int) -> None:
        for i in range(first, first + 10):
            await writer.send_raw(b"%d" % i + line)
            sent.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        tg.start_soon(sender, 0)
        tg.start_soon(sender, 100)
        await wait_until(lambda: writer.statistics().writing_bytes > 0)
        await anyio.sleep(0.02)
        stats = writer.statistics()
        assert stats.queued == 4 and stats.load == 1.0  # counted until written
        assert len(sent) < 20 and stats.lines_written < 4
        with anyio.move_on_after(0.01) as scope:  # waiting for room can be cancelled
            await writer.send_raw(b"cancelled")
        assert scope.cancelled_caught and writer.statistics().queued == 4
        with pytest.raises(anyio.WouldBlock):
            writer.send_raw_nowait(b"refused")

        received = bytearray()

        def read_all() -> None:
            while data := pipe.reader.read1(65536):
                received.extend(data)

        reading = threading.Thread(target=read_all)
        reading.start()
        await wait_until(lambda: len(sent) == 20)
        writer.close()
        await writer.wait_closed()
        pipe.close_writer()
        await anyio.to_thread.run_sync(reading.join)
    numbers = [int(x[: x.index(b'"')]) for x in bytes(received).splitlines()]
    assert sorted(numbers) == [*range(10), *range(100, 110)]
    assert [n for n in numbers if n < 100] == list(range(10))  # each sender's order kept
    stats = writer.statistics()
    assert (stats.lines_written, stats.queued, stats.queued_bytes, stats.dropped) == (20, 0, 0, 0)


async def test_a_sender_waiting_for_room_fails_when_the_writer_closes(
    make_pipe: type[Pipe],
) -> None:
    pipe = make_pipe()
    writer = LineWriter(pipe.writer, max_queued=1, name="test-writer-close-waiting")
    line = b'"' + b"w" * 70000 + b'"'  # more than a pipe holds
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await writer.send_raw(line)
        await wait_until(lambda: writer.statistics().writing_bytes > 0)

        async def waiting_sender() -> None:
            with pytest.raises(anyio.ClosedResourceError):
                await writer.send_raw(b"late")

        tg.start_soon(waiting_sender)
        await anyio.sleep(0.01)
        writer.close()
        # The thread is stuck in its write: closing cannot finish until the client reads.
        with anyio.move_on_after(0.05) as scope:
            await writer.wait_closed()
        assert scope.cancelled_caught
        tg.cancel_scope.cancel()  # run() gives up; the thread stays parked in the write
    assert writer.statistics().state == "closed"
    thread = thread_named("test-writer-close-waiting")
    assert thread.is_alive()
    assert len(pipe.reader.read(len(line) + 1)) == len(line) + 1  # unblock it
    await anyio.to_thread.run_sync(thread.join, 5)
    assert not thread.is_alive()


def test_a_writer_thread_outliving_its_loop_exits_quietly(make_pipe: type[Pipe]) -> None:
    """The write finishes after the event loop is closed: no call into the dead loop."""
    pipe = make_pipe()
    line = b'"' + b"o" * 70000 + b'"'
    name = "test-writer-outlives-loop"

    async def scenario() -> LineWriter:
        writer = LineWriter(pipe.writer, name=name)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.run)
            await writer.send_raw(line)
            await wait_until(lambda: writer.statistics().writing_bytes > 0)
            tg.cancel_scope.cancel()
        return writer

    writer = anyio.run(scenario, backend="asyncio")
    thread = thread_named(name)
    pipe.reader.read(len(line) + 1)
    thread.join(5)  # an exception in the thread would fail the test (filterwarnings=error)
    assert not thread.is_alive() and writer.statistics().lines_written == 1


async def test_client_closing_its_end_breaks_the_writer(
    raw_pipe: tuple[io.FileIO, io.FileIO],
) -> None:
    """EPIPE while the thread is blocked: queued and waiting lines are dropped, counted."""
    reader, stream = raw_pipe
    writer = LineWriter(stream, max_queued=3)
    line = b'"' + b"e" * 40000 + b'"'
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for _ in range(3):
            writer.send_raw_nowait(line)
        await wait_until(lambda: writer.statistics().writing_bytes > 0)
        tg.start_soon(writer.send_raw, line)  # waits for room, then is dropped
        await anyio.sleep(0.01)
        with structlog.testing.capture_logs() as logs:
            reader.close()
            with anyio.fail_after(5):
                await writer.wait_closed()
    assert [entry["event"] for entry in logs] == ["stdout write failed; discarding further output"]
    stats = writer.statistics()
    assert stats.state == "broken" and writer.broken
    assert stats.lines_written + stats.dropped == 4
    assert stats.queued == 0 and stats.queued_bytes == 0 and stats.writing_bytes == 0
    writer.send_raw_nowait(b"{}")
    assert writer.statistics().dropped == stats.dropped + 1


async def test_reader_backpressure_reaches_the_pipe(make_pipe: type[Pipe]) -> None:
    """An idle consumer stops the thread, the pipe fills and the client's write blocks."""
    pipe = make_pipe()
    lines = [b'{"n":%d,"pad":"%s"}' % (i, b"p" * 90) for i in range(10000)]  # ~1 MB

    def produce() -> None:
        pipe.writer.write(b"\n".join(lines) + b"\n")
        pipe.close_writer()

    async with LineReader(pipe.reader, chunk_size=4096, max_pending=2) as reader:
        producer = threading.Thread(target=produce)
        producer.start()
        await wait_until(lambda: reader.statistics().bytes_read >= 3 * 4096)
        await anyio.sleep(0.05)
        # Two batches delivered, a third waiting for a place; nothing more read.
        assert reader.statistics().bytes_read <= 3 * 4096
        assert producer.is_alive()
        items = await collect(reader)
        await anyio.to_thread.run_sync(producer.join)
    assert items == lines


async def test_leaving_while_the_thread_reads_delivers_nothing_more(
    make_pipe: type[Pipe],
) -> None:
    pipe = make_pipe()
    name = "test-reader-parked-in-read"
    async with LineReader(pipe.reader, name=name) as reader:
        pipe.writer.write(b"one\n")
        pipe.writer.flush()
        assert await reader.receive() == b"one"
    # The thread is blocked in read; what arrives now is read, then thrown away.
    thread = thread_named(name)
    pipe.writer.write(b"two\n")
    pipe.close_writer()
    await anyio.to_thread.run_sync(thread.join, 5)
    assert not thread.is_alive()
    assert reader.statistics().lines == 1
    with pytest.raises(anyio.ClosedResourceError):
        await reader.receive()


async def test_leaving_releases_a_thread_waiting_for_a_place(make_pipe: type[Pipe]) -> None:
    pipe = make_pipe()
    pipe.writer.write(b"a\n" * 100)
    pipe.close_writer()
    name = "test-reader-waiting-for-place"
    async with LineReader(pipe.reader, max_pending=1, chunk_size=2, name=name) as reader:
        assert await reader.receive() == b"a"
        await wait_until(lambda: reader.statistics().bytes_read >= 6)
    thread = thread_named(name)
    await anyio.to_thread.run_sync(thread.join, 5)
    assert not thread.is_alive()
