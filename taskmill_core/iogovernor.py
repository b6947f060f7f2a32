"""The IO governor: decides which tasks may start (and how fast long ones may go) so that the
machine stays responsive.

It is pure bookkeeping — no psutil, no sleeping inside a decision, time only from the injected
:class:`~taskmill_core.clock.Clock` or an explicit ``now_ms`` — so the dispatcher can call it as a
"decide" step and tests can script it exactly. :mod:`taskmill_core.iomonitor` measures; this module
decides.

Model, per resource (``diskRead``, ``diskWrite``, ``netRx``, ``netTx``):

* **Capacity** is the configured budget (``diskReadBps``, ``diskWriteBps``; ``netBps`` applies to
  *each* network direction, since links are full duplex), or with ``auto`` and no budget the
  capacity learned by a :class:`CapacityLearner`; the admission budget is then ``saturation *``
  that capacity, leaving headroom for the foreground. No budget and no ``auto``: unlimited.
* A **token bucket** holds up to ``burst_s`` seconds of budget. It refills at the budget minus
  the IO that *other programs* are doing (observed total minus what our own tasks account for),
  never below ``min_share`` of the budget so that queued work always progresses.
* **Admission** charges a task's expected bytes up front ("prepaid"). A task fits on a resource
  if ``tokens - charge ≥ floor(priority)``: urgent tasks (priority 0) may run the bucket into
  debt by ``debt * burst``, the least urgent (255) must leave ``reserve * burst`` — so under
  pressure background work is held back first. A deferred task also holds back less urgent work
  on the resources it waits for (no overtaking), and a task too big for the bucket is admitted
  alone: once nothing IO-heavy of ours runs on that resource and the bucket is out of debt. Its
  charge then puts the bucket into debt, which later admissions pay back — big tasks never
  starve and the long-run rate still matches the budget.
* **Pacing**: executors that move many bytes call :meth:`IoGovernor.consume` before each chunk;
  it draws first from the task's prepaid bytes, then from the bucket, sleeping on the clock
  when the bucket is too low. Consumed bytes count as our own IO.
* **Attribution**: each :class:`~taskmill_core.iomonitor.IoSample`'s bytes are explained first
  by bytes our tasks reported (consume/record), then by the unused prepaid bytes of running
  unpaced tasks (their IO shows up in the counters without being reported); the rest is other
  programs' IO.

What it learns — capacities from observed throughput, each task type's IO cost from finished
runs — lives in :mod:`taskmill_core.iolearning`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taskmill_core.clock import Clock
from taskmill_core.iolearning import CapacityLearner, CostModel, CostModelStatistics
from taskmill_core.iomonitor import RESOURCES, IoSample, Resource, io_bytes_of
from taskmill_core.types import IoBytes, IoConfig, IoPressure, IoStatus

__all__ = [
    "CapacityLearner",
    "CostModel",
    "CostModelStatistics",
    "GovernorSettings",
    "GovernorStatistics",
    "IoGovernor",
    "ResourceStatistics",
]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GovernorSettings:
    """Tuning knobs of the governor (not part of the wire protocol; defaults suit desktops)."""

    burst_s: float = 1.0
    """Bucket size, in seconds of budget."""
    min_share: float = 0.1
    """Refill never drops below this share of the budget, however busy other programs are."""
    debt: float = 0.5
    """Priority 0 may take the bucket down to ``-debt * burst``."""
    reserve: float = 0.5
    """Priority 255 must leave ``reserve * burst`` in the bucket."""
    heavy_fraction: float = 0.1
    """A running task is IO-heavy on a resource if it expects ≥ this * burst bytes there."""
    pace_chunk_fraction: float = 0.1
    """:meth:`IoGovernor.consume` draws at most this * burst bytes at a time."""
    others_alpha: float = 0.3
    """EWMA weight (per second) for the rate of other programs' IO."""
    own_credit_s: float = 2.0
    """Bytes we reported may show up in the counters this many seconds (of budget) later."""
    deferred_ttl_ms: int = 10_000
    """A deferred task not retried for this long is forgotten (it left the queue)."""
    pressure_interval_ms: int = 1000
    """``io.pressure`` at most this often while throttling lasts."""
    learn_window_ms: int = 10_000
    learn_percentile: float = 0.9
    learn_half_life_ms: int = 30 * 60_000
    establish_ms: int = 10_000
    """Auto capacity is enforced after our own heavy IO ran this long unthrottled."""
    min_capacity: Mapping[Resource, float] = field(
        default_factory=lambda: {
            "diskRead": 32.0 * _MIB,
            "diskWrite": 32.0 * _MIB,
            "netRx": 256.0 * 1024,
            "netTx": 256.0 * 1024,
        }
    )
    """Floor for learned capacities, and the device rate below which our IO does not count as
    heavy: light work (a few small files, mostly from the page cache) must not teach the
    governor a tiny "capacity" that it would then enforce; any desktop disk sustains 32 MiB/s."""


# --- the governor -----------------------------------------------------------------------------


class _Bucket:
    """Token bucket in bytes; tokens may go negative (debt) but never above ``burst``."""

    __slots__ = ("burst", "rate", "tokens", "updated_ms")

    def __init__(self, now_ms: int) -> None:
        self.tokens = 0.0
        self.burst = 0.0
        self.rate = 0.0
        self.updated_ms = now_ms

    def refill(self, now_ms: int) -> None:
        elapsed = now_ms - self.updated_ms
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + self.rate * elapsed / 1000)
            self.updated_ms = now_ms
        self.tokens = min(self.tokens, self.burst)

    def ms_until(self, level: float) -> int:
        """Milliseconds until ``tokens ≥ level`` at the current rate (after a refill)."""
        if self.tokens >= level:
            return 0
        if self.rate <= 0:
            return 2**62
        return max(1, math.ceil((level - self.tokens) / self.rate * 1000))


@dataclass(slots=True)
class _ResourceState:
    bucket: _Bucket
    learner: CapacityLearner
    capacity: float | None = None
    budget: float | None = None
    observed: float = 0.0
    others: float = 0.0
    own_credit: float = 0.0


@dataclass(slots=True)
class _Running:
    task_id: int
    priority: int
    expected: dict[Resource, int]
    charged: dict[Resource, float]
    prepaid: dict[Resource, float]
    """Charged bytes not yet matched by reported or observed IO."""
    task_type: str | None
    paced: bool


@dataclass(slots=True)
class _Deferred:
    task_id: int
    priority: int
    needs: dict[Resource, float]
    """Per blocking resource, the bucket level at which the task may fit."""
    last_ms: int


@dataclass(frozen=True, slots=True)
class ResourceStatistics:
    resource: Resource
    capacity: float | None
    budget: float | None
    tokens: float
    burst: float
    refill_bps: float
    observed_bps: float
    others_bps: float
    learned_bps: float
    established: bool


@dataclass(frozen=True, slots=True)
class GovernorStatistics:
    running: int
    deferred: int
    waiting: int
    """Paced consumers currently sleeping for tokens."""
    throttling: bool
    resources: tuple[ResourceStatistics, ...]


class IoGovernor:
    """Admission and pacing against per-resource IO budgets (see the module docstring).

    Every decision method takes ``now_ms`` (defaulting to the clock), so the dispatcher can call
    them as a pure step; only :meth:`consume` awaits (on the clock).
    """

    def __init__(
        self,
        config: IoConfig | None = None,
        *,
        clock: Clock,
        settings: GovernorSettings | None = None,
        cost_model: CostModel | None = None,
    ) -> None:
        self.clock = clock
        self.settings = settings if settings is not None else GovernorSettings()
        self.cost_model = cost_model if cost_model is not None else CostModel()
        self.config = config if config is not None else IoConfig()
        now = clock.now_ms()
        s = self.settings
        self._resources: dict[Resource, _ResourceState] = {
            r: _ResourceState(
                _Bucket(now),
                CapacityLearner(
                    window_ms=s.learn_window_ms,
                    percentile=s.learn_percentile,
                    half_life_ms=s.learn_half_life_ms,
                    establish_ms=s.establish_ms,
                    floor=s.min_capacity.get(r, 0.0),
                ),
            )
            for r in RESOURCES
        }
        self._running: dict[int, _Running] = {}
        self._deferred: dict[int, _Deferred] = {}
        self._waiting: dict[int, tuple[Resource, int]] = {}
        self._pressure_on = False
        self._pressure_ms = 0
        self._apply_budgets()

    # --- configuration ------------------------------------------------------------------------

    def configure(self, config: IoConfig, now_ms: int | None = None) -> None:
        """Apply a new :class:`IoConfig` (``scheduler.configure {io}``)."""
        now = self._now(now_ms)
        self._refill(now)
        self.config = config
        self._apply_budgets()

    def _configured(self, resource: Resource) -> int | None:
        c = self.config
        if resource == "diskRead":
            return c.disk_read_bps
        if resource == "diskWrite":
            return c.disk_write_bps
        return c.net_bps  # each direction gets the full netBps

    def _apply_budgets(self) -> None:
        for r, st in self._resources.items():
            configured = self._configured(r)
            if configured is not None:
                capacity: float | None = float(configured)
                budget: float | None = float(configured)
            elif self.config.auto:
                capacity = st.learner.capacity
                budget = None if capacity is None else capacity * self.config.saturation
            else:
                capacity = budget = None
            was_limited = st.budget is not None
            st.capacity, st.budget = capacity, budget
            bucket = st.bucket
            if budget is None:
                bucket.burst = bucket.rate = bucket.tokens = 0.0
                st.own_credit = 0.0
                continue
            bucket.burst = budget * self.settings.burst_s
            bucket.rate = max(budget * self.settings.min_share, budget - st.others)
            # A resource that just became limited starts with a full bucket.
            bucket.tokens = min(bucket.tokens, bucket.burst) if was_limited else bucket.burst

    # --- admission ----------------------------------------------------------------------------

    def expected_io(self, task_type: str, declared: IoBytes | None = None) -> IoBytes:
        """The bytes to pass to :meth:`admit`: declared ``ioCost``, else learned per type."""
        return self.cost_model.expected(task_type, declared)

    def admit(
        self,
        task_id: int,
        priority: int,
        expected: IoBytes,
        now_ms: int | None = None,
        *,
        task_type: str | None = None,
        paced: bool = False,
    ) -> bool:
        """Whether the task may start now; on True its expected bytes are charged.

        ``paced`` tasks (executors that call :meth:`consume`) are charged only a first chunk;
        the rest is drawn as they go. On False the task is recorded as deferred (it counts in
        ``status().deferred`` and holds back less urgent work on the resources it waits for)
        until it is admitted, :meth:`forget` is called, or it is not retried for
        ``deferred_ttl_ms``.
        """
        if task_id in self._running:
            raise ValueError(f"task {task_id} is already admitted")
        now = self._now(now_ms)
        self._refill(now)
        self._expire(now)
        charges: dict[Resource, float] = {}
        for r in RESOURCES:
            amount = io_bytes_of(expected, r)
            st = self._resources[r]
            if amount <= 0 or st.budget is None:
                continue
            if paced:
                amount = min(amount, self._chunk(st))
            charges[r] = float(amount)
        needs: dict[Resource, float] = {}
        for r, charge in charges.items():
            need = self._fit(r, charge, priority, task_id)
            if need is not None:
                needs[r] = need
        if needs:
            self._deferred[task_id] = _Deferred(task_id, priority, needs, now)
            return False
        self._deferred.pop(task_id, None)
        for r, charge in charges.items():
            self._resources[r].bucket.tokens -= charge
        self._running[task_id] = _Running(
            task_id,
            priority,
            {r: io_bytes_of(expected, r) for r in RESOURCES},
            dict(charges),
            dict(charges),
            task_type,
            paced,
        )
        return True

    def _fit(self, r: Resource, charge: float, priority: int, task_id: int) -> float | None:
        """None if ``charge`` fits on ``r`` now, else the bucket level to wait for."""
        st = self._resources[r]
        bucket = st.bucket
        floor = self._floor(st, priority)
        level = charge + floor
        if level > bucket.burst:
            # Can never fit normally: it runs alone once the bucket is out of debt.
            level = max(0.0, floor)
            alone = not self._heavy_running(r)
            if alone and bucket.tokens >= level and not self._held_back(r, priority, task_id):
                return None
            return level
        if bucket.tokens >= level and not self._held_back(r, priority, task_id):
            return None
        blocker = self._blocker_level(r, priority, task_id)
        return level if blocker is None else max(level, min(blocker, bucket.burst))

    def _floor(self, st: _ResourceState, priority: int) -> float:
        """The lowest bucket level a task of this priority may leave behind."""
        urgency = min(255, max(0, priority)) / 255
        s = self.settings
        return st.bucket.burst * (s.reserve * urgency - s.debt * (1.0 - urgency))

    def _heavy_running(self, r: Resource) -> bool:
        threshold = self.settings.heavy_fraction * self._resources[r].bucket.burst
        return any(t.expected[r] > 0 and t.expected[r] >= threshold for t in self._running.values())

    def _held_back(self, r: Resource, priority: int, task_id: int) -> bool:
        return self._blocker_level(r, priority, task_id) is not None

    def _blocker_level(self, r: Resource, priority: int, task_id: int) -> float | None:
        """The highest level a more urgent deferred task waits for on ``r`` (no overtaking)."""
        key = (priority, task_id)
        levels = [
            d.needs[r]
            for d in self._deferred.values()
            if r in d.needs and (d.priority, d.task_id) < key
        ]
        return max(levels) if levels else None

    def release(
        self, task_id: int, actual: IoBytes | None = None, now_ms: int | None = None
    ) -> None:
        """The task stopped (finished, failed, cancelled, preempted).

        Its prepaid bytes not yet matched by IO are settled: bytes it moved that the counters
        have not shown yet (samples come once a second; write-back lags) become own credit, so
        they are not mistaken for other programs' IO; bytes it did not move go back to the
        bucket. Without ``actual`` the task is assumed to have moved what it was charged.
        ``actual`` also teaches the cost model the task type's IO.
        """
        self._deferred.pop(task_id, None)
        self._waiting.pop(task_id, None)
        task = self._running.pop(task_id, None)
        if task is None:
            return
        self._refill(self._now(now_ms))
        for r, left in task.prepaid.items():
            if left <= 0:
                continue
            st = self._resources[r]
            if actual is None:
                unseen = left
            else:
                matched = task.charged[r] - left
                unseen = min(left, max(0.0, io_bytes_of(actual, r) - matched))
            st.own_credit += unseen
            st.bucket.tokens = min(st.bucket.burst, st.bucket.tokens + left - unseen)
        if actual is not None and task.task_type is not None:
            self.cost_model.observe(task.task_type, actual)

    def forget(self, task_id: int) -> None:
        """A deferred task left the queue without being admitted (cancelled, expired, ...)."""
        self._deferred.pop(task_id, None)

    def next_admission_ms(self, now_ms: int | None = None) -> int | None:
        """When deferred work may fit (absolute ms), or None if nothing is deferred.

        Releases and IO samples can make work fit sooner; the dispatcher wakes on those anyway.
        The answer is at most ``deferred_ttl_ms / 2`` ahead so that deferred tasks are retried
        (and so kept deferred) before they expire.
        """
        now = self._now(now_ms)
        self._refill(now)
        self._expire(now)
        if not self._deferred:
            return None
        soonest = min(
            max(self._resources[r].bucket.ms_until(level) for r, level in d.needs.items())
            for d in self._deferred.values()
        )
        return now + min(soonest, self.settings.deferred_ttl_ms // 2)

    # --- pacing -------------------------------------------------------------------------------

    def reserve(
        self,
        task_id: int,
        resource: Resource,
        nbytes: int,
        now_ms: int | None = None,
        priority: int = 255,
    ) -> int:
        """Pure pacing step: charge ``nbytes`` of the task's IO and return 0, or return how
        many ms to wait before asking again (nothing charged). ``priority`` is used for a task
        that was admitted without the governor (it expected no IO)."""
        now = self._now(now_ms)
        st = self._resources[resource]
        task = self._running.get(task_id)
        if st.budget is None or nbytes <= 0:
            self._waiting.pop(task_id, None)
            return 0
        self._refill(now)
        prepaid = task.prepaid.get(resource, 0.0) if task is not None else 0.0
        rest = nbytes - min(prepaid, nbytes)
        if rest > 0:
            if task is not None:
                priority = task.priority
            level = rest + self._floor(st, priority)
            blocker = self._blocker_level(resource, priority, task_id)
            if blocker is not None:
                level = max(level, blocker + rest)
            # Chunks are small, so the bucket can always get there; never ask for the impossible.
            level = min(level, st.bucket.burst)
            wait = st.bucket.ms_until(level)
            if wait > 0:
                self._waiting[task_id] = (resource, now + wait)
                return wait
            st.bucket.tokens -= rest
        if task is not None and prepaid > 0:
            task.prepaid[resource] = prepaid - min(prepaid, nbytes)
        st.own_credit += nbytes
        self._waiting.pop(task_id, None)
        return 0

    async def consume(
        self, task_id: int, resource: Resource, nbytes: int, priority: int = 255
    ) -> None:
        """Draw ``nbytes`` for a running task before moving them, waiting on the clock as the
        bucket requires. Large amounts are drawn in chunks, so one big call is paced too."""
        remaining = nbytes
        while remaining > 0:
            st = self._resources[resource]
            part = remaining if st.budget is None else min(remaining, self._chunk(st))
            while (
                wait := self.reserve(task_id, resource, part, self.clock.now_ms(), priority)
            ) > 0:
                await self.clock.sleep(wait)
            remaining -= part

    def record(
        self, task_id: int, resource: Resource, nbytes: int, now_ms: int | None = None
    ) -> None:
        """Account bytes a task already moved (``ctx.record_io`` as it goes), without waiting:
        they come out of its prepaid bytes first, any excess is charged to the bucket."""
        st = self._resources[resource]
        if st.budget is None or nbytes <= 0:
            return
        self._refill(self._now(now_ms))
        task = self._running.get(task_id)
        prepaid = task.prepaid.get(resource, 0.0) if task is not None else 0.0
        taken = min(prepaid, nbytes)
        if task is not None and taken > 0:
            task.prepaid[resource] = prepaid - taken
        st.bucket.tokens -= nbytes - taken
        st.own_credit += nbytes

    def _chunk(self, st: _ResourceState) -> int:
        return max(1, int(self.settings.pace_chunk_fraction * st.bucket.burst))

    # --- observation --------------------------------------------------------------------------

    def observe(self, sample: IoSample, now_ms: int | None = None) -> None:
        """Feed one :class:`IoSample` (about once a second): attribute the bytes, update the
        rate of other programs' IO, learn capacity, and set the refill rates."""
        now = self._now(now_ms)
        self._refill(now)
        self._expire(now)
        seconds = max(sample.interval_ms, 1) / 1000
        weight = 1.0 - math.pow(1.0 - self.settings.others_alpha, seconds)
        for r, st in self._resources.items():
            unexplained = float(sample.bytes.get(r, 0))
            used = min(unexplained, st.own_credit)
            st.own_credit -= used
            unexplained -= used
            for task in sorted(self._running.values(), key=lambda t: t.task_id):
                if unexplained <= 0:
                    break
                left = task.prepaid.get(r, 0.0)
                if task.paced or left <= 0:
                    continue
                take = min(left, unexplained)
                task.prepaid[r] = left - take
                unexplained -= take
            st.others += weight * (unexplained / seconds - st.others)
            st.observed = float(sample.smoothed.get(r, 0.0))
            if st.budget is not None:
                # Reported bytes that never reach the counters (reads served from the page
                # cache) must not pile up and later hide other programs' IO.
                limit = self.settings.own_credit_s * max(st.budget, st.observed)
                st.own_credit = min(st.own_credit, limit)
            else:
                st.own_credit = 0.0
            if self._configured(r) is None and self.config.auto:
                busy = any(t.expected[r] > 0 for t in self._running.values()) and (
                    sample.rate.get(r, 0.0) >= st.learner.floor
                )
                st.learner.observe(
                    st.observed,
                    now,
                    sample.interval_ms,
                    busy=busy,
                    throttled=self._throttled_on(r, now),
                )
        self._apply_budgets()

    # --- state --------------------------------------------------------------------------------

    def throttling(self, now_ms: int | None = None) -> bool:
        """Whether the governor is holding any work back right now."""
        now = self._now(now_ms)
        self._expire(now)
        return bool(self._deferred) or bool(self._waiting)

    def _throttled_on(self, r: Resource, now: int) -> bool:
        return any(r in d.needs for d in self._deferred.values()) or any(
            res == r for res, _ in self._waiting.values()
        )

    def status(self, now_ms: int | None = None) -> IoStatus:
        """``scheduler.status.io``: smoothed rates, capacity, utilization, throttling."""
        now = self._now(now_ms)
        throttling = self.throttling(now)
        observed: dict[str, float] = {r: st.observed for r, st in self._resources.items()}
        capacity: dict[str, float] = {
            r: st.capacity for r, st in self._resources.items() if st.capacity is not None
        }
        return IoStatus(
            disk_read_bps=observed["diskRead"],
            disk_write_bps=observed["diskWrite"],
            net_rx_bps=observed["netRx"],
            net_tx_bps=observed["netTx"],
            capacity=capacity,
            utilization={r: observed[r] / c for r, c in capacity.items() if c > 0},
            throttling=throttling,
            deferred=len(self._deferred),
        )

    def poll_pressure(self, now_ms: int | None = None) -> IoPressure | None:
        """The ``io.pressure`` event to emit now, if any: when throttling starts or stops, and
        at most once per ``pressure_interval_ms`` while it lasts. Call it after each admission
        round and each :meth:`observe`."""
        now = self._now(now_ms)
        status = self.status(now)
        on = status.throttling
        due = on and now - self._pressure_ms >= self.settings.pressure_interval_ms
        if on == self._pressure_on and not due:
            return None
        self._pressure_on, self._pressure_ms = on, now
        return IoPressure(
            disk_read_bps=status.disk_read_bps,
            disk_write_bps=status.disk_write_bps,
            net_rx_bps=status.net_rx_bps,
            net_tx_bps=status.net_tx_bps,
            capacity=status.capacity,
            utilization=status.utilization,
            throttling=status.throttling,
            deferred=status.deferred,
        )

    def statistics(self, now_ms: int | None = None) -> GovernorStatistics:
        now = self._now(now_ms)
        self._refill(now)
        throttling = self.throttling(now)
        resources = tuple(
            ResourceStatistics(
                resource=r,
                capacity=st.capacity,
                budget=st.budget,
                tokens=st.bucket.tokens,
                burst=st.bucket.burst,
                refill_bps=st.bucket.rate,
                observed_bps=st.observed,
                others_bps=st.others,
                learned_bps=st.learner.estimate,
                established=st.learner.established,
            )
            for r, st in self._resources.items()
        )
        return GovernorStatistics(
            running=len(self._running),
            deferred=len(self._deferred),
            waiting=len(self._waiting),
            throttling=throttling,
            resources=resources,
        )

    def _now(self, now_ms: int | None) -> int:
        return self.clock.now_ms() if now_ms is None else now_ms

    def _refill(self, now: int) -> None:
        for st in self._resources.values():
            if st.budget is not None:
                st.bucket.refill(now)

    def _expire(self, now: int) -> None:
        ttl = self.settings.deferred_ttl_ms
        stale = [i for i, d in self._deferred.items() if now - d.last_ms > ttl]
        for task_id in stale:
            del self._deferred[task_id]
        late = [i for i, (_, until) in self._waiting.items() if now - until > ttl]
        for task_id in late:
            del self._waiting[task_id]

    def waiting(self) -> dict[int, tuple[Resource, int]]:
        """Running tasks waiting for budget: task id -> (resource, until ms)."""
        return dict(self._waiting)

    def deferred(self) -> list[dict[str, Any]]:
        """Tasks held back at admission, with the bucket levels they wait for."""
        return [
            {"id": d.task_id, "priority": d.priority, "needs": dict(d.needs)}
            for d in self._deferred.values()
        ]

    def __repr__(self) -> str:
        parts = []
        for r, st in self._resources.items():
            if st.budget is None:
                parts.append(f"{r}=unlimited")
            else:
                parts.append(
                    f"{r}={st.bucket.tokens:.0f}/{st.bucket.burst:.0f}@{st.bucket.rate:.0f}"
                )
        return (
            f"IoGovernor(running={len(self._running)}, deferred={len(self._deferred)}, "
            f"waiting={len(self._waiting)}, {', '.join(parts)})"
        )
