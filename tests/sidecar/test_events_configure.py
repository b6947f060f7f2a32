"""``events.configure`` over real pipes: ``exclude`` and the ``task.batchSubmitted`` form."""

from __future__ import annotations

import time
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


def error_of(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    assert "error" in response, response
    return response["error"]["code"], response["error"]["data"]


def events(sc: Sidecar, since: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """The notifications seen so far (from index ``since`` of ``sc.seen``)."""
    return [
        (m["method"], m.get("params", {}))
        for m in sc.seen[since:]
        if isinstance(m, dict) and "method" in m and "id" not in m
    ]


def task_id(name: str, params: dict[str, Any]) -> int | None:
    if name in ("task.submitted", "task.updated"):
        return int(params["task"]["id"])
    return params.get("id") if name.startswith("task.") else None


def wait_completed(sc: Sidecar, ids: set[int], timeout: float = 30.0) -> None:
    left = set(ids) - {p["id"] for n, p in events(sc) if n == "task.completed"}
    deadline = time.monotonic() + timeout
    while left:
        msg = sc.next_message(max(0.01, deadline - time.monotonic()))
        if isinstance(msg, dict) and msg.get("method") == "task.completed":
            left.discard(msg["params"]["id"])


def test_capabilities_list_the_event_and_the_feature(sidecar: Sidecar) -> None:
    caps = sidecar.result("initialize", {})["capabilities"]
    assert "task.batchSubmitted" in caps["events"] and "eventSelection" in caps["features"]


def test_exclude_drops_exactly_the_named_events_and_a_later_call_replaces_it(
    sidecar: Sidecar,
) -> None:
    assert sidecar.result("events.configure", {"exclude": ["task.started", "task.progress"]}) == {}
    since = len(sidecar.seen)
    a = sidecar.result("task.submit", {"type": "sleep", "payload": {"ms": 300, "steps": 3}})["id"]
    wait_completed(sidecar, {a})
    names = [n for n, p in events(sidecar, since) if task_id(n, p) == a]
    assert names == ["task.submitted", "task.completed"]

    assert sidecar.result("events.configure", {"exclude": ["task.submitted"]}) == {}
    since = len(sidecar.seen)
    b = sidecar.result("task.submit", {"type": "sleep", "payload": {"ms": 300, "steps": 3}})["id"]
    wait_completed(sidecar, {b})
    names = [n for n, p in events(sidecar, since) if task_id(n, p) == b]
    assert names[0] == "task.started" and names[-1] == "task.completed"
    assert "task.progress" in names and "task.submitted" not in names

    assert sidecar.result("events.configure") == {}  # everything again
    since = len(sidecar.seen)
    c = sidecar.result("task.submit", {"type": "noop"})["id"]
    wait_completed(sidecar, {c})
    names = [n for n, p in events(sidecar, since) if task_id(n, p) == c]
    assert names == ["task.submitted", "task.started", "task.completed"]


def test_sidecar_events_unknown_names_and_bad_params_are_refused_changing_nothing(
    sidecar: Sidecar,
) -> None:
    sidecar.result("events.configure", {"exclude": ["task.started"]})
    code, data = error_of(
        sidecar.call("events.configure", {"exclude": ["task.progress", "sidecar.exiting"]})
    )
    assert (code, data["kind"], data["path"], data["index"]) == (
        -32602,
        "invalidParams",
        "$.exclude[1]",
        1,
    )
    code, data = error_of(sidecar.call("events.configure", {"exclude": ["task.sumbitted"]}))
    assert (code, data["path"], data["index"]) == (-32602, "$.exclude[0]", 0)
    for bad in (
        {"exclude": "task.started"},
        {"exclude": [1]},
        {"exclude": [""]},
        {"batchSubmitted": "yes"},
        {"include": ["task.started"]},
        ["task.started"],
    ):
        assert error_of(sidecar.call("events.configure", bad))[0] == -32602, bad
    # The refused calls changed nothing: task.started is still excluded, the rest still sent.
    since = len(sidecar.seen)
    a = sidecar.result("task.submit", {"type": "noop"})["id"]
    wait_completed(sidecar, {a})
    names = [n for n, p in events(sidecar, since) if task_id(n, p) == a]
    assert names == ["task.submitted", "task.completed"]


def test_batch_submitted_announces_a_large_batch_once_before_any_of_it_starts(
    sidecar: Sidecar,
) -> None:
    assert sidecar.result("events.configure", {"batchSubmitted": True}) == {}
    # A long task the batch supersedes, and one it duplicates: plain submits, announced as such.
    old = sidecar.result(
        "task.submit", {"type": "sleep", "dedupKey": "old", "payload": {"ms": 20000}}
    )["id"]
    kept = sidecar.result(  # pending for a minute: a later submit of its key is a duplicate
        "task.submit", {"type": "sleep", "dedupKey": "kept", "delayMs": 60000}
    )["id"]
    sidecar.wait_for(
        lambda m: m.get("method") == "task.submitted" and m["params"]["task"]["id"] == kept
    )
    assert {task_id(n, p) for n, p in events(sidecar) if n == "task.submitted"} == {old, kept}

    tasks: list[dict[str, Any]] = [{"type": "noop", "payload": i} for i in range(2500)]
    tasks[7] = {"type": "sleep", "dedupKey": "old", "onDuplicate": "supersede",
                "payload": {"ms": 0}}  # fmt: skip
    tasks[11] = {"type": "sleep", "dedupKey": "kept", "payload": {"ms": 0}}  # duplicate
    tasks[2000] = {"type": "noop", "dedupKey": "twice"}
    tasks[2001] = {"type": "noop", "dedupKey": "twice"}  # duplicate inside the batch
    since = len(sidecar.seen)
    results = sidecar.result("task.submitBatch", {"tasks": tasks}, timeout=30)["results"]
    outcomes = [r["outcome"] for r in results]
    assert outcomes[7] == "superseded" and outcomes[11] == "duplicate"
    assert outcomes[2001] == "duplicate" and outcomes.count("inserted") == 2497
    expected = [r["id"] for r in results if r["outcome"] in ("inserted", "superseded")]
    assert results[11]["id"] == kept and results[2001]["id"] == results[2000]["id"]

    wait_completed(sidecar, set(expected))
    seen = events(sidecar, since)
    batches = [(i, p) for i, (n, p) in enumerate(seen) if n == "task.batchSubmitted"]
    assert len(batches) == 1
    at, batch = batches[0]
    assert batch == {"ids": expected, "count": len(expected)}
    ids = set(expected)
    assert not [p for n, p in seen if n == "task.submitted" and task_id(n, p) in ids]
    assert not [p for n, p in seen[:at] if task_id(n, p) in ids]  # nothing of them before it
    started = {p["id"] for n, p in seen[at:] if n == "task.started"}
    assert ids <= started
    assert ("task.superseded", {"id": old, "type": "sleep", "by": results[7]["id"]}) in seen

    # Only task.submitBatch has the batch form: a plain task.submit is announced as ever.
    since = len(sidecar.seen)
    one = sidecar.result("task.submit", {"type": "noop"})["id"]
    wait_completed(sidecar, {one})
    names = [n for n, p in events(sidecar, since) if task_id(n, p) == one]
    assert names == ["task.submitted", "task.started", "task.completed"]
    assert not [n for n, _ in events(sidecar, since) if n == "task.batchSubmitted"]


def test_batch_submitted_off_again_and_excluded_batch_form(sidecar: Sidecar) -> None:
    sidecar.result("events.configure", {"batchSubmitted": True})
    sidecar.result("events.configure", {})  # replaced: per-task announcements again
    since = len(sidecar.seen)
    ids = [r["id"] for r in sidecar.result(
        "task.submitBatch", {"tasks": [{"type": "noop"}] * 3})["results"]]  # fmt: skip
    wait_completed(sidecar, set(ids))
    seen = events(sidecar, since)
    assert [task_id(n, p) for n, p in seen if n == "task.submitted"] == ids
    assert not [n for n, _ in seen if n == "task.batchSubmitted"]

    # Excluding task.submitted keeps the batch form (names on the wire are what exclude sees).
    sidecar.result("events.configure", {"batchSubmitted": True, "exclude": ["task.submitted"]})
    since = len(sidecar.seen)
    ids = [r["id"] for r in sidecar.result(
        "task.submitBatch", {"tasks": [{"type": "noop"}] * 3})["results"]]  # fmt: skip
    single = sidecar.result("task.submit", {"type": "noop"})["id"]
    wait_completed(sidecar, {*ids, single})
    seen = events(sidecar, since)
    assert [p for n, p in seen if n == "task.batchSubmitted"] == [{"ids": ids, "count": 3}]
    assert not [n for n, _ in seen if n == "task.submitted"]
