"""The file executors stay inside ``--allow-path`` against a concurrent attacker.

An attacker who can write inside a root swaps names there while the real sidecar process runs
thousands of tasks on them (``tests/sidecar/racer.py``, a separate process): a file that keeps
turning into a symlink to a secret, a directory that keeps trading places with a symlink to a
directory outside. Not one task may read or write outside the root, whatever the timing; a task
that meets a swapped name fails permanently with kind ``forbidden``.

Each test runs against the sidecar from source and against every frozen build named in
``TASKMILL_FROZEN_BINARY`` (see ``tests/frozen/conftest.py``; ``.ci/run`` builds both modes).
Each race lasts about a second or two: the attacker makes tens of thousands of swaps meanwhile.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.frozen.conftest import Frozen, frozen_binaries

from .client import ROOT, Sidecar

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX symlink and rename races"),
]

SECRET = b"the secret outside the root"
PUBLIC = b"public"  # what the attacker's regular file holds (racer.py)

exchanging = pytest.mark.skipif(
    sys.platform != "linux", reason="the attacker swaps with renameat2(RENAME_EXCHANGE), Linux's"
)

VARIANTS = [
    pytest.param(None, id="source"),
    *(pytest.param(b, id=b.mode) for b in frozen_binaries()),
]


@pytest.fixture(params=VARIANTS)
def launch(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[[Path], Sidecar]]:
    """Start a sidecar (from source, or a frozen build) confined to one root."""
    frozen: Frozen | None = request.param
    if frozen is not None:
        monkeypatch.setenv("TASKMILL_SIDECAR_CMD", shlex.quote(str(frozen.path)))
    started: list[Sidecar] = []

    def start(root: Path) -> Sidecar:
        sc = Sidecar(
            f"--allow-path={root}",
            "--max-concurrency=8",
            "--log-level=error",
            db=tmp_path / "tasks.db",
        )
        started.append(sc)
        sc.ready()
        return sc

    yield start
    for sc in started:
        sc.close()
        assert sc.bad_lines == [], "stdout carried something that is not a JSON message"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "secret").write_bytes(SECRET)
    (o / "dir").mkdir()
    return o


@contextmanager
def racing(mode: str, a: Path, b: Path) -> Iterator[None]:
    """The attacker swapping ``a`` and ``b`` (racer.py) for as long as the block runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sidecar.racer", mode, str(a), str(b), "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n", "the attacker did not start"
        yield
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode()
    assert int(out) > 1000, f"the attacker hardly ran ({int(out)} swaps): the race proves nothing"


def run_all(sc: Sidecar, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Submit ``tasks`` in one batch (no retries) and return each one's final event params."""
    answer = sc.result("task.submitBatch", {"tasks": [{**t, "maxRetries": 0} for t in tasks]})
    ids = [r["id"] for r in answer["results"]]
    final: dict[int, dict[str, Any]] = {}

    def note(msg: Any) -> None:
        method = msg.get("method") if isinstance(msg, dict) else None
        params = msg.get("params", {}) if method else {}
        if method == "task.completed" or (method == "task.failed" and not params["willRetry"]):
            final[params["id"]] = {"event": method, **params}

    for msg in sc.seen:  # events that came before the batch's answer
        note(msg)
    while len(final) < len(ids):
        note(sc.next_message(timeout=60))
    return [final[i] for i in ids]


def failure_kinds(finals: list[dict[str, Any]]) -> set[str]:
    return {f["error"]["kind"] for f in finals if f["event"] == "task.failed"}


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_hash_never_reads_a_file_swapped_for_a_symlink(
    launch: Callable[[Path], Sidecar], root: Path, outside: Path
) -> None:
    """``root/f`` flips between a regular file and a symlink to a secret outside the root."""
    target = root / "f"
    target.write_bytes(PUBLIC)
    sc = launch(root)
    with racing("flip", target, outside / "secret"):
        finals = run_all(sc, [{"type": "fs.hash", "payload": {"path": str(target)}}] * 2000)
    digests = [f["result"]["digest"] for f in finals if f["event"] == "task.completed"]
    escapes = digests.count(hashlib.sha256(SECRET).hexdigest())
    assert escapes == 0, f"{escapes} of {len(finals)} hashes read the secret"
    assert set(digests) == {hashlib.sha256(PUBLIC).hexdigest()}
    assert failure_kinds(finals) <= {"forbidden"}
    assert len(digests) < len(finals), "no task met the symlink: the race proves nothing"


@exchanging
def test_copy_never_writes_through_a_swapped_directory(
    launch: Callable[[Path], Sidecar], root: Path, outside: Path
) -> None:
    """``root/d`` trades places with ``root/dl``, a symlink to a directory outside the root,
    while copies are written into ``root/d/``."""
    (root / "src").write_bytes(b"x" * 3000)
    (root / "d").mkdir()
    (root / "dl").symlink_to(outside / "dir")
    sc = launch(root)
    tasks = [
        {"type": "fs.copy", "payload": {"src": str(root / "src"), "dst": str(root / f"d/c{i}")}}
        for i in range(1000)
    ]
    with racing("exchange", root / "d", root / "dl"):
        finals = run_all(sc, tasks)
    escaped = files_under(outside / "dir")
    assert escaped == [], f"{len(escaped)} files were written outside the root"
    assert failure_kinds(finals) <= {"forbidden"}
    real = root / "d" if (root / "d").is_dir() and not (root / "d").is_symlink() else root / "dl"
    copied = sum(f["event"] == "task.completed" for f in finals)
    assert 0 < copied < len(finals)
    assert sorted(os.listdir(real)) == sorted(
        f"c{i}" for i, f in enumerate(finals) if f["event"] == "task.completed"
    )


@exchanging
def test_scan_never_descends_a_directory_swapped_for_a_symlink(
    launch: Callable[[Path], Sidecar], root: Path, outside: Path
) -> None:
    """``root/tree/sub`` trades places with ``root/tree/subl``, a symlink to a directory
    outside holding big files; a scan that followed it would count their bytes."""
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a").write_bytes(b"a")
    (tree / "subl").symlink_to(outside / "dir")
    for i in range(20):
        (outside / "dir" / f"big{i}").write_bytes(b"s" * 1000)
    sc = launch(root)
    with racing("exchange", tree / "sub", tree / "subl"):
        finals = run_all(sc, [{"type": "fs.scan", "payload": {"root": str(tree)}}] * 1000)
    counted = [f["result"]["bytes"] for f in finals if f["event"] == "task.completed"]
    escapes = sum(n > 1 for n in counted)
    assert escapes == 0, f"{escapes} of {len(finals)} scans listed files outside the root"
    assert failure_kinds(finals) == set() and counted


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    body = b"d" * 3000


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)


@pytest.fixture
def http_url() -> Iterator[str]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/file"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@exchanging
def test_download_never_writes_through_a_swapped_directory(
    launch: Callable[[Path], Sidecar], root: Path, outside: Path, http_url: str
) -> None:
    (root / "d").mkdir()
    (root / "dl").symlink_to(outside / "dir")
    sc = launch(root)
    tasks = [
        {"type": "http.download", "payload": {"url": http_url, "dst": str(root / f"d/g{i}")}}
        for i in range(500)
    ]
    with racing("exchange", root / "d", root / "dl"):
        finals = run_all(sc, tasks)
    escaped = files_under(outside / "dir")
    assert escaped == [], f"{len(escaped)} files were written outside the root"
    assert failure_kinds(finals) <= {"forbidden"}
    assert any(f["event"] == "task.completed" for f in finals)


def test_a_part_file_hard_linked_outside_is_not_written_through(
    launch: Callable[[Path], Sidecar], root: Path, outside: Path, http_url: str
) -> None:
    """A leftover ``<dst>.taskmill-part`` that is a hard link to a file outside the root is
    replaced, never written into."""
    (root / "src").write_bytes(b"copied")
    victim = outside / "victim"
    victim.write_bytes(b"untouched")
    os.link(victim, root / "dst.taskmill-part")
    os.link(victim, root / "dl.taskmill-part")
    sc = launch(root)
    finals = run_all(
        sc,
        [
            {"type": "fs.copy", "payload": {"src": str(root / "src"), "dst": str(root / "dst")}},
            {"type": "http.download", "payload": {"url": http_url, "dst": str(root / "dl")}},
        ],
    )
    assert [f["event"] for f in finals] == ["task.completed"] * 2, finals
    assert victim.read_bytes() == b"untouched"
    assert (root / "dst").read_bytes() == b"copied"
    assert (root / "dl").read_bytes() == _Server.body
    assert sorted(os.listdir(root)) == ["dl", "dst", "src"]
