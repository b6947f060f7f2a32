"""Scheduling policy over the real sidecar process (PROTOCOL.md "Policy settings",
``scheduler.setPressure``, timed pauses): what a client sees, in real time."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from .client import Sidecar

pytestmark = pytest.mark.timeout(60)


def submit(sc: Sidecar, **params: Any) -> int:
    return int(sc.result("task.submit", params)["id"])


def started_at(sc: Sidecar, ids: list[int], timeout: float = 15.0) -> dict[int, int]:
    """Wait for ``task.started`` of each id; their ``startedAt``."""
    out: dict[int, int] = {}
    while len(out) < len(ids):
        ev = sc.wait_for(
            lambda m: m.get("method") == "task.started" and m["params"]["id"] in ids, timeout
        )
        out[ev["params"]["id"]] = ev["params"]["startedAt"]
    return out


def restart(sc: Sidecar, db: Path) -> Sidecar:
    sc.call("shutdown", {"graceMs": 0})
    assert sc.wait_exit() == 0
    sc.close()
    new = Sidecar(db=db)
    new.ready()
    return new


def test_the_feature_and_the_event_are_announced(sidecar: Sidecar) -> None:
    caps = sidecar.result("initialize", {})["capabilities"]
    assert "policy" in caps["features"]
    assert "scheduler.pressure" in caps["events"]


def test_a_rate_limited_type_spreads_its_starts_and_other_types_are_not_held_up(
    sidecar: Sidecar,
) -> None:
    sidecar.result(
        "scheduler.configure",
        {"maxConcurrency": 8, "rateLimits": {"types": {"noop": {"perSecond": 10}}}},
    )
    sidecar.result("scheduler.pause", {})
    limited = [submit(sidecar, type="noop", priority=0) for _ in range(4)]
    free = [submit(sidecar, type="sleep", payload={"ms": 0}, priority=255) for _ in range(4)]
    sidecar.result("scheduler.resume", {})
    at = started_at(sidecar, limited + free)
    lim = sorted(at[i] for i in limited)
    gaps = [b - a for a, b in itertools.pairwise(lim)]
    assert all(g >= 99 for g in gaps), gaps  # 100 ms a token (startedAt in whole ms)
    assert max(at[i] for i in free) < lim[1]  # the other type went on meanwhile
    buckets = sidecar.result("scheduler.status")["rateBuckets"]
    assert set(buckets["types"]) == {"noop"}


def test_two_weighted_groups_share_the_slots_in_proportion(sidecar: Sidecar) -> None:
    sidecar.result(
        "scheduler.configure",
        {"maxConcurrency": 4, "fairShare": {"weights": {"a": 3, "b": 1}}},
    )
    sidecar.result("scheduler.pause", {})
    a = [submit(sidecar, type="sleep", payload={"ms": 3000}, group="a") for _ in range(30)]
    b = [submit(sidecar, type="sleep", payload={"ms": 3000}, group="b") for _ in range(30)]
    sidecar.result("scheduler.resume", {})
    started_at(sidecar, a[:3] + b[:1])
    running = sidecar.result("scheduler.status")["running"]
    assert sorted(t["group"] for t in running) == ["a", "a", "a", "b"]


def test_an_aged_background_task_overtakes_normal_ones_and_never_preempts(
    sidecar: Sidecar,
) -> None:
    # 192 ages a level per 10 ms: at 128 (the normal tasks' level and the limit) after 640 ms
    sidecar.result(
        "scheduler.configure",
        {"maxConcurrency": 1, "aging": {"afterMs": 0, "stepMs": 10, "limit": 128}},
    )
    blocker = submit(sidecar, type="sleep", payload={"ms": 1500})
    started_at(sidecar, [blocker])
    bg = submit(sidecar, type="noop", priority="background")
    normals = [submit(sidecar, type="noop", priority="normal") for _ in range(3)]
    time.sleep(0.05)
    early = sidecar.result("task.get", {"id": bg})
    assert 128 < early["effectivePriority"] < 192
    time.sleep(0.7)
    assert sidecar.result("task.get", {"id": bg})["effectivePriority"] == 128
    at = started_at(sidecar, [bg, *normals])
    assert at[bg] <= min(at[n] for n in normals)
    assert not [m for m in sidecar.seen if m.get("method") == "task.preempted"]


def test_pressure_holds_back_exactly_its_tiers_and_lapses_after_ttl(sidecar: Sidecar) -> None:
    sidecar.result("scheduler.setPressure", {"source": "battery", "level": 0.5, "ttlMs": 1500})
    ev = sidecar.event("scheduler.pressure")
    assert ev == {"level": 0.5, "sources": {"battery": 0.5}, "holding": [192]}
    set_at = time.monotonic()
    bg = submit(sidecar, type="noop", priority="background")
    normal = submit(sidecar, type="noop", priority=191)
    started_at(sidecar, [normal])
    status = sidecar.result("scheduler.status")
    assert status["pressure"] == {"level": 0.5, "sources": {"battery": 0.5}}
    assert sidecar.result("task.get", {"id": bg})["state"] == "pending"
    assert sidecar.event("scheduler.pressure")["holding"] == []
    started_at(sidecar, [bg])
    assert time.monotonic() - set_at >= 1.4
    assert sidecar.result("scheduler.status")["pressure"] == {"level": 0.0, "sources": {}}


def test_bad_pressure_is_refused(sidecar: Sidecar) -> None:
    for params, path in [
        ({"source": "x", "level": 2}, "$.level"),
        ({"source": "", "level": 0.5}, "$.source"),
        ({"source": "x", "level": 0.5, "ttlMs": 0}, "$.ttlMs"),
        ({"source": "x", "level": 0.5, "why": 1}, "$.why"),
    ]:
        err = sidecar.call("scheduler.setPressure", params)["error"]
        assert (err["code"], err["data"]["path"]) == (-32602, path)


def test_a_timed_pause_ends_by_itself(sidecar: Sidecar) -> None:
    now = sidecar.result("ping")["now"]
    sidecar.result("scheduler.pause", {"type": "noop", "untilAt": now + 700})
    paused = sidecar.event("scheduler.paused")
    assert paused == {"type": "noop", "untilAt": now + 700}
    assert sidecar.result("scheduler.status")["pauses"] == [{"type": "noop", "untilAt": now + 700}]
    t = submit(sidecar, type="noop")
    assert sidecar.event("scheduler.resumed") == {"type": "noop"}
    started_at(sidecar, [t])
    assert sidecar.result("scheduler.status")["pauses"] == []


def test_a_timed_pause_ends_by_itself_across_a_restart(sidecar: Sidecar, db: Path) -> None:
    sidecar.result("scheduler.pause", {"group": "net", "forMs": 1500})
    sc = restart(sidecar, db)  # the end is still ahead: the new process lifts it then
    try:
        assert sc.result("scheduler.status")["pausedGroups"] == ["net"]
        assert sc.event("scheduler.resumed", timeout=5) == {"group": "net"}
        sc.result("scheduler.pause", {"forMs": 300})
        sc.call("shutdown", {"graceMs": 0})
        assert sc.wait_exit() == 0
    finally:
        sc.close()
    time.sleep(0.5)
    # the end passed while no sidecar ran: lifted at the next start, announced after ready
    sc = Sidecar(db=db)
    try:
        messages: list[Any] = []
        while not messages or messages[-1].get("method") != "scheduler.resumed":
            messages.append(sc.next_message())
        names = [m.get("method") for m in messages]
        assert names.index("sidecar.ready") < names.index("scheduler.resumed")
        assert messages[-1]["params"] == {}
        assert not sc.result("scheduler.status")["paused"]
    finally:
        sc.close()


def test_bad_pause_ends_are_refused(sidecar: Sidecar) -> None:
    now = sidecar.result("ping")["now"]
    for params, path in [
        ({"untilAt": now - 1}, "$.untilAt"),
        ({"untilAt": now + 1000, "forMs": 10}, "$.forMs"),
        ({"forMs": 0}, "$.forMs"),
    ]:
        err = sidecar.call("scheduler.pause", params)["error"]
        assert (err["code"], err["data"]["path"]) == (-32602, path)
    assert not sidecar.result("scheduler.status")["paused"]


def test_type_defaults_apply_and_a_submits_own_field_wins(sidecar: Sidecar) -> None:
    sidecar.result(
        "scheduler.configure",
        {"typeDefaults": {"noop": {"priority": 200, "maxRetries": 9, "group": "bg"}}},
    )
    sidecar.result("scheduler.pause", {})
    a = sidecar.result("task.submit", {"type": "noop"})["task"]
    assert (a["priority"], a["maxRetries"], a["group"]) == (200, 9, "bg")
    # present wins, even when it equals the global default
    b = sidecar.result("task.submit", {"type": "noop", "priority": 128, "maxRetries": 3})["task"]
    assert (b["priority"], b["maxRetries"], b["group"]) == (128, 3, "bg")
    batch = sidecar.result(
        "task.submitBatch", {"tasks": [{"type": "noop"}, {"type": "noop", "priority": "high"}]}
    )["results"]
    got = [sidecar.result("task.get", {"id": r["id"]})["priority"] for r in batch]
    assert got == [200, 64]
    other = sidecar.result("task.submit", {"type": "sleep"})["task"]
    assert (other["priority"], other["maxRetries"]) == (128, 3)


SETTINGS: dict[str, Any] = {
    "rateLimits": {
        "types": {"noop": {"perSecond": 2.5, "burst": 2}},
        "groups": {"net": {"perMinute": 30}},
    },
    "aging": {"afterMs": 1000, "stepMs": 250, "limit": 32},
    "fairShare": {"weights": {"a": 2}, "defaultWeight": 1, "minSlots": {"b": 1}},
    "throttle": [{"minPriority": 150, "level": 0.3}],
    "typeDefaults": {"noop": {"priority": 10, "timeoutMs": 5000}},
}


def test_every_new_setting_survives_a_restart_and_null_removes_it(
    sidecar: Sidecar, db: Path
) -> None:
    first = sidecar.result("scheduler.configure", SETTINGS)
    for key, value in SETTINGS.items():
        assert first[key] == value
    sc = restart(sidecar, db)
    try:
        again = sc.result("scheduler.configure", {})
        assert {k: again[k] for k in SETTINGS} == SETTINGS
        cleared = sc.result("scheduler.configure", dict.fromkeys(SETTINGS))
        assert [cleared[k] for k in SETTINGS] == [
            None,
            None,
            None,
            [{"minPriority": 192, "level": 0.5}, {"minPriority": 128, "level": 0.75}],
            None,
        ]
    finally:
        sc.call("shutdown", {"graceMs": 0})
        sc.wait_exit()
        sc.close()


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        (
            {"rateLimits": {"types": {"noop": {"perSecond": -1}}}},
            "$.rateLimits.types.noop.perSecond",
        ),
        (
            {"rateLimits": {"types": {"noop": {"perSecond": 0}}}},
            "$.rateLimits.types.noop.perSecond",
        ),
        (
            {"rateLimits": {"groups": {"g": {"perSecond": 1, "perMinute": 1}}}},
            "$.rateLimits.groups.g",
        ),
        ({"throttle": [{"minPriority": 10, "level": 0}]}, "$.throttle[0].level"),
        ({"throttle": [{"minPriority": 10, "level": 1.01}]}, "$.throttle[0].level"),
        ({"aging": {"afterMs": 10, "stepMs": 0}}, "$.aging.stepMs"),
        ({"fairShare": {"weight": {}}}, "$.fairShare.weight"),
        ({"typeDefaults": {"noop": {"dedupKey": "x"}}}, "$.typeDefaults.noop.dedupKey"),
    ],
)
def test_bad_settings_are_refused_naming_the_field_and_change_nothing(
    sidecar: Sidecar, bad: dict[str, Any], path: str
) -> None:
    before = sidecar.result("scheduler.configure", {})
    # a valid setting beside the bad one is not applied either
    err = sidecar.call("scheduler.configure", {"maxConcurrency": 7, "aging": None, **bad})
    e = err["error"]
    assert (e["code"], e["data"]["path"]) == (-32602, path)
    assert sidecar.result("scheduler.configure", {}) == before


def test_type_defaults_apply_after_a_restart_and_stop_when_removed(
    sidecar: Sidecar, db: Path
) -> None:
    sidecar.result("scheduler.configure", {"typeDefaults": {"noop": {"priority": 200}}})
    sc = restart(sidecar, db)
    try:
        sc.result("scheduler.pause", {})
        assert sc.result("task.submit", {"type": "noop"})["task"]["priority"] == 200
        sc.result("scheduler.configure", {"typeDefaults": None})
        assert sc.result("task.submit", {"type": "noop"})["task"]["priority"] == 128
        both = sc.result("task.submitBatch", {"tasks": [{"type": "noop"}]})["results"]
        assert sc.result("task.get", {"id": both[0]["id"]})["priority"] == 128
    finally:
        sc.call("shutdown", {"graceMs": 0})
        sc.wait_exit()
        sc.close()
