"""TLS in the frozen sidecar: it finds this machine's CAs, and HTTPS works end to end.

A PyInstaller binary carries the OpenSSL of the machine that built it, CA paths included;
``http.*`` must not depend on them (sidecar/builtin/_http.py). ``--check-tls`` reports the
store the binary verifies against and how many CAs it holds, with the machine's environment
as it is (no ``SSL_CERT_FILE``). Then a real ``http.download`` and ``http.upload`` go to a
local HTTPS server whose throwaway CA the sidecar is told to trust with ``SSL_CERT_FILE``
(through truststore, bundled in the binary). Runs against the source sidecar and each binary
in ``TASKMILL_FROZEN_BINARY``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.httpd import serve, server_context
from tests.sidecar.client import Sidecar

from .conftest import Build

pytestmark = pytest.mark.timeout(60)

CLEAN = {
    name: ""
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")
    for name in (base, base.lower())
}


def test_the_binary_finds_trusted_cas_on_this_machine(build: Build) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    out = subprocess.run(
        [*build.command, "--check-tls"], capture_output=True, text=True, timeout=30, env=env
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    if sys.platform in ("darwin", "win32"):
        assert report["store"] == "system"
    else:
        assert report["caCount"] > 0, report
        assert Path(report["source"]).exists(), report
    assert "/_MEI" not in report["source"], report  # not a path inside the onefile archive


def test_https_download_and_upload_with_the_binary(build: Build, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    root = tmp_path / "root"
    root.mkdir()
    data = os.urandom(300_000)
    with serve(server_context(ca)) as srv:
        srv.files["/f.bin"] = data
        sc = Sidecar(
            f"--allow-path={root}",
            db=tmp_path / "t.db",
            command=build.command,
            env={**CLEAN, "SSL_CERT_FILE": str(ca_file)},
        )
        try:
            sc.ready()
            dl = {"url": srv.url("/f.bin"), "dst": str(root / "f.bin")}
            tid = sc.result("task.submit", {"type": "http.download", "payload": dl})["id"]
            done = sc.event("task.completed", id=tid, timeout=30)
            assert done["result"]["bytes"] == len(data), sc.stderr_text
            up = {"src": str(root / "f.bin"), "url": srv.url("/up")}
            tid = sc.result("task.submit", {"type": "http.upload", "payload": up})["id"]
            done = sc.event("task.completed", id=tid, timeout=30)
            assert done["result"]["status"] == 201 and done["result"]["bytes"] == len(data)
            assert srv.seen[-1].size == len(data)
        finally:
            sc.close()
    assert (root / "f.bin").read_bytes() == data
