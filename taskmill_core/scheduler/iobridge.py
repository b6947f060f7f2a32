"""The IO bridge: between the scheduler's runs and the IO governor.

It feeds the governor the machine's measured IO (the monitor, about once a second on the
scheduler's clock), asks it whether a candidate may start (:meth:`IoBridge.admission`, used
by the dispatch decision), charges runs for what they record or draw (``record_io``,
``consume_io``), settles what an admitted run prepaid, and publishes ``io.pressure`` when the
governor starts or stops holding work back. The governor itself (``iogovernor.py``) is pure
bookkeeping; this is where it meets the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import structlog

from taskmill_core.clock import Clock
from taskmill_core.dispatch import Candidate
from taskmill_core.executors import Registry
from taskmill_core.iogovernor import GovernorSettings, IoGovernor
from taskmill_core.iomonitor import RESOURCES, IoMonitor, IoSample, Resource, Sampler
from taskmill_core.runs import Run
from taskmill_core.store import Ready, SqliteStore
from taskmill_core.types import Event, IoBytes, IoConfig

__all__ = ["DESKTOP_IO_SETTINGS", "IO_RETRY_MS", "IoBridge"]

log = structlog.get_logger("taskmill.scheduler")

# A quarter second of budget per bucket: tokens saved while writers stall (fsync) may be spent
# at once, so the bucket size bounds how far one second can overshoot the budget.
DESKTOP_IO_SETTINGS = GovernorSettings(burst_s=0.25)
IO_RETRY_MS = 1000  # deferred work waiting for a release, not tokens, is re-checked this often
_decode_io = msgspec.json.Decoder(IoBytes).decode


class IoBridge:
    """Admission, accounting and measurement of IO for the scheduler's runs."""

    def __init__(
        self,
        config: IoConfig,
        *,
        clock: Clock,
        store: SqliteStore,
        registry: Registry,
        publish: Callable[[Event], None],
        wake: Callable[[], None],
        settings: GovernorSettings | None = None,
        sampler: Sampler | None = None,
    ) -> None:
        self.governor = IoGovernor(config, clock=clock, settings=settings or DESKTOP_IO_SETTINGS)
        self._clock = clock
        self._store = store
        self._registry = registry
        self._publish = publish
        self._wake = wake
        self._sampler = sampler
        self._types_seen: set[str] = set()
        # Admitted in this tick, not launched yet (read on the hot path: empty unless a
        # candidate expected IO).
        self.admitted: set[int] = set()
        self.pressure_on = False  # the governor is holding work back

    # --- measuring ----------------------------------------------------------------------

    async def monitor_loop(self) -> None:
        """Sample the machine's IO about once a second (on the scheduler's clock)."""
        try:
            monitor = IoMonitor(self._clock, self._sampler)
            await monitor.run(self._on_sample)
        except Exception as exc:  # no psutil, a broken sampler: run on, unmeasured
            log.warning("IO monitoring stopped; IO is no longer measured", error=repr(exc))

    def _on_sample(self, sample: IoSample) -> None:
        gov = self.governor
        now = self._clock.now_ms()
        gov.observe(sample, now)
        self.poll_pressure(now)
        if gov.next_admission_ms(now) is not None:
            self._wake()  # refill rates changed: deferred work may fit sooner

    def poll_pressure(self, now: int) -> None:
        event = self.governor.poll_pressure(now)
        if event is not None:
            self.pressure_on = event.throttling
            self._publish(event)

    # --- admission (for the dispatch decision) --------------------------------------------

    def admission(
        self, ready: list[Ready], types: list[str], now: int
    ) -> Callable[[Candidate], bool] | None:
        """The IO admission check for one round of ``decide``, or None when no candidate can
        expect IO (none declares ``ioCost`` and no runnable type has a learned cost): then
        admission costs nothing. Otherwise a candidate that expects no IO is still admitted
        without asking the governor, and a declared ``ioCost`` is decoded only when present.
        """
        gov = self.governor
        knows = gov.cost_model.knows
        if not self._types_seen.issuperset(types):
            for t in types:
                if t not in self._types_seen:
                    self._seed_cost(t)
        declared = {r.id: r.io_cost for r in ready if r.io_cost is not None}
        if not declared and not any(knows(t) for t in types):
            return None
        admitted = self.admitted
        registry = self._registry

        def admit(c: Candidate) -> bool:
            raw = declared.get(c.id)
            if raw is None and not knows(c.type):
                return True
            expected = gov.expected_io(c.type, _decode_io(raw) if raw is not None else None)
            if not expected.total():
                return True
            reg = registry.get(c.type)
            paced = reg is not None and reg.paced
            if gov.admit(c.id, c.priority, expected, now, task_type=c.type, paced=paced):
                admitted.add(c.id)
                return True
            return False

        return admit

    def _seed_cost(self, task_type: str) -> None:
        """Once per type: start its learned IO cost from the average of its stored history."""
        self._types_seen.add(task_type)
        if self.governor.cost_model.knows(task_type):
            return
        average = self._store.average_io(task_type)
        if average is not None and average.total():
            self.governor.cost_model.seed(task_type, average)

    def take_admission(self, task_id: int) -> bool:
        """Whether the claim of ``task_id`` was admitted (it now holds its expected bytes)."""
        if task_id not in self.admitted:
            return False
        self.admitted.discard(task_id)
        return True

    def give_back_admissions(self, now: int, keep: frozenset[int] = frozenset()) -> None:
        """Release what the governor admitted for claims that were not written."""
        for task_id in [i for i in self.admitted if i not in keep]:
            self.admitted.discard(task_id)
            self.governor.release(task_id, IoBytes(), now)

    # --- accounting -----------------------------------------------------------------------

    def run_ended(self, run: Run, io: IoBytes | None) -> None:
        """Settle a run's IO: the governor releases what it prepaid, the cost model learns."""
        if run.io_admitted:
            run.io_admitted = False
            self.governor.release(run.id, io)
        elif io is not None:
            self.governor.cost_model.observe(run.type, io)

    def forget(self, task_id: int) -> None:
        """A task that will not run (cancelled, superseded, expired, paused)."""
        self.governor.forget(task_id)

    def record_io(self, run: Run, amounts: tuple[int, int, int, int]) -> None:
        io = run.io
        disk_read, disk_write, net_rx, net_tx = amounts
        io.disk_read += disk_read
        io.disk_write += disk_write
        io.net_rx += net_rx
        io.net_tx += net_tx
        gov = self.governor
        for resource, nbytes in zip(RESOURCES, amounts, strict=True):
            if nbytes > 0:
                gov.record(run.id, resource, nbytes)

    async def consume_io(self, run: Run, resource: Resource, nbytes: int) -> None:
        if resource not in RESOURCES:
            raise ValueError(f"unknown IO resource {resource!r}; one of {', '.join(RESOURCES)}")
        if nbytes <= 0:
            return
        await self.governor.consume(run.id, resource, nbytes, run.priority)
        io = run.io
        if resource == "diskRead":
            io.disk_read += nbytes
        elif resource == "diskWrite":
            io.disk_write += nbytes
        elif resource == "netRx":
            io.net_rx += nbytes
        else:
            io.net_tx += nbytes
