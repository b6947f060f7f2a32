"""Header values of http.* tasks never leave the real sidecar process (PROTOCOL.md).

The sidecar stores them and sends them to the server, but every answer (``task.submit``,
``task.get``, ``task.list``, ``task.pause``/``resume``/``setPriority``, ``scheduler.status``),
every event and every log line (at debug level) shows ``"<redacted>"`` or nothing; and
``dedupKey: true`` hashes the redacted payload, so two tokens give one key.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.httpd import serve

from .client import Sidecar

pytestmark = pytest.mark.timeout(60)

NO_PROXY_ENV = {name: "" for base in ("HTTP_PROXY", "HTTPS_PROXY") for name in (base, base.lower())}


def canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_header_values_are_redacted_everywhere(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(b"payload bytes" * 1000)
    token, key, other = (f"tok-{secrets.token_hex(8)}" for _ in range(3))
    with serve() as srv:
        srv.files["/dl"] = b"downloaded"
        srv.answer("/denied", (403, {}))
        sc = Sidecar(
            f"--allow-path={root}", "--log-level=debug", db=tmp_path / "t.db", env=NO_PROXY_ENV
        )
        try:
            sc.ready()
            hidden = {"Authorization": "<redacted>", "X-Api-Key": "<redacted>"}
            headers = {"Authorization": f"Bearer {token}", "X-Api-Key": key}
            up = {"src": str(root / "f.bin"), "url": srv.url("/up"), "headers": headers}
            answer = sc.result("task.submit", {"type": "http.upload", "payload": up})
            assert answer["task"]["payload"] == {**up, "headers": hidden}
            uid = answer["id"]
            submitted = sc.event("task.submitted")
            assert submitted["task"]["id"] == uid
            assert submitted["task"]["payload"]["headers"] == hidden
            done = sc.event("task.completed", id=uid)
            assert done["result"]["status"] == 201
            # Stored and used: the server got the real values.
            assert srv.seen[-1].headers["Authorization"] == f"Bearer {token}"
            assert srv.seen[-1].headers["X-Api-Key"] == key

            assert sc.result("task.get", {"id": uid})["payload"]["headers"] == hidden
            listed = sc.result("task.list", {"type": "http.upload"})["tasks"]
            assert [t["payload"]["headers"] for t in listed] == [hidden]

            # A failing download with headers: its error says nothing of them.
            dl = {"url": srv.url("/denied"), "dst": str(root / "d"), "headers": headers}
            did = sc.result("task.submit", {"type": "http.download", "payload": dl})["id"]
            failed = sc.event("task.failed", id=did)
            assert failed["error"]["kind"] == "http" and "403" in failed["error"]["message"]

            # Pending tasks: pause, resume, priority, status, task.updated.
            sc.result("scheduler.pause", {})
            d2 = {"url": srv.url("/dl"), "dst": str(root / "d2"), "headers": headers}
            pid = sc.result("task.submit", {"type": "http.download", "payload": d2})["id"]
            for method, params in (
                ("task.setPriority", {"id": pid, "priority": 10}),
                ("task.pause", {"id": pid}),
                ("task.resume", {"id": pid}),
            ):
                assert sc.result(method, params)["payload"]["headers"] == hidden, method
                assert sc.event("task.updated")["task"]["payload"]["headers"] == hidden

            # dedupKey: true hashes the payload as shown: another token, the same task.
            d3 = {"url": srv.url("/dl"), "dst": str(root / "d3"), "headers": headers}
            first = sc.result(
                "task.submit", {"type": "http.download", "payload": d3, "dedupKey": True}
            )
            rotated = {**d3, "headers": {"Authorization": f"Bearer {other}", "X-Api-Key": key}}
            again = sc.result(
                "task.submit", {"type": "http.download", "payload": rotated, "dedupKey": True}
            )
            assert (again["outcome"], again["id"]) == ("duplicate", first["id"])
            expected_key = canonical_sha256({**d3, "headers": hidden})
            assert first["task"]["dedupKey"] == expected_key
            # Other types keep the contract's plain hash of the whole payload.
            plain = {"headers": {"Authorization": "shown"}}
            noop = sc.result("task.submit", {"type": "noop", "payload": plain, "dedupKey": True})
            assert noop["task"]["dedupKey"] == canonical_sha256(plain)
            assert noop["task"]["payload"] == plain  # not an http.* task: shown as it is

            sc.result("scheduler.resume", {})
            sc.event("task.completed", id=pid)
            status = sc.result("scheduler.status", {})
            assert all(t["payload"].get("headers") in (None, hidden) for t in status["running"])
            sc.result("shutdown", {})
            assert sc.wait_exit() == 0
        finally:
            sc.close()
    wire = json.dumps(sc.seen)
    for secret in (token, key, other):
        assert secret not in wire
        assert secret not in sc.stderr_text
