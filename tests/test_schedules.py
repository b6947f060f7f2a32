"""Recurring schedules in the core: one promise of PROTOCOL.md ("Recurring schedules") per test,
on a real SQLite file and a fake clock (no sleeping)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from taskmill_core import (
    DuplicateRejected,
    FakeClock,
    InvalidParams,
    PayloadTooLarge,
    ScheduleNotFound,
    Scheduler,
    ScheduleSpec,
    TaskSpec,
)
from taskmill_core.scheduler import FIRE_PER_TICK
from taskmill_core.types import Event, ScheduleFired, ScheduleSkipped, TaskSubmitted

from .helpers import Gate, drain, names, open_scheduler, settle

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000
NOOP = TaskSpec(type="noop")


async def step(s: Scheduler, clock: FakeClock, ms: int) -> None:
    """Move time and let the scheduler do everything that is due."""
    clock.advance(ms)
    await settle()
    await s.wait_idle()


def fired(events: list[Event]) -> list[ScheduleFired]:
    return [e for e in events if isinstance(e, ScheduleFired)]


def skipped(events: list[Event]) -> list[ScheduleSkipped]:
    return [e for e in events if isinstance(e, ScheduleSkipped)]


async def task_times(s: Scheduler, schedule_id: int) -> list[int]:
    page = await s.list_tasks(tags={"schedule": str(schedule_id)}, limit=1000)
    return sorted(t.created_at for t in page.tasks)


# --- timing ---------------------------------------------------------------------------------


async def test_fixed_rate_fires_on_the_grid_without_drift(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, clock, sub):
        sc = await s.schedule(NOOP, every_ms=1000)
        assert (sc.start_at, sc.next_at) == (T0 + 1000, T0 + 1000)  # default: one period on
        await step(s, clock, 999)
        assert fired(drain(sub)) == []
        await step(s, clock, 1)  # T0+1000: due
        await step(s, clock, 1300)  # T0+2300: the T0+2000 firing, 300 ms late
        await step(s, clock, 700)  # T0+3000: back on the grid, not at T0+3300
        times = await task_times(s, sc.id)
        assert times == [T0 + 1000, T0 + 2300, T0 + 3000]
        assert [e.next_at for e in fired(drain(sub))] == [T0 + 2000, T0 + 3000, T0 + 4000]
        got = await s.get_schedule(sc.id)
        assert (got.runs, got.last_at, got.next_at) == (3, T0 + 3000, T0 + 4000)


async def test_a_start_time_in_the_past_fires_at_the_next_grid_point(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, _, _sub):
        sc = await s.schedule(NOOP, every_ms=60_000, start_at=T0 - 150_000)
        assert sc.next_at == T0 + 30_000  # T0-150s + 3 * 60s


async def test_the_fired_task_is_tagged_and_announced_before_the_firing(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, clock, sub):
        sc = await s.schedule(TaskSpec(type="noop", tags={"job": "backup"}), every_ms=1000)
        await step(s, clock, 1000)
        events = drain(sub)
        assert names(events)[:2] == ["task.submitted", "schedule.fired"]
        submitted = events[0]
        assert isinstance(submitted, TaskSubmitted)
        assert submitted.task.tags == {"job": "backup", "schedule": str(sc.id)}
        assert fired(events)[0].task_id == submitted.task.id
        assert (await s.get_schedule(sc.id)).last_task_id == submitted.task.id


async def test_a_firing_is_skipped_while_the_previous_task_is_active(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, clock, sub):
        gate = Gate()
        s.register("slow", gate)
        sc = await s.schedule(TaskSpec(type="slow"), every_ms=1000)
        clock.advance(1000)
        await settle()
        (first,) = fired(drain(sub))
        assert gate.started == [first.task_id]
        clock.advance(1000)  # still running: no second run piles up
        await settle()
        events = drain(sub)
        assert [(e.reason, e.next_at) for e in skipped(events)] == [("stillActive", T0 + 3000)]
        assert fired(events) == []
        gate.release(first.task_id)
        clock.advance(1000)
        await settle()
        (second,) = fired(drain(sub))
        assert gate.started == [first.task_id, second.task_id]
        assert (await s.get_schedule(sc.id)).runs == 2
        gate.release(second.task_id)


async def test_a_firing_that_finds_a_duplicate_is_skipped(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, clock, sub):
        held = await s.submit(TaskSpec(type="unrun", dedup_key="k"))  # no executor: stays
        sc = await s.schedule(TaskSpec(type="unrun", dedup_key="k"), every_ms=1000)
        await step(s, clock, 1000)
        assert [e.reason for e in skipped(drain(sub))] == ["duplicate"]
        got = await s.get_schedule(sc.id)
        assert (got.runs, got.last_task_id, got.next_at) == (0, None, T0 + 2000)
        assert [t.id for t in (await s.list_tasks(type="unrun")).tasks] == [held.id]


async def test_max_runs_ends_the_schedule(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, clock, sub):
        sc = await s.schedule(NOOP, every_ms=1000, max_runs=2)
        for _ in range(5):
            await step(s, clock, 1000)
        assert [e.next_at for e in fired(drain(sub))] == [T0 + 2000, None]
        got = await s.get_schedule(sc.id)
        assert (got.runs, got.next_at) == (2, None)
        assert len(await task_times(s, sc.id)) == 2


async def test_missed_firings_collapse_into_one_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with open_scheduler(tmp_path / "t.db", clock=clock) as (s, _, _sub):
        sc = await s.schedule(NOOP, every_ms=1000)
        await step(s, clock, 1000)  # one firing while open
    clock.advance(10_500)  # closed through ten firings: T0+2000 ... T0+11000
    async with open_scheduler(tmp_path / "t.db", clock=clock) as (s, _, sub):
        await settle()
        await s.wait_idle()
        assert [e.next_at for e in fired(drain(sub))] == [T0 + 12_000]  # one, grid kept
        assert await task_times(s, sc.id) == [T0 + 1000, T0 + 11_500]
        assert (await s.get_schedule(sc.id)).runs == 2


def _at(zone: str, *args: int) -> int:
    return int(datetime(*args, tzinfo=ZoneInfo(zone)).timestamp() * 1000)  # type: ignore[misc]


async def _cron_firings(tmp_path: Path, cron: str, zone: str, start: int, days: int) -> list[str]:
    """The local times a cron schedule fires at over ``days``, following its deadlines."""
    clock = FakeClock(start)
    tz = ZoneInfo(zone)
    async with open_scheduler(tmp_path / "t.db", clock=clock) as (s, _, _sub):
        sc = await s.schedule(NOOP, cron=cron, timezone=zone)
        while (nxt := (await s.get_schedule(sc.id)).next_at) is not None:
            if nxt > start + days * 86_400_000:
                break
            await step(s, clock, nxt - clock.now_ms())
        times = await task_times(s, sc.id)
    return [datetime.fromtimestamp(t / 1000, tz).strftime("%m-%d %H:%M%z") for t in times]


async def test_cron_on_the_spring_forward_day_fires_once_after_the_gap(tmp_path: Path) -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
    start = _at("Europe/Berlin", 2026, 3, 28, 12, 0)
    got = await _cron_firings(tmp_path, "30 2 * * *", "Europe/Berlin", start, 3)
    assert got == ["03-29 03:30+0200", "03-30 02:30+0200", "03-31 02:30+0200"]


async def test_cron_on_the_fall_back_day_fires_at_the_first_occurrence(tmp_path: Path) -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    start = _at("Europe/Berlin", 2026, 10, 24, 12, 0)
    got = await _cron_firings(tmp_path, "30 2 * * *", "Europe/Berlin", start, 3)
    assert got == ["10-25 02:30+0200", "10-26 02:30+0100", "10-27 02:30+0100"]


async def test_cron_day_fields_match_either_as_in_vixie_cron(tmp_path: Path) -> None:
    # At midnight on the 13th or on Fridays, January 2026 (Jan 2 is a Friday).
    start = _at("UTC", 2026, 1, 1, 0, 30)
    got = await _cron_firings(tmp_path, "0 0 13 JAN fri", "UTC", start, 16)
    assert got == ["01-02 00:00+0000", "01-09 00:00+0000", "01-13 00:00+0000", "01-16 00:00+0000"]


# --- managing schedules -------------------------------------------------------------------


async def test_pause_stops_firing_and_resume_skips_the_paused_time(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, clock, sub):
        sc = await s.schedule(NOOP, every_ms=1000, name="sync")
        paused = await s.pause_schedule("sync")
        assert (paused.paused, paused.next_at) == (True, None)
        await step(s, clock, 5500)
        assert fired(drain(sub)) == []
        resumed = await s.resume_schedule(sc.id)
        assert (resumed.paused, resumed.next_at) == (False, T0 + 6000)  # nothing for the pause
        await settle()
        assert fired(drain(sub)) == []
        await step(s, clock, 500)
        assert len(fired(drain(sub))) == 1


async def test_delete_stops_firing_and_keeps_the_tasks(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, clock, sub):
        sc = await s.schedule(NOOP, every_ms=1000, name="sync")
        await step(s, clock, 1000)
        await s.delete_schedule("sync")
        await step(s, clock, 3000)
        assert len(fired(drain(sub))) == 1
        assert await s.schedules() == []
        assert len(await task_times(s, sc.id)) == 1
        with pytest.raises(ScheduleNotFound):
            await s.get_schedule(sc.id)
        with pytest.raises(ScheduleNotFound):
            await s.pause_schedule("sync")


async def test_schedules_persist_across_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    spec = TaskSpec(type="noop", payload={"dir": "/home"}, priority="background")
    async with open_scheduler(tmp_path / "t.db", clock=clock) as (s, _, _sub):
        a = await s.schedule(spec, cron="0 2 * * *", timezone="Europe/Berlin", name="nightly")
        b = await s.schedule(NOOP, every_ms=900_000, max_runs=4)
        b = await s.pause_schedule(b.id)
    async with open_scheduler(tmp_path / "t.db", clock=clock) as (s, _, _sub):
        assert await s.schedules() == [a, b]
        assert (await s.get_schedule("nightly")).task.payload == {"dir": "/home"}


# --- the loop ---------------------------------------------------------------------------------


async def test_idle_schedules_are_one_deadline_of_the_loop(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db", clock=FakeClock(T0)) as (s, clock, sub):
        for i in range(200):
            await s.schedule(NOOP, every_ms=3_600_000, start_at=T0 + 60_000 + i)
        await settle()
        ticks = s.statistics()["ticks"]
        assert clock.next_deadline() == T0 + 60_000  # the loop sleeps until the first is due
        await settle(100)
        assert s.statistics()["ticks"] == ticks  # and does not wake before
        await step(s, clock, 60_000)
        assert len(fired(drain(sub))) == 1


async def test_many_due_schedules_fire_a_bounded_number_per_tick(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    async with open_scheduler(tmp_path / "t.db", clock=clock) as (s, _, _sub):
        n = FIRE_PER_TICK * 3 + 5
        for _ in range(n):
            await s.schedule(NOOP, every_ms=1000)
    clock.advance(1000)
    async with open_scheduler(tmp_path / "t.db", clock=clock) as (s, _, sub):
        per_tick: list[int] = []
        while len(per_tick) < 10 and sum(per_tick) < n:
            before = s.statistics()["ticks"]
            await settle(1)
            got = len(fired(drain(sub)))
            if got:
                per_tick.append(got)
                assert s.statistics()["ticks"] > before
        await s.wait_idle()
        per_tick.append(len(fired(drain(sub))))
        assert sum(per_tick) == n
        assert max(per_tick) <= FIRE_PER_TICK


# --- bad input: the field named, nothing stored ------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (ScheduleSpec(task=NOOP, every_ms=999), "$.everyMs"),
        (ScheduleSpec(task=NOOP), "$.cron"),
        (ScheduleSpec(task=NOOP, every_ms=1000, cron="* * * * *"), "$.everyMs"),
        (ScheduleSpec(task=NOOP, cron="* * * *"), "$.cron"),
        (ScheduleSpec(task=NOOP, cron="61 * * * *"), "$.cron"),
        (ScheduleSpec(task=NOOP, cron="0 0 L * *"), "$.cron"),
        (ScheduleSpec(task=NOOP, cron="0 0 30 2 *"), "$.cron"),
        (ScheduleSpec(task=NOOP, cron="0 2 * * *", timezone="Mars/Olympus"), "$.timezone"),
        (ScheduleSpec(task=NOOP, every_ms=1000, timezone="UTC"), "$.timezone"),
        (ScheduleSpec(task=NOOP, every_ms=1000, max_runs=0), "$.maxRuns"),
        (ScheduleSpec(task=NOOP, every_ms=1000, name=""), "$.name"),
        (ScheduleSpec(task=TaskSpec(type="noop", run_at=T0), every_ms=1000), "$.task.runAt"),
        (ScheduleSpec(task=TaskSpec(type="noop", delay_ms=5), every_ms=1000), "$.task.delayMs"),
        (ScheduleSpec(task=TaskSpec(type="noop", parent_id=1), every_ms=1000), "$.task.parentId"),
        (
            ScheduleSpec(task=TaskSpec(type="noop", depends_on=[1]), every_ms=1000),
            "$.task.dependsOn",
        ),
        (
            ScheduleSpec(task=TaskSpec(type="noop", tags={"schedule": "7"}), every_ms=1000),
            "$.task.tags.schedule",
        ),
        (
            ScheduleSpec(
                task=TaskSpec(type="noop", tags={str(i): "x" for i in range(32)}), every_ms=1000
            ),
            "$.task.tags",
        ),
        (ScheduleSpec(task=TaskSpec(type="no spaces"), every_ms=1000), "$.task.type"),
    ],
)
async def test_bad_schedules_are_refused_naming_the_field(
    tmp_path: Path, spec: ScheduleSpec, path: str
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        with pytest.raises(InvalidParams) as err:
            await s.create_schedule(spec)
        assert err.value.data["path"] == path
        assert await s.schedules() == []


async def test_a_payload_too_large_is_refused(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        with pytest.raises(PayloadTooLarge) as err:
            await s.schedule(TaskSpec(type="noop", payload="x" * 2_000_000), every_ms=1000)
        assert err.value.data["path"] == "$.task.payload"
        assert await s.schedules() == []


async def test_a_duplicate_name_is_refused_with_the_existing_id(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        first = await s.schedule(NOOP, every_ms=1000, name="backup")
        with pytest.raises(DuplicateRejected) as err:
            await s.schedule(NOOP, every_ms=5000, name="backup")
        assert err.value.existing_id == first.id
        assert await s.schedules() == [first]


async def test_an_unknown_schedule_is_not_found(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, _sub):
        for call in (s.get_schedule, s.pause_schedule, s.resume_schedule, s.delete_schedule):
            with pytest.raises(ScheduleNotFound):
                await call(42)
            with pytest.raises(ScheduleNotFound):
                await call("nope")
