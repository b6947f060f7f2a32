"""Scheduling policy: the pure parts of rate limits, aging, fair share, throttle tiers and type
defaults (PROTOCOL.md "Policy settings").

Everything here is a value or a function of values and an explicit ``now`` (epoch ms): no I/O,
no clock reads, nothing mutated in place — an operation that changes state returns the new
state. :func:`taskmill_core.dispatch.decide` consults these pieces; the scheduler owns the
state between ticks and feeds it back in. Tests script it exactly with plain data.

Model:

* **Rate limits** are token buckets, one per limited type and one per limited group. A bucket
  holds at most ``burst`` tokens, gains ``rate`` tokens per millisecond and starts full; a run
  start takes one token from its type's bucket and one from its group's. The arithmetic is exact
  integers: the rate is taken as a fraction ``num / den`` tokens per ms (``perSecond`` or
  ``perMinute`` as the nearest fraction with a denominator ≤ 10⁶, so ``0.1`` is exactly a tenth),
  and a bucket stores the time at which it is full again, in ticks of ``1 / num`` ms, so each
  token is exactly ``den`` ticks. :meth:`Bucket.next_token_at` is the *first whole millisecond*
  at which a token is there (the exact refill time rounded up, never down): waking then, a task
  is held no longer than its bucket needs, and never starts before the token exists. Rounding
  up costs nothing while the bucket has room (the tokens keep their exact times); a full bucket
  cannot hold the fraction of a token that arrives before that whole ms, so with ``burst: 1`` a
  rate whose interval is not a whole number of ms runs up to 1 ms per token slow, never fast.
* **Aging**: a pending task due since ``due_since`` is ordered as if ``floor((now - due_since -
  afterMs) / stepMs)`` levels more urgent (none before ``afterMs``), never more urgent than
  ``limit``; a task at ``limit`` or more urgent does not age. Its next step is at ``due_since +
  afterMs + (steps + 1) * stepMs`` while it has not reached ``limit``.
* **Fair share**: free slots go one at a time to the competing group with the lowest
  ``running / weight`` — groups below their ``minSlots`` first — and within a group to its most
  urgent candidate. Tasks without a group form one group (key ``None``) with the default weight.
  Candidates whose stored priority is at or more urgent than ``preemptPriority`` are exempt:
  they come first, in dispatch order, and count toward their group. A group whose next candidate
  cannot start (held back for another reason) never keeps the slot from the others, so a slot no
  group can use goes on down the line: fair share never leaves a slot idle.
* **Throttle tiers**: the pressure level is the maximum of the live sources; a source lapses
  ``ttlMs`` after it was last set (it is live while ``now < until``), ``level 0`` removes it.
  While the level is ≥ a tier's ``level``, tasks whose *stored* priority is ≥ its
  ``minPriority`` do not start. The holding set changes only when a source lapses (or is set),
  so :meth:`Pressure.throttle` also says when the next lapse that changes it happens.
* **Type defaults** fill, at submit, the fields a submit *left out* with its type's defaults; a
  field the submit gave wins, even when it equals the global default. A decoded
  :class:`~taskmill_core.types.TaskSpec` cannot tell the two apart (``priority: 128`` given and
  left out decode alike, and ``omit_defaults`` drops a given default when a spec is stored), so
  :func:`apply_type_defaults` takes the names of the given fields explicitly; see its docstring.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from taskmill_core.types import Backoff, IoBytes, TaskSpec

__all__ = [
    "DEFAULT_TIERS",
    "TYPE_DEFAULT_FIELDS",
    "Aging",
    "Bucket",
    "FairOrder",
    "FairShare",
    "Pressure",
    "PressureSource",
    "RateBuckets",
    "RateLimit",
    "RateLimits",
    "Throttle",
    "ThrottleTier",
    "TypeDefaults",
    "allocate",
    "apply_type_defaults",
    "given_fields",
]

_MAX_DENOMINATOR = 1_000_000
_LONG_AGO = -(1 << 80)  # "full since forever": a new bucket starts full


# --- rate limits ------------------------------------------------------------------------------


def _rate_fraction(value: float, per_ms: int) -> Fraction:
    exact = Fraction(value)
    near = exact.limit_denominator(_MAX_DENOMINATOR)
    return (near if near > 0 else exact) / per_ms


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``{perSecond | perMinute, burst}``: exactly one rate, ``burst`` ≥ 1 tokens."""

    per_second: float | None = None
    per_minute: float | None = None
    burst: int = 1
    num: int = field(init=False, repr=False, compare=False)
    """The rate is ``num / den`` tokens per millisecond, in lowest terms."""
    den: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.per_second is None) == (self.per_minute is None):
            raise ValueError("a rate limit has exactly one of perSecond and perMinute")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.per_second is not None:
            if not self.per_second > 0:
                raise ValueError("perSecond must be > 0")
            rate = _rate_fraction(self.per_second, 1000)
        else:
            assert self.per_minute is not None
            if not self.per_minute > 0:
                raise ValueError("perMinute must be > 0")
            rate = _rate_fraction(self.per_minute, 60_000)
        object.__setattr__(self, "num", rate.numerator)
        object.__setattr__(self, "den", rate.denominator)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket at rest: full from ``full_at_ticks`` on (ticks of ``1 / limit.num`` ms).

    Tokens at ``t`` are ``burst - max(0, full_at_ticks - t * num) / den``; a token is taken by
    moving the full time ``den`` ticks later (from ``t`` if it was full by then).
    """

    limit: RateLimit
    full_at_ticks: int = _LONG_AGO

    def _missing(self, now: int) -> int:
        """Ticks of refill still missing at ``now`` (0: full)."""
        return max(0, self.full_at_ticks - now * self.limit.num)

    def tokens(self, now: int) -> float:
        """Tokens in the bucket at ``now`` (fractional while refilling)."""
        return self.limit.burst - self._missing(now) / self.limit.den

    def next_token_at(self, now: int) -> int:
        """The first millisecond ≥ ``now`` at which the bucket holds a whole token."""
        lim = self.limit
        # tokens(t) ≥ 1  ⟺  full_at_ticks - t * num ≤ (burst - 1) * den
        need = self.full_at_ticks - (lim.burst - 1) * lim.den
        return max(now, -(-need // lim.num))

    def take(self, now: int) -> Bucket | None:
        """The bucket after taking a token at ``now``, or None when it holds no whole token."""
        lim = self.limit
        missing = self._missing(now)
        if missing > (lim.burst - 1) * lim.den:
            return None
        return Bucket(lim, now * lim.num + missing + lim.den)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The ``rateLimits`` setting: a limit per type and per group."""

    types: Mapping[str, RateLimit] = field(default_factory=dict)
    groups: Mapping[str, RateLimit] = field(default_factory=dict)


def _rebucket(old: Mapping[str, Bucket], limits: Mapping[str, RateLimit]) -> dict[str, Bucket]:
    out: dict[str, Bucket] = {}
    for key, limit in limits.items():
        b = old.get(key)
        out[key] = b if b is not None and b.limit == limit else Bucket(limit)
    return out


@dataclass(frozen=True, slots=True)
class RateBuckets:
    """The buckets of every limited type and group (the scheduler's in-memory state; a restart
    starts them full)."""

    types: Mapping[str, Bucket] = field(default_factory=dict)
    groups: Mapping[str, Bucket] = field(default_factory=dict)

    @classmethod
    def full(cls, limits: RateLimits) -> RateBuckets:
        return cls().reconfigure(limits)

    def reconfigure(self, limits: RateLimits) -> RateBuckets:
        """Buckets for new settings: a bucket whose limit did not change keeps its state (so a
        configure call is no way to refill it); a new or changed limit starts full."""
        return RateBuckets(
            _rebucket(self.types, limits.types), _rebucket(self.groups, limits.groups)
        )

    def meters(self, task_type: str, group: str | None) -> bool:
        """Whether a start of this type and group takes a token anywhere."""
        return task_type in self.types or (group is not None and group in self.groups)

    def ready_at(self, task_type: str, group: str | None, now: int) -> int:
        """The first millisecond ≥ ``now`` at which both the type's and the group's bucket hold
        a token (``now`` when neither is limited)."""
        at = now
        b = self.types.get(task_type)
        if b is not None:
            at = b.next_token_at(now)
        if group is not None:
            g = self.groups.get(group)
            if g is not None:
                at = max(at, g.next_token_at(now))
        return at

    def take(self, task_type: str, group: str | None, now: int) -> RateBuckets:
        """The buckets after a run start at ``now``; ValueError when a token is missing."""
        types, groups = self.types, self.groups
        b = types.get(task_type)
        if b is not None:
            after = b.take(now)
            if after is None:
                raise ValueError(f"type {task_type!r} has no token at {now}")
            types = {**types, task_type: after}
        g = self.groups.get(group) if group is not None else None
        if g is not None:
            assert group is not None
            after = g.take(now)
            if after is None:
                raise ValueError(f"group {group!r} has no token at {now}")
            groups = {**groups, group: after}
        if types is self.types and groups is self.groups:
            return self
        return RateBuckets(types, groups)

    def charge(self, starts: Iterable[tuple[str, str | None]], now: int) -> RateBuckets:
        """The buckets after these run starts (``(type, group)`` pairs) at ``now``."""
        out = self
        for task_type, group in starts:
            out = out.take(task_type, group, now)
        return out


# --- aging ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Aging:
    """The ``aging`` setting."""

    after_ms: int
    step_ms: int
    limit: int = 64

    def __post_init__(self) -> None:
        if self.after_ms < 0 or self.step_ms < 1 or not 0 <= self.limit <= 255:
            raise ValueError("aging needs afterMs >= 0, stepMs >= 1 and limit in 0..255")

    def _steps(self, due_since: int, now: int) -> int:
        return max(0, now - due_since - self.after_ms) // self.step_ms

    def effective(self, priority: int, due_since: int, now: int) -> int:
        """The priority a task due since ``due_since`` is ordered by at ``now``."""
        if priority <= self.limit:
            return priority
        return max(self.limit, priority - self._steps(due_since, now))

    def next_step_at(self, priority: int, due_since: int, now: int) -> int | None:
        """When its effective priority next drops a level (after ``now``); None once it
        stands at ``limit`` (or never ages)."""
        if priority <= self.limit:
            return None
        steps = self._steps(due_since, now)
        if priority - steps <= self.limit:
            return None
        return due_since + self.after_ms + (steps + 1) * self.step_ms


# --- fair share -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FairShare:
    """The ``fairShare`` setting (the group ``None`` — no group — has ``default_weight``)."""

    weights: Mapping[str, int] = field(default_factory=dict)
    default_weight: int = 1
    min_slots: Mapping[str, int] = field(default_factory=dict)

    def weight(self, group: str | None) -> int:
        if group is None:
            return self.default_weight
        return self.weights.get(group, self.default_weight)


class _Competing(Protocol):
    @property
    def priority(self) -> int: ...

    @property
    def group(self) -> str | None: ...


C = TypeVar("C", bound=_Competing)


class FairOrder(Generic[C]):
    """Candidates in fair-share order, one at a time.

    Iterating yields the exempt candidates first (stored priority ≤ ``preempt_priority``, in
    the given order), then, for each further pull, the most urgent remaining candidate of the
    group that most deserves the next slot: groups below ``min_slots`` first, then the lowest
    ``running / weight``, ties to the group whose candidate comes first in the given order. The
    consumer calls :meth:`started` for each candidate it starts, which moves its group on; a
    candidate it does not start simply lets the next pull choose again (no head-of-line
    blocking). ``running`` is the group of each running task.
    """

    __slots__ = ("_exempt", "_queues", "_running", "_share")

    def __init__(
        self,
        candidates: Iterable[C],
        running: Iterable[str | None],
        fair: FairShare,
        preempt_priority: int,
    ) -> None:
        self._running: dict[str | None, int] = {}
        for g in running:
            self._running[g] = self._running.get(g, 0) + 1
        exempt: list[C] = []
        queues: dict[str | None, list[tuple[int, C]]] = {}
        for i, c in enumerate(candidates):
            if c.priority <= preempt_priority:
                exempt.append(c)
            else:
                queues.setdefault(c.group, []).append((i, c))
        for q in queues.values():
            q.reverse()  # pop() from the end is the most urgent
        self._exempt = iter(exempt)
        self._queues = queues
        self._share = {
            g: (fair.weight(g), 0 if g is None else fair.min_slots.get(g, 0)) for g in queues
        }

    def __iter__(self) -> Iterator[C]:
        return self

    def __next__(self) -> C:
        for c in self._exempt:
            return c
        if not self._queues:
            raise StopIteration
        running, share = self._running, self._share
        best: str | None = None
        best_key: tuple[bool, float, int] | None = None
        for g, q in self._queues.items():
            n = running.get(g, 0)
            weight, min_slots = share[g]
            # Floats compare small ratios exactly enough: distinct n/w with n, w < 2**26 differ.
            key = (n >= min_slots, n / weight, q[-1][0])
            if best_key is None or key < best_key:
                best, best_key = g, key
        q = self._queues[best]
        c = q.pop()[1]
        if not q:
            del self._queues[best]
        return c

    def started(self, c: C) -> None:
        """``c`` took a slot: its group counts one more running task."""
        self._running[c.group] = self._running.get(c.group, 0) + 1


def allocate(
    candidates: Sequence[C],
    running: Iterable[str | None],
    fair: FairShare,
    free: int,
    preempt_priority: int = 64,
    group_limits: Mapping[str, int] | None = None,
) -> list[C]:
    """Which candidates take the ``free`` slots under fair share (alone: no other limit)."""
    running = list(running)
    counts: dict[str, int] = {}
    for g in running:
        if g is not None:
            counts[g] = counts.get(g, 0) + 1
    caps = group_limits or {}
    order = FairOrder(candidates, running, fair, preempt_priority)
    chosen: list[C] = []
    for c in order:
        if free <= 0:
            break
        g = c.group
        if g is not None and counts.get(g, 0) >= caps.get(g, 1 << 30):
            continue
        chosen.append(c)
        order.started(c)
        if g is not None:
            counts[g] = counts.get(g, 0) + 1
        free -= 1
    return chosen


# --- throttle tiers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThrottleTier:
    """While the pressure level is ≥ ``level``, stored priorities ≥ ``min_priority`` wait."""

    min_priority: int
    level: float

    def __post_init__(self) -> None:
        if not 0 <= self.min_priority <= 255 or not 0 < self.level <= 1:
            raise ValueError("a throttle tier needs minPriority in 0..255 and level in (0, 1]")


DEFAULT_TIERS: tuple[ThrottleTier, ...] = (ThrottleTier(192, 0.5), ThrottleTier(128, 0.75))


@dataclass(frozen=True, slots=True)
class Throttle:
    """The throttle in force at one moment: what the decision and the event need."""

    holding: tuple[int, ...] = ()
    """``minPriority`` of each tier in force, in configured order (``scheduler.pressure``)."""
    hold_from: int | None = None
    """Stored priorities ≥ this do not start (the least ``minPriority`` in force)."""
    until: int | None = None
    """When ``holding`` next changes by a source lapsing (None: only a new level changes it)."""

    def holds(self, priority: int) -> bool:
        return self.hold_from is not None and priority >= self.hold_from


@dataclass(frozen=True, slots=True)
class PressureSource:
    level: float
    until: int
    """Lapses here: live while ``now < until``."""


def _holding(tiers: Sequence[ThrottleTier], level: float) -> tuple[int, ...]:
    return tuple(t.min_priority for t in tiers if level >= t.level)


@dataclass(frozen=True, slots=True)
class Pressure:
    """The host's pressure sources (``scheduler.setPressure``; not persisted)."""

    sources: Mapping[str, PressureSource] = field(default_factory=dict)

    def set(self, source: str, level: float, now: int, ttl_ms: int = 60_000) -> Pressure:
        """After ``setPressure`` at ``now``: ``level`` 0 removes the source; lapsed sources go."""
        if not 0 <= level <= 1 or ttl_ms < 1:
            raise ValueError("pressure needs level in 0..1 and ttlMs >= 1")
        live = {k: s for k, s in self.sources.items() if s.until > now and k != source}
        if level > 0:
            live[source] = PressureSource(level, now + ttl_ms)
        return Pressure(live)

    def live(self, now: int) -> dict[str, float]:
        """``{source: level}`` of the sources live at ``now`` (``scheduler.status``)."""
        return {k: s.level for k, s in self.sources.items() if s.until > now}

    def level(self, now: int) -> float:
        return max((s.level for s in self.sources.values() if s.until > now), default=0.0)

    def next_lapse_at(self, now: int) -> int | None:
        return min((s.until for s in self.sources.values() if s.until > now), default=None)

    def throttle(self, now: int, tiers: Sequence[ThrottleTier] = DEFAULT_TIERS) -> Throttle:
        """The tiers in force at ``now`` and when that set next changes by itself."""
        live = sorted((s.until, s.level) for s in self.sources.values() if s.until > now)
        holding = _holding(tiers, max((lv for _, lv in live), default=0.0))
        until: int | None = None
        for i, (at, _) in enumerate(live):
            rest = max((lv for u, lv in live[i:] if u > at), default=0.0)
            if _holding(tiers, rest) != holding:
                until = at
                break
        hold_from = min(holding) if holding else None
        return Throttle(holding, hold_from, until)


# --- type defaults ----------------------------------------------------------------------------


TYPE_DEFAULT_FIELDS: tuple[str, ...] = (
    "priority",
    "max_retries",
    "backoff",
    "timeout_ms",
    "ttl_ms",
    "group",
    "io_cost",
)
"""The TaskSpec fields a type default may fill (Python names)."""


@dataclass(frozen=True, slots=True)
class TypeDefaults:
    """One type's defaults; ``None`` means "no default for this field" (``backoff`` and
    ``io_cost`` are taken whole)."""

    priority: int | None = None
    max_retries: int | None = None
    backoff: Backoff | None = None
    timeout_ms: int | None = None
    ttl_ms: int | None = None
    group: str | None = None
    io_cost: IoBytes | None = None


_WIRE_NAMES: dict[str, str] = {
    f.encode_name: f.name for f in msgspec.structs.fields(TaskSpec) if f.name in TYPE_DEFAULT_FIELDS
}


def given_fields(params: Mapping[str, Any]) -> frozenset[str]:
    """The defaultable fields present in raw ``SubmitParams`` (wire names → Python names).

    For callers that still hold the submit as a mapping (e.g. decoded with
    ``msgspec.json.decode(raw, type=dict[str, msgspec.Raw])``, which does not parse the values).
    """
    names = _WIRE_NAMES
    return frozenset(names[k] for k in params if k in names)


def apply_type_defaults(
    spec: TaskSpec, defaults: Mapping[str, TypeDefaults], given: Set[str]
) -> TaskSpec:
    """``spec`` with its type's defaults in every defaultable field not in ``given``.

    ``given`` names the fields the submit set (Python names, see :data:`TYPE_DEFAULT_FIELDS`).
    The decoded ``TaskSpec`` cannot say it: a left-out ``priority`` decodes to 128 like a given
    128, and a stored spec (a schedule's template) encoded with ``omit_defaults`` loses a given
    default. The caller derives ``given`` at the boundary where presence is still known — the
    wire keys (:func:`given_fields`), or, once those fields default to ``msgspec.UNSET``, the
    fields that are not ``UNSET``. Returns ``spec`` itself when there is nothing to apply.
    """
    td = defaults.get(spec.type)
    if td is None:
        return spec
    changes: dict[str, Any] = {}
    for name in TYPE_DEFAULT_FIELDS:
        if name in given:
            continue
        value = getattr(td, name)
        if value is not None:
            changes[name] = value
    return msgspec.structs.replace(spec, **changes) if changes else spec
