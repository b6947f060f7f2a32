"""Shared fixtures: every async test runs on asyncio (the sidecar's loop)."""

from __future__ import annotations

import pytest


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
