"""The dispatch decision: a pure function of the scheduler's state and the time.

Given the due candidates (in priority, then submission order) and the running tasks, it
decides which candidates start now and which running tasks are preempted for whom. The async
scheduler performs the decision; tests exercise it with plain data.

Preemption follows PROTOCOL.md "Transitions": only a task with priority <= preempt_priority
that finds no free slot preempts; the victim is the least urgent running task that is strictly
less urgent and has run at least ``min_run_ms`` in its current run. Because a preempted task's
run clock restarts when it runs again, it cannot be preempted again before it has run another
``min_run_ms`` — that is the anti-thrash rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["Candidate", "Decision", "Limits", "RunningTask", "decide"]


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    type: str
    priority: int
    group: str | None = None


@dataclass(frozen=True, slots=True)
class RunningTask:
    id: int
    type: str
    priority: int
    group: str | None
    run_started_ms: int
    interrupting: bool = False  # already being stopped; still holds its slot
    preempted_for: int | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    max_concurrency: int
    group_limits: Mapping[str, int] = field(default_factory=dict)
    type_limits: Mapping[str, int] = field(default_factory=dict)
    preempt_priority: int = 64
    min_run_ms: int = 1000


@dataclass(slots=True)
class Decision:
    start: list[Candidate] = field(default_factory=list)
    preempt: list[tuple[int, int]] = field(default_factory=list)  # (victim id, for id)
    wake_at: int | None = None  # when a waiting preemption becomes possible
    deferred: int = 0  # candidates held back by the IO admission check


def decide(
    candidates: Sequence[Candidate],
    running: Sequence[RunningTask],
    limits: Limits,
    now: int,
    admit: Callable[[Candidate], bool] | None = None,
) -> Decision:
    """Which candidates start, which running tasks are preempted, when to look again."""
    d = Decision()
    free = limits.max_concurrency - len(running)
    groups: dict[str, int] = {}
    types: dict[str, int] = {}
    for r in running:
        if r.group is not None:
            groups[r.group] = groups.get(r.group, 0) + 1
        types[r.type] = types.get(r.type, 0) + 1
    reserved = {r.preempted_for for r in running if r.preempted_for is not None}
    victims_taken: set[int] = set()
    for c in candidates:
        if c.group is not None and groups.get(c.group, 0) >= limits.group_limits.get(
            c.group, 1 << 30
        ):
            continue
        if types.get(c.type, 0) >= limits.type_limits.get(c.type, 1 << 30):
            continue
        if c.id in reserved:
            continue  # a victim is already making room for it
        if free > 0:
            if admit is not None and not admit(c):
                d.deferred += 1
                continue
            d.start.append(c)
            free -= 1
            if c.group is not None:
                groups[c.group] = groups.get(c.group, 0) + 1
            types[c.type] = types.get(c.type, 0) + 1
            continue
        if c.priority > limits.preempt_priority:
            break  # candidates are ordered: nothing after this one may preempt either
        less_urgent = [
            r
            for r in running
            if not r.interrupting and r.id not in victims_taken and r.priority > c.priority
        ]
        eligible = [r for r in less_urgent if now - r.run_started_ms >= limits.min_run_ms]
        if eligible:
            # Least urgent first; among equals the one that started last loses least work.
            victim = max(eligible, key=lambda r: (r.priority, r.run_started_ms, r.id))
            victims_taken.add(victim.id)
            d.preempt.append((victim.id, c.id))
        elif less_urgent:
            at = min(r.run_started_ms for r in less_urgent) + limits.min_run_ms
            d.wake_at = at if d.wake_at is None else min(d.wake_at, at)
    return d
