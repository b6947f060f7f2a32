"""The pure policy pieces (:mod:`taskmill_core.policy`), with plain data and explicit times.

Rate buckets, aging, fair-share allocation, throttle tiers and type defaults are each a value
and a function of ``now``; these tests state each promise of PROTOCOL.md "Policy settings" as
an example, and the ones that hold for every input as hypothesis properties.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmill_core.policy import (
    DEFAULT_TIERS,
    Aging,
    Bucket,
    FairOrder,
    FairShare,
    Pressure,
    RateBuckets,
    RateLimit,
    RateLimits,
    Throttle,
    ThrottleTier,
    TypeDefaults,
    allocate,
    apply_type_defaults,
    given_fields,
)
from taskmill_core.types import Backoff, IoBytes, TaskSpec

T0 = 1_700_000_000_000  # an epoch-ms "now"; the arithmetic must not care how large it is


# --- rate limits: token buckets ---------------------------------------------------------------


def test_a_rate_limit_has_exactly_one_rate_and_a_burst_of_at_least_one() -> None:
    with pytest.raises(ValueError):
        RateLimit()
    with pytest.raises(ValueError):
        RateLimit(per_second=1, per_minute=60)
    with pytest.raises(ValueError):
        RateLimit(per_second=0)
    with pytest.raises(ValueError):
        RateLimit(per_minute=-1)
    with pytest.raises(ValueError):
        RateLimit(per_second=1, burst=0)


def test_the_rate_is_an_exact_fraction_of_tokens_per_ms() -> None:
    assert (RateLimit(per_second=2).num, RateLimit(per_second=2).den) == (1, 500)
    assert (RateLimit(per_minute=30).num, RateLimit(per_minute=30).den) == (1, 2000)
    # 0.1 per second is exactly one token per 10 s, not the binary float's neighbour
    assert (RateLimit(per_second=0.1).num, RateLimit(per_second=0.1).den) == (1, 10_000)
    assert (RateLimit(per_second=3).num, RateLimit(per_second=3).den) == (3, 1000)


def test_a_bucket_starts_full() -> None:
    b = Bucket(RateLimit(per_second=1, burst=3))
    assert b.tokens(T0) == 3
    assert b.next_token_at(T0) == T0


def test_a_burst_is_spent_at_once_then_tokens_come_at_the_rate() -> None:
    b: Bucket | None = Bucket(RateLimit(per_second=2, burst=3))
    for _ in range(3):
        assert b is not None
        b = b.take(T0)
    assert b is not None
    assert b.take(T0) is None
    assert b.tokens(T0) == 0
    assert b.next_token_at(T0) == T0 + 500
    assert b.take(T0 + 499) is None
    b = b.take(T0 + 500)
    assert b is not None and b.next_token_at(T0 + 500) == T0 + 1000


def test_tokens_refill_fractionally_and_stop_at_the_burst() -> None:
    b = Bucket(RateLimit(per_second=1, burst=2)).take(T0)
    assert b is not None
    assert b.tokens(T0 + 250) == 1.25
    assert b.tokens(T0 + 1000) == 2
    assert b.tokens(T0 + 60_000) == 2  # never more than the burst, however long it rests


def test_a_non_integer_interval_rounds_the_wake_time_up_to_the_first_ms_with_a_token() -> None:
    # 3 per second: a token every 333.33 ms; the one after T0 exists from T0 + 333.33...
    b = Bucket(RateLimit(per_second=3)).take(T0)
    assert b is not None
    assert b.next_token_at(T0) == T0 + 334
    assert b.take(T0 + 333) is None
    after = b.take(T0 + 334)
    assert after is not None
    # No drift while the bucket has room: the 3rd token after an empty T0 is due at T0 + 1000,
    # though the first two could only be taken on the whole ms after they appeared.
    b3: Bucket | None = Bucket(RateLimit(per_second=3, burst=3))
    for t in (T0, T0, T0, T0 + 334, T0 + 667):
        assert b3 is not None
        b3 = b3.take(t)
    assert b3 is not None and b3.next_token_at(T0 + 667) == T0 + 1000


def test_a_bucket_is_never_mutated_taking_returns_the_new_state() -> None:
    b = Bucket(RateLimit(per_second=1))
    after = b.take(T0)
    assert b.tokens(T0) == 1 and after is not None and after.tokens(T0) == 0


def test_rate_buckets_need_a_token_in_both_the_type_and_the_group_bucket() -> None:
    limits = RateLimits(
        types={"fetch": RateLimit(per_second=1)}, groups={"net": RateLimit(per_second=0.5)}
    )
    rb = RateBuckets.full(limits)
    assert rb.ready_at("fetch", "net", T0) == T0
    rb = rb.take("fetch", "net", T0)
    assert rb.ready_at("fetch", "net", T0) == T0 + 2000  # the slower of the two
    assert rb.ready_at("fetch", None, T0) == T0 + 1000  # no group: the type bucket alone
    assert rb.ready_at("other", "net", T0) == T0 + 2000
    assert rb.ready_at("other", None, T0) == T0  # not limited at all
    with pytest.raises(ValueError):
        rb.take("fetch", None, T0)


def test_unlimited_starts_leave_the_buckets_object_untouched() -> None:
    rb = RateBuckets.full(RateLimits(types={"a": RateLimit(per_second=1)}))
    assert rb.take("b", "g", T0) is rb


def test_reconfiguring_keeps_the_state_of_unchanged_limits_and_fills_new_ones() -> None:
    limits = RateLimits(types={"a": RateLimit(per_second=1), "b": RateLimit(per_second=2)})
    rb = RateBuckets.full(limits).charge([("a", None), ("b", None)], T0)
    changed = RateLimits(types={"a": RateLimit(per_second=1), "b": RateLimit(per_second=4)})
    again = rb.reconfigure(changed)
    assert again.types["a"].tokens(T0) == 0  # same limit: no free refill by configuring
    assert again.types["b"].tokens(T0) == 1  # a changed limit starts full
    assert "a" not in rb.reconfigure(RateLimits()).types


rates = st.one_of(
    st.builds(RateLimit, per_second=st.floats(0.01, 100), burst=st.integers(1, 5)),
    st.builds(RateLimit, per_minute=st.floats(0.5, 6000), burst=st.integers(1, 5)),
)


@settings(max_examples=200)
@given(rates, st.lists(st.integers(0, 20_000), min_size=1, max_size=60))
def test_a_rate_limit_is_never_exceeded_over_any_window(limit: RateLimit, gaps: list[int]) -> None:
    # Try to take at each time; over any window [a, b] the takes are at most burst + rate*(b-a).
    b = Bucket(limit)
    taken: list[int] = []
    t = T0
    for gap in gaps:
        t += gap
        after = b.take(t)
        if after is not None:
            b = after
            taken.append(t)
    for i in range(len(taken)):
        for j in range(i, len(taken)):
            window = taken[j] - taken[i]
            allowed = limit.burst + window * limit.num / limit.den
            assert j - i + 1 <= allowed + 1e-9


@settings(max_examples=200)
@given(rates, st.lists(st.integers(0, 5000), min_size=1, max_size=30), st.integers(0, 5000))
def test_next_token_at_is_exactly_the_first_ms_a_take_succeeds(
    limit: RateLimit, gaps: list[int], probe: int
) -> None:
    b = Bucket(limit)
    t = T0
    for gap in gaps:
        t += gap
        b = b.take(t) or b
    now = t + probe
    at = b.next_token_at(now)
    assert at >= now
    assert b.take(at) is not None  # the token is there then...
    if at > now:
        assert b.take(at - 1) is None  # ...and not a millisecond before: held no longer
        assert b.tokens(at - 1) < 1 <= b.tokens(at)


# --- aging ------------------------------------------------------------------------------------


def test_aging_starts_after_after_ms_and_moves_one_level_per_whole_step() -> None:
    aging = Aging(after_ms=10_000, step_ms=1000, limit=64)
    due = T0
    assert aging.effective(200, due, T0 + 10_000) == 200
    assert aging.effective(200, due, T0 + 10_999) == 200
    assert aging.effective(200, due, T0 + 11_000) == 199
    assert aging.effective(200, due, T0 + 15_500) == 195


def test_aging_never_passes_the_limit() -> None:
    aging = Aging(after_ms=0, step_ms=1, limit=64)
    assert aging.effective(200, T0, T0 + 10**9) == 64
    assert aging.next_step_at(200, T0, T0 + 10**9) is None


def test_a_task_at_or_above_the_limit_does_not_age() -> None:
    aging = Aging(after_ms=0, step_ms=1, limit=64)
    assert aging.effective(64, T0, T0 + 10**6) == 64
    assert aging.effective(10, T0, T0 + 10**6) == 10
    assert aging.next_step_at(64, T0, T0) is None


def test_the_next_aging_step_is_when_the_effective_priority_next_drops() -> None:
    aging = Aging(after_ms=10_000, step_ms=1000, limit=64)
    assert aging.next_step_at(200, T0, T0) == T0 + 11_000
    assert aging.next_step_at(200, T0, T0 + 11_000) == T0 + 12_000
    assert aging.next_step_at(65, T0, T0 + 11_000) is None  # it stands at the limit now


def test_aging_counts_from_when_the_task_last_became_runnable() -> None:
    aging = Aging(after_ms=0, step_ms=1000)
    assert aging.effective(128, due_since=T0 + 5000, now=T0 + 6000) == 127
    assert aging.effective(128, due_since=T0 + 9000, now=T0 + 6000) == 128  # not due yet


def test_aging_settings_are_validated() -> None:
    for bad in ((-1, 1, 64), (0, 0, 64), (0, 1, 256)):
        with pytest.raises(ValueError):
            Aging(*bad)


@given(
    st.integers(0, 255),
    st.integers(0, 100_000),
    st.integers(1, 10_000),
    st.integers(0, 255),
    st.integers(0, 10**7),
    st.integers(0, 10**6),
)
def test_aging_is_monotone_capped_and_wakes_exactly_at_its_next_step(
    priority: int, after: int, step: int, limit: int, waited: int, more: int
) -> None:
    aging = Aging(after, step, limit)
    now = T0 + waited
    p = aging.effective(priority, T0, now)
    assert p <= priority  # never less urgent than stored
    assert p >= min(priority, limit)  # never more urgent than the limit
    assert aging.effective(priority, T0, now + more) <= p  # monotone in time
    nxt = aging.next_step_at(priority, T0, now)
    if nxt is None:
        assert aging.effective(priority, T0, now + more) == p
    else:
        assert nxt > now
        assert aging.effective(priority, T0, nxt - 1) == p
        assert aging.effective(priority, T0, nxt) == p - 1


# --- fair share -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    id: int
    priority: int
    group: str | None


def tasks(group: str | None, *ids: int, priority: int = 128) -> list[Task]:
    return [Task(i, priority, group) for i in ids]


def ids(chosen: list[Task]) -> list[int]:
    return [t.id for t in chosen]


def test_a_freed_slot_goes_to_the_group_with_the_lowest_running_per_weight() -> None:
    cands = tasks("a", 1, 2) + tasks("b", 3, 4)
    # a: 2 running / weight 1 = 2; b: 3 running / weight 3 = 1 -> b
    out = allocate(cands, ["a", "a", "b", "b", "b"], FairShare(weights={"b": 3}), free=1)
    assert ids(out) == [3]


def test_slots_alternate_between_equal_groups_whatever_the_priority_order() -> None:
    # all of a's tasks come first in priority order; fair share still interleaves the groups
    cands = tasks("a", 1, 2, 3, 4) + tasks("b", 5, 6, 7, 8)
    assert ids(allocate(cands, [], FairShare(), free=4)) == [1, 5, 2, 6]


def test_within_a_group_priority_order_holds() -> None:
    cands = [Task(1, 200, "a"), Task(2, 100, "a")]
    order = sorted(cands, key=lambda t: (t.priority, t.id))
    assert ids(allocate(order, [], FairShare(), free=1)) == [2]


def test_tasks_without_a_group_form_one_group_with_the_default_weight() -> None:
    cands = tasks(None, 1, 2, 3) + tasks("a", 4, 5, 6)
    out = allocate(cands, [], FairShare(weights={"a": 1}, default_weight=2), free=3)
    assert Counter(t.group for t in out) == {None: 2, "a": 1}


def test_min_slots_are_met_before_weights_count() -> None:
    cands = tasks("big", 1, 2, 3, 4) + tasks("small", 5, 6, 7)
    fair = FairShare(weights={"big": 10}, min_slots={"small": 2})
    out = allocate(cands, [], fair, free=3)
    assert ids(out) == [5, 6, 1]  # small gets its two slots, then weights decide


def test_a_slot_no_group_can_use_goes_to_the_most_urgent_remaining_task() -> None:
    # b is entitled to the slot (fewer running per weight) but has no candidate: a takes it
    out = allocate(tasks("a", 1, 2), ["a", "a", "a"], FairShare(), free=2)
    assert ids(out) == [1, 2]


def test_group_limits_still_cap_groups_under_fair_share() -> None:
    cands = tasks("a", 1, 2, 3) + tasks("b", 4)
    out = allocate(cands, [], FairShare(weights={"a": 5}), free=4, group_limits={"a": 1})
    assert ids(out) == [1, 4]


def test_urgent_tasks_are_exempt_go_first_and_count_toward_their_group() -> None:
    cands = [*tasks("a", 1, 2), Task(3, 10, "b"), Task(4, 64, "b"), *tasks("b", 5)]
    order = sorted(cands, key=lambda t: (t.priority, t.id))
    out = allocate(order, [], FairShare(), free=3, preempt_priority=64)
    # 3 and 4 (exempt) first; b then runs 2 against a's 0, so the next slot is a's
    assert ids(out) == [3, 4, 1]


def test_fair_order_repicks_when_a_candidate_does_not_start() -> None:
    order = FairOrder(tasks("a", 1, 2) + tasks("b", 3), [], FairShare(), preempt_priority=64)
    assert next(order).id == 1  # not started (held back elsewhere): a is still the lowest
    assert next(order).id == 2
    order.started(Task(2, 128, "a"))
    assert next(order).id == 3
    assert list(order) == []


@settings(max_examples=200)
@given(
    st.dictionaries(st.sampled_from("abcde"), st.integers(1, 5), min_size=1),
    st.integers(1, 40),
)
def test_fair_share_fills_slots_in_proportion_to_the_weights(
    weights: dict[str, int], free: int
) -> None:
    # every group has more work than slots: the result is a water-filling of the weights
    cands = [Task(g_i * 100 + k, 128, g) for g_i, g in enumerate(weights) for k in range(free)]
    cands.sort(key=lambda t: t.id)
    out = allocate(cands, [], FairShare(weights=weights), free=free)
    assert len(out) == free
    n = Counter(t.group for t in out)
    for g in weights:
        for h in weights:
            # g's last slot was taken while its share was no higher than h's then
            if n[g]:
                assert (n[g] - 1) / weights[g] <= n[h] / weights[h]


def test_fair_share_converges_to_the_weights_under_churn() -> None:
    # 8 slots all held by group a; b (weight 3) arrives. Each finished task frees a slot that
    # fair share hands out: once a's initial runs are over, the split is 2 : 6 and stays.
    fair = FairShare(weights={"a": 1, "b": 3})
    running: list[str | None] = ["a"] * 8
    next_id = 1
    for _ in range(40):
        running.pop(0)  # the oldest run ends
        cands = [Task(next_id, 128, "a"), Task(next_id + 1, 128, "b")]
        next_id += 2
        (chosen,) = allocate(cands, running, fair, free=1)
        running.append(chosen.group)
    assert Counter(running) == {"a": 2, "b": 6}


# --- throttle tiers and pressure --------------------------------------------------------------


def test_the_pressure_level_is_the_maximum_of_the_live_sources() -> None:
    p = Pressure().set("battery", 0.5, T0).set("game", 0.8, T0)
    assert p.level(T0) == 0.8
    assert p.live(T0) == {"battery": 0.5, "game": 0.8}


def test_a_source_lapses_ttl_ms_after_it_was_last_set() -> None:
    p = Pressure().set("battery", 0.5, T0, ttl_ms=1000)
    assert p.level(T0 + 999) == 0.5
    assert p.level(T0 + 1000) == 0.0
    assert p.next_lapse_at(T0) == T0 + 1000
    p = p.set("battery", 0.5, T0 + 900, ttl_ms=1000)  # set again: lapses later
    assert p.level(T0 + 1500) == 0.5 and p.next_lapse_at(T0 + 1500) == T0 + 1900


def test_level_zero_removes_a_source() -> None:
    p = Pressure().set("battery", 0.9, T0).set("battery", 0, T0 + 1)
    assert p.sources == {} and p.level(T0 + 1) == 0.0 and p.next_lapse_at(T0 + 1) is None


def test_pressure_input_is_validated() -> None:
    with pytest.raises(ValueError):
        Pressure().set("x", 1.5, T0)
    with pytest.raises(ValueError):
        Pressure().set("x", 0.5, T0, ttl_ms=0)
    with pytest.raises(ValueError):
        ThrottleTier(300, 0.5)
    with pytest.raises(ValueError):
        ThrottleTier(128, 0)


def test_default_tiers_hold_background_at_half_and_normal_at_three_quarters() -> None:
    assert Pressure().throttle(T0) == Throttle((), None, None)
    half = Pressure().set("s", 0.5, T0).throttle(T0)
    assert half.holding == (192,) and half.holds(192) and half.holds(255)
    assert not half.holds(191)
    most = Pressure().set("s", 0.75, T0).throttle(T0)
    assert most.holding == (192, 128) and most.holds(128) and not most.holds(127)
    assert (ThrottleTier(192, 0.5), ThrottleTier(128, 0.75)) == DEFAULT_TIERS


def test_no_tiers_means_no_throttle() -> None:
    assert not Pressure().set("s", 1.0, T0).throttle(T0, tiers=()).holds(255)


def test_the_throttle_says_when_its_holding_set_next_changes() -> None:
    p = (
        Pressure()
        .set("game", 0.8, T0, ttl_ms=1000)  # holds 192 and 128 until T0 + 1000
        .set("battery", 0.6, T0, ttl_ms=5000)  # then 192 alone until T0 + 5000
        .set("metered", 0.1, T0, ttl_ms=500)  # lapses first but changes nothing
    )
    th = p.throttle(T0)
    assert th.holding == (192, 128) and th.until == T0 + 1000
    later = p.throttle(T0 + 1000)
    assert later.holding == (192,) and later.until == T0 + 5000
    assert p.throttle(T0 + 5000) == Throttle((), None, None)


def test_a_lapse_that_leaves_the_level_in_the_same_tiers_is_not_a_change() -> None:
    p = Pressure().set("a", 0.6, T0, ttl_ms=1000).set("b", 0.55, T0, ttl_ms=3000)
    assert p.throttle(T0).until == T0 + 3000


# --- type defaults ----------------------------------------------------------------------------

DEFAULTS = {
    "thumb": TypeDefaults(
        priority=192,
        max_retries=5,
        backoff=Backoff(kind="constant", initial_ms=500),
        timeout_ms=30_000,
        ttl_ms=600_000,
        group="media",
        io_cost=IoBytes(disk_read=1000),
    )
}


def test_fields_left_out_take_the_type_defaults() -> None:
    spec = apply_type_defaults(TaskSpec(type="thumb"), DEFAULTS, given=frozenset())
    assert spec.priority == 192 and spec.max_retries == 5
    assert spec.backoff == Backoff(kind="constant", initial_ms=500)
    assert (spec.timeout_ms, spec.ttl_ms, spec.group) == (30_000, 600_000, "media")
    assert spec.io_cost == IoBytes(disk_read=1000)


def test_a_given_field_wins_even_when_it_equals_the_global_default() -> None:
    raw = b'{"type": "thumb", "priority": 128, "maxRetries": 3, "group": null}'
    spec = msgspec.json.decode(raw, type=TaskSpec)
    given = given_fields(msgspec.json.decode(raw, type=dict[str, msgspec.Raw]))
    assert given == {"priority", "max_retries", "group"}
    out = apply_type_defaults(spec, DEFAULTS, given)
    assert (out.priority, out.max_retries, out.group) == (128, 3, None)
    assert out.timeout_ms == 30_000  # left out: the type's


def test_backoff_and_io_cost_are_taken_whole() -> None:
    raw = b'{"type": "thumb", "ioCost": {"netRx": 5}}'
    given = given_fields(msgspec.json.decode(raw, type=dict[str, msgspec.Raw]))
    out = apply_type_defaults(msgspec.json.decode(raw, type=TaskSpec), DEFAULTS, given)
    assert out.io_cost == IoBytes(net_rx=5)  # not merged with the default's diskRead
    assert out.backoff == Backoff(kind="constant", initial_ms=500)


def test_a_type_without_defaults_is_returned_as_is() -> None:
    spec = TaskSpec(type="other")
    assert apply_type_defaults(spec, DEFAULTS, frozenset()) is spec
    partial = {"other": TypeDefaults()}
    assert apply_type_defaults(spec, partial, frozenset()) is spec


def test_the_submit_is_never_mutated() -> None:
    spec = TaskSpec(type="thumb")
    apply_type_defaults(spec, DEFAULTS, frozenset())
    assert spec.priority == 128 and spec.group is None


def test_only_defaultable_wire_keys_count_as_given() -> None:
    assert given_fields({"type": "x", "payload": 1, "ttlMs": 5, "ioCost": {}}) == {
        "ttl_ms",
        "io_cost",
    }
