"""Recurring schedules over the real sidecar process: schedule.* methods, their errors, the
schedule.fired event after its task's task.submitted, and persistence across a restart.

Set ``TASKMILL_SIDECAR_CMD`` to run this suite against another build (the frozen binary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .client import Sidecar

pytestmark = pytest.mark.timeout(60)


def error_of(response: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    assert "error" in response, response
    err = response["error"]
    return err["code"], err["data"]["kind"], err["data"]


def test_the_sidecar_announces_schedules(sidecar: Sidecar) -> None:
    caps = sidecar.result("initialize", {})["capabilities"]
    assert "schedules" in caps["features"]
    assert {"schedule.fired", "schedule.skipped"} <= set(caps["events"])


def test_a_schedule_fires_its_task_then_announces_the_firing(sidecar: Sidecar) -> None:
    now = sidecar.result("ping")["now"]
    created = sidecar.result(
        "schedule.create",
        {
            "task": {"type": "noop", "tags": {"app": "backup"}},
            "everyMs": 1000,
            "startAt": now + 200,
            "name": "backup",
        },
    )
    assert created["name"] == "backup" and created["runs"] == 0 and not created["paused"]
    assert created["nextAt"] == now + 200 and "cron" not in created
    fired = sidecar.event("schedule.fired", id=created["id"])
    assert fired["nextAt"] == now + 1200
    stream = [m for m in sidecar.seen if "method" in m]
    submitted = next(
        i
        for i, m in enumerate(stream)
        if m["method"] == "task.submitted" and m["params"]["task"]["id"] == fired["taskId"]
    )
    assert stream[submitted]["params"]["task"]["tags"] == {
        "app": "backup",
        "schedule": str(created["id"]),
    }
    assert submitted < stream.index(next(m for m in stream if m["method"] == "schedule.fired"))
    got = sidecar.result("schedule.get", {"name": "backup"})
    assert got["runs"] >= 1 and got["lastTaskId"] >= fired["taskId"]


def test_pause_resume_list_and_delete(sidecar: Sidecar) -> None:
    a = sidecar.result(
        "schedule.create", {"task": {"type": "noop"}, "cron": "0 2 * * *", "timezone": "UTC"}
    )
    b = sidecar.result("schedule.create", {"task": {"type": "noop"}, "everyMs": 3_600_000})
    assert a["timezone"] == "UTC" and a["nextAt"] % 86_400_000 == 2 * 3_600_000
    paused = sidecar.result("schedule.pause", {"id": b["id"]})
    assert paused["paused"] and "nextAt" not in paused
    listed = sidecar.result("schedule.list")["schedules"]
    assert [s["id"] for s in listed] == [a["id"], b["id"]] and listed[1]["paused"]
    resumed = sidecar.result("schedule.resume", {"id": b["id"]})
    assert not resumed["paused"] and resumed["nextAt"] > 0
    assert sidecar.result("schedule.delete", {"id": a["id"]}) == {}
    assert [s["id"] for s in sidecar.result("schedule.list")["schedules"]] == [b["id"]]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"task": {"type": "noop"}, "everyMs": 999}, "$.everyMs"),
        ({"task": {"type": "noop"}}, "$.cron"),
        ({"task": {"type": "noop"}, "everyMs": 1000, "cron": "* * * * *"}, "$.everyMs"),
        ({"task": {"type": "noop"}, "cron": "every day"}, "$.cron"),
        ({"task": {"type": "noop"}, "cron": "0 2 * * *", "timezone": "Nowhere/City"}, "$.timezone"),
        ({"task": {"type": "noop", "runAt": 5}, "everyMs": 1000}, "$.task.runAt"),
        ({"task": {"type": "noop", "dependsOn": [1]}, "everyMs": 1000}, "$.task.dependsOn"),
        ({"task": {"type": "noop", "parentId": 1}, "everyMs": 1000}, "$.task.parentId"),
        ({"task": {"type": "noop"}, "everyMs": 1000, "extra": 1}, "$.extra"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(
    sidecar: Sidecar, params: dict[str, Any], path: str
) -> None:
    code, kind, data = error_of(sidecar.call("schedule.create", params))
    assert (code, kind, data["path"]) == (-32602, "invalidParams", path)
    assert sidecar.result("schedule.list") == {"schedules": []}


def test_schedule_errors_have_their_codes(sidecar: Sidecar) -> None:
    first = sidecar.result(
        "schedule.create", {"task": {"type": "noop"}, "everyMs": 60_000, "name": "sync"}
    )
    code, kind, data = error_of(
        sidecar.call("schedule.create", {"task": {"type": "noop"}, "everyMs": 5000, "name": "sync"})
    )
    assert (code, kind, data["existingId"]) == (-32003, "duplicateRejected", first["id"])
    for method in ("schedule.get", "schedule.pause", "schedule.resume", "schedule.delete"):
        assert error_of(sidecar.call(method, {"id": 999}))[:2] == (-32008, "scheduleNotFound")
        assert error_of(sidecar.call(method, {"name": "x"}))[:2] == (-32008, "scheduleNotFound")
    code, _, data = error_of(sidecar.call("schedule.get", {"id": first["id"], "name": "sync"}))
    assert (code, data["path"]) == (-32602, "$.name")
    code, _, data = error_of(sidecar.call("schedule.get", {}))
    assert (code, data["path"]) == (-32602, "$.id")
    assert len(sidecar.result("schedule.list")["schedules"]) == 1


def test_schedules_survive_a_restart(db: Path) -> None:
    sc = Sidecar(db=db)
    sc.ready()
    created = sc.result(
        "schedule.create",
        {"task": {"type": "noop", "payload": {"dir": "/data"}}, "everyMs": 3_600_000},
    )
    sc.close()
    again = Sidecar(db=db)
    again.ready()
    try:
        assert again.result("schedule.list")["schedules"] == [created]
    finally:
        again.close()
