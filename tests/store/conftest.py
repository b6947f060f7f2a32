"""Fixtures for the store's contract tests: a real SQLite file per test, on asyncio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskmill_core.store import SqliteStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "tasks.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()
