"""Workflows over the real sidecar process: a fan-out whose finalize phase runs in a host
executor, failParent, siblingOf, task.lookup, list filters and scheduler.metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .client import Sidecar

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    sc = Sidecar(db=tmp_path / "tasks.db")
    sc.ready()
    yield sc
    sc.close()
    assert sc.bad_lines == [], "stdout carried something that is not a JSON message"


def submit(sc: Sidecar, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = sc.result("task.submit", params)
    return result


def execute_request(sc: Sidecar, task_id: int) -> dict[str, Any]:
    req: dict[str, Any] = sc.wait_for(
        lambda m: m.get("method") == "task.execute" and m["params"]["task"]["id"] == task_id
    )
    return req


def answer(sc: Sidecar, req: dict[str, Any], result: Any) -> None:
    sc.send({"jsonrpc": "2.0", "id": req["id"], "result": {"result": result}})


def test_initialize_lists_the_workflows_feature(sidecar: Sidecar) -> None:
    caps = sidecar.result("initialize", {})["capabilities"]
    assert "workflows" in caps["features"]


def test_finalize_through_a_host_executor(sidecar: Sidecar) -> None:
    sidecar.result("executor.register", {"type": "host.upload"})
    parent = submit(sidecar, type="host.upload", finalize=True, onChildFailure="failParent")
    pid = parent["id"]
    assert parent["task"]["finalize"] is True
    run = execute_request(sidecar, pid)
    assert run["params"]["phase"] == "run" and "children" not in run["params"]
    parts = [
        submit(sidecar, type="sleep", payload={"ms": 10}, parentId=pid)["id"] for _ in range(2)
    ]
    sibling = submit(sidecar, type="sleep", payload={"ms": 10}, siblingOf=parts[0])
    assert sibling["task"]["parentId"] == pid
    answer(sidecar, run, {"uploadId": "u-1"})
    final = execute_request(sidecar, pid)
    params = final["params"]
    assert params["phase"] == "finalize"
    assert params["task"]["phase"] == "finalize" and params["task"]["attempt"] == 0
    assert params["children"] == {
        "completed": 3,
        "failed": 0,
        "deadLetter": 0,
        "cancelled": 0,
        "superseded": 0,
        "expired": 0,
    }
    answer(sidecar, final, {"etag": "e-1"})
    done = sidecar.event("task.completed", id=pid)
    assert done["result"] == {"etag": "e-1"}
    info = sidecar.result("task.get", {"id": pid})
    assert (info["state"], info["phase"], info["result"]) == (
        "completed",
        "finalize",
        done["result"],
    )
    kids = sidecar.result("task.list", {"parentId": pid})["tasks"]
    assert sorted(k["id"] for k in kids) == sorted([*parts, sibling["id"]])


def test_a_failed_child_fails_its_parent_over_the_wire(sidecar: Sidecar) -> None:
    sidecar.result("executor.register", {"type": "host.upload"})
    pid = submit(sidecar, type="host.upload", onChildFailure="failParent")["id"]
    run = execute_request(sidecar, pid)
    bad = submit(
        sidecar, type="sleep", payload={"ms": 0, "fail": "permanent"}, parentId=pid, maxRetries=0
    )
    sidecar.event("task.failed", id=bad["id"])
    refused = sidecar.call("task.submit", {"type": "noop", "parentId": pid})
    assert refused["error"]["code"] == -32002
    assert refused["error"]["data"]["path"] == "$.parentId"
    answer(sidecar, run, None)
    failed = sidecar.event("task.failed", id=pid)
    assert failed["error"]["kind"] == "childFailed" and failed["willRetry"] is False


def test_sibling_of_errors(sidecar: Sidecar) -> None:
    root = submit(sidecar, type="noop", runAt=2**50)["id"]
    err = sidecar.call("task.submit", {"type": "noop", "siblingOf": root})["error"]
    assert (err["code"], err["data"]["path"]) == (-32002, "$.siblingOf")
    err = sidecar.call("task.submit", {"type": "noop", "siblingOf": 987654})["error"]
    assert (err["code"], err["data"]["kind"]) == (-32001, "taskNotFound")
    child = submit(sidecar, type="noop", runAt=2**50, parentId=root)["id"]
    other = submit(sidecar, type="noop", runAt=2**50)["id"]
    err = sidecar.call("task.submit", {"type": "noop", "siblingOf": child, "parentId": other})
    assert (err["error"]["code"], err["error"]["data"]["path"]) == (-32602, "$.siblingOf")
    bad = sidecar.call("task.submit", {"type": "noop", "onChildFailure": "explode"})["error"]
    assert (bad["code"], bad["data"]["path"]) == (-32602, "$.onChildFailure")


def test_lookup_by_dedup_key(sidecar: Sidecar) -> None:
    missing = sidecar.call("task.lookup", {"type": "noop", "dedupKey": "a.jpg"})["error"]
    assert (missing["code"], missing["data"]["kind"]) == (-32001, "taskNotFound")
    first = submit(sidecar, type="noop", dedupKey="a.jpg")["id"]
    sidecar.event("task.completed", id=first)
    found = sidecar.result("task.lookup", {"type": "noop", "dedupKey": "a.jpg"})
    assert (found["id"], found["state"]) == (first, "completed")
    second = submit(sidecar, type="noop", dedupKey="a.jpg", runAt=2**50)["id"]
    assert sidecar.result("task.lookup", {"type": "noop", "dedupKey": "a.jpg"})["id"] == second
    listed = sidecar.result("task.list", {"dedupKey": "a.jpg"})["tasks"]
    assert [t["id"] for t in listed] == [second, first]
    bad = sidecar.call("task.lookup", {"type": "noop"})["error"]
    assert (bad["code"], bad["data"]["path"]) == (-32602, "$.dedupKey")


def test_metrics_over_the_wire(sidecar: Sidecar) -> None:
    before = sidecar.result("scheduler.metrics", {})
    assert set(before) == {"sinceAt", "counters", "gauges"}
    assert set(before["gauges"]) == {"pending", "running", "waiting", "blocked", "paused"}
    t = submit(sidecar, type="noop", dedupKey="m")["id"]
    sidecar.event("task.completed", id=t)
    submit(sidecar, type="noop", dedupKey="late", runAt=2**50)
    submit(sidecar, type="noop", dedupKey="late", runAt=2**50)
    after = sidecar.result("scheduler.metrics", {})
    c = after["counters"]
    assert (c["submitted"], c["deduplicated"], c["started"], c["completed"]) == (2, 1, 1, 1)
    assert after["gauges"]["pending"] == 1
    assert after["sinceAt"] == before["sinceAt"]


def test_a_host_finalize_phase_retries_like_a_run(sidecar: Sidecar) -> None:
    sidecar.result("executor.register", {"type": "host.commit"})
    pid = submit(sidecar, type="host.commit", finalize=True)["id"]
    answer(sidecar, execute_request(sidecar, pid), None)
    first = execute_request(sidecar, pid)
    assert (first["params"]["phase"], first["params"]["task"]["attempt"]) == ("finalize", 0)
    sidecar.send(
        {
            "jsonrpc": "2.0",
            "id": first["id"],
            "error": {"code": 1, "message": "busy", "data": {"retryable": True, "retryAfterMs": 0}},
        }
    )
    assert sidecar.event("task.failed", id=pid)["willRetry"] is True
    second = execute_request(sidecar, pid)
    assert (second["params"]["phase"], second["params"]["task"]["attempt"]) == ("finalize", 1)
    answer(sidecar, second, "committed")
    assert sidecar.event("task.completed", id=pid)["result"] == "committed"
