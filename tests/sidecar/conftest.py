"""Fixtures for the sidecar tests: anyio on asyncio, OS pipes that are always closed, and a
real sidecar process on a fresh database (``sidecar``; its stdout must carry only JSON)."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from .client import Sidecar


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Pipe:
    """An ``os.pipe()`` with buffered file objects on both ends."""

    def __init__(self) -> None:
        r, w = os.pipe()
        self.reader: io.BufferedReader = open(r, "rb")  # noqa: SIM115 (closed by close())
        self.writer: BinaryIO = open(w, "wb")  # noqa: SIM115

    def close_writer(self) -> None:
        if not self.writer.closed:
            self.writer.close()

    def close(self) -> None:
        self.close_writer()
        self.reader.close()


@pytest.fixture
def make_pipe() -> Iterator[type[Pipe]]:
    pipes: list[Pipe] = []

    class _Tracked(Pipe):
        def __init__(self) -> None:
            super().__init__()
            pipes.append(self)

    yield _Tracked
    for pipe in pipes:
        pipe.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def sidecar(db: Path) -> Iterator[Sidecar]:
    sc = Sidecar(db=db)
    sc.ready()
    yield sc
    sc.close()
    assert sc.bad_lines == [], "stdout carried something that is not a JSON message"
