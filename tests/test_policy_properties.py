"""Property: under any policy configuration (rate limits, fair share, aging, group limits) with
no pressure, no due task starves — a simulated scheduler that wakes only when the decision,
a run end or an arrival says so starts every task — and no limit is ever exceeded."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from taskmill_core.dispatch import Candidate, Limits, Policy, RunningTask, decide
from taskmill_core.policy import Aging, FairShare, RateBuckets, RateLimit, RateLimits

TYPES = ["a", "b", "c"]
GROUPS = [None, "x", "y"]


@dataclass(frozen=True)
class Task:
    id: int
    type: str
    group: str | None
    priority: int
    arrives: int
    runs_for: int


tasks_st = st.lists(
    st.builds(
        lambda i, t, g, p, at, d: (t, g, p, at, d),
        st.just(0),
        st.sampled_from(TYPES),
        st.sampled_from(GROUPS),
        st.sampled_from([0, 64, 128, 192, 255]),
        st.integers(0, 3000),
        st.integers(1, 2000),
    ),
    min_size=1,
    max_size=25,
)
rate_st = st.builds(
    lambda per_second, burst: RateLimit(per_second=per_second, burst=burst),
    st.sampled_from([0.5, 1.0, 3.0, 7.5]),
    st.integers(1, 3),
)


@st.composite
def configs(draw: st.DrawFn) -> tuple[Limits, Policy, RateLimits]:
    limits = Limits(
        max_concurrency=draw(st.integers(1, 4)),
        group_limits=draw(st.dictionaries(st.sampled_from(["x", "y"]), st.integers(1, 2))),
        preempt_priority=draw(st.sampled_from([0, 64])),
        min_run_ms=0,
    )
    rates = RateLimits(
        types=draw(st.dictionaries(st.sampled_from(TYPES), rate_st, max_size=2)),
        groups=draw(st.dictionaries(st.sampled_from(["x", "y"]), rate_st, max_size=2)),
    )
    aging = draw(
        st.none() | st.builds(Aging, st.integers(0, 2000), st.integers(1, 500), st.integers(0, 128))
    )
    fair = draw(
        st.none()
        | st.builds(
            FairShare,
            st.dictionaries(st.sampled_from(["x", "y"]), st.integers(1, 4)),
            st.integers(1, 3),
            st.dictionaries(st.sampled_from(["x", "y"]), st.integers(0, 2)),
        )
    )
    buckets = RateBuckets.full(rates) if rates.types or rates.groups else None
    return limits, Policy(aging=aging, buckets=buckets, fair_share=fair), rates


@settings(max_examples=300, deadline=None)
@given(configs(), tasks_st)
def test_no_task_starves_and_no_limit_is_exceeded(
    config: tuple[Limits, Policy, RateLimits],
    raw: list[tuple[str, str | None, int, int, int]],
) -> None:
    limits, policy, rates = config
    tasks = [Task(i + 1, *r) for i, r in enumerate(raw)]
    buckets = policy.buckets
    now = 0
    running: dict[int, tuple[Task, int]] = {}  # id -> (task, ends at)
    started: dict[int, int] = {}  # id -> start time
    starts_of: dict[tuple[str, str], list[int]] = {}  # ("type"|"group", name) -> start times
    for _ in range(10_000):
        for tid in [t for t, (_, end) in running.items() if end <= now]:
            del running[tid]
        due = [t for t in tasks if t.arrives <= now and t.id not in started]
        due.sort(key=lambda t: (t.priority, t.id))
        cands = [Candidate(t.id, t.type, t.priority, t.group, t.arrives) for t in due]
        run = [
            RunningTask(t.id, t.type, t.priority, t.group, started[t.id])
            for t, _ in running.values()
        ]
        d = decide(
            cands,
            run,
            limits,
            now,
            policy=Policy(policy.aging, buckets, None, policy.fair_share),
        )
        # only a stored-urgent task preempts (an aged one never does); the simulation lets
        # victims run on (a preemption only frees a slot sooner)
        prio = {c.id: c.priority for c in cands}
        assert all(prio[for_id] <= limits.preempt_priority for _, for_id in d.preempt)
        if buckets is not None:
            assert d.buckets is not None
            buckets = d.buckets
        for c in d.start:
            t = next(x for x in tasks if x.id == c.id)
            started[t.id] = now
            running[t.id] = (t, now + t.runs_for)
            starts_of.setdefault(("type", t.type), []).append(now)
            if t.group is not None:
                starts_of.setdefault(("group", t.group), []).append(now)
        # limits in force right after the starts
        assert len(running) <= limits.max_concurrency
        for g, cap in limits.group_limits.items():
            assert sum(1 for t, _ in running.values() if t.group == g) <= cap
        if len(started) == len(tasks):
            break
        # the next wake-up: the decision's, a run's end, an arrival — nothing else (no polls)
        times = [end for _, end in running.values()]
        times += [t.arrives for t in tasks if t.arrives > now]
        if d.wake_at is not None:
            assert d.wake_at > now
            times.append(d.wake_at)
        assert times, f"starved at {now}: {[t for t in tasks if t.id not in started]}"
        now = min(times)
    assert len(started) == len(tasks)
    # rate limits: in every window [t0, t1], starts <= burst + rate * (t1 - t0)
    for (kind, name), times in starts_of.items():
        limit = (rates.types if kind == "type" else rates.groups).get(name)
        if limit is None:
            continue
        rate = Fraction(limit.num, limit.den)
        for i, t0 in enumerate(times):
            for j in range(i, len(times)):
                assert j - i + 1 <= limit.burst + rate * (times[j] - t0)
