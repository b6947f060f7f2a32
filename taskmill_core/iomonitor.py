"""Measuring the machine's IO: the only module in ``taskmill_core`` that calls psutil.

Three layers, each replaceable in tests:

* a :class:`Sampler` reads *cumulative* byte counters per device (disks, network interfaces);
  :class:`PsutilSampler` is the real one (loopback excluded, partitions and virtual block devices
  skipped so bytes are not counted twice, ``None`` answers and vanished devices tolerated);
* a :class:`RateMeter` turns successive counter samples, stamped with the injected clock's time,
  into bytes moved per interval and per-resource rates, handling counter resets and devices that
  come and go per device, and smoothing the rates with a time-aware EWMA;
* an :class:`IoMonitor` runs the sampler about once a second in a worker thread (psutil reads
  ``/proc`` and may block) and hands every :class:`IoSample` to a callback — in the scheduler,
  :meth:`taskmill_core.iogovernor.IoGovernor.observe`.

Resources are named as on the wire (``IoBytes`` field names): ``diskRead``, ``diskWrite``,
``netRx``, ``netTx``.
"""

from __future__ import annotations

import importlib
import math
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio
import anyio.to_thread

from taskmill_core.clock import Clock
from taskmill_core.types import IoBytes

# Imported with the module (not on the event loop when the first monitor starts: ~5 ms), and
# by name, typed Any: the monitor calls it only through _call, which tolerates what is missing.
_psutil: Any = importlib.import_module("psutil")

__all__ = [
    "RESOURCES",
    "CounterSample",
    "IoMonitor",
    "IoSample",
    "PsutilSampler",
    "RateMeter",
    "Resource",
    "Sampler",
    "default_disk_filter",
    "io_bytes_from",
    "io_bytes_of",
    "is_loopback",
    "linux_disk_filter",
]

Resource = Literal["diskRead", "diskWrite", "netRx", "netTx"]
RESOURCES: tuple[Resource, ...] = ("diskRead", "diskWrite", "netRx", "netTx")


def io_bytes_of(io: IoBytes, resource: Resource) -> int:
    """The bytes ``io`` holds for one resource."""
    if resource == "diskRead":
        return io.disk_read
    if resource == "diskWrite":
        return io.disk_write
    if resource == "netRx":
        return io.net_rx
    return io.net_tx


def io_bytes_from(values: Mapping[Resource, float]) -> IoBytes:
    """An :class:`IoBytes` from per-resource values (rounded, negatives become 0)."""

    def get(resource: Resource) -> int:
        return max(0, round(values.get(resource, 0.0)))

    return IoBytes(
        disk_read=get("diskRead"),
        disk_write=get("diskWrite"),
        net_rx=get("netRx"),
        net_tx=get("netTx"),
    )


def _zeros() -> dict[Resource, float]:
    return dict.fromkeys(RESOURCES, 0.0)


# --- sampling ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterSample:
    """Cumulative byte counters per device at one moment.

    ``devices`` maps a device key (``disk:<name>`` or ``net:<name>``) to its counters. Counters
    are kept per device, not summed, so that a reset or a vanished device affects only its own
    delta instead of making the total jump.
    """

    devices: Mapping[str, Mapping[Resource, int]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        disks: Mapping[str, tuple[int, int]] | None = None,
        nics: Mapping[str, tuple[int, int]] | None = None,
    ) -> CounterSample:
        """Build from ``{disk: (read, write)}`` and ``{nic: (rx, tx)}``."""
        devices: dict[str, Mapping[Resource, int]] = {}
        for name, (read, write) in (disks or {}).items():
            devices[f"disk:{name}"] = {"diskRead": read, "diskWrite": write}
        for name, (rx, tx) in (nics or {}).items():
            devices[f"net:{name}"] = {"netRx": rx, "netTx": tx}
        return cls(devices)

    def totals(self) -> dict[Resource, int]:
        """Counters summed per resource (meaningful only as a snapshot, not for deltas)."""
        out: dict[Resource, int] = dict.fromkeys(RESOURCES, 0)
        for counters in self.devices.values():
            for resource, value in counters.items():
                out[resource] += value
        return out


class Sampler(Protocol):
    """Reads cumulative IO counters. Called from a worker thread; may block briefly.

    A sampler that never blocks (a scripted one in tests) may set a class attribute
    ``blocking = False``: the :class:`IoMonitor` then calls it on the event loop, so tests
    driven by a fake clock need not wait for a thread.
    """

    def sample(self) -> CounterSample: ...


def is_loopback(name: str, flags: str = "", addresses: list[tuple[int, str]] | None = None) -> bool:
    """Whether a network interface is a loopback one.

    By name (``lo``, ``lo0``, Windows' ``Loopback Pseudo-Interface 1``), by the ``loopback``
    flag psutil reports on POSIX, or because it carries a loopback address.
    """
    lowered = name.lower()
    if lowered in ("lo", "lo0") or lowered.startswith("loopback"):
        return True
    if "loopback" in flags.split(","):
        return True
    for family, address in addresses or []:
        host = address.split("%", 1)[0]
        if family == socket.AF_INET and host.startswith("127."):
            return True
        if family == socket.AF_INET6 and host == "::1":
            return True
    return False


def linux_disk_filter(sys_block: str = "/sys/block") -> Callable[[str], bool]:
    """Count only whole physical disks, as ``/sys/block`` describes them.

    ``disk_io_counters(perdisk=True)`` on Linux lists partitions (``sda1``, ``nvme0n1p2``) next to
    their disk and virtual devices (``dm-0``, ``md0``) stacked on top of real ones; summing them
    all would count the same bytes two or three times. Partitions are absent from
    ``/sys/block``; loop, zram, ram, device-mapper and md devices have no ``device`` link there.
    """
    cache: dict[str, bool] = {}

    def accept(name: str) -> bool:
        known = cache.get(name)
        if known is None:
            known = os.path.exists(os.path.join(sys_block, name.replace("/", "!"), "device"))
            cache[name] = known
        return known

    return accept


def default_disk_filter() -> Callable[[str], bool]:
    """The disk filter for this platform: ``/sys/block`` on Linux, every disk elsewhere.

    On Windows and macOS psutil reports whole drives only (``PhysicalDrive0``, ``disk0``).
    """
    if sys.platform.startswith("linux") and os.path.isdir("/sys/block"):
        return linux_disk_filter()
    return lambda name: True


class PsutilSampler:
    """The real :class:`Sampler`, over psutil (or any object with the same four functions).

    Disks come from ``disk_io_counters(perdisk=True)``; network from
    ``net_io_counters(pernic=True)`` without loopback interfaces. Either call may return
    ``None``/``{}`` (no disks, containers) or raise; that resource is then simply absent from
    the sample, which the :class:`RateMeter` treats like a vanished device.
    """

    def __init__(
        self,
        source: Any = None,
        *,
        disk_filter: Callable[[str], bool] | None = None,
    ) -> None:
        if source is None:
            source = _psutil
        self._source: Any = source
        self._disk_filter = disk_filter if disk_filter is not None else default_disk_filter()
        # Loopback-ness per interface name; looked up (net_if_stats/net_if_addrs are much
        # dearer than the counters) only when a name is seen for the first time.
        self._loopback: dict[str, bool] = {}

    def sample(self) -> CounterSample:
        devices: dict[str, Mapping[Resource, int]] = {}
        for name, counters in self._call("disk_io_counters", perdisk=True).items():
            if self._disk_filter(name):
                devices[f"disk:{name}"] = {
                    "diskRead": int(counters.read_bytes),
                    "diskWrite": int(counters.write_bytes),
                }
        nics = self._call("net_io_counters", pernic=True)
        unknown = [name for name in nics if name not in self._loopback]
        if unknown:
            self._classify(unknown)
        for name, counters in nics.items():
            if not self._loopback[name]:
                devices[f"net:{name}"] = {
                    "netRx": int(counters.bytes_recv),
                    "netTx": int(counters.bytes_sent),
                }
        return CounterSample(devices)

    def loopback_interfaces(self) -> list[str]:
        """Interface names seen so far and excluded as loopback."""
        return sorted(name for name, loop in self._loopback.items() if loop)

    def _call(self, function: str, **kwargs: bool) -> Mapping[str, Any]:
        try:
            result = getattr(self._source, function)(**kwargs)
        except (OSError, RuntimeError):
            # psutil raises e.g. when /proc/diskstats is missing (some containers).
            return {}
        return result if isinstance(result, Mapping) else {}

    def _classify(self, names: list[str]) -> None:
        stats = self._call_plain("net_if_stats")
        addrs = self._call_plain("net_if_addrs")
        for name in names:
            flags = str(getattr(stats.get(name), "flags", "") or "")
            addresses = [
                (int(getattr(a, "family", -1)), str(getattr(a, "address", "") or ""))
                for a in addrs.get(name, [])
            ]
            self._loopback[name] = is_loopback(name, flags, addresses)

    def _call_plain(self, function: str) -> Mapping[str, Any]:
        try:
            result = getattr(self._source, function)()
        except (OSError, RuntimeError, AttributeError):
            return {}
        return result if isinstance(result, Mapping) else {}

    def __repr__(self) -> str:
        return f"PsutilSampler(loopback={self.loopback_interfaces()})"


# --- rates ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IoSample:
    """What the machine moved during one sampling interval (all programs, ours included)."""

    at_ms: int
    interval_ms: int
    bytes: Mapping[Resource, int]
    """Bytes moved during the interval, per resource."""
    rate: Mapping[Resource, float]
    """Raw bytes/s over the interval."""
    smoothed: Mapping[Resource, float]
    """EWMA of ``rate`` (what status reports and capacity learning uses)."""


@dataclass(frozen=True, slots=True)
class RateMeterStatistics:
    samples: int
    devices: int
    resets: int
    """Negative per-device deltas seen (counter reset or wrap), each counted as 0 bytes."""
    smoothed: Mapping[Resource, float]


class RateMeter:
    """Turns successive :class:`CounterSample` s into :class:`IoSample` s.

    Deltas are taken per device: a device seen for the first time only sets its baseline (its
    counter holds everything since boot), a vanished device contributes nothing, and a counter
    that went backwards (reset, driver reload, 32-bit wrap that psutil did not fix) contributes 0
    for that interval — clamping, rather than guessing, never invents a burst.

    ``alpha`` is the EWMA weight of a new rate for a one-second interval; other intervals use
    ``1 - (1 - alpha) ** (interval / 1 s)`` so irregular sampling smooths the same per unit time.
    """

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._previous: CounterSample | None = None
        self._previous_ms = 0
        self._smoothed: dict[Resource, float] | None = None
        self._samples = 0
        self._resets = 0

    def update(self, sample: CounterSample, now_ms: int) -> IoSample | None:
        """Feed a sample taken at ``now_ms``; None for the first one or a non-advancing clock."""
        previous, previous_ms = self._previous, self._previous_ms
        if previous is not None and now_ms <= previous_ms:
            return None
        self._previous, self._previous_ms = sample, now_ms
        if previous is None:
            return None
        interval_ms = now_ms - previous_ms
        moved: dict[Resource, int] = dict.fromkeys(RESOURCES, 0)
        for key, counters in sample.devices.items():
            before = previous.devices.get(key)
            if before is None:
                continue  # new device: this sample is its baseline
            for resource, value in counters.items():
                old = before.get(resource)
                if old is None:
                    continue
                if value < old:
                    self._resets += 1
                    continue
                moved[resource] += value - old
        seconds = interval_ms / 1000
        rate: dict[Resource, float] = {r: moved[r] / seconds for r in RESOURCES}
        if self._smoothed is None:
            self._smoothed = dict(rate)
        else:
            weight = 1.0 - math.pow(1.0 - self.alpha, seconds)
            for r in RESOURCES:
                self._smoothed[r] += weight * (rate[r] - self._smoothed[r])
        self._samples += 1
        return IoSample(now_ms, interval_ms, moved, rate, dict(self._smoothed))

    @property
    def smoothed(self) -> Mapping[Resource, float]:
        return dict(self._smoothed) if self._smoothed is not None else _zeros()

    def statistics(self) -> RateMeterStatistics:
        devices = len(self._previous.devices) if self._previous is not None else 0
        return RateMeterStatistics(self._samples, devices, self._resets, self.smoothed)

    def __repr__(self) -> str:
        s = self.smoothed
        rates = ", ".join(f"{r}={s[r]:.0f}" for r in RESOURCES)
        return f"RateMeter(alpha={self.alpha}, samples={self._samples}, {rates})"


# --- the sampling loop ------------------------------------------------------------------------


class IoMonitor:
    """Samples about every ``interval_ms`` in a worker thread and feeds the :class:`RateMeter`.

    ``poll()`` takes one sample; ``run(on_sample)`` loops forever (start it in the scheduler's
    task group; cancelling it stops it). The callback may be sync or async.
    """

    def __init__(
        self,
        clock: Clock,
        sampler: Sampler | None = None,
        *,
        alpha: float = 0.3,
        interval_ms: int = 1000,
    ) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        self.clock = clock
        self.sampler: Sampler = sampler if sampler is not None else PsutilSampler()
        self.meter = RateMeter(alpha)
        self.interval_ms = interval_ms
        self.last: IoSample | None = None

    async def poll(self) -> IoSample | None:
        """Take one sample off the event loop; None until two samples exist."""
        if getattr(self.sampler, "blocking", True):
            counters = await anyio.to_thread.run_sync(self.sampler.sample)
        else:
            counters = self.sampler.sample()
        result = self.meter.update(counters, self.clock.now_ms())
        if result is not None:
            self.last = result
        return result

    async def run(self, on_sample: Callable[[IoSample], Awaitable[None] | None]) -> None:
        """Sample forever on a fixed cadence (deadline-based, so sampling time does not drift)."""
        next_ms = self.clock.now_ms()
        while True:
            result = await self.poll()
            if result is not None:
                outcome = on_sample(result)
                if outcome is not None:
                    await outcome
            next_ms += self.interval_ms
            now = self.clock.now_ms()
            if next_ms <= now:  # fell behind (suspend, slow thread pool): skip, don't burst
                next_ms = now + self.interval_ms
            await self.clock.sleep(next_ms - now)

    def __repr__(self) -> str:
        return f"IoMonitor(interval_ms={self.interval_ms}, meter={self.meter!r})"
