"""Scheduling policy in the scheduler (PROTOCOL.md "Policy settings", timed pauses, pressure):
one promise per test, on a real SQLite file and a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from taskmill_core import (
    FakeClock,
    InvalidParams,
    Scheduler,
    SchedulerConfig,
    TaskContext,
    TaskSpec,
)
from taskmill_core.types import (
    AgingConfig,
    FairShareConfig,
    RateLimitConfig,
    RateLimitsConfig,
    SchedulerPaused,
    SchedulerPressure,
    SchedulerResumed,
    TaskPreempted,
    TaskStarted,
    ThrottleTierConfig,
    TypeDefaultsConfig,
)

from .helpers import Gate, drain, open_scheduler, recorder, settle

pytestmark = pytest.mark.anyio


def started(events: list[Any]) -> list[int]:
    return [e.id for e in events if isinstance(e, TaskStarted)]


def assert_idle_never_polls(s: Scheduler, clock: FakeClock) -> None:
    ticks = s.statistics()["ticks"]
    clock.advance(3_600_000)
    assert s.statistics()["ticks"] == ticks


# --- rate limits ----------------------------------------------------------------------------


async def test_a_rate_limited_type_spreads_its_starts_and_other_types_go_on(
    tmp_path: Path,
) -> None:
    cfg = SchedulerConfig(
        max_concurrency=8,
        rate_limits=RateLimitsConfig(types={"up": RateLimitConfig(per_second=2)}),
    )
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, sub):
        order, run = recorder()
        s.register("up", run)
        s.register("other", run)
        await s.pause_all()
        ups = [(await s.submit(TaskSpec(type="up", priority=0))).id for _ in range(3)]
        others = [(await s.submit(TaskSpec(type="other", priority=255))).id for _ in range(2)]
        t0 = clock.now_ms()
        await s.resume_all()
        await settle()
        assert sorted(order) == sorted([ups[0], *others])  # the bucket held one token
        assert s.held == {ups[1]: "rateLimited", ups[2]: "rateLimited"}
        # The loop wakes at the next token, exactly: 500 ms per token at 2/s.
        assert clock.now_ms() == t0
        clock.advance(499)
        await settle()
        assert ups[1] not in order  # not a millisecond early
        clock.advance(1)
        await settle()
        assert order[-1] == ups[1]
        clock.advance(500)
        await settle()
        assert order[-1] == ups[2]
        await settle()
        assert_idle_never_polls(s, clock)
        drain(sub)


async def test_rate_limited_work_beyond_the_widest_window_blocks_nobody(tmp_path: Path) -> None:
    cfg = SchedulerConfig(
        max_concurrency=2,
        rate_limits=RateLimitsConfig(groups={"api": RateLimitConfig(per_minute=1)}),
    )
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, _clock, sub):
        order, run = recorder()
        await s.pause_all()
        await s.submit_batch([TaskSpec(type="rec", priority=0, group="api") for _ in range(300)])
        late = (await s.submit(TaskSpec(type="rec", priority=255))).id
        s.register("rec", run)
        await s.resume_all()
        await settle(40)
        assert len(order) == 2  # one token for the whole group, and the idle task
        assert late in order
        drain(sub)


async def test_a_group_bucket_and_a_type_bucket_both_need_a_token(tmp_path: Path) -> None:
    cfg = SchedulerConfig(
        max_concurrency=8,
        rate_limits=RateLimitsConfig(
            types={"up": RateLimitConfig(per_second=10, burst=3)},
            groups={"g": RateLimitConfig(per_second=1)},
        ),
    )
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, _sub):
        order, run = recorder()
        s.register("up", run)
        await s.pause_all()
        a = [(await s.submit(TaskSpec(type="up", group="g"))).id for _ in range(2)]
        b = [(await s.submit(TaskSpec(type="up"))).id for _ in range(2)]
        await s.resume_all()
        await settle()
        # g has one token, up three: one of g, both ungrouped
        assert sorted(order) == sorted([a[0], *b])
        st = await s.status()
        assert st.rate_buckets.types["up"].tokens == 0
        assert st.rate_buckets.groups["g"].next_token_at == clock.now_ms() + 1000
        clock.advance(1000)
        await settle()
        assert order[-1] == a[1]


# --- fair share -----------------------------------------------------------------------------


async def test_two_weighted_groups_share_the_slots_in_proportion(tmp_path: Path) -> None:
    cfg = SchedulerConfig(max_concurrency=4, fair_share=FairShareConfig(weights={"a": 3, "b": 1}))
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, _clock, _sub):
        gate = Gate()
        s.register("g", gate)
        await s.pause_all()
        # b's tasks sit behind a long backlog of a's, beyond the dispatch window
        a = [(await s.submit(TaskSpec(type="g", group="a"))).id for _ in range(40)]
        b = [(await s.submit(TaskSpec(type="g", group="b"))).id for _ in range(40)]
        await s.resume_all()
        await settle()
        assert sorted(gate.started) == sorted(a[:3] + b[:1])
        gate.release(b[0])  # b's slot frees: b gets it back (a has its 3)
        await settle()
        assert gate.started[-1] == b[1]
        gate.release(a[0])
        await settle()
        assert gate.started[-1] == a[3]


# --- aging ----------------------------------------------------------------------------------


async def test_an_aged_background_task_overtakes_newer_normal_ones_at_the_promised_time(
    tmp_path: Path,
) -> None:
    cfg = SchedulerConfig(max_concurrency=1, aging=AgingConfig(after_ms=1000, step_ms=10, limit=64))
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, _sub):
        gate = Gate()
        s.register("g", gate)
        t0 = clock.now_ms()
        first = (await s.submit(TaskSpec(type="g", priority=128))).id
        await settle()
        bg = (await s.submit(TaskSpec(type="g", priority="background"))).id
        # 192 ages one level per 10 ms after 1 s: effective 128 at t0 + 1000 + 640, where
        # it is ahead of normal tasks submitted since (it is older: the lower id).
        clock.advance(1639)
        n1 = (await s.submit(TaskSpec(type="g", priority=128))).id  # a stream of new ones
        gate.release(first)
        await settle()
        assert gate.started[-1] == n1
        info = await s.get(bg)
        assert info.effective_priority == 192 - 63
        clock.advance(1)
        n2 = (await s.submit(TaskSpec(type="g", priority=128))).id
        gate.release(n1)
        await settle()
        assert gate.started[-1] == bg
        gate.release(bg)
        await settle()
        assert gate.started[-1] == n2
        assert clock.now_ms() == t0 + 1640


async def test_an_aged_task_never_preempts(tmp_path: Path) -> None:
    cfg = SchedulerConfig(
        max_concurrency=1,
        preempt_priority=64,
        min_run_ms=0,
        aging=AgingConfig(after_ms=0, step_ms=1, limit=0),
    )
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, sub):
        gate = Gate()
        s.register("g", gate)
        running = (await s.submit(TaskSpec(type="g", priority=128))).id
        await settle()
        aged = (await s.submit(TaskSpec(type="g", priority=192))).id
        clock.advance(10_000)  # long aged to 0, more urgent than preemptPriority
        await s.resume_all()  # (a wake-up)
        await settle()
        assert not [e for e in drain(sub) if isinstance(e, TaskPreempted)]
        assert (await s.get(aged)).effective_priority == 0
        gate.release(running)
        await settle()
        assert gate.started[-1] == aged


async def test_aging_counts_from_when_a_task_became_runnable_again(tmp_path: Path) -> None:
    cfg = SchedulerConfig(aging=AgingConfig(after_ms=0, step_ms=100, limit=0))
    async with open_scheduler(tmp_path / "t.db", cfg) as (s, clock, _sub):
        r = await s.submit(TaskSpec(type="nobody", priority=200))
        clock.advance(1000)
        assert (await s.get(r.id)).effective_priority == 190
        await s.pause(r.id)
        clock.advance(5000)
        await s.resume(r.id)
        assert (await s.get(r.id)).effective_priority is None  # due from the resume
        clock.advance(300)
        assert (await s.get(r.id)).effective_priority == 197


# --- pressure and throttle tiers ------------------------------------------------------------


async def test_pressure_holds_back_exactly_its_tiers_and_lapses_after_its_ttl(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db", SchedulerConfig(max_concurrency=8)) as (
        s,
        clock,
        sub,
    ):
        order, run = recorder()
        s.set_pressure("battery", 0.75, ttl_ms=5000)
        s.set_pressure("metered", 0.5, ttl_ms=2000)
        await settle()
        ev = [e for e in drain(sub) if isinstance(e, SchedulerPressure)]
        assert [e.holding for e in ev] == [[192, 128]]
        assert ev[0].sources == {"battery": 0.75}
        ids = {
            p: (await s.submit(TaskSpec(type="rec", priority=p))).id for p in (64, 127, 128, 200)
        }
        s.register("rec", run)
        await settle()
        assert sorted(order) == sorted([ids[64], ids[127]])
        assert s.held == {ids[128]: "throttled", ids[200]: "throttled"}  # (the metrics seam)
        st = await s.status()
        assert st.pressure.level == 0.75
        assert st.pressure.sources == {"battery": 0.75, "metered": 0.5}
        clock.advance(4999)
        await settle()
        assert len(order) == 2
        clock.advance(1)  # battery lapses; metered lapsed at 2000: nothing holds
        await settle()
        assert sorted(order) == sorted(ids.values())
        ev = [e for e in drain(sub) if isinstance(e, SchedulerPressure)]
        assert [e.holding for e in ev] == [[]]
        assert_idle_never_polls(s, clock)


async def test_a_lower_pressure_level_holds_only_the_lower_tier(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, sub):
        order, run = recorder()
        s.set_pressure("game", 0.5)
        ids = {p: (await s.submit(TaskSpec(type="rec", priority=p))).id for p in (128, 191, 192)}
        s.register("rec", run)
        await settle()
        assert sorted(order) == sorted([ids[128], ids[191]])
        s.set_pressure("game", 0)  # removed
        await settle()
        assert order[-1] == ids[192]
        assert [e.holding for e in drain(sub) if isinstance(e, SchedulerPressure)] == [[192], []]


async def test_configured_tiers_replace_the_defaults(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        order, run = recorder()
        await s.configure(throttle=[{"minPriority": 100, "level": 0.2}])
        s.set_pressure("x", 0.3)
        ids = {p: (await s.submit(TaskSpec(type="rec", priority=p))).id for p in (99, 100)}
        s.register("rec", run)
        await settle()
        assert order == [ids[99]]
        await s.configure(throttle=[])  # no tiers: nothing is held
        await settle()
        assert order[-1] == ids[100]
        cfg = await s.configure(throttle=None)  # back to the default tiers
        assert [(t.min_priority, t.level) for t in cfg.throttle] == [(192, 0.5), (128, 0.75)]


# --- timed pauses ---------------------------------------------------------------------------


async def test_a_timed_pause_ends_by_itself(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, sub):
        order, run = recorder()
        s.register("rec", run)
        t0 = clock.now_ms()
        await s.pause_all(type="rec", for_ms=60_000)
        r = await s.submit(TaskSpec(type="rec"))
        await settle()
        paused = [e for e in drain(sub) if isinstance(e, SchedulerPaused)]
        assert paused == [SchedulerPaused(type="rec", until_at=t0 + 60_000)]
        assert [(p.type, p.until_at) for p in (await s.status()).pauses] == [("rec", t0 + 60_000)]
        clock.advance(59_999)
        await settle()
        assert order == []
        clock.advance(1)
        await settle()
        assert order == [r.id]
        assert [e for e in drain(sub) if isinstance(e, SchedulerResumed)] == [
            SchedulerResumed(type="rec")
        ]
        assert (await s.status()).pauses == []


async def test_pausing_again_replaces_the_end(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        await s.pause_all(for_ms=1000)
        await s.pause_all()  # no end: until resumed
        clock.advance(5000)
        await settle()
        st = await s.status()
        assert st.paused and st.pauses[0].until_at is None


async def test_a_timed_pause_that_ended_while_closed_lifts_at_the_next_open(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        await s.pause_all(group="net", until=clock.now_ms() + 1000)
        end = clock.now_ms() + 1000
    later = FakeClock(end + 5)
    async with open_scheduler(tmp_path / "t.db", clock=later) as (s, _clock, sub):
        await settle()
        st = await s.status()
        assert st.paused_groups == []
        assert SchedulerResumed(group="net") in drain(sub)


async def test_bad_pause_ends_are_refused(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, clock, _sub):
        with pytest.raises(InvalidParams) as e1:
            await s.pause_all(until=clock.now_ms())
        assert e1.value.path == "$.untilAt"
        with pytest.raises(InvalidParams) as e2:
            await s.pause_all(until=clock.now_ms() + 5, for_ms=5)
        assert e2.value.path == "$.forMs"
        assert not (await s.status()).paused


# --- type defaults --------------------------------------------------------------------------


async def test_type_defaults_fill_what_a_submit_left_out_and_a_given_field_wins(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        await s.configure(
            type_defaults={"up": {"priority": "background", "maxRetries": 7, "group": "net"}}
        )
        a = await s.submit(TaskSpec(type="up"))
        assert a.task is not None
        assert (a.task.priority, a.task.max_retries, a.task.group) == (192, 7, "net")
        b = await s.submit(TaskSpec(type="up", priority=10, group="other"))
        assert b.task is not None
        assert (b.task.priority, b.task.max_retries, b.task.group) == (10, 7, "other")
        # a Python caller names a field it sets to the global default
        c = await s.submit(TaskSpec(type="up", priority=128), given={"priority"})
        assert c.task is not None and c.task.priority == 128
        batch = await s.submit_batch([TaskSpec(type="up"), TaskSpec(type="down")])
        assert (await s.get(batch[0].id)).priority == 192
        assert (await s.get(batch[1].id)).priority == 128


async def test_type_defaults_apply_to_children(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        await s.configure(type_defaults={"child": {"priority": 7}})
        kids: list[int] = []

        async def parent(ctx: TaskContext, payload: Any) -> Any:
            r = await ctx.submit_child(TaskSpec(type="child"))
            kids.append(r.id)
            return {}

        s.register("parent", parent)
        await s.submit(TaskSpec(type="parent"))
        await settle()
        assert (await s.get(kids[0])).priority == 7


# --- settings -------------------------------------------------------------------------------


POLICY = {
    "rate_limits": {
        "types": {"up": {"perSecond": 2, "burst": 3}},
        "groups": {"x": {"perMinute": 5}},
    },
    "aging": {"afterMs": 1000, "stepMs": 500, "limit": 32},
    "fair_share": {"weights": {"a": 2}, "defaultWeight": 1, "minSlots": {"b": 1}},
    "throttle": [{"minPriority": 100, "level": 0.4}],
    "type_defaults": {"up": {"priority": 200, "ioCost": {"netTx": 100}}},
}


async def test_every_policy_setting_survives_a_restart_and_null_removes_it(
    tmp_path: Path,
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        cfg = await s.configure(**POLICY)
        before = msgspec.to_builtins(cfg)
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        assert msgspec.to_builtins(s.config) == before
        assert s.config.aging == AgingConfig(after_ms=1000, step_ms=500, limit=32)
        cfg = await s.configure(
            rate_limits=None, aging=None, fair_share=None, throttle=None, type_defaults=None
        )
        assert (cfg.rate_limits, cfg.aging, cfg.fair_share, cfg.type_defaults) == (None,) * 4
    # removed also against a config the app opens with
    opener = SchedulerConfig(aging=AgingConfig(after_ms=1, step_ms=1))
    async with open_scheduler(tmp_path / "t.db", opener) as (s, _clock, _sub):
        assert s.config.aging is None
        assert len(s.config.throttle) == 2


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"rate_limits": {"types": {"up": {"perSecond": 0}}}}, "$.rateLimits.types.up.perSecond"),
        ({"rate_limits": {"types": {"up": {"perSecond": -1}}}}, "$.rateLimits.types.up.perSecond"),
        (
            {"rate_limits": {"groups": {"g": {"perSecond": 1, "perMinute": 2}}}},
            "$.rateLimits.groups.g",
        ),
        ({"rate_limits": {"types": {"up": {"burst": 2}}}}, "$.rateLimits.types.up"),
        ({"throttle": [{"minPriority": 1, "level": 0}]}, "$.throttle[0].level"),
        ({"throttle": [{"minPriority": 1, "level": 1.5}]}, "$.throttle[0].level"),
        ({"aging": {"afterMs": 0, "stepMs": 0}}, "$.aging.stepMs"),
        ({"aging": {"afterMs": 0, "stepMs": 1, "speed": 2}}, "$.aging.speed"),
        ({"fair_share": {"weights": {"a": 0}}}, "$.fairShare.weights.a"),
        ({"type_defaults": {"up": {"payload": 1}}}, "$.typeDefaults.up.payload"),
        (
            {"type_defaults": {"a": {}, "http.upload": {"priority": 256}}},
            '$.typeDefaults["http.upload"].priority',
        ),
    ],
)
async def test_bad_policy_settings_are_refused_naming_the_field_and_change_nothing(
    tmp_path: Path, change: dict[str, Any], path: str
) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        before = msgspec.to_builtins(s.config)
        with pytest.raises(InvalidParams) as e:
            # a valid setting in the same call is not applied either
            await s.configure(max_concurrency=9, group_limits={"z": 1}, **change)
        assert e.value.path == path
        assert msgspec.to_builtins(s.config) == before
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        assert msgspec.to_builtins(s.config) == before


async def test_policy_settings_may_be_given_as_structs(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        cfg = await s.configure(
            throttle=[ThrottleTierConfig(min_priority=100, level=0.5)],
            rate_limits=RateLimitsConfig(types={"up": RateLimitConfig(per_minute=6)}),
            type_defaults={"up": TypeDefaultsConfig(priority=5)},
        )
        assert cfg.throttle == [ThrottleTierConfig(min_priority=100, level=0.5)]
        assert cfg.type_defaults == {"up": TypeDefaultsConfig(priority=5)}


async def test_unknown_types_and_groups_in_settings_are_fine(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        cfg = await s.configure(
            rate_limits={
                "types": {"later": {"perSecond": 1}},
                "groups": {"nobody": {"perSecond": 1}},
            }
        )
        assert cfg.rate_limits is not None and "later" in cfg.rate_limits.types


async def test_bad_pressure_is_refused(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _clock, _sub):
        for args, path in [(("", 0.5), "$.source"), (("x", 1.5), "$.level")]:
            with pytest.raises(InvalidParams) as e:
                s.set_pressure(*args)
            assert e.value.path == path
        with pytest.raises(InvalidParams):
            s.set_pressure("x", 0.5, ttl_ms=0)
        assert (await s.status()).pressure.sources == {}
