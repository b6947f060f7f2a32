"""Shared fixtures: every async test runs on asyncio (the sidecar's loop); every store a test
closes is checked for counts that drifted from the file."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill_core.errors import StorageError
from taskmill_core.store import SqliteStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The http.* built-ins honour proxy variables; tests talk to 127.0.0.1 directly (and
    sidecar processes they start inherit this environment). Tests of proxies set their own."""
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(base, raising=False)
        monkeypatch.delenv(base.lower(), raising=False)


@pytest.fixture(autouse=True)
def _kept_counts_equal_a_recount(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every store a test closes has kept its tasks per state exactly (store/counts.py): a
    write path that changes ``tasks.state`` without reporting the move fails the test that
    took it. Not compared: a store that cannot be read any more (damaged, closed), and one
    whose file another store wrote to meanwhile (the counts assume one writer per file, which
    the database lock ensures outside tests)."""
    wrong: list[str] = []
    open_now: dict[Path, int] = {}
    shared: set[Path] = set()
    open_, close = SqliteStore.open, SqliteStore.close

    async def counted_open(self: SqliteStore) -> None:
        await open_(self)
        path = self.path.resolve()
        open_now[path] = open_now.get(path, 0) + 1
        if open_now[path] > 1:
            shared.add(path)

    async def checked_close(self: SqliteStore) -> None:
        path = self.path.resolve()
        problem = None
        if path in open_now and path not in shared:
            with contextlib.suppress(sqlite3.Error, StorageError, RuntimeError):
                problem = self.check_counts()
        if path in open_now:
            open_now[path] -= 1
            if not open_now[path]:
                del open_now[path]
        if problem is not None:
            wrong.append(f"{self.path}: {problem}")
        await close(self)

    monkeypatch.setattr(SqliteStore, "open", counted_open)
    monkeypatch.setattr(SqliteStore, "close", checked_close)
    yield
    assert not wrong, f"tasks per state drifted from the file: {wrong}"
