"""The pure dispatch decision, exercised with plain data (no database, no event loop)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from taskmill_core.dispatch import Candidate, Limits, Policy, RunningTask, decide
from taskmill_core.policy import (
    Aging,
    FairShare,
    Pressure,
    RateBuckets,
    RateLimit,
    RateLimits,
    ThrottleTier,
)


def cands(*specs: tuple[int, int]) -> list[Candidate]:
    return [Candidate(id=i, type="t", priority=p) for i, p in specs]


def run(i: int, p: int, started: int = 0, **kw: object) -> RunningTask:
    return RunningTask(i, "t", p, None, started, **kw)  # type: ignore[arg-type]


def test_fills_free_slots_in_candidate_order() -> None:
    d = decide(cands((1, 10), (2, 20), (3, 30)), [run(9, 0)], Limits(max_concurrency=3), now=0)
    assert [c.id for c in d.start] == [1, 2] and d.preempt == []


def test_no_preemption_while_a_slot_is_free() -> None:
    d = decide(cands((1, 0)), [run(9, 255, started=-10_000)], Limits(max_concurrency=2), now=0)
    assert [c.id for c in d.start] == [1] and d.preempt == []


def test_preempts_least_urgent_eligible_victim() -> None:
    running = [run(7, 100, started=-5000), run(8, 200, started=-5000), run(9, 150, -5000)]
    d = decide(cands((1, 10)), running, Limits(max_concurrency=3), now=0)
    assert d.start == [] and d.preempt == [(8, 1)]


def test_victim_must_be_strictly_less_urgent() -> None:
    d = decide(cands((1, 64)), [run(9, 64, started=-5000)], Limits(max_concurrency=1), now=0)
    assert d.preempt == []


def test_only_urgent_candidates_preempt() -> None:
    limits = Limits(max_concurrency=1, preempt_priority=64)
    assert decide(cands((1, 65)), [run(9, 255, -5000)], limits, now=0).preempt == []
    assert decide(cands((1, 64)), [run(9, 255, -5000)], limits, now=0).preempt == [(9, 1)]


def test_min_run_time_delays_preemption_and_sets_a_timer() -> None:
    limits = Limits(max_concurrency=1, min_run_ms=1000)
    d = decide(cands((1, 0)), [run(9, 255, started=-400)], limits, now=0)
    assert d.preempt == [] and d.wake_at == 600


def test_no_second_victim_for_a_candidate_already_being_served() -> None:
    running = [run(8, 200, -5000, interrupting=True, preempted_for=1), run(9, 200, -5000)]
    d = decide(cands((1, 0)), running, Limits(max_concurrency=2), now=0)
    assert d.preempt == [] and d.start == []


def test_two_urgent_candidates_take_two_distinct_victims() -> None:
    running = [run(8, 200, -5000), run(9, 210, -5000)]
    d = decide(cands((1, 0), (2, 5)), running, Limits(max_concurrency=2), now=0)
    assert d.preempt == [(9, 1), (8, 2)]


def test_group_and_type_limits_skip_candidates_without_blocking_others() -> None:
    limits = Limits(max_concurrency=4, group_limits={"net": 1}, type_limits={"solo": 1})
    running = [RunningTask(9, "solo", 100, "net", 0)]
    candidates = [
        Candidate(1, "t", 10, "net"),
        Candidate(2, "solo", 10, None),
        Candidate(3, "t", 20, None),
    ]
    d = decide(candidates, running, limits, now=0)
    assert [c.id for c in d.start] == [3]


def test_admission_hook_defers_without_taking_a_slot() -> None:
    d = decide(
        cands((1, 10), (2, 20)), [], Limits(max_concurrency=1), now=0, admit=lambda c: c.id != 1
    )
    assert [c.id for c in d.start] == [2] and d.deferred == 1


# --- why a candidate waits --------------------------------------------------------------------


def test_each_held_back_candidate_says_why_it_waits() -> None:
    limits = Limits(max_concurrency=4, group_limits={"net": 1}, type_limits={"solo": 1})
    running = [RunningTask(9, "solo", 100, "net", 0)]
    candidates = [
        Candidate(1, "t", 10, "net"),
        Candidate(2, "solo", 10, None),
        Candidate(3, "t", 20, None),
        Candidate(4, "t", 30, None),
    ]
    d = decide(candidates, running, limits, now=0, admit=lambda c: c.id != 3)
    assert [c.id for c in d.start] == [4]
    assert d.held == {1: "groupLimit", 2: "typeLimit", 3: "ioDeferred"}


# --- policy: aging ----------------------------------------------------------------------------

AGING = Policy(aging=Aging(after_ms=0, step_ms=1000, limit=64))


def test_without_a_policy_or_with_an_empty_one_the_decision_is_the_same() -> None:
    running = [run(8, 200, -5000), run(9, 210, -5000)]
    args = (cands((1, 0), (2, 5), (3, 100)), running, Limits(max_concurrency=2), 0)
    assert decide(*args) == decide(*args, policy=Policy())


def test_aging_orders_candidates_by_effective_priority_then_id() -> None:
    candidates = [
        Candidate(1, "t", 128, due_since=0),  # waited 1 s: 127
        Candidate(2, "t", 200, due_since=-100_000),  # waited 101 s: 99
        Candidate(3, "t", 129, due_since=-1000),  # waited 2 s: 127, but id 3 > 1
    ]
    d = decide(candidates, [], Limits(max_concurrency=2), now=1000, policy=AGING)
    assert [c.id for c in d.start] == [2, 1]


def test_a_candidate_without_due_since_does_not_age() -> None:
    candidates = [Candidate(1, "t", 128, due_since=0), Candidate(2, "t", 200)]
    d = decide(candidates, [], Limits(max_concurrency=1), now=10**9, policy=AGING)
    assert [c.id for c in d.start] == [1]


def test_an_aged_candidate_does_not_preempt_its_stored_priority_decides() -> None:
    aged = Candidate(1, "t", 200, due_since=-(10**9))  # effective 64 (the limit)
    running = [run(9, 255, started=-5000)]
    d = decide([aged], running, Limits(max_concurrency=1), now=0, policy=AGING)
    assert d.preempt == [] and d.start == []


def test_an_urgent_candidate_behind_an_aged_one_still_preempts() -> None:
    candidates = [Candidate(1, "t", 200, due_since=-(10**9)), Candidate(2, "t", 64, due_since=0)]
    running = [run(9, 255, started=-5000)]
    d = decide(candidates, running, Limits(max_concurrency=1), now=0, policy=AGING)
    assert d.preempt == [(9, 2)]


# --- policy: rate limits ----------------------------------------------------------------------


def buckets(**types: RateLimit) -> RateBuckets:
    return RateBuckets.full(RateLimits(types=types))


def test_a_rate_limited_candidate_waits_without_blocking_others_and_says_when() -> None:
    rb = buckets(mail=RateLimit(per_second=1)).take("mail", None, -200)
    candidates = [Candidate(1, "mail", 10), Candidate(2, "mail", 20), Candidate(3, "t", 30)]
    d = decide(candidates, [], Limits(max_concurrency=4), now=0, policy=Policy(buckets=rb))
    assert [c.id for c in d.start] == [3]
    assert d.held == {1: "rateLimited", 2: "rateLimited"}
    assert d.wake_at == 800  # the token taken at -200 is back at 800, not a ms later


def test_decide_takes_the_tokens_of_what_it_starts_and_returns_the_new_buckets() -> None:
    rb = buckets(mail=RateLimit(per_second=2, burst=2))
    candidates = [Candidate(i, "mail", 10) for i in (1, 2, 3)]
    d = decide(candidates, [], Limits(max_concurrency=4), now=0, policy=Policy(buckets=rb))
    assert [c.id for c in d.start] == [1, 2] and d.held == {3: "rateLimited"}
    assert d.wake_at == 500
    assert d.buckets is not None and d.buckets.types["mail"].tokens(0) == 0
    assert rb.types["mail"].tokens(0) == 2  # the input is left as it was


def test_group_buckets_limit_across_types() -> None:
    rb = RateBuckets.full(RateLimits(groups={"net": RateLimit(per_minute=6)}))
    candidates = [Candidate(1, "a", 10, "net"), Candidate(2, "b", 10, "net")]
    d = decide(candidates, [], Limits(max_concurrency=4), now=0, policy=Policy(buckets=rb))
    assert [c.id for c in d.start] == [1] and d.held == {2: "rateLimited"}
    assert d.wake_at == 10_000


def test_a_rate_limited_candidate_does_not_preempt() -> None:
    rb = buckets(t=RateLimit(per_second=1)).take("t", None, 0)
    running = [run(9, 255, started=-5000)]
    d = decide(cands((1, 0)), running, Limits(max_concurrency=1), 0, policy=Policy(buckets=rb))
    assert d.preempt == [] and d.held == {1: "rateLimited"} and d.wake_at == 1000


def test_preempting_takes_no_token_the_start_will() -> None:
    rb = buckets(t=RateLimit(per_second=1))
    running = [run(9, 255, started=-5000)]
    d = decide(cands((1, 0)), running, Limits(max_concurrency=1), 0, policy=Policy(buckets=rb))
    assert d.preempt == [(9, 1)] and d.buckets is rb


def test_an_io_deferred_candidate_takes_no_token() -> None:
    rb = buckets(t=RateLimit(per_second=1))
    d = decide(cands((1, 10)), [], Limits(4), 0, admit=lambda c: False, policy=Policy(buckets=rb))
    assert d.start == [] and d.held == {1: "ioDeferred"} and d.buckets is rb


def test_a_limit_is_checked_before_the_bucket_and_the_io_hook_last() -> None:
    asked: list[int] = []

    def admit(c: Candidate) -> bool:
        asked.append(c.id)
        return True

    rb = buckets(t=RateLimit(per_second=1)).take("t", None, 0)
    limits = Limits(max_concurrency=4, type_limits={"solo": 0})
    candidates = [Candidate(1, "solo", 10), Candidate(2, "t", 10), Candidate(3, "u", 10)]
    d = decide(candidates, [], limits, 0, admit=admit, policy=Policy(buckets=rb))
    assert d.held == {1: "typeLimit", 2: "rateLimited"} and asked == [3]


# --- policy: throttle tiers -------------------------------------------------------------------


def throttled(level: float, ttl_ms: int = 60_000) -> Policy:
    return Policy(throttle=Pressure().set("battery", level, 0, ttl_ms).throttle(0))


def test_throttle_holds_stored_priorities_in_force_and_wakes_when_the_source_lapses() -> None:
    candidates = cands((1, 200), (2, 192), (3, 191))
    d = decide(candidates, [], Limits(max_concurrency=4), now=0, policy=throttled(0.6, 5000))
    assert [c.id for c in d.start] == [3]
    assert d.held == {1: "throttled", 2: "throttled"} and d.wake_at == 5000


def test_throttle_reads_the_stored_priority_not_the_aged_one() -> None:
    policy = Policy(aging=AGING.aging, throttle=throttled(0.6).throttle)
    aged = Candidate(1, "t", 200, due_since=-(10**9))  # effective 64
    d = decide([aged], [], Limits(max_concurrency=1), now=0, policy=policy)
    assert d.start == [] and d.held == {1: "throttled"}


def test_a_throttled_candidate_does_not_preempt() -> None:
    tiers = (ThrottleTier(0, 0.5),)
    policy = Policy(throttle=Pressure().set("s", 0.5, 0).throttle(0, tiers))
    running = [run(9, 255, started=-5000)]
    d = decide(cands((1, 0)), running, Limits(max_concurrency=1), 0, policy=policy)
    assert d.preempt == [] and d.held == {1: "throttled"}


def test_the_earliest_of_refill_lapse_and_min_run_is_the_wake_time() -> None:
    rb = buckets(mail=RateLimit(per_second=1)).take("mail", None, 0)  # refill at 1000
    running = [run(9, 255, started=-100)]  # preemptible at 900
    candidates = [Candidate(1, "t", 0), Candidate(2, "mail", 10), Candidate(3, "t", 200)]
    limits = Limits(max_concurrency=1)
    d = decide(candidates, running, limits, now=0, policy=Policy(buckets=rb))
    assert d.wake_at == 900 and d.held == {2: "rateLimited"}
    th = Pressure().set("s", 0.6, 0, ttl_ms=700).throttle(0)  # holds 3 until 700
    d = decide(candidates, running, limits, now=0, policy=Policy(buckets=rb, throttle=th))
    assert d.wake_at == 700 and d.held == {2: "rateLimited", 3: "throttled"}


# --- policy: fair share -----------------------------------------------------------------------


def test_fair_share_interleaves_groups_in_decide() -> None:
    candidates = [Candidate(i, "t", 128, "a") for i in (1, 2, 3)]
    candidates += [Candidate(i, "t", 128, "b") for i in (4, 5, 6)]
    fair = Policy(fair_share=FairShare(weights={"b": 2}))
    running = [RunningTask(9, "t", 128, "b", 0)]
    d = decide(candidates, running, Limits(max_concurrency=4), now=0, policy=fair)
    # a: 0/1 -> a; a 1/1 vs b 1/2 -> b; a 1/1 vs b 2/2 -> a (earlier candidate)
    assert [c.id for c in d.start] == [1, 4, 2]


def test_under_fair_share_a_held_back_group_gives_its_slot_to_the_next() -> None:
    rb = RateBuckets.full(RateLimits(groups={"a": RateLimit(per_second=1)}))
    candidates = [Candidate(i, "t", 128, "a") for i in (1, 2)]
    candidates += [Candidate(i, "t", 128, "b") for i in (3, 4)]
    policy = Policy(buckets=rb, fair_share=FairShare())
    d = decide(candidates, [], Limits(max_concurrency=4), now=0, policy=policy)
    assert [c.id for c in d.start] == [1, 3, 4] and d.held == {2: "rateLimited"}


def test_under_fair_share_exempt_candidates_go_first_and_may_preempt() -> None:
    candidates = [Candidate(1, "t", 128, "a"), Candidate(2, "t", 0, "b")]
    running = [RunningTask(9, "t", 255, "a", -5000)]
    policy = Policy(fair_share=FairShare())
    d = decide(candidates, running, Limits(max_concurrency=1), now=0, policy=policy)
    assert d.preempt == [(9, 2)] and d.start == []
    d = decide(candidates, [], Limits(max_concurrency=1), now=0, policy=policy)
    assert [c.id for c in d.start] == [2]


# --- properties ------------------------------------------------------------------------------

candidate_lists = st.lists(
    st.builds(
        Candidate,
        id=st.integers(1, 10**6),
        type=st.sampled_from(["a", "b", "c"]),
        priority=st.integers(0, 255),
        group=st.sampled_from([None, "x", "y"]),
        due_since=st.one_of(st.none(), st.integers(-100_000, 0)),
    ),
    max_size=16,
    unique_by=lambda c: c.id,
).map(lambda cs: sorted(cs, key=lambda c: (c.priority, c.id)))

policies = st.builds(
    Policy,
    aging=st.one_of(st.none(), st.builds(Aging, st.integers(0, 5000), st.integers(1, 5000))),
    buckets=st.one_of(
        st.none(),
        st.builds(
            lambda n, m: RateBuckets.full(
                RateLimits(
                    types={"a": RateLimit(per_second=1, burst=n)},
                    groups={"x": RateLimit(per_minute=10, burst=m)},
                )
            ),
            st.integers(1, 3),
            st.integers(1, 3),
        ),
    ),
    throttle=st.one_of(
        st.none(), st.floats(0.01, 1).map(lambda lv: Pressure().set("s", lv, 0).throttle(0))
    ),
    fair_share=st.one_of(st.none(), st.builds(FairShare, st.just({"x": 2}))),
)


@settings(max_examples=300)
@given(candidate_lists, st.integers(0, 6), policies)
def test_a_held_back_candidate_never_blocks_one_behind_it(
    candidates: list[Candidate], slots: int, policy: Policy
) -> None:
    limits = Limits(max_concurrency=slots, group_limits={"y": 1}, type_limits={"c": 2})
    d = decide(candidates, [], limits, now=0, admit=lambda c: c.id % 5 != 0, policy=policy)
    started = {c.id for c in d.start}
    assert len(started) <= slots
    assert started.isdisjoint(d.held)
    if len(started) < slots:  # a slot stayed free: everyone left out has a reason
        assert {c.id for c in candidates} == started | set(d.held)
    if "rateLimited" in d.held.values() or "throttled" in d.held.values():
        assert d.wake_at is not None and d.wake_at > 0  # it says when to look again
    # the tokens taken are exactly the starts' (the buckets charged by what started)
    if policy.buckets is not None:
        expect = policy.buckets.charge([(c.type, c.group) for c in d.start], 0)
        assert d.buckets == expect


@settings(max_examples=200)
@given(candidate_lists, st.integers(0, 6))
def test_an_empty_policy_decides_exactly_as_none(candidates: list[Candidate], slots: int) -> None:
    running = [RunningTask(10**7 + i, "a", 100 + i * 40, None, -i * 700) for i in range(3)]
    limits = Limits(max_concurrency=slots + 3, group_limits={"y": 1})
    assert decide(candidates, running, limits, 0) == decide(
        candidates, running, limits, 0, policy=Policy()
    )


@settings(max_examples=200)
@given(candidate_lists, st.integers(0, 5000), st.integers(1, 5000), st.integers(0, 255))
def test_the_dispatch_order_under_aging_is_effective_priority_then_id(
    candidates: list[Candidate], after: int, step: int, limit: int
) -> None:
    aging = Aging(after, step, limit)
    d = decide(candidates, [], Limits(max_concurrency=99), now=0, policy=Policy(aging=aging))

    def key(c: Candidate) -> tuple[int, int]:
        due = c.due_since
        return (c.priority if due is None else aging.effective(c.priority, due, 0), c.id)

    assert d.start == sorted(candidates, key=key)
