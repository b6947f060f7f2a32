"""The real sidecar process over real pipes: methods, errors, lifecycle, crash recovery.

Set ``TASKMILL_SIDECAR_CMD`` to run this suite against another build (the frozen binary).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .client import Sidecar

pytestmark = pytest.mark.timeout(60)


def submit(sc: Sidecar, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = sc.result("task.submit", params)
    return result


def error_of(response: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    assert "error" in response, response
    err = response["error"]
    return err["code"], err["data"]["kind"], err["data"]


def reopen_state(db: Path, task_id: int) -> tuple[str, int]:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT state, attempt FROM tasks WHERE id=?", (task_id,)).fetchone()
    conn.close()
    return row[0], row[1]


# --- handshake -----------------------------------------------------------------------------


def test_ready_announces_the_server_then_answers(sidecar: Sidecar, db: Path) -> None:
    ready = sidecar.seen[-1]["params"]
    assert ready["serverInfo"]["name"] == "taskmill-sidecar"
    assert ready["protocolVersion"] == 1 and ready["db"] == str(db)
    assert ready["recovered"] == {"requeued": 0} and "noop" in ready["executors"]
    assert ready["pid"] == sidecar.proc.pid
    assert isinstance(sidecar.result("ping")["now"], int)
    init = sidecar.result("initialize", {"client": {"name": "tests", "version": "1"}})
    assert init["protocolVersion"] == 1 and "task.progress" in init["capabilities"]["events"]
    doc = sidecar.result("rpc.discover")
    assert doc["openrpc"].startswith("1.") and {m["name"] for m in doc["methods"]} >= {
        "task.submit",
        "task.submitBatch",
        "executor.register",
        "task.completed",
    }


def test_requests_sent_before_ready_are_answered_after_it(db: Path) -> None:
    sc = Sidecar(db=db)
    try:
        sc.send({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        first = sc.next_message(20)
        assert first["method"] == "sidecar.ready"
        assert "result" in sc.response(1)
    finally:
        sc.close()


# --- tasks ---------------------------------------------------------------------------------


def test_submit_streams_lifecycle_events_in_causal_order(sidecar: Sidecar) -> None:
    r = submit(sidecar, type="sleep", payload={"ms": 300, "steps": 3}, label="three steps")
    assert r["outcome"] == "inserted" and r["task"]["state"] in ("pending", "running")
    tid = r["id"]
    done = sidecar.event("task.completed", id=tid)
    assert done["result"] == {} and done["durationMs"] >= 300
    names = [
        m["method"]
        for m in sidecar.seen
        if (m.get("method", "").startswith("task.") and m["params"].get("id", -1) == tid)
        or (m.get("method") == "task.submitted" and m["params"]["task"]["id"] == tid)
    ]
    assert names[0] == "task.submitted" and names[1] == "task.started"
    assert names[-1] == "task.completed" and "task.progress" in names
    info = sidecar.result("task.get", {"id": tid})
    assert info["state"] == "completed" and info["label"] == "three steps"


def test_dedup_outcomes_over_the_wire(sidecar: Sidecar) -> None:
    sidecar.result("scheduler.pause", {})
    a = submit(sidecar, type="noop", dedupKey="k", priority="background")
    b = submit(sidecar, type="noop", dedupKey="k", priority="high")
    assert (b["id"], b["outcome"]) == (a["id"], "upgraded") and b["task"]["priority"] == 64
    code, kind, data = error_of(
        sidecar.call("task.submit", {"type": "noop", "dedupKey": "k", "onDuplicate": "reject"})
    )
    assert (code, kind, data["existingId"]) == (-32003, "duplicateRejected", a["id"])
    batch = sidecar.result(
        "task.submitBatch", {"tasks": [{"type": "noop", "dedupKey": True, "payload": 1}] * 5}
    )["results"]
    assert len({e["id"] for e in batch}) == 1
    assert [e["outcome"] for e in batch] == ["inserted"] + ["duplicate"] * 4


def test_pause_resume_cancel_priority_and_status(sidecar: Sidecar) -> None:
    sidecar.result("scheduler.pause", {"group": "media"})
    t = submit(sidecar, type="sleep", payload={"ms": 10}, group="media")
    status = sidecar.result("scheduler.status")
    assert status["pausedGroups"] == ["media"] and status["counts"]["pending"] == 1
    assert sidecar.result("task.setPriority", {"id": t["id"], "priority": 3})["priority"] == 3
    assert sidecar.result("task.pause", {"id": t["id"]})["state"] == "paused"
    assert sidecar.result("task.resume", {"id": t["id"]})["state"] == "pending"
    assert sidecar.result("task.cancel", {"id": t["id"]}) == {"id": t["id"], "state": "cancelled"}
    sidecar.event("task.cancelled", id=t["id"])
    code, kind, _ = error_of(sidecar.call("task.cancel", {"id": t["id"]}))
    assert (code, kind) == (-32002, "invalidState")
    sidecar.result("scheduler.resume", {"group": "media"})
    assert sidecar.result("scheduler.status")["pausedGroups"] == []
    page = sidecar.result("task.list", {"state": "cancelled"})
    assert [x["id"] for x in page["tasks"]] == [t["id"]]
    cfg = sidecar.result("scheduler.configure", {"maxConcurrency": 2, "progressHz": 2})
    assert cfg["maxConcurrency"] == 2 and cfg["progressHz"] == 2


def test_retry_and_history(sidecar: Sidecar) -> None:
    t = submit(sidecar, type="sleep", payload={"ms": 0, "fail": "permanent"})
    failed = sidecar.event("task.failed", id=t["id"])
    assert failed["willRetry"] is False and failed["state"] == "failed"
    assert failed["error"]["kind"] == "permanent"
    assert sidecar.result("task.retry", {"id": t["id"]}) == {"id": t["id"], "outcome": "inserted"}
    stats = sidecar.result("history.stats", {})["byType"]
    assert stats["sleep"]["failed"] >= 1
    assert sidecar.result("history.prune", {"keep": 0})["removed"] >= 0


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params", "code", "kind", "path"),
    [
        ("no.such", {}, -32601, "methodNotFound", None),
        ("task.submit", {"type": "noop", "priority": 999}, -32602, "invalidParams", "$.priority"),
        ("task.submit", {"type": "noop", "bogus": 1}, -32602, "invalidParams", "$.bogus"),
        ("task.submit", {"payload": 1}, -32602, "invalidParams", "$.type"),
        ("task.get", {"id": 424242}, -32001, "taskNotFound", None),
        ("task.get", [1], -32602, "invalidParams", None),
        ("task.retry", {"id": 424242}, -32001, "taskNotFound", None),
        ("executor.register", {"type": "noop"}, -32007, "forbidden", None),
        ("task.get", {"id": 2**63}, -32602, "invalidParams", "$.id"),
        (
            "task.submit",
            {"type": "noop", "delayMs": 2**63 - 1},
            -32602,
            "invalidParams",
            "$.delayMs",
        ),
        ("history.prune", {"keep": 2**63}, -32602, "invalidParams", "$.keep"),
        ("task.list", {"cursor": "9" * 30}, -32602, "invalidParams", "$.cursor"),
    ],
)
def test_errors_are_coded_and_name_the_field(
    sidecar: Sidecar, method: str, params: Any, code: int, kind: str, path: str | None
) -> None:
    got_code, got_kind, data = error_of(sidecar.call(method, params))
    assert (got_code, got_kind) == (code, kind)
    if path is not None:
        assert data["path"] == path
    assert sidecar.result("ping")  # still serving


MAX_SAFE_INT = 2**53 - 1


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"delayMs": MAX_SAFE_INT}, "$.delayMs"),
        ({"ttlMs": MAX_SAFE_INT}, "$.ttlMs"),
        ({"timeoutMs": MAX_SAFE_INT}, "$.timeoutMs"),
        ({"backoff": {"kind": "constant", "initialMs": MAX_SAFE_INT}}, "$.backoff.initialMs"),
        ({"backoff": {"maxMs": MAX_SAFE_INT}}, "$.backoff.maxMs"),
    ],
)
def test_a_duration_that_would_end_past_2_53_is_refused(
    sidecar: Sidecar, fields: dict[str, Any], path: str
) -> None:
    """Times on the wire never exceed 2^53 - 1, so neither may now + a duration: a duration
    that could take a time (runAt, a retry time, an expiry, a deadline) past it is -32602."""
    code, kind, data = error_of(sidecar.call("task.submit", {"type": "noop", **fields}))
    assert (code, kind, data["path"]) == (-32602, "invalidParams", path)


def test_the_largest_times_accepted_stay_safe_integers(sidecar: Sidecar) -> None:
    late = submit(sidecar, type="noop", runAt=MAX_SAFE_INT)["task"]
    assert late["runAt"] == MAX_SAFE_INT
    far = submit(sidecar, type="noop", delayMs=2**52)["task"]
    assert far["runAt"] <= MAX_SAFE_INT


def test_a_host_asking_for_a_retry_beyond_2_53_gets_a_safe_retry_time(sidecar: Sidecar) -> None:
    """``retryAfterMs`` is the client's to choose; the retry time it leads to stays a safe
    integer (and the sidecar keeps serving)."""
    sidecar.result("executor.register", {"type": "host.later"})
    t = submit(sidecar, type="host.later")
    req = sidecar.wait_for(lambda m: m.get("method") == "task.execute")
    data = {"retryable": True, "retryAfterMs": 1e300}
    sidecar.send({"jsonrpc": "2.0", "id": req["id"], "error": {"code": 1, "message": "later",
                                                               "data": data}})  # fmt: skip
    failed = sidecar.event("task.failed", id=t["id"])
    assert failed["willRetry"] is True and failed["retryAt"] <= MAX_SAFE_INT
    assert sidecar.result("task.get", {"id": t["id"]})["runAt"] == failed["retryAt"]


def test_batch_errors_name_the_entry_and_write_nothing(sidecar: Sidecar) -> None:
    tasks: list[dict[str, Any]] = [{"type": "noop"}] * 3 + [{"type": "noop", "priority": -1}]
    code, _, data = error_of(sidecar.call("task.submitBatch", {"tasks": tasks}))
    assert code == -32602 and data["index"] == 3 and data["path"] == "$.tasks[3].priority"
    big = {"type": "noop", "payload": "x" * (1024 * 1024 + 10)}
    code, kind, data = error_of(
        sidecar.call("task.submitBatch", {"tasks": [{"type": "noop"}, big]})
    )
    assert (code, kind, data["index"]) == (-32004, "payloadTooLarge", 1)
    assert sum(sidecar.result("scheduler.status")["counts"].values()) == 0


def test_jsonrpc_spec_examples(sidecar: Sidecar) -> None:
    sidecar.send_raw(b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]\n')
    assert error_of(sidecar.response(None))[0] == -32700
    sidecar.send_raw(b'{"jsonrpc": "2.0", "method": 1, "params": "bar"}\n')
    assert error_of(sidecar.response(None))[0] == -32600
    sidecar.send_raw(b"[]\n")
    assert error_of(sidecar.response(None))[0] == -32600
    sidecar.send_raw(
        b'[{"jsonrpc":"2.0","method":"ping","id":"1"},{"jsonrpc":"2.0","method":"ping"},'
        b'{"foo":"boo"},{"jsonrpc":"2.0","method":"nope","id":"5"}]\n'
    )
    batch = sidecar.wait_for(lambda m: isinstance(m, list))
    by_id = {r.get("id"): r for r in batch}
    assert len(batch) == 3 and "result" in by_id["1"] and by_id["5"]["error"]["code"] == -32601
    assert by_id[None]["error"]["code"] == -32600
    sidecar.send_raw(b'[{"jsonrpc":"2.0","method":"ping"},{"jsonrpc":"2.0","method":"ping"}]\n')
    sidecar.send_raw(b'{"jsonrpc":"2.0","method":"ping","id":null}\n')
    r = sidecar.wait_for(lambda m: isinstance(m, list | dict))
    assert isinstance(r, dict) and r["id"] is None and "result" in r  # nothing for the batch


def test_oversized_line_and_invalid_utf8_do_not_stop_it(db: Path) -> None:
    sc = Sidecar("--max-message-bytes=4096", db=db)
    try:
        sc.ready()
        sc.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"a" * 100_000)
        sc.send_raw(b'"}}\n')
        code, kind, _ = error_of(sc.response(None))
        assert (code, kind) == (-32600, "messageTooLarge")
        sc.send_raw(b'{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":"\xff\xfe"}}\n')
        assert error_of(sc.response(None))[0] == -32700
        assert "result" in sc.call("ping")
    finally:
        sc.close()


# --- lifecycle -------------------------------------------------------------------------------


def test_shutdown_request(sidecar: Sidecar) -> None:
    """Whatever the client writes after ``shutdown`` is refused, even in the same write."""
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "shutdown", "params": {"graceMs": 100}},
        {"jsonrpc": "2.0", "id": 2, "method": "task.submit", "params": {"type": "noop"}},
        {"jsonrpc": "2.0", "id": 3, "method": "ping"},
    ]
    sidecar.send_raw(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    assert sidecar.response(1)["result"] == {}
    for late in (2, 3):
        assert error_of(sidecar.response(late))[:2] == (-32005, "shuttingDown")
    assert sidecar.event("sidecar.exiting") == {"reason": "shutdown"}
    assert sidecar.wait_exit() == 0
    assert not any(m.get("method") == "task.submitted" for m in sidecar.seen)


def test_stdin_eof_interrupts_running_work_back_to_pending(sidecar: Sidecar, db: Path) -> None:
    t = submit(sidecar, type="sleep", payload={"ms": 60_000})
    sidecar.event("task.started", id=t["id"])
    start = time.monotonic()
    sidecar.close_stdin()
    assert sidecar.event("sidecar.exiting") == {"reason": "stdinClosed"}
    assert sidecar.wait_exit() == 0
    assert time.monotonic() - start < 5 + 1  # graceMs 5000 + 1 s
    assert reopen_state(db, t["id"]) == ("pending", 0)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_is_a_graceful_shutdown(sidecar: Sidecar, db: Path) -> None:
    t = submit(sidecar, type="sleep", payload={"ms": 60_000})
    sidecar.event("task.started", id=t["id"])
    sidecar.proc.send_signal(signal.SIGTERM)
    assert sidecar.event("sidecar.exiting") == {"reason": "signal"}
    assert sidecar.wait_exit() == 0
    assert reopen_state(db, t["id"]) == ("pending", 0)


SLOW_START_PLUGIN = """
import sys, time

from taskmill_core.executors import executor

sys.stderr.write("slow plugin: loading\\n")
time.sleep(1.5)  # start-up is still going on: no sidecar.ready yet


@executor("test.nothing")
async def nothing(ctx, payload):
    return None
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_startup_is_the_same_graceful_shutdown(
    db: Path, tmp_path: Path, signum: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal before ``sidecar.ready``: start-up completes, then the usual graceful exit
    (``sidecar.exiting`` with reason ``signal``, exit 0); a request that waited for readiness
    is refused ``-32005``."""
    monkeypatch.delenv("TASKMILL_SIDECAR_CMD", raising=False)  # the plugin runs from source
    (tmp_path / "tm_slow_start.py").write_text(SLOW_START_PLUGIN)
    sc = Sidecar("--plugin=tm_slow_start", db=db, env={"PYTHONPATH": str(tmp_path)})
    try:
        deadline = time.monotonic() + 20
        while "slow plugin: loading" not in sc.stderr_text:
            assert time.monotonic() < deadline and sc.proc.poll() is None, sc.stderr_text
            time.sleep(0.01)
        sc.send({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        sc.proc.send_signal(signum)
        sc.ready()
        assert error_of(sc.response(1))[:2] == (-32005, "shuttingDown")
        assert sc.event("sidecar.exiting") == {"reason": "signal"}
        assert sc.wait_exit() == 0
    finally:
        sc.close()
    assert "Traceback" not in sc.stderr_text


def test_parent_death_is_a_graceful_shutdown(db: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sc = Sidecar(f"--parent-pid={parent.pid}", db=db)
    try:
        sc.ready()
        parent.kill()
        parent.wait()
        start = time.monotonic()
        assert sc.event("sidecar.exiting") == {"reason": "parentExited"}
        assert sc.wait_exit() == 0
        assert time.monotonic() - start < 5 + 1
    finally:
        sc.close()


def test_a_second_sidecar_on_the_same_database_exits_3(sidecar: Sidecar, db: Path) -> None:
    second = Sidecar(db=db)
    try:
        assert second.wait_exit() == 3
        second.close()
        assert "Another taskmill sidecar" in second.stderr_text
        assert second.messages.qsize() == 1  # only the EOF marker: nothing on stdout
    finally:
        second.close()


@pytest.mark.parametrize("kind", ["garbage", "other-sqlite"])
def test_a_foreign_or_corrupt_file_exits_4_untouched(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "not-ours.db"
    if kind == "garbage":
        path.write_bytes(os.urandom(8192))
    else:
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE notes(x)")
        conn.commit()
        conn.close()
    before = path.read_bytes()
    sc = Sidecar(db=path)
    try:
        assert sc.wait_exit() == 4
        sc.close()
        assert sc.stderr_text.strip().endswith("the file was left untouched.")
        assert path.read_bytes() == before
        assert not Path(str(path) + "-wal").exists()
    finally:
        sc.close()


def test_bad_command_line_exits_2(tmp_path: Path) -> None:
    sc = Sidecar("--max-concurrency=zero", db=tmp_path / "x.db")
    try:
        assert sc.wait_exit() == 2
        sc.close()
        assert "bad command line" in sc.stderr_text
    finally:
        sc.close()


def test_durability_full_answers_runs_and_keeps_what_it_answered(db: Path) -> None:
    """--durability full (the WAL fsynced off the event loop before anything is answered):
    the same protocol; what was answered is in the file after a SIGKILL."""
    sc = Sidecar("--durability=full", db=db)
    try:
        sc.ready()
        done = submit(sc, type="noop")
        sc.event("task.completed", id=done["id"])
        burst = [sc.call("task.submit", {"type": "noop", "payload": i}) for i in range(20)]
        running = submit(sc, type="sleep", payload={"ms": 60_000})
        sc.event("task.started", id=running["id"])
        assert sc.result("task.pause", {"id": running["id"]})["state"] == "paused"
        sc.kill()
    finally:
        sc.close()
    assert reopen_state(db, done["id"]) == ("completed", 0)
    states = {reopen_state(db, r["result"]["id"])[0] for r in burst}  # each answered one is there
    assert states <= {"pending", "running", "completed"}
    assert reopen_state(db, running["id"]) == ("paused", 0)


def test_sigkill_under_load_then_restart_recovers_everything(db: Path) -> None:
    sc = Sidecar("--max-concurrency=4", db=db)
    try:
        sc.ready()
        ids = [
            e["id"]
            for e in sc.result(
                "task.submitBatch",
                {"tasks": [{"type": "sleep", "payload": {"ms": 60_000}}] * 10},
            )["results"]
        ]
        for _ in range(4):
            sc.event("task.started")
        sc.proc.send_signal(signal.SIGKILL)
        sc.wait_exit()
    finally:
        sc.close()
    again = Sidecar("--max-concurrency=4", db=db)
    try:
        ready = again.ready()
        assert ready["recovered"] == {"requeued": 4}
        counts = again.result("scheduler.status")["counts"]
        assert counts["pending"] + counts["running"] == 10
        for tid in ids:
            assert again.result("task.get", {"id": tid})["attempt"] == 0
    finally:
        again.close()


# --- host executors ---------------------------------------------------------------------------


def test_host_executor_round_trip(sidecar: Sidecar) -> None:
    assert sidecar.result("executor.register", {"type": "host.thumb"}) == {}
    t = submit(sidecar, type="host.thumb", payload={"path": "a.jpg"})
    req = sidecar.wait_for(lambda m: m.get("method") == "task.execute")
    assert req["params"]["task"]["id"] == t["id"] and req["params"]["task"]["payload"] == {
        "path": "a.jpg"
    }
    sidecar.send(
        {
            "jsonrpc": "2.0",
            "method": "executor.progress",
            "params": {"id": t["id"], "fraction": 0.5},
        }
    )
    progress = sidecar.event("task.progress", id=t["id"])
    assert progress["progress"]["fraction"] == 0.5 and not progress["progress"]["estimated"]
    sidecar.send({"jsonrpc": "2.0", "id": req["id"], "result": {"result": {"thumb": "a.png"}}})
    assert sidecar.event("task.completed", id=t["id"])["result"] == {"thumb": "a.png"}

    # an error answer with retryable: false fails the task permanently
    t2 = submit(sidecar, type="host.thumb", payload={"path": "b.jpg"})
    req2 = sidecar.wait_for(lambda m: m.get("method") == "task.execute")
    sidecar.send(
        {
            "jsonrpc": "2.0",
            "id": req2["id"],
            "error": {"code": 1, "message": "corrupt image", "data": {"retryable": False}},
        }
    )
    failed = sidecar.event("task.failed", id=t2["id"])
    assert failed["willRetry"] is False and failed["error"]["message"] == "corrupt image"


def test_host_executor_is_told_to_cancel_and_checkpoints_survive(sidecar: Sidecar) -> None:
    sidecar.result("executor.register", {"type": "host.copy"})
    t = submit(sidecar, type="host.copy")
    req = sidecar.wait_for(lambda m: m.get("method") == "task.execute")
    assert req["params"].get("checkpoint") is None
    sidecar.send(
        {
            "jsonrpc": "2.0",
            "method": "executor.checkpoint",
            "params": {"id": t["id"], "state": {"offset": 42}},
        }
    )
    sidecar.result("task.pause", {"id": t["id"]})
    cancel = sidecar.event("executor.cancel", id=t["id"])
    assert cancel["reason"] == "paused"
    sidecar.send({"jsonrpc": "2.0", "id": req["id"], "error": {"code": 2, "message": "stopped"}})
    sidecar.result("task.resume", {"id": t["id"]})
    again = sidecar.wait_for(lambda m: m.get("method") == "task.execute")
    assert again["params"]["checkpoint"] == {"offset": 42}
    assert again["params"]["task"]["attempt"] == 0
    sidecar.result("task.cancel", {"id": t["id"]})
    assert sidecar.event("executor.cancel", id=t["id"])["reason"] == "cancelled"


def test_a_silent_host_gets_its_task_back_to_pending_on_shutdown(
    sidecar: Sidecar, db: Path
) -> None:
    sidecar.result("executor.register", {"type": "host.silent"})
    t = submit(sidecar, type="host.silent")
    sidecar.wait_for(lambda m: m.get("method") == "task.execute")  # and never answer it
    sidecar.send({"jsonrpc": "2.0", "id": 1, "method": "shutdown", "params": {"graceMs": 100}})
    assert sidecar.event("executor.cancel", id=t["id"])["reason"] == "shutdown"
    assert sidecar.event("sidecar.exiting") == {"reason": "shutdown"}
    assert sidecar.wait_exit() == 0
    assert reopen_state(db, t["id"]) == ("pending", 0)


def test_a_silent_host_times_out_into_a_retry(sidecar: Sidecar) -> None:
    sidecar.result("executor.register", {"type": "host.slow"})
    t = submit(
        sidecar,
        type="host.slow",
        timeoutMs=300,
        backoff={"kind": "constant", "initialMs": 60_000},
    )
    sidecar.wait_for(lambda m: m.get("method") == "task.execute")
    assert sidecar.event("executor.cancel", id=t["id"])["reason"] == "timeout"
    failed = sidecar.event("task.failed", id=t["id"], timeout=10)
    assert failed["error"]["kind"] == "timeout" and failed["willRetry"] is True
    assert failed["state"] == "pending"


def test_file_executors_are_confined_to_allow_path(tmp_path: Path) -> None:
    root = tmp_path / "library"
    root.mkdir()
    (root / "a.bin").write_bytes(b"x" * 10_000)
    outside = tmp_path / "secret.txt"
    outside.write_text("keep out")
    (root / "link").symlink_to(outside)
    sc = Sidecar(f"--allow-path={root}", db=tmp_path / "t.db")
    try:
        sc.ready()
        ok = submit(
            sc, type="fs.copy", payload={"src": str(root / "a.bin"), "dst": str(root / "b")}
        )
        assert sc.event("task.completed", id=ok["id"])["result"]["bytes"] == 10_000
        assert (root / "b").read_bytes() == b"x" * 10_000
        for payload in (
            {"src": str(outside), "dst": str(root / "c")},
            {"src": str(root / "link"), "dst": str(root / "d")},
            {"src": str(root / ".." / "secret.txt"), "dst": str(root / "e")},
            {"src": str(root / "a.bin"), "dst": str(tmp_path / "escaped")},
        ):
            bad = submit(sc, type="fs.copy", payload=payload)
            failed = sc.event("task.failed", id=bad["id"])
            assert failed["error"]["kind"] == "forbidden" and failed["willRetry"] is False
        assert not (tmp_path / "escaped").exists()
        assert sorted(p.name for p in root.iterdir()) == ["a.bin", "b", "link"]
    finally:
        sc.close()
