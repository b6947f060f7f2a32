"""The IO monitor: psutil edge cases through a fake psutil, rates, resets, loopback."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from taskmill_core.clock import FakeClock
from taskmill_core.iomonitor import (
    CounterSample,
    IoMonitor,
    PsutilSampler,
    RateMeter,
    is_loopback,
    linux_disk_filter,
)


def disk(read: int, write: int) -> SimpleNamespace:
    return SimpleNamespace(read_bytes=read, write_bytes=write, read_count=0, busy_time=0)


def nic(rx: int, tx: int) -> SimpleNamespace:
    return SimpleNamespace(bytes_recv=rx, bytes_sent=tx, packets_recv=0)


class FakePsutil:
    """The four psutil functions the sampler uses, with scripted answers."""

    def __init__(self) -> None:
        self.disks: Any = {}
        self.nics: Any = {}
        self.stats: dict[str, Any] = {}
        self.addrs: dict[str, list[Any]] = {}
        self.raise_disk = False
        self.classify_calls = 0

    def disk_io_counters(self, perdisk: bool = False, nowrap: bool = True) -> Any:
        assert perdisk
        if self.raise_disk:
            raise RuntimeError("couldn't find any physical disk")
        return self.disks

    def net_io_counters(self, pernic: bool = False, nowrap: bool = True) -> Any:
        assert pernic
        return self.nics

    def net_if_stats(self) -> dict[str, Any]:
        self.classify_calls += 1
        return self.stats

    def net_if_addrs(self) -> dict[str, list[Any]]:
        return self.addrs


def addr(family: int, address: str) -> SimpleNamespace:
    return SimpleNamespace(family=family, address=address, netmask=None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> FakePsutil:
    return FakePsutil()


def sampler(fake: FakePsutil) -> PsutilSampler:
    return PsutilSampler(fake, disk_filter=lambda name: not name.startswith("loop"))


# --- PsutilSampler ----------------------------------------------------------------------------


def test_sampler_reads_disks_and_nics(fake: FakePsutil) -> None:
    fake.disks = {"sda": disk(100, 200), "loop0": disk(5, 5)}
    fake.nics = {"eth0": nic(1000, 2000), "lo": nic(50, 50)}
    s = sampler(fake).sample()
    assert s.devices == {
        "disk:sda": {"diskRead": 100, "diskWrite": 200},
        "net:eth0": {"netRx": 1000, "netTx": 2000},
    }
    assert s.totals() == {"diskRead": 100, "diskWrite": 200, "netRx": 1000, "netTx": 2000}


def test_sampler_tolerates_none_and_errors(fake: FakePsutil) -> None:
    fake.disks = None
    fake.nics = None
    assert sampler(fake).sample().devices == {}
    fake.raise_disk = True
    fake.nics = {"eth0": nic(1, 2)}
    assert list(sampler(fake).sample().devices) == ["net:eth0"]


def test_loopback_excluded_by_name_flag_and_address(fake: FakePsutil) -> None:
    fake.nics = {
        "lo": nic(1, 1),
        "lo0": nic(1, 1),
        "Loopback Pseudo-Interface 1": nic(1, 1),
        "weird0": nic(1, 1),  # flagged loopback
        "tun9": nic(1, 1),  # carries ::1
        "eth0": nic(7, 8),
        "Ethernet 2": nic(9, 9),
    }
    fake.stats = {"weird0": SimpleNamespace(flags="up,loopback,running")}
    fake.addrs = {
        "tun9": [addr(socket.AF_INET6, "::1%tun9")],
        "eth0": [addr(socket.AF_INET, "192.168.1.2")],
    }
    s = sampler(fake)
    assert sorted(s.sample().devices) == ["net:Ethernet 2", "net:eth0"]
    assert s.loopback_interfaces() == sorted(
        ["lo", "lo0", "Loopback Pseudo-Interface 1", "weird0", "tun9"]
    )
    assert "loopback" in repr(s)


def test_loopback_classified_once_per_new_interface(fake: FakePsutil) -> None:
    fake.nics = {"eth0": nic(1, 1)}
    s = sampler(fake)
    s.sample()
    s.sample()
    assert fake.classify_calls == 1
    fake.nics = {"eth0": nic(1, 1), "wlan0": nic(1, 1)}
    s.sample()
    assert fake.classify_calls == 2


def test_is_loopback() -> None:
    assert is_loopback("lo")
    assert is_loopback("LO0")
    assert is_loopback("Loopback Pseudo-Interface 1")
    assert is_loopback("x", flags="up,loopback")
    assert is_loopback("x", addresses=[(socket.AF_INET, "127.0.0.1")])
    assert not is_loopback("eth0", flags="up,broadcast", addresses=[(socket.AF_INET, "10.0.0.1")])
    assert not is_loopback("local0")


def test_linux_disk_filter_skips_partitions_and_virtual_devices(tmp_path: Path) -> None:
    for name in ("sda", "nvme0n1", "vda"):
        (tmp_path / name / "device").mkdir(parents=True)
    for name in ("loop0", "dm-0", "zram0", "md0"):
        (tmp_path / name).mkdir()
    accept = linux_disk_filter(str(tmp_path))
    assert [n for n in ("sda", "sda1", "nvme0n1", "nvme0n1p2", "vda") if accept(n)] == [
        "sda",
        "nvme0n1",
        "vda",
    ]
    assert not any(accept(n) for n in ("loop0", "dm-0", "zram0", "md0"))


def test_real_psutil_sample_has_no_loopback() -> None:
    s = PsutilSampler()
    sample = s.sample()
    assert not any(key in ("net:lo", "net:lo0") for key in sample.devices)
    assert all(v >= 0 for counters in sample.devices.values() for v in counters.values())


# --- RateMeter --------------------------------------------------------------------------------


def test_first_sample_is_baseline_then_rates() -> None:
    m = RateMeter(alpha=1.0)
    assert m.update(CounterSample.of({"sda": (0, 0)}, {"eth0": (0, 0)}), 1000) is None
    s = m.update(CounterSample.of({"sda": (500, 1000)}, {"eth0": (2000, 0)}), 1500)
    assert s is not None
    assert s.interval_ms == 500
    assert s.bytes == {"diskRead": 500, "diskWrite": 1000, "netRx": 2000, "netTx": 0}
    assert s.rate == {"diskRead": 1000.0, "diskWrite": 2000.0, "netRx": 4000.0, "netTx": 0.0}


def test_counter_reset_is_clamped_per_device() -> None:
    m = RateMeter(alpha=1.0)
    m.update(CounterSample.of({"sda": (1000, 1000), "sdb": (0, 0)}), 0)
    # sda's counters reset (went backwards); sdb moved 300 bytes: only sdb counts.
    s = m.update(CounterSample.of({"sda": (10, 1000), "sdb": (300, 0)}), 1000)
    assert s is not None
    assert s.bytes["diskRead"] == 300
    assert m.statistics().resets == 1
    # after the reset sda counts again from its new baseline
    s = m.update(CounterSample.of({"sda": (110, 1000), "sdb": (300, 0)}), 2000)
    assert s is not None and s.bytes["diskRead"] == 100


def test_vanishing_and_new_devices_do_not_jump() -> None:
    m = RateMeter(alpha=1.0)
    m.update(CounterSample.of({"sda": (10**12, 10**12)}, {"eth0": (5, 5)}), 0)
    # sda unplugged, usb disk with large lifetime counters appears: neither is a delta.
    s = m.update(CounterSample.of({"usb": (7 * 10**9, 10**9)}, {"eth0": (15, 5)}), 1000)
    assert s is not None
    assert s.bytes == {"diskRead": 0, "diskWrite": 0, "netRx": 10, "netTx": 0}
    s = m.update(CounterSample.of({"usb": (7 * 10**9 + 40, 10**9)}, {"eth0": (15, 5)}), 2000)
    assert s is not None and s.bytes["diskRead"] == 40
    assert m.statistics().devices == 2


def test_missing_resource_in_none_sample_is_like_vanished() -> None:
    m = RateMeter(alpha=1.0)
    m.update(CounterSample.of({"sda": (100, 100)}), 0)
    s = m.update(CounterSample(), 1000)  # psutil returned None for disks
    assert s is not None and s.bytes["diskRead"] == 0
    s = m.update(CounterSample.of({"sda": (200, 100)}), 2000)  # back: baseline again
    assert s is not None and s.bytes["diskRead"] == 0


def test_ewma_is_time_aware() -> None:
    one = RateMeter(alpha=0.5)
    one.update(CounterSample.of({"d": (0, 0)}), 0)
    one.update(CounterSample.of({"d": (0, 0)}), 1000)  # smoothed 0
    s = one.update(CounterSample.of({"d": (1000, 0)}), 2000)  # rate 1000
    assert s is not None and s.smoothed["diskRead"] == pytest.approx(500.0)
    two = RateMeter(alpha=0.5)
    two.update(CounterSample.of({"d": (0, 0)}), 0)
    two.update(CounterSample.of({"d": (0, 0)}), 1000)
    two.update(CounterSample.of({"d": (500, 0)}), 1500)  # two half-second samples at 1000 B/s
    s = two.update(CounterSample.of({"d": (1000, 0)}), 2000)
    assert s is not None and s.smoothed["diskRead"] == pytest.approx(500.0)
    assert "samples=" in repr(two)


def test_non_advancing_clock_is_ignored() -> None:
    m = RateMeter()
    m.update(CounterSample.of({"d": (0, 0)}), 1000)
    assert m.update(CounterSample.of({"d": (10, 0)}), 1000) is None
    assert m.update(CounterSample.of({"d": (10, 0)}), 900) is None
    s = m.update(CounterSample.of({"d": (20, 0)}), 2000)
    assert s is not None and s.bytes["diskRead"] == 20


def test_rate_meter_rejects_bad_alpha() -> None:
    with pytest.raises(ValueError):
        RateMeter(alpha=0.0)


# --- IoMonitor --------------------------------------------------------------------------------


class ScriptedSampler:
    def __init__(self, samples: list[CounterSample]) -> None:
        self.samples = samples
        self.calls = 0

    def sample(self) -> CounterSample:
        s = self.samples[min(self.calls, len(self.samples) - 1)]
        self.calls += 1
        return s


@pytest.mark.anyio
async def test_monitor_polls_in_a_thread_with_clock_time() -> None:
    clock = FakeClock(start_ms=0)
    scripted = ScriptedSampler(
        [CounterSample.of({"sda": (0, 0)}), CounterSample.of({"sda": (0, 4000)})]
    )
    mon = IoMonitor(clock, scripted, alpha=1.0)
    assert await mon.poll() is None
    clock.advance(2000)
    s = await mon.poll()
    assert s is not None and s.rate["diskWrite"] == 2000.0 and s.at_ms == 2000
    assert mon.last is s
    assert "IoMonitor" in repr(mon)


@pytest.mark.anyio
async def test_monitor_run_samples_on_a_fixed_cadence() -> None:
    import anyio

    clock = FakeClock(start_ms=0)
    scripted = ScriptedSampler([CounterSample.of({"sda": (i * 100, 0)}) for i in range(10)])
    mon = IoMonitor(clock, scripted, alpha=1.0, interval_ms=1000)
    seen: list[tuple[int, float]] = []

    async def on_sample(s: Any) -> None:
        seen.append((s.at_ms, s.rate["diskRead"]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(mon.run, on_sample)
        while len(seen) < 3:
            await anyio.wait_all_tasks_blocked()
            deadline = clock.next_deadline()
            assert deadline is not None
            clock.advance(deadline - clock.now_ms())
        tg.cancel_scope.cancel()
    assert seen == [(1000, 100.0), (2000, 100.0), (3000, 100.0)]
