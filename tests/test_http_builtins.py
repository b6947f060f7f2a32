"""http.download and http.upload over real local HTTPS, proxies, headers and Retry-After.

A throwaway CA (trustme) signs the certificate of a TLS server on 127.0.0.1. The executors
verify through the real trust path (:func:`sidecar.builtin._http.tls_context`: truststore, which
on Linux reads the store OpenSSL names), pointed at that CA the way an administrator would,
with ``SSL_CERT_FILE``; without it the CA is unknown and TLS fails with kind ``tls``. A tiny
CONNECT proxy on 127.0.0.1 proves ``HTTPS_PROXY`` is used. The real sidecar process (header
redaction) is driven in tests/sidecar/test_http_secrets.py.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from sidecar.builtin import PathScope, _http, builtin_executors
from sidecar.builtin.download import download
from sidecar.builtin.upload import NET_CHUNK, upload
from taskmill_core import RetryableError, Scheduler, SchedulerConfig, SystemClock, TaskSpec
from taskmill_core.errors import PermanentError
from taskmill_core.types import MAX_DURATION_MS, Backoff, TaskInfo

from .httpd import ConnectProxy, TestServer, serve, server_context
from .test_sidecar_executors import FakeContext

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def trusted(ca_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The throwaway CA is this machine's trust store (as SSL_CERT_FILE says)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    return ca_file


@pytest.fixture
def https(ca: trustme.CA) -> Iterator[TestServer]:
    with serve(server_context(ca)) as srv:
        yield srv


@pytest.fixture
def plain() -> Iterator[TestServer]:
    with serve() as srv:
        yield srv


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    p = ConnectProxy()
    yield p
    p.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def blob(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


@asynccontextmanager
async def scheduler(tmp_path: Path, root: Path) -> AsyncIterator[Scheduler]:
    sched = Scheduler(
        tmp_path / "tasks.db",
        SchedulerConfig(max_concurrency=2),
        clock=SystemClock(),
        close_grace_ms=0,
        load_entry_points=False,
    )
    async with sched:
        for reg in builtin_executors(PathScope([root]), []):
            sched.register(reg.type, reg.fn, paced=reg.paced)
        yield sched


async def run_one(sched: Scheduler, spec: TaskSpec) -> TaskInfo:
    r = await sched.submit(spec)
    with anyio.fail_after(20):
        await sched.wait_idle()
    return await sched.get(r.id)


async def fails(coro: Any) -> PermanentError | RetryableError:
    try:
        await coro
    except (PermanentError, RetryableError) as exc:
        return exc
    raise AssertionError("the executor succeeded")


# --- TLS ------------------------------------------------------------------------------------


async def test_https_download_and_upload_with_a_trusted_ca(
    root: Path, https: TestServer, trusted: Path
) -> None:
    data = blob(700_000)
    https.files["/f.bin"] = data
    ctx = FakeContext()
    result = await download(
        ctx, {"url": https.url("/f.bin"), "dst": str(root / "f.bin")}, scope=PathScope([root])
    )
    assert result["bytes"] == len(data) and (root / "f.bin").read_bytes() == data
    assert _http.trust_store().source == str(trusted)

    ctx = FakeContext()
    result = await upload(
        ctx, {"src": str(root / "f.bin"), "url": https.url("/up")}, scope=PathScope([root])
    )
    seen = https.seen[-1]
    assert (seen.method, seen.path, seen.size) == ("PUT", "/up", len(data))
    assert seen.sha256 == hashlib.sha256(data).hexdigest()
    assert result == {"status": 201, "etag": f'"{seen.sha256[:16]}"', "bytes": len(data)}


async def test_an_unknown_ca_fails_with_kind_tls(
    tmp_path: Path, root: Path, https: TestServer
) -> None:
    """No SSL_CERT_FILE: the machine's own store, which does not hold the throwaway CA."""
    https.files["/f.bin"] = b"x" * 10
    (root / "src.bin").write_bytes(b"y" * 10)
    async with scheduler(tmp_path, root) as sched:
        down = await run_one(
            sched,
            TaskSpec(
                type="http.download",
                payload={"url": https.url("/f.bin"), "dst": str(root / "d.bin")},
            ),
        )
        up = await run_one(
            sched,
            TaskSpec(
                type="http.upload", payload={"src": str(root / "src.bin"), "url": https.url("/u")}
            ),
        )
    for info in (down, up):
        assert info.state == "failed" and info.error is not None, info
        assert (info.error.kind, info.error.retryable) == ("tls", False)
    assert not (root / "d.bin").exists()
    assert [s.method for s in https.seen] == []  # no request got through


def test_the_trust_store_is_the_systems_else_certifi(
    monkeypatch: pytest.MonkeyPatch, trusted: Path
) -> None:
    store = _http.trust_store()
    assert (store.kind, store.source, store.ca_count) == ("system", str(trusted), 1)
    if sys.platform in ("darwin", "win32"):
        return
    # No CA file anywhere (a minimal container): certifi's bundle.
    monkeypatch.delenv("SSL_CERT_FILE")
    monkeypatch.setattr(_http, "_CA_FILE_CANDIDATES", ())
    monkeypatch.setattr(
        _http.ssl,
        "get_default_verify_paths",
        lambda: _http.ssl.DefaultVerifyPaths(None, None, "", "", "", ""),  # type: ignore[arg-type]
    )
    import certifi

    store = _http.trust_store()
    assert (store.kind, store.source) == ("certifi", certifi.where())
    assert store.ca_count is not None and store.ca_count > 50
    assert _http.tls_context().cert_store_stats()["x509_ca"] == store.ca_count


# --- proxies ----------------------------------------------------------------------------------


async def test_https_goes_through_a_connect_proxy(
    root: Path,
    https: TestServer,
    trusted: Path,
    proxy: ConnectProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    https.files["/f.bin"] = data = blob(300_000)
    port = https.server_address[1]
    await download(
        FakeContext(), {"url": https.url("/f.bin"), "dst": str(root / "f")}, scope=PathScope([root])
    )
    await upload(
        FakeContext(), {"src": str(root / "f"), "url": https.url("/up")}, scope=PathScope([root])
    )
    assert (root / "f").read_bytes() == data
    assert proxy.requests == [f"CONNECT 127.0.0.1:{port} HTTP/1.0"] * 2
    assert https.seen[-1].size == len(data)
    # The Host header names the origin, not the proxy.
    assert https.seen[-1].headers["Host"] == f"127.0.0.1:{port}"

    # NO_PROXY: straight to the server.
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    await download(
        FakeContext(), {"url": https.url("/f.bin"), "dst": str(root / "g")}, scope=PathScope([root])
    )
    assert len(proxy.requests) == 2


async def test_plain_http_goes_through_the_proxy_in_absolute_form(
    root: Path, plain: TestServer, proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_proxy = proxy.url.replace("http://", "http://me:p%40ss@")
    monkeypatch.setenv("http_proxy", user_proxy)
    plain.files["/f.bin"] = b"hello"
    await download(
        FakeContext(), {"url": plain.url("/f.bin"), "dst": str(root / "f")}, scope=PathScope([root])
    )
    assert (root / "f").read_bytes() == b"hello"
    assert proxy.requests == [f"GET {plain.url('/f.bin')} HTTP/1.1"]
    assert proxy.headers[0]["Proxy-Authorization"] == "Basic bWU6cEBzcw=="  # me:p@ss


# --- upload ---------------------------------------------------------------------------------


async def test_upload_streams_in_chunks_with_progress_and_draws(
    root: Path, plain: TestServer
) -> None:
    size = 3 * NET_CHUNK + 5
    data = blob(size)
    (root / "big.bin").write_bytes(data)
    ctx = FakeContext()
    result = await upload(
        ctx,
        {
            "src": str(root / "big.bin"),
            "url": plain.url("/up?x=1"),
            "method": "POST",
            "contentType": "application/x-test",
            "headers": {"Authorization": "Bearer s3cr3t", "X-Meta": "1"},
        },
        scope=PathScope([root]),
    )
    assert result["status"] == 201 and result["bytes"] == size
    seen = plain.seen[-1]
    assert (seen.method, seen.path, seen.size) == ("POST", "/up?x=1", size)
    assert seen.sha256 == hashlib.sha256(data).hexdigest()
    assert seen.headers["Authorization"] == "Bearer s3cr3t"
    assert seen.headers["Content-Type"] == "application/x-test"
    assert seen.headers["Content-Length"] == str(size)
    # Paced: every chunk drawn from the governor before it moved, no chunk over NET_CHUNK.
    tx = [n for r, n in ctx.consumed if r == "netTx"]
    assert sum(tx) == size and max(tx) <= NET_CHUNK and len(tx) == 4
    assert ctx.io["disk_read"] == size
    done = [r["bytes_done"] for r in ctx.reports]
    assert done == [0, NET_CHUNK, 2 * NET_CHUNK, 3 * NET_CHUNK, size]
    assert all(r["bytes_total"] == size for r in ctx.reports)


async def test_upload_is_retried_from_the_start_after_a_500(
    tmp_path: Path, root: Path, plain: TestServer
) -> None:
    data = blob(NET_CHUNK * 2 + 1)
    (root / "f.bin").write_bytes(data)
    plain.answer("/up", (500, {}))
    spec = TaskSpec(
        type="http.upload",
        payload={"src": str(root / "f.bin"), "url": plain.url("/up")},
        backoff=Backoff(kind="constant", initial_ms=10),
    )
    async with scheduler(tmp_path, root) as sched:
        task_id = (await sched.submit(spec)).id
        with anyio.fail_after(20):
            while (info := await sched.get(task_id)).state != "completed":
                assert info.state in ("pending", "running"), info
                await anyio.sleep(0.02)
    assert info.attempt == 1 and info.result is not None and info.result["status"] == 201
    digest = hashlib.sha256(data).hexdigest()
    assert [(s.size, s.sha256) for s in plain.seen] == [(len(data), digest)] * 2
    assert info.io_actual is not None and info.io_actual.net_tx == len(data)  # (the last run)


async def test_upload_failures_and_kinds(root: Path, plain: TestServer) -> None:
    (root / "f.bin").write_bytes(b"z" * 1000)
    scope = PathScope([root])

    def payload(path: str, **kw: Any) -> dict[str, Any]:
        return {"src": str(root / "f.bin"), "url": plain.url(path), **kw}

    cases = [
        ("/403", (403, {}), "forbidden", False),
        ("/401", (401, {}), "forbidden", False),
        ("/404", (404, {}), "notFound", False),
        ("/400", (400, {}), "http", False),
        ("/301", (301, {"Location": "/elsewhere"}), "http", False),
        ("/429", (429, {}), "http", True),
        ("/408", (408, {}), "http", True),
        ("/503", (503, {}), "http", True),
        # The server refuses before the body is read and hangs up: its answer counts.
        ("/413", (413, {"X-Test-Early": "1"}), "http", False),
    ]
    for path, response, kind, retryable in cases:
        plain.answer(path, response)
        exc = await fails(upload(FakeContext(), payload(path), scope=scope))
        assert (exc.kind, exc.retryable) == (kind, retryable), path
        assert "HTTP " + path[1:] in str(exc)
    assert "/elsewhere" not in [s.path for s in plain.seen]  # the redirect was not followed

    bad: list[tuple[dict[str, Any], str]] = [
        ({"src": "/etc/passwd", "url": plain.url("/x")}, "forbidden"),
        ({"src": str(root / "missing"), "url": plain.url("/x")}, "notFound"),
        (payload("/x", headers={"Content-Length": "1"}), "invalidPayload"),
        (payload("/x", headers={"X-A": "1\r\nX-Injected: 2"}), "invalidPayload"),
        (payload("/x", headers={"Bad Name": "1"}), "invalidPayload"),
        (payload("/x", headers={"X-A": "\u4e2d"}), "invalidPayload"),
        (payload("/x", method="PATCH"), "invalidPayload"),
        ({"src": str(root / "f.bin"), "url": "ftp://h/x"}, "invalidPayload"),
    ]
    for p, kind in bad:
        exc = await fails(upload(FakeContext(), p, scope=scope))
        assert (exc.kind, exc.retryable) == (kind, False), p

    # Nothing listens: a network error, retried.
    exc = await fails(
        upload(
            FakeContext(),
            {"src": str(root / "f.bin"), "url": "http://127.0.0.1:9/x"},
            scope=scope,
        )
    )
    assert (exc.kind, exc.retryable) == ("network", True)


# --- download headers -----------------------------------------------------------------------


async def test_download_sends_headers_to_its_origin_only(
    root: Path, plain: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain.files["/f"] = b"data"
    headers = {"Authorization": "Bearer s3cr3t"}
    scope = PathScope([root])
    await download(
        FakeContext(),
        {"url": plain.url("/f"), "dst": str(root / "a"), "headers": headers},
        scope=scope,
    )
    assert plain.seen[-1].headers["Authorization"] == "Bearer s3cr3t"
    # Same origin after a redirect: still sent. Another origin (localhost): dropped.
    plain.answer("/same", (302, {"Location": "/f"}))
    await download(
        FakeContext(),
        {"url": plain.url("/same"), "dst": str(root / "b"), "headers": headers},
        scope=scope,
    )
    assert plain.seen[-1].path == "/f" and "Authorization" in plain.seen[-1].headers
    other = plain.url("/f").replace("127.0.0.1", "localhost")
    plain.answer("/away", (302, {"Location": other}))
    await download(
        FakeContext(),
        {"url": plain.url("/away"), "dst": str(root / "c"), "headers": headers},
        scope=scope,
    )
    assert plain.seen[-1].path == "/f" and "Authorization" not in plain.seen[-1].headers
    exc = await fails(
        download(
            FakeContext(),
            {"url": plain.url("/f"), "dst": str(root / "d"), "headers": {"Range": "bytes=0-"}},
            scope=scope,
        )
    )
    assert exc.kind == "invalidPayload"


# --- Retry-After ----------------------------------------------------------------------------


def http_date(dt: datetime) -> str:
    return format_datetime(dt, usegmt=True)


def test_retry_after_in_both_forms() -> None:
    now = datetime(2026, 12, 7, 3, 0, 0, tzinfo=UTC)
    assert _http.retry_after_s("120") == 120.0
    assert _http.retry_after_s(" 0 ") == 0.0
    later = http_date(now + timedelta(seconds=90))
    assert _http.retry_after_s(later, http_date(now)) == 90.0
    assert _http.retry_after_s(http_date(now - timedelta(hours=1)), http_date(now)) == 0.0
    # Without a Date header, from this machine's clock.
    soon = http_date(datetime.now(UTC) + timedelta(seconds=300))
    delay = _http.retry_after_s(soon)
    assert delay is not None and 290 <= delay <= 301
    for junk in ("", "soon", "-5", "1.5", "Mon, 99 Foo 2026 99:99:99 GMT", None):
        assert _http.retry_after_s(junk) is None
    # Clamped to the longest delay a retry time can have.
    huge = RetryableError("x", retry_after=_http.retry_after_s("9" * 30))
    assert huge.retry_after == MAX_DURATION_MS / 1000


@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_retry_after_is_honoured(
    tmp_path: Path, root: Path, plain: TestServer, form: str
) -> None:
    (root / "f.bin").write_bytes(b"z" * 100)
    now = datetime.now(UTC).replace(microsecond=0)
    if form == "seconds":
        headers = {"Retry-After": "3600"}
    else:
        headers = {"Retry-After": http_date(now + timedelta(hours=1)), "Date": http_date(now)}
    plain.answer("/up", (503, headers))
    plain.answer("/dl", (429, headers))
    scope = PathScope([root])
    exc = await fails(
        upload(FakeContext(), {"src": str(root / "f.bin"), "url": plain.url("/up")}, scope=scope)
    )
    assert isinstance(exc, RetryableError) and exc.retry_after == 3600.0
    exc = await fails(
        download(FakeContext(), {"url": plain.url("/dl"), "dst": str(root / "d")}, scope=scope)
    )
    assert isinstance(exc, RetryableError) and exc.retry_after == 3600.0

    # Through the scheduler: the retry is due an hour later, not after the backoff.
    plain.answer("/up", (503, headers))
    async with scheduler(tmp_path, root) as sched:
        before = sched.clock.now_ms()
        info = await run_one(
            sched,
            TaskSpec(
                type="http.upload", payload={"src": str(root / "f.bin"), "url": plain.url("/up")}
            ),
        )
    assert info.state == "pending" and info.run_at is not None
    assert 3_595_000 <= info.run_at - before <= 3_605_000


# --- redaction (the wire side is in tests/sidecar/test_http_secrets.py) ---------------------


def test_redaction_touches_only_http_tasks_with_headers() -> None:
    from sidecar.redact import redact_status, redact_task, without_secrets_key
    from taskmill_core.types import IoBytes, IoStatus, SchedulerStatus

    def info(task_type: str, payload: Any) -> TaskInfo:
        return TaskInfo(
            id=1,
            type=task_type,
            state="running",
            priority=128,
            payload=payload,
            tags={},
            io_cost=IoBytes(),
            attempt=0,
            max_retries=3,
            created_at=0,
        )

    secret = {"url": "u", "headers": {"Authorization": "Bearer x"}}
    other = info("noop", secret)
    bare = info("http.download", {"url": "u"})
    assert redact_task(other) is other and redact_task(bare) is bare  # no copy, no cost
    shown = redact_task(info("http.upload", secret))
    assert shown.payload == {"url": "u", "headers": {"Authorization": "<redacted>"}}
    assert secret["headers"] == {"Authorization": "Bearer x"}  # the stored payload is intact

    io = IoStatus()
    status = SchedulerStatus(False, [], [], {}, [other, info("http.upload", secret)], 4, io, [])
    running = redact_status(status).running
    assert running[0] is other and running[1].payload["headers"] == {"Authorization": "<redacted>"}

    spec = TaskSpec(type="http.upload", payload=secret, dedup_key=True)
    keyed = without_secrets_key(spec)
    rotated = without_secrets_key(
        TaskSpec(
            type="http.upload",
            payload={**secret, "headers": {"Authorization": "y"}},
            dedup_key=True,
        )
    )
    assert isinstance(keyed.dedup_key, str) and keyed.dedup_key == rotated.dedup_key
    assert keyed.payload is secret  # the headers are still sent
    plain = TaskSpec(type="noop", payload=secret, dedup_key=True)
    assert without_secrets_key(plain) is plain
