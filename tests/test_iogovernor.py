"""The IO governor, deterministic: scripted samples, a fake clock, no real sleeping."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import anyio
import pytest

from taskmill_core.clock import FakeClock
from taskmill_core.iogovernor import CapacityLearner, CostModel, GovernorSettings, IoGovernor
from taskmill_core.iomonitor import RESOURCES, CounterSample, IoSample, RateMeter, Resource
from taskmill_core.types import IoBytes, IoConfig

MB = 1_000_000
W = IoBytes  # shorthand in tables below


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Trace:
    """Synthetic machine counters run through the real RateMeter."""

    def __init__(self, clock: FakeClock, alpha: float = 0.3) -> None:
        self.clock = clock
        self.meter = RateMeter(alpha)
        self.totals: dict[Resource, int] = dict.fromkeys(RESOURCES, 0)
        self.meter.update(self._sample(), clock.now_ms())

    def _sample(self) -> CounterSample:
        t = self.totals
        return CounterSample.of(
            {"sda": (t["diskRead"], t["diskWrite"])}, {"eth0": (t["netRx"], t["netTx"])}
        )

    def add(self, resource: Resource, nbytes: float) -> None:
        self.totals[resource] += round(nbytes)

    def sample(self) -> IoSample:
        s = self.meter.update(self._sample(), self.clock.now_ms())
        assert s is not None
        return s


def make(config: IoConfig, start_ms: int = 0, **settings: Any) -> tuple[IoGovernor, FakeClock]:
    clock = FakeClock(start_ms=start_ms)
    gov = IoGovernor(config, clock=clock, settings=replace(GovernorSettings(), **settings))
    return gov, clock


DISK10 = IoConfig(disk_write_bps=10 * MB, auto=False)


# --- admission --------------------------------------------------------------------------------


def test_unlimited_resources_admit_everything() -> None:
    gov, _ = make(IoConfig(auto=False))
    assert all(gov.admit(i, 255, W(disk_write=10**12, net_rx=10**12)) for i in range(1, 50))
    st = gov.status()
    assert not st.throttling and st.deferred == 0 and st.capacity == {}


def test_saturation_defers_only_tasks_using_the_saturated_resource() -> None:
    gov, _ = make(IoConfig(disk_write_bps=10 * MB, net_bps=100 * MB, auto=False))
    assert gov.admit(1, 128, W(disk_write=8 * MB))
    assert not gov.admit(2, 128, W(disk_write=4 * MB))  # diskWrite saturated
    assert not gov.admit(3, 128, W(disk_write=4 * MB, net_rx=1))  # touches it too
    assert gov.admit(4, 128, W(net_rx=50 * MB, net_tx=50 * MB))  # other resources
    assert gov.admit(5, 255, W(disk_read=10**9))  # diskRead has no budget
    assert gov.admit(6, 255, W())  # no IO at all
    st = gov.status()
    assert st.throttling and st.deferred == 2
    assert st.capacity == {"diskWrite": 10 * MB, "netRx": 100 * MB, "netTx": 100 * MB}


def test_net_budget_applies_to_each_direction() -> None:
    gov, _ = make(IoConfig(net_bps=10 * MB, auto=False))
    assert gov.admit(1, 128, W(net_rx=9 * MB))
    assert gov.admit(2, 128, W(net_tx=9 * MB))
    assert not gov.admit(3, 128, W(net_rx=2 * MB))


def test_more_urgent_work_is_admitted_first() -> None:
    gov, clock = make(DISK10)
    assert gov.admit(1, 128, W(disk_write=6 * MB))  # 4 MB left
    # background must leave half the bucket: 3 MB + 5 MB > 4 MB
    assert not gov.admit(2, 255, W(disk_write=3 * MB))
    # realtime may go into debt by half the bucket
    assert gov.admit(3, 0, W(disk_write=3 * MB))  # 1 MB left
    assert not gov.admit(4, 0, W(disk_write=7 * MB))  # needs 2 MB
    # a normal task that would fit does not overtake the deferred urgent one
    assert not gov.admit(5, 128, W(disk_write=MB // 2))
    wake = gov.next_admission_ms()
    assert wake == 100  # 1 MB more at 10 MB/s
    clock.advance(100)
    assert not gov.admit(2, 255, W(disk_write=3 * MB))  # tried in order: still held back
    assert gov.admit(4, 0, W(disk_write=7 * MB))  # the urgent one gets in first
    assert gov.status().deferred == 2
    # background waits until the bucket holds 3 MB + 5 MB again
    clock.advance(gov.next_admission_ms() or 0)
    assert gov.admit(5, 128, W(disk_write=MB // 2))
    clock.advance(2000)
    assert gov.admit(2, 255, W(disk_write=3 * MB))
    assert gov.status().deferred == 0


def test_huge_task_runs_alone_and_never_starves() -> None:
    gov, clock = make(DISK10)
    trace = Trace(clock)
    assert gov.admit(1, 128, W(disk_write=5 * MB))
    # 1 GB is 100 s of budget: it can never "fit", but runs once nothing heavy runs.
    assert not gov.admit(2, 255, W(disk_write=1000 * MB))
    assert not gov.admit(3, 255, W(disk_write=MB))  # no overtaking the big one
    clock.advance(1000)
    trace.add("diskWrite", 5 * MB)
    gov.observe(trace.sample())
    gov.release(1)
    assert gov.admit(2, 255, W(disk_write=1000 * MB))
    assert gov.statistics().resources[1].tokens < -900 * MB
    # it moves its gigabyte (observed, attributed to it, so not "other programs")
    for _ in range(25):
        clock.advance(1000)
        trace.add("diskWrite", 40 * MB)
        gov.observe(trace.sample())
    gov.release(2)
    disk = gov.statistics().resources[1]
    assert disk.others_bps < 0.01 * MB
    # the debt is paid back at the budget before anything else may write
    assert not gov.admit(3, 255, W(disk_write=MB))
    wake = gov.next_admission_ms()
    assert wake is not None and wake > clock.now_ms()


def test_release_refunds_unused_prepaid_bytes_and_learns_cost() -> None:
    gov, _ = make(DISK10)
    assert gov.admit(1, 128, W(disk_write=8 * MB), task_type="thumb")
    gov.release(1, actual=W(disk_write=2 * MB))
    # 6 MB unused come back; the 2 MB it moved (not sampled yet) stay charged
    assert gov.statistics().resources[1].tokens == pytest.approx(8 * MB)
    assert gov.cost_model.learned("thumb") == W(disk_write=2 * MB)
    assert gov.expected_io("thumb") == W(disk_write=2 * MB)
    assert gov.expected_io("thumb", W(net_rx=5)) == W(net_rx=5)
    gov.release(99)  # unknown: no-op


def test_admit_twice_is_an_error() -> None:
    gov, _ = make(DISK10)
    assert gov.admit(1, 128, W())
    with pytest.raises(ValueError):
        gov.admit(1, 128, W())


def test_deferred_tasks_can_be_forgotten_or_expire() -> None:
    gov, clock = make(DISK10)
    assert gov.admit(1, 128, W(disk_write=9 * MB))
    assert not gov.admit(2, 0, W(disk_write=9 * MB))
    assert not gov.admit(3, 128, W(disk_write=1))  # held back by the urgent one
    gov.forget(2)
    assert gov.admit(3, 128, W(disk_write=1))
    assert not gov.admit(4, 0, W(disk_write=9 * MB))
    clock.advance(10_001)  # never retried: it left the queue
    assert gov.status().deferred == 0 and gov.next_admission_ms() is None


def test_next_admission_is_capped_so_deferred_work_is_retried() -> None:
    gov, _ = make(DISK10)
    assert gov.admit(1, 0, W(disk_write=14 * MB))  # bucket at -4 MB
    assert not gov.admit(2, 0, W(disk_write=2 * MB))  # needs -3 MB
    assert gov.next_admission_ms() == 100
    gov.forget(2)
    assert gov.admit(3, 0, W(disk_write=100 * MB)) is False  # 1 is heavy: not alone
    gov.release(1, actual=W())  # nothing moved: prepaid bytes come back, bucket full
    assert gov.admit(3, 0, W(disk_write=100 * MB))  # alone: bucket at -90 MB
    assert not gov.admit(4, 0, W(disk_write=MB))  # needs -4 MB: 8.6 s away
    assert gov.next_admission_ms() == 5000  # retried before its entry would expire


def test_other_programs_io_reduces_the_refill() -> None:
    gov, clock = make(DISK10)
    trace = Trace(clock)
    for _ in range(20):
        clock.advance(1000)
        trace.add("diskWrite", 6 * MB)  # someone else writes 6 MB/s
        gov.observe(trace.sample())
    disk = gov.statistics().resources[1]
    assert disk.others_bps == pytest.approx(6 * MB, rel=0.01)
    assert disk.refill_bps == pytest.approx(4 * MB, rel=0.02)
    # ... but never below min_share of the budget
    for _ in range(20):
        clock.advance(1000)
        trace.add("diskWrite", 60 * MB)
        gov.observe(trace.sample())
    assert gov.statistics().resources[1].refill_bps == pytest.approx(1 * MB)


def test_own_reported_io_is_not_counted_as_other_programs() -> None:
    gov, clock = make(DISK10)
    trace = Trace(clock)
    assert gov.admit(1, 128, W(disk_write=100 * MB), paced=True)
    assert gov.admit(2, 128, W(disk_write=MB))
    for _ in range(10):
        clock.advance(1000)
        for _ in range(6):
            assert gov.reserve(1, "diskWrite", MB) == 0
        gov.record(2, "diskWrite", 2 * MB)  # an unpaced task reporting as it goes
        trace.add("diskWrite", 8 * MB)
        gov.observe(trace.sample())
    assert gov.statistics().resources[1].others_bps < 0.05 * MB


# --- pacing -----------------------------------------------------------------------------------


def test_reserve_paces_and_prefers_urgent_consumers() -> None:
    gov, clock = make(DISK10)
    assert gov.admit(1, 255, W(disk_write=10**9), paced=True)
    assert gov.admit(2, 0, W(disk_write=10**9), paced=True)

    def bucket() -> float:
        return gov.statistics().resources[1].tokens

    # the background copy drains the bucket only down to its reserve (half the bucket)
    while gov.reserve(1, "diskWrite", MB) == 0:
        pass
    assert 5 * MB <= bucket() < 6 * MB + 1
    # the urgent copy can still draw, down to its own floor
    assert gov.reserve(2, "diskWrite", MB) == 0
    wait = gov.reserve(1, "diskWrite", MB)
    assert wait > 0 and gov.statistics().waiting == 1 and gov.throttling()
    clock.advance(wait)
    assert gov.reserve(1, "diskWrite", MB) == 0
    assert gov.statistics().waiting == 0


@pytest.mark.anyio
async def test_consume_paces_a_big_copy_on_the_clock() -> None:
    gov, clock = make(DISK10)
    assert gov.admit(1, 192, W(disk_write=100 * MB), paced=True)
    done = anyio.Event()

    async def copy() -> None:
        await gov.consume(1, "diskWrite", 100 * MB)  # one call, drawn in chunks
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(copy)
        while not done.is_set():
            await anyio.wait_all_tasks_blocked()
            deadline = clock.next_deadline()
            if deadline is not None:
                clock.advance(deadline - clock.now_ms())
    # 100 MB at 10 MB/s, minus what the bucket held above the background reserve
    assert 9_000 <= clock.now_ms() <= 10_000


# --- long synthetic runs: the budget holds ----------------------------------------------------


def test_budget_holds_over_ten_minutes_of_admissions() -> None:
    """Unpaced tasks on a fast disk, plus another program writing 2 MB/s."""
    gov, clock = make(DISK10)
    trace = Trace(clock)
    rng = random.Random(7)
    speed = 40 * MB / 1000  # bytes per ms each task moves
    running: dict[int, float] = {}  # id -> bytes left
    next_id = 1
    ours = others = 0.0
    for ms in range(1, 600_001):
        clock.advance(1)
        for tid in list(running):
            step = min(speed, running[tid])
            running[tid] -= step
            trace.add("diskWrite", step)
            ours += step
            if running[tid] <= 0:
                del running[tid]
                gov.release(tid)
        trace.add("diskWrite", 2 * MB / 1000)
        others += 2 * MB / 1000
        if ms % 1000 == 0:
            gov.observe(trace.sample())
        while len(running) < 4:
            size = rng.randint(1, 6) * MB
            if not gov.admit(next_id, rng.choice((64, 128, 192)), W(disk_write=size)):
                break
            running[next_id] = size
            next_id += 1
    total_rate = (ours + others) / 600
    assert total_rate == pytest.approx(10 * MB, rel=0.05)
    assert ours / 600 == pytest.approx(8 * MB, rel=0.05)


@pytest.mark.anyio
async def test_budget_holds_over_ten_minutes_of_pacing() -> None:
    """Two paced copies (background and normal) share the budget with another program."""
    gov, clock = make(DISK10, start_ms=0)
    trace = Trace(clock)
    moved = {1: 0, 2: 0}
    assert gov.admit(1, 192, W(disk_write=10**12), paced=True)
    assert gov.admit(2, 128, W(disk_write=10**12), paced=True)

    async def copy(tid: int) -> None:
        while True:
            await gov.consume(tid, "diskWrite", 256 * 1024)
            trace.add("diskWrite", 256 * 1024)
            moved[tid] += 256 * 1024

    async with anyio.create_task_group() as tg:
        tg.start_soon(copy, 1)
        tg.start_soon(copy, 2)
        next_sample = 1000
        while clock.now_ms() < 600_000:
            await anyio.wait_all_tasks_blocked()
            deadline = min(clock.next_deadline() or next_sample, next_sample)
            clock.advance(deadline - clock.now_ms())
            if clock.now_ms() >= next_sample:
                trace.add("diskWrite", 3 * MB)  # the other program
                gov.observe(trace.sample())
                next_sample += 1000
        tg.cancel_scope.cancel()
    ours = (moved[1] + moved[2]) / 600
    assert ours + 3 * MB == pytest.approx(10 * MB, rel=0.05)
    assert moved[2] > moved[1]  # the more urgent copy got more


# --- learned capacity and cost ----------------------------------------------------------------


def test_learned_capacity_converges_and_decays() -> None:
    gov, clock = make(IoConfig(), learn_half_life_ms=600_000)
    trace = Trace(clock)
    rng = random.Random(3)
    assert gov.status().capacity == {}  # nothing learned: unlimited
    assert gov.admit(1, 128, W(disk_write=10**10))  # our heavy copy runs unthrottled
    for _ in range(60):
        clock.advance(1000)
        trace.add("diskWrite", 80 * MB * rng.uniform(0.9, 1.1))
        gov.observe(trace.sample())
    cap = gov.status().capacity["diskWrite"]
    assert cap == pytest.approx(80 * MB, rel=0.1)
    disk = gov.statistics().resources[1]
    assert disk.established and disk.budget == pytest.approx(0.8 * cap)
    gov.release(1)
    # the device got slower (or the data moved elsewhere): the estimate comes down slowly
    for _ in range(60):
        clock.advance(1000)
        trace.add("diskWrite", 40 * MB * rng.uniform(0.9, 1.1))
        gov.observe(trace.sample())
    assert gov.status().capacity["diskWrite"] > 70 * MB
    for _ in range(1200):
        clock.advance(1000)
        trace.add("diskWrite", 40 * MB * rng.uniform(0.9, 1.1))
        gov.observe(trace.sample())
    assert gov.status().capacity["diskWrite"] == pytest.approx(40 * MB, rel=0.12)
    assert gov.status().utilization["diskWrite"] == pytest.approx(1.0, rel=0.15)


def test_learner_ignores_spikes_and_pauses_decay_while_throttled() -> None:
    learner = CapacityLearner(window_ms=10_000, percentile=0.9, half_life_ms=1000, establish_ms=0)
    for t in range(1, 11):
        learner.observe(100.0 if t == 5 else 10.0, t * 1000, 1000, busy=True, throttled=False)
    assert learner.capacity == pytest.approx(10.0)  # one spike in ten is not sustained
    learner.seed(50.0)
    for t in range(11, 30):
        learner.observe(10.0, t * 1000, 1000, busy=True, throttled=True)
    assert learner.capacity == pytest.approx(50.0)
    assert "established=True" in repr(learner)


def test_cost_model_converges_per_type() -> None:
    model = CostModel(alpha=0.1)
    rng = random.Random(5)
    for _ in range(300):
        model.observe("thumb", W(disk_read=round(rng.gauss(4 * MB, 0.5 * MB))))
        model.observe("upload", W(net_tx=round(rng.gauss(50 * MB, 5 * MB)), disk_read=10 * MB))
    thumb = model.expected("thumb")
    assert thumb.disk_read == pytest.approx(4 * MB, rel=0.05) and thumb.net_tx == 0
    upload = model.expected("upload", W())  # all-zero declaration: not declared
    assert upload.net_tx == pytest.approx(50 * MB, rel=0.05)
    assert upload.disk_read == 10 * MB
    assert model.expected("new") == W()
    assert model.statistics().types == 2 and "observations=600" in repr(model)


def test_cost_model_is_bounded() -> None:
    model = CostModel(max_types=2)
    model.observe("a", W(disk_read=1))
    model.observe("b", W(disk_read=2))
    model.observe("a", W(disk_read=1))
    model.seed("c", W(disk_read=3))
    assert model.learned("b") is None and model.learned("a") is not None
    assert model.learned("c") == W(disk_read=3)


# --- status, pressure events, configuration ---------------------------------------------------


def test_pressure_events_on_transitions_and_at_most_1hz() -> None:
    gov, clock = make(DISK10)
    assert gov.poll_pressure() is None
    assert gov.admit(1, 0, W(disk_write=14 * MB))  # bucket at -4 MB
    assert gov.poll_pressure() is None  # admitted: no throttling
    assert not gov.admit(2, 255, W(disk_write=5 * MB))  # needs 10 MB: 1.4 s
    ev = gov.poll_pressure()
    assert ev is not None and ev.throttling and ev.deferred == 1
    assert ev.EVENT == "io.pressure"
    clock.advance(400)
    assert not gov.admit(2, 255, W(disk_write=5 * MB))
    assert gov.poll_pressure() is None
    clock.advance(600)
    assert not gov.admit(2, 255, W(disk_write=5 * MB))
    assert gov.poll_pressure() is not None
    assert gov.poll_pressure() is None
    clock.advance(400)
    assert gov.admit(2, 255, W(disk_write=5 * MB))
    ev = gov.poll_pressure()
    assert ev is not None and not ev.throttling and ev.deferred == 0
    clock.advance(5000)
    assert gov.poll_pressure() is None


def test_configure_switches_budgets() -> None:
    gov, _ = make(IoConfig(auto=False))
    assert gov.admit(1, 128, W(disk_write=10**9))
    gov.configure(DISK10)
    assert gov.admit(2, 128, W(disk_write=MB))  # a fresh budget starts with a full bucket
    assert not gov.admit(3, 128, W(disk_write=50 * MB))  # too big, and 1 GB is running
    gov.release(1)
    gov.release(2, actual=W())
    assert gov.admit(3, 128, W(disk_write=50 * MB))  # alone
    gov.configure(IoConfig(disk_write_bps=2 * MB, auto=False))
    assert gov.statistics().resources[1].tokens <= 2 * MB
    gov.configure(IoConfig(auto=False))
    assert gov.admit(4, 128, W(disk_write=10**9))


def test_status_statistics_and_repr() -> None:
    gov, clock = make(IoConfig(disk_read_bps=50 * MB, auto=False))
    trace = Trace(clock, alpha=1.0)
    clock.advance(1000)
    trace.add("diskRead", 25 * MB)
    trace.add("netRx", 3 * MB)
    gov.observe(trace.sample())
    st = gov.status()
    assert st.disk_read_bps == pytest.approx(25 * MB) and st.net_rx_bps == pytest.approx(3 * MB)
    assert st.utilization == {"diskRead": pytest.approx(0.5)}
    stats = gov.statistics()
    assert stats.running == 0 and not stats.throttling
    assert [r.resource for r in stats.resources] == list(RESOURCES)
    assert "diskRead=" in repr(gov) and "diskWrite=unlimited" in repr(gov)
