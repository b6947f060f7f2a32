"""What the IO governor learns: a resource's capacity, and each task type's IO cost.

- :class:`CapacityLearner`: capacity from sustained observed throughput (a high percentile of
  smoothed rates, decaying slowly), established only after our own heavy IO pushed the device;
- :class:`CostModel`: expected IO per task type from the actual IO of finished runs (EWMA), for
  tasks that declare no ``ioCost``.

Pure bookkeeping with explicit times, like :mod:`taskmill_core.iogovernor` which uses them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from taskmill_core.iomonitor import RESOURCES, Resource, io_bytes_from, io_bytes_of
from taskmill_core.types import IoBytes

__all__ = ["CapacityLearner", "CostModel", "CostModelStatistics"]


# --- capacity learning ------------------------------------------------------------------------


class CapacityLearner:
    """Learns a resource's capacity from sustained observed throughput.

    The estimate is ``max(percentile(smoothed rates over the window), previous estimate decayed
    with a half-life)``: a level held for more than ``1 - percentile`` of the window counts, a
    spike does not, and an estimate that is no longer reached comes down slowly. Decay pauses
    while we throttle the resource — then the low throughput is our own doing, not the device's.

    Observed throughput only reveals capacity when something pushed the device, so the estimate
    is *established* (and enforced by the governor) only after our own heavy IO ran unthrottled
    for ``establish_ms``; until then the resource is not limited.
    """

    def __init__(
        self,
        *,
        window_ms: int = 10_000,
        percentile: float = 0.9,
        half_life_ms: int = 30 * 60_000,
        establish_ms: int = 10_000,
        floor: float = 0.0,
    ) -> None:
        if not 0.0 < percentile <= 1.0:
            raise ValueError("percentile must be in (0, 1]")
        self.window_ms = window_ms
        self.percentile = percentile
        self.half_life_ms = half_life_ms
        self.establish_ms = establish_ms
        self.floor = floor
        self._window: list[tuple[int, float]] = []
        self._estimate = 0.0
        self._busy_ms = 0
        self._samples = 0

    def observe(
        self, rate: float, now_ms: int, interval_ms: int, *, busy: bool, throttled: bool
    ) -> None:
        """Feed one smoothed rate; ``busy``: our heavy IO ran on this resource meanwhile."""
        self._samples += 1
        self._window.append((now_ms, max(0.0, rate)))
        horizon = now_ms - self.window_ms
        while self._window and self._window[0][0] <= horizon:
            self._window.pop(0)
        values = sorted(v for _, v in self._window)
        # A window not yet full counts its missing samples as idle: a few early samples
        # (or one spike in them) must not pass for a sustained level.
        expected = self.window_ms // interval_ms if interval_ms > 0 else 0
        missing = max(0, expected - len(values))
        rank = max(0, math.ceil(self.percentile * (len(values) + missing)) - 1)
        level = values[rank - missing] if rank >= missing else 0.0
        decayed = self._estimate
        if not throttled and self.half_life_ms > 0:
            decayed *= math.pow(0.5, interval_ms / self.half_life_ms)
        self._estimate = max(level, decayed)
        if busy and not throttled:
            self._busy_ms += interval_ms

    def seed(self, capacity: float) -> None:
        """Start from a known capacity (e.g. persisted from an earlier run); established."""
        self._estimate = max(self._estimate, capacity)
        self._busy_ms = max(self._busy_ms, self.establish_ms)

    @property
    def established(self) -> bool:
        return self._busy_ms >= self.establish_ms

    @property
    def estimate(self) -> float:
        """The current estimate (bytes/s), established or not, never below the floor."""
        return max(self.floor, self._estimate)

    @property
    def capacity(self) -> float | None:
        """The capacity to enforce, or None while not established."""
        return self.estimate if self.established else None

    def __repr__(self) -> str:
        return (
            f"CapacityLearner(estimate={self.estimate:.0f}, established={self.established}, "
            f"busy_ms={self._busy_ms}, samples={self._samples})"
        )


# --- cost model -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostModelStatistics:
    types: int
    observations: int


class CostModel:
    """Expected IO per task type, learned from the actual IO of finished tasks (EWMA).

    A declared ``ioCost`` always wins; an all-zero declaration counts as "not declared" (that
    is what a task without ``ioCost`` carries). Bounded: the least recently used types beyond
    ``max_types`` are forgotten.
    """

    def __init__(self, alpha: float = 0.3, max_types: int = 4096) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self.max_types = max_types
        self._learned: OrderedDict[str, dict[Resource, float]] = OrderedDict()
        self._observations = 0

    def observe(self, task_type: str, actual: IoBytes) -> None:
        """Record the actual IO of one finished run of ``task_type``."""
        self._observations += 1
        current = self._learned.get(task_type)
        if current is None:
            self._learned[task_type] = {r: float(io_bytes_of(actual, r)) for r in RESOURCES}
            while len(self._learned) > self.max_types:
                self._learned.popitem(last=False)
            return
        self._learned.move_to_end(task_type)
        for r in RESOURCES:
            current[r] += self.alpha * (io_bytes_of(actual, r) - current[r])

    def seed(self, task_type: str, average: IoBytes) -> None:
        """Start from an average taken from stored history (on startup)."""
        self._learned[task_type] = {r: float(io_bytes_of(average, r)) for r in RESOURCES}
        self._learned.move_to_end(task_type)
        while len(self._learned) > self.max_types:
            self._learned.popitem(last=False)

    def knows(self, task_type: str) -> bool:
        """Whether a cost was learned (or seeded) for ``task_type``; cheap, no allocation."""
        return task_type in self._learned

    def learned(self, task_type: str) -> IoBytes | None:
        current = self._learned.get(task_type)
        return None if current is None else io_bytes_from(current)

    def expected(self, task_type: str, declared: IoBytes | None = None) -> IoBytes:
        """What to charge for a task: its declaration, else the learned cost, else nothing."""
        if declared is not None and declared.total() > 0:
            return declared
        return self.learned(task_type) or IoBytes()

    def statistics(self) -> CostModelStatistics:
        return CostModelStatistics(len(self._learned), self._observations)

    def __repr__(self) -> str:
        return f"CostModel(types={len(self._learned)}, observations={self._observations})"
