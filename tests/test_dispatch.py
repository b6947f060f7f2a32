"""The pure dispatch decision, exercised with plain data (no database, no event loop)."""

from __future__ import annotations

from taskmill_core.dispatch import Candidate, Limits, RunningTask, decide


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
