"""The stderr sink: logging never blocks, never raises, and says what it had to drop."""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
from collections.abc import Iterator

import pytest

from sidecar.logsink import LogSink

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # the test closed it already
            os.close(fd)


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_lines_reach_the_descriptor_in_order(pipe: tuple[int, int]) -> None:
    r, w = pipe
    sink = LogSink(w)
    for n in range(100):
        sink.write(f'{{"n": {n}}}\n')
    assert sink.drain(5)
    assert read_all(r).splitlines() == [f'{{"n": {n}}}'.encode() for n in range(100)]
    stats = sink.statistics()
    assert (stats.lines_written, stats.lines_dropped, stats.queued_bytes) == (100, 0, 0)
    assert stats.broken is None


def test_a_reader_that_stops_reading_blocks_no_writer(pipe: tuple[int, int]) -> None:
    """Nobody reads: writes return at once, what does not fit is dropped and counted, and
    once the reader is back, the lines it gets say how many were lost where."""
    r, w = pipe
    sink = LogSink(w, max_bytes=16 * 1024)
    line = "x" * 199 + "\n"
    start = time.monotonic()
    for _ in range(10_000):  # 2 MB: far beyond the pipe's 64 KiB and the sink's 16 KiB
        sink.write(line)
    assert time.monotonic() - start < 2.0
    dropped = sink.statistics().lines_dropped
    assert dropped > 9_000

    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(read_until_quiet(r)))
    reader.start()
    sink.write("after the gap\n")
    assert sink.drain(5)
    reader.join(10)
    lines = received[0].splitlines()
    notes = [json.loads(x) for x in lines if x.startswith(b"{")]
    assert {n["event"] for n in notes} == {"log lines dropped"}
    assert sum(n["count"] for n in notes) == dropped
    assert lines[-1] == b"after the gap"
    assert len(lines) - len(notes) + dropped == 10_001  # every line arrived or was counted


def read_until_quiet(fd: int, quiet_s: float = 0.5) -> bytes:
    """Read ``fd`` (blocking) until nothing came for ``quiet_s``."""
    chunks = []
    while select.select([fd], [], [], quiet_s)[0]:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_closed_descriptor_is_ignored(pipe: tuple[int, int]) -> None:
    """The host closed its end: nothing raises, the sink turns broken and drops the rest."""
    r, w = pipe
    os.close(r)
    sink = LogSink(w)
    assert sink.write("one\n") == 4
    assert sink.drain(5)
    for _ in range(3):
        sink.write("more\n")
    stats = sink.statistics()
    assert stats.broken is not None and "Broken pipe" in stats.broken
    assert (stats.lines_written, stats.lines_dropped, stats.queued_bytes) == (0, 4, 0)
    assert "broken" in repr(sink)
