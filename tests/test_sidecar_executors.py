"""The sidecar's scoped built-in executors: fs.copy, fs.hash, fs.scan, http.download, process.run.

Most tests drive them through a real Scheduler on the real clock (real threads and files);
resume and cancellation are tested by calling an executor directly with a small fake
TaskContext that hands it a resume state and records what it reports.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from sidecar.builtin import PathScope, builtin_executors
from sidecar.builtin.download import download
from sidecar.builtin.fs import copy, scan
from sidecar.builtin.process import run_process
from taskmill_core import PermanentError, Scheduler, SchedulerConfig, SystemClock, TaskSpec
from taskmill_core.events import Subscription
from taskmill_core.types import TaskFailed, TaskInfo, TaskProgress

from .helpers import drain

pytestmark = pytest.mark.anyio

MiB = 1 << 20


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret.txt").write_bytes(b"secret")
    return o


def blob(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def part_of(dst: Path) -> Path:
    return Path(str(dst) + ".taskmill-part")


def real(path: Path) -> Path:
    return path.resolve()


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


@asynccontextmanager
async def scheduler(
    tmp_path: Path, roots: list[Path], programs: tuple[str, ...] = ()
) -> AsyncIterator[tuple[Scheduler, Subscription]]:
    sched = Scheduler(
        tmp_path / "tasks.db",
        SchedulerConfig(max_concurrency=4),
        clock=SystemClock(),
        close_grace_ms=0,
        load_entry_points=False,
    )
    async with sched:
        for reg in builtin_executors(PathScope(roots), programs):
            sched.register(reg.type, reg.fn, paced=reg.paced)
        yield sched, sched.subscribe()


async def run_one(sched: Scheduler, task_type: str, payload: Any, **kw: Any) -> TaskInfo:
    r = await sched.submit(TaskSpec(type=task_type, payload=payload, **kw))
    with anyio.fail_after(10):
        await sched.wait_idle()
    return await sched.get(r.id)


def error_kind(info: TaskInfo) -> str | None:
    return info.error.kind if info.error else None


class FakeContext:
    """The part of TaskContext the built-in executors use, recording what they report."""

    def __init__(
        self,
        resume_state: Any = None,
        on_progress: Callable[[FakeContext], None] | None = None,
    ) -> None:
        self.resume_state = resume_state
        self.on_progress = on_progress
        self.task = SimpleNamespace(priority=100)
        self.id = 1
        self.attempt = 0
        self.cancelled = False
        self.checkpoints: list[Any] = []
        self.reports: list[dict[str, Any]] = []
        self.io = {"disk_read": 0, "disk_write": 0, "net_rx": 0, "net_tx": 0}
        self.children: list[TaskSpec] = []
        self.consumed: list[tuple[str, int]] = []

    def progress(self, fraction: float | None = None, **kw: Any) -> None:
        self.reports.append({"fraction": fraction, **kw})
        if self.on_progress:
            self.on_progress(self)

    def checkpoint(self, state: Any) -> None:
        self.checkpoints.append(state)

    def record_io(self, **kw: int) -> None:
        for key, value in kw.items():
            self.io[key] += value

    async def consume_io(self, resource: str, nbytes: int) -> None:
        key = {
            "diskRead": "disk_read",
            "diskWrite": "disk_write",
            "netRx": "net_rx",
            "netTx": "net_tx",
        }[resource]
        self.io[key] += nbytes
        self.consumed.append((resource, nbytes))

    async def submit_child(self, spec: TaskSpec) -> Any:
        self.children.append(spec)
        return SimpleNamespace(id=len(self.children) + 1, outcome="inserted")


# --- path scope -----------------------------------------------------------------------------


def test_scope_resolves_and_confines(root: Path, outside: Path) -> None:
    scope = PathScope([root])
    (root / "link-out").symlink_to(outside / "secret.txt")
    (root / "dir-out").symlink_to(outside)
    assert scope.check(str(root / "a" / "new.txt")) == real(root) / "a" / "new.txt"
    for bad in [
        str(root / ".." / "outside" / "secret.txt"),
        str(root / "sub" / ".." / "ok.txt"),  # '..' is refused outright
        str(root / "link-out"),
        str(root / "dir-out" / "new.txt"),  # a destination under a symlinked directory
        str(outside / "secret.txt"),
        "relative/path.txt",
        "",
        str(root / "nul\x00byte"),
    ]:
        with pytest.raises(PermanentError) as info:
            scope.check(bad)
        assert info.value.kind == "forbidden", bad
    with pytest.raises(PermanentError) as info:
        PathScope([]).check(str(root / "x"))
    assert info.value.kind == "forbidden"
    assert scope.check(str(root)) == real(root)


def test_registrations() -> None:
    types = [r.type for r in builtin_executors(PathScope([]), [])]
    assert types == ["fs.copy", "fs.hash", "fs.scan", "http.download", "http.upload"]
    regs = builtin_executors(PathScope([]), [sys.executable])
    assert [r.type for r in regs][-1] == "process.run"
    assert all(r.builtin for r in regs)
    paced = {r.type for r in regs if r.paced}
    assert paced == {"fs.copy", "fs.hash", "http.download", "http.upload"}


# --- fs.copy ---------------------------------------------------------------------------------


async def test_copy_copies_exactly_and_reports(tmp_path: Path, root: Path) -> None:
    data = blob(3 * MiB + 12345)
    (root / "src.bin").write_bytes(data)
    async with scheduler(tmp_path, [root]) as (sched, sub):
        info = await run_one(
            sched, "fs.copy", {"src": str(root / "src.bin"), "dst": str(root / "out/dst.bin")}
        )
        events = drain(sub)
    assert info.state == "completed", info.error
    assert info.result == {"bytes": len(data), "dst": str(root / "out/dst.bin")}
    assert (root / "out/dst.bin").read_bytes() == data
    assert not (root / "out/dst.bin.taskmill-part").exists()
    assert info.io_actual is not None
    assert info.io_actual.disk_read == len(data) and info.io_actual.disk_write == len(data)
    progress = [e.progress for e in events if isinstance(e, TaskProgress) and e.id == info.id]
    assert progress and all(p.bytes_total == len(data) for p in progress if p.bytes_total)


async def test_copy_never_shows_a_partial_dst(root: Path) -> None:
    data = blob(3 * MiB)
    (root / "src").write_bytes(data)
    dst = root / "dst"
    seen: list[bool] = []
    ctx = FakeContext(on_progress=lambda c: seen.append(dst.exists()))
    result = await copy(ctx, {"src": str(root / "src"), "dst": str(dst)}, scope=PathScope([root]))
    assert result["bytes"] == len(data) and dst.read_bytes() == data
    assert seen[:-1] and not any(seen[:-1])  # only the final report comes after the rename
    assert ctx.reports[-1]["fraction"] == 1.0


async def test_copy_resumes_from_checkpoint(root: Path) -> None:
    data = blob(3 * MiB)
    (root / "src").write_bytes(data)
    part = root / "dst.taskmill-part"
    part.write_bytes(data[:MiB] + b"garbage past the checkpoint")
    ctx = FakeContext(resume_state={"offset": MiB})
    scope = PathScope([root])
    await copy(ctx, {"src": str(root / "src"), "dst": str(root / "dst")}, scope=scope)
    assert (root / "dst").read_bytes() == data
    assert ctx.io["disk_read"] == 2 * MiB  # only the rest was read
    assert ctx.reports[0]["bytes_done"] == MiB

    # A checkpoint the part file cannot honour (gone) starts over.
    (root / "dst").unlink()
    ctx = FakeContext(resume_state={"offset": MiB})
    await copy(ctx, {"src": str(root / "src"), "dst": str(root / "dst")}, scope=scope)
    assert ctx.io["disk_read"] == 3 * MiB and (root / "dst").read_bytes() == data


async def test_copy_never_resumes_into_a_part_file_linked_outside(
    root: Path, outside: Path
) -> None:
    data = blob(2 * MiB)
    (root / "src").write_bytes(data)
    os.link(outside / "secret.txt", part_of(root / "dst"))  # planted, with a checkpoint to match
    ctx = FakeContext(resume_state={"offset": 3})
    await copy(ctx, {"src": str(root / "src"), "dst": str(root / "dst")}, scope=PathScope([root]))
    assert (root / "dst").read_bytes() == data
    assert (outside / "secret.txt").read_bytes() == b"secret"
    assert ctx.io["disk_read"] == len(data)  # started over in a new part file


async def test_copy_interrupted_then_resumed(root: Path) -> None:
    data = blob(6 * MiB, seed=7)
    (root / "src").write_bytes(data)
    payload = {"src": str(root / "src"), "dst": str(root / "dst")}
    scope = PathScope([root])
    with anyio.CancelScope() as cs:

        def stop_halfway(c: FakeContext) -> None:
            if (c.reports[-1].get("bytes_done") or 0) >= 2 * MiB:
                cs.cancel()

        first = FakeContext(on_progress=stop_halfway)
        await copy(first, payload, scope=scope)
    assert cs.cancelled_caught
    assert not (root / "dst").exists()
    state = first.checkpoints[-1]
    assert state["offset"] >= 2 * MiB and state["size"] == len(data)
    second = FakeContext(resume_state=state)
    await copy(second, payload, scope=scope)
    assert (root / "dst").read_bytes() == data
    assert second.io["disk_read"] == len(data) - state["offset"]


async def test_copy_repeated_after_rename_is_done(root: Path) -> None:
    # At-least-once: a crash after the rename but before the completion was recorded repeats
    # the run; the "renamed" checkpoint lets it succeed instead of failing with "exists".
    (root / "src").write_bytes(b"abc")
    (root / "dst").write_bytes(b"abc")
    st = os.stat(root / "src")
    state = {"offset": 3, "size": 3, "mtimeNs": st.st_mtime_ns, "renamed": True}
    payload = {"src": str(root / "src"), "dst": str(root / "dst")}
    ctx = FakeContext(resume_state=state)
    assert await copy(ctx, payload, scope=PathScope([root])) == {"bytes": 3, "dst": payload["dst"]}
    assert ctx.io["disk_read"] == 0
    with pytest.raises(PermanentError) as info:  # without that checkpoint: refused
        await copy(FakeContext(), payload, scope=PathScope([root]))
    assert info.value.kind == "exists"


async def test_copy_refuses_overwrite_and_reports_missing(tmp_path: Path, root: Path) -> None:
    (root / "src").write_bytes(b"new")
    (root / "dst").write_bytes(b"old")
    async with scheduler(tmp_path, [root]) as (sched, _):
        payload = {"src": str(root / "src"), "dst": str(root / "dst")}
        info = await run_one(sched, "fs.copy", payload)
        assert (info.state, error_kind(info)) == ("failed", "exists")
        assert (root / "dst").read_bytes() == b"old"
        info = await run_one(sched, "fs.copy", {**payload, "overwrite": True})
        assert info.state == "completed" and (root / "dst").read_bytes() == b"new"
        info = await run_one(sched, "fs.copy", {**payload, "src": str(root / "missing")})
        assert (info.state, error_kind(info)) == ("failed", "notFound")
        info = await run_one(sched, "fs.copy", {"src": str(root / "src")})
        assert (info.state, error_kind(info)) == ("failed", "invalidPayload")
        info = await run_one(sched, "fs.copy", {**payload, "extra": 1})
        assert (info.state, error_kind(info)) == ("failed", "invalidPayload")


def escapes(root: Path, outside: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    src, dst = str(root / "src"), str(root / "dst")
    yield "fs.copy", {"src": str(root / ".." / "outside" / "secret.txt"), "dst": dst}
    yield "fs.copy", {"src": src, "dst": str(root / ".." / "outside" / "stolen")}
    yield "fs.copy", {"src": str(root / "link-out"), "dst": dst}
    yield "fs.copy", {"src": src, "dst": str(root / "dir-out" / "stolen")}
    yield "fs.copy", {"src": src, "dst": str(root / "link-out"), "overwrite": True}
    yield "fs.copy", {"src": src, "dst": str(root / "planted")}  # its part file links out
    yield "fs.copy", {"src": str(outside / "secret.txt"), "dst": dst}
    yield "fs.copy", {"src": src, "dst": str(outside / "stolen")}
    yield "fs.copy", {"src": "src", "dst": dst}
    yield "fs.hash", {"path": str(root / "link-out")}
    yield "fs.scan", {"root": str(root / "dir-out")}
    yield "http.download", {"url": "http://127.0.0.1:9/x", "dst": str(outside / "stolen")}


async def test_escapes_are_forbidden(tmp_path: Path, root: Path, outside: Path) -> None:
    (root / "src").write_bytes(b"data")
    (root / "link-out").symlink_to(outside / "secret.txt")
    (root / "dir-out").symlink_to(outside)
    (root / "planted.taskmill-part").symlink_to(outside / "planted")
    before = sorted(os.listdir(outside))
    async with scheduler(tmp_path, [root]) as (sched, _):
        for task_type, payload in escapes(root, outside):
            info = await run_one(sched, task_type, payload)
            assert info.state == "failed", (task_type, payload)
            assert info.error is not None and info.error.kind == "forbidden", payload
            assert not info.error.retryable
    assert sorted(os.listdir(outside)) == before
    assert (outside / "secret.txt").read_bytes() == b"secret"
    assert not (root / "dst").exists()


async def test_no_roots_forbids_everything(tmp_path: Path, root: Path) -> None:
    (root / "f").write_bytes(b"x")
    async with scheduler(tmp_path, []) as (sched, _):
        info = await run_one(sched, "fs.hash", {"path": str(root / "f")})
    assert (info.state, error_kind(info)) == ("failed", "forbidden")


# --- fs.hash ---------------------------------------------------------------------------------


async def test_hash_matches_hashlib(tmp_path: Path, root: Path) -> None:
    data = blob(2 * MiB + 7)
    (root / "f").write_bytes(data)
    async with scheduler(tmp_path, [root]) as (sched, _):
        sha = await run_one(sched, "fs.hash", {"path": str(root / "f")})
        b2 = await run_one(sched, "fs.hash", {"path": str(root / "f"), "algorithm": "blake2b"})
        bad = await run_one(sched, "fs.hash", {"path": str(root / "f"), "algorithm": "md5"})
        missing = await run_one(sched, "fs.hash", {"path": str(root / "nope")})
    assert sha.result == {
        "algorithm": "sha256",
        "digest": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    assert b2.result["digest"] == hashlib.blake2b(data).hexdigest()
    assert sha.io_actual is not None and sha.io_actual.disk_read == len(data)
    assert error_kind(bad) == "invalidPayload" and error_kind(missing) == "notFound"


# --- fs.scan ---------------------------------------------------------------------------------


def make_tree(root: Path, outside: Path) -> None:
    (root / "a.txt").write_bytes(b"a" * 10)
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_bytes(b"b" * 20)
    (root / "sub" / "c.log").write_bytes(b"c" * 30)
    (root / "sub" / "deep").mkdir()
    (root / "sub" / "deep" / "d.txt").write_bytes(b"d" * 40)
    (root / "out.txt").symlink_to(outside / "secret.txt")  # escapes: skipped
    (root / "outdir").symlink_to(outside)  # symlinked directories are not descended
    (root / "in.txt").symlink_to(root / "a.txt")  # a symlink inside the scope: listed


async def test_scan_fans_out_children(tmp_path: Path, root: Path, outside: Path) -> None:
    make_tree(root, outside)
    (outside / "x.txt").write_bytes(b"x")
    async with scheduler(tmp_path, [root]) as (sched, _):
        payload = {"root": str(root), "glob": "*.txt", "childType": "fs.hash"}
        parent = await run_one(sched, "fs.scan", payload, priority=150)
        children = (await sched.list_tasks(type="fs.hash")).tasks
    assert parent.state == "completed", parent.error
    assert parent.result == {"files": 4, "bytes": 80, "children": 4}
    base = real(root)
    paths = sorted(c.payload["path"] for c in children)
    assert paths == sorted(
        str(base / p) for p in ["a.txt", "in.txt", "sub/b.txt", "sub/deep/d.txt"]
    )
    assert all(c.parent_id == parent.id and c.priority == 150 for c in children)
    assert all(c.state == "completed" for c in children)
    assert parent.finished_at is not None
    assert all(c.finished_at is not None and c.finished_at <= parent.finished_at for c in children)


async def test_scan_without_children_and_path_globs(
    tmp_path: Path, root: Path, outside: Path
) -> None:
    make_tree(root, outside)
    scope = PathScope([root])
    ctx = FakeContext()
    result = await scan(ctx, {"root": str(root)}, scope=scope)
    assert result == {"files": 5, "bytes": 110, "children": 0}
    assert "files found" in (ctx.reports[-1]["message"] or "")
    ctx = FakeContext()
    result = await scan(
        ctx, {"root": str(root), "glob": "sub/*.txt", "childType": "t"}, scope=scope
    )
    assert [c.payload["path"] for c in ctx.children] == [
        str(real(root) / "sub/b.txt"),
        str(real(root) / "sub/deep/d.txt"),
    ]
    assert ctx.children[0].priority == 100 and ctx.children[0].dedup_key is True


async def test_scan_resumes_after_checkpoint(root: Path, outside: Path) -> None:
    make_tree(root, outside)
    ctx = FakeContext(
        resume_state={"after": ["sub", "b.txt"], "files": 3, "bytes": 40, "children": 3}
    )
    payload = {"root": str(root), "glob": "*.txt", "childType": "t"}
    result = await scan(ctx, payload, scope=PathScope([root]))
    assert [c.payload["path"] for c in ctx.children] == [str(real(root) / "sub/deep/d.txt")]
    assert result == {"files": 4, "bytes": 80, "children": 4}


# --- http.download ---------------------------------------------------------------------------


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early are expected


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        if self.path == "/500":
            self.send_error(500)
            return
        body = srv.files.get(self.path.removeprefix("/norange"))
        if body is None:
            self.send_error(404)
            return
        if self.path == "/hang":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:1000])
            self.wfile.flush()
            srv.release.wait(10)
            return
        start = int(rng[6:].split("-")[0]) if rng and not self.path.startswith("/norange") else 0
        if start >= len(body) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FileServer]:
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


async def test_download_full_and_checksum(tmp_path: Path, root: Path, server: FileServer) -> None:
    data = blob(2 * MiB + 3, seed=3)
    server.files["/f.bin"] = data
    good = hashlib.sha256(data).hexdigest()
    dst = root / "dl" / "f.bin"
    async with scheduler(tmp_path, [root]) as (sched, _):
        info = await run_one(
            sched, "http.download", {"url": server.url("/f.bin"), "dst": str(dst), "sha256": good}
        )
        assert info.state == "completed", info.error
        assert info.result == {"bytes": len(data), "dst": str(dst), "sha256": good}
        assert dst.read_bytes() == data
        assert info.io_actual is not None and info.io_actual.net_rx == len(data)
        dst.unlink()
        info = await run_one(
            sched,
            "http.download",
            {"url": server.url("/f.bin"), "dst": str(dst), "sha256": "0" * 64},
        )
        assert (info.state, error_kind(info)) == ("failed", "checksumMismatch")
        assert not dst.exists() and not part_of(dst).exists()


async def test_download_resumes_with_range(root: Path, server: FileServer) -> None:
    data = blob(MiB + 500, seed=4)
    server.files["/f.bin"] = data
    dst = root / "f.bin"
    part_of(dst).write_bytes(data[:300_000])
    url = server.url("/f.bin")
    ctx = FakeContext(resume_state={"url": url, "offset": 300_000})
    sha = hashlib.sha256(data).hexdigest()
    result = await download(
        ctx, {"url": url, "dst": str(dst), "sha256": sha}, scope=PathScope([root])
    )
    assert result["sha256"] == sha and dst.read_bytes() == data
    assert server.requests[-1] == ("/f.bin", "bytes=300000-")
    assert ctx.io["net_rx"] == len(data) - 300_000

    # A server that ignores Range sends it all again: the download starts over.
    dst.unlink()
    part_of(dst).write_bytes(b"x" * 1000)
    url = server.url("/norange/f.bin")
    ctx = FakeContext(resume_state={"url": url, "offset": 1000})
    await download(ctx, {"url": url, "dst": str(dst), "sha256": sha}, scope=PathScope([root]))
    assert dst.read_bytes() == data and ctx.io["net_rx"] == len(data)

    # The part file was already whole (416): nothing is fetched again.
    dst.unlink()
    part_of(dst).write_bytes(data)
    url = server.url("/f.bin")
    ctx = FakeContext(resume_state={"url": url, "offset": len(data)})
    await download(ctx, {"url": url, "dst": str(dst)}, scope=PathScope([root]))
    assert dst.read_bytes() == data and ctx.io["net_rx"] == 0


async def test_download_never_resumes_into_a_part_file_linked_outside(
    root: Path, outside: Path, server: FileServer
) -> None:
    data = blob(MiB, seed=5)
    server.files["/f.bin"] = data
    dst = root / "f.bin"
    os.link(outside / "secret.txt", part_of(dst))
    url = server.url("/f.bin")
    ctx = FakeContext(resume_state={"url": url, "offset": 3})
    await download(ctx, {"url": url, "dst": str(dst)}, scope=PathScope([root]))
    assert dst.read_bytes() == data and ctx.io["net_rx"] == len(data)
    assert (outside / "secret.txt").read_bytes() == b"secret"
    assert server.requests[-1] == ("/f.bin", None)  # no Range: nothing of the part was kept


async def test_download_http_errors(tmp_path: Path, root: Path, server: FileServer) -> None:
    async with scheduler(tmp_path, [root]) as (sched, sub):
        missing = await run_one(
            sched, "http.download", {"url": server.url("/nope"), "dst": str(root / "a")}
        )
        flaky = await run_one(
            sched, "http.download", {"url": server.url("/500"), "dst": str(root / "b")}
        )
        bad_url = await run_one(
            sched, "http.download", {"url": "ftp://x/y", "dst": str(root / "c")}
        )
        failed = [e for e in drain(sub) if isinstance(e, TaskFailed)]
        await sched.cancel(flaky.id)
    assert (missing.state, error_kind(missing)) == ("failed", "notFound")
    assert missing.error is not None and not missing.error.retryable
    assert flaky.state == "pending" and flaky.error is not None and flaky.error.retryable
    assert [e.will_retry for e in failed if e.id == flaky.id] == [True]
    assert error_kind(bad_url) == "invalidPayload"
    assert not listing(root)


async def test_download_cancels_promptly(root: Path, server: FileServer) -> None:
    server.files["/hang"] = blob(100_000)
    dst = root / "h.bin"
    ctx = FakeContext()
    started = time.monotonic()
    with anyio.move_on_after(0.5):
        await download(ctx, {"url": server.url("/hang"), "dst": str(dst)}, scope=PathScope([root]))
    assert time.monotonic() - started < 2
    assert not dst.exists()
    assert ctx.checkpoints[-1]["offset"] == 1000
    assert part_of(dst).stat().st_size == 1000


# --- process.run -----------------------------------------------------------------------------


async def test_process_run(tmp_path: Path, root: Path) -> None:
    async with scheduler(tmp_path, [root], (sys.executable,)) as (sched, _):
        ok = await run_one(sched, "process.run", {"argv": [sys.executable, "-c", "print(1)"]})
        bad = await run_one(
            sched,
            "process.run",
            {"argv": [sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]},
        )
        other = "sh" if sys.platform != "win32" else "cmd"
        refused = await run_one(sched, "process.run", {"argv": [other, "-c", "true"]})
        unknown = await run_one(sched, "process.run", {"argv": ["no-such-program-xyz"]})
        empty = await run_one(sched, "process.run", {"argv": []})
    assert ok.state == "completed", ok.error
    assert ok.result == {"exitCode": 0, "stdout": "1\n", "stderr": ""}
    assert (bad.state, error_kind(bad)) == ("failed", "exitStatus")
    assert bad.error is not None and "boom" in bad.error.message and "3" in bad.error.message
    assert (refused.state, error_kind(refused)) == ("failed", "forbidden")
    assert error_kind(unknown) == "forbidden" and error_kind(empty) == "invalidPayload"


async def test_process_output_is_bounded(root: Path) -> None:
    code = "import sys; sys.stdout.write('x' * 200000 + 'END')"
    result = await run_process(
        FakeContext(),
        {"argv": [sys.executable, "-c", code]},
        allowed=[sys.executable],
    )
    assert len(result["stdout"]) == 64 * 1024 and result["stdout"].endswith("END")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
async def test_process_cancel_kills(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(30)"
    run = partial(run_process, allowed=[sys.executable])
    started = time.monotonic()
    with anyio.move_on_after(1.0):
        await run(FakeContext(), {"argv": [sys.executable, "-c", code]})
    assert time.monotonic() - started < 3
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
