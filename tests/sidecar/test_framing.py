"""NDJSON framing: line splitting, the reader thread and the stdout writer."""

from __future__ import annotations

import io
import threading
import tracemalloc
from collections.abc import Iterable

import anyio
import anyio.lowlevel
import msgspec
import pytest

from sidecar.framing import (
    EOF,
    EndOfInput,
    LineReader,
    LineSplitter,
    LineWriter,
    MessageTooLarge,
)

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
                await (
                    anyio.lowlevel.checkpoint()
                )  # let the thread pick up batches until the pipe is full
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
