"""The sidecar's built-in file executors are paced by the IO governor (issue 4, "Pacing").

Real files in tmp_path, real worker threads, but the scheduler runs on a fake clock: the only
thing that moves it is this test, and only while the executor sleeps for IO tokens (the
governor reports it as ``waiting``). So the fake time a copy takes is exactly the time the
governor made it wait — deterministic, whatever the speed of the machine.

With a budget of B bytes/s the bucket starts full (``burst_s`` = 1 s of budget), so N bytes
take (N - B) / B seconds of pacing: one second less than N / B.
"""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from sidecar.builtin import PathScope, builtin_executors
from taskmill_core import IoBytes, IoConfig, SchedulerConfig, TaskSpec

from .helpers import open_scheduler
from .httpd import serve

pytestmark = pytest.mark.anyio

MiB = 1 << 20


@pytest.mark.parametrize(
    ("task_type", "io", "mib", "budget_mib", "declared"),
    [
        ("fs.copy", IoConfig(disk_write_bps=2 * MiB, auto=False), 16, 2, True),
        (
            "fs.copy",
            IoConfig(disk_read_bps=4 * MiB, disk_write_bps=4 * MiB, auto=False),
            24,
            4,
            True,
        ),
        ("fs.hash", IoConfig(disk_read_bps=2 * MiB, auto=False), 12, 2, True),
        # no declared cost: admitted without the governor, paced at its own priority all the same
        ("fs.copy", IoConfig(disk_write_bps=2 * MiB, auto=False), 16, 2, False),
    ],
)
async def test_paced_file_executor_takes_n_over_b(
    tmp_path: Path, task_type: str, io: IoConfig, mib: int, budget_mib: int, declared: bool
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    data = random.Random(mib).randbytes(mib * MiB)
    (root / "src.bin").write_bytes(data)
    payload = (
        {"src": str(root / "src.bin"), "dst": str(root / "dst.bin")}
        if task_type == "fs.copy"
        else {"path": str(root / "src.bin")}
    )
    cfg = SchedulerConfig(max_concurrency=2, io=io)
    async with open_scheduler(tmp_path / "t.db", cfg) as (sched, clock, _):
        for reg in builtin_executors(PathScope([root]), []):
            sched.register(reg.type, reg.fn, builtin=True, paced=reg.paced)
        gov = sched.io_governor
        start = clock.now_ms()
        # The declared cost (the file's size, as an app would know it) makes the governor
        # admit the run at its own priority; paced, it is charged only a first chunk.
        n = len(data)
        cost = IoBytes(disk_read=n, disk_write=n if task_type == "fs.copy" else 0)
        spec = TaskSpec(type=task_type, payload=payload, io_cost=cost if declared else None)
        task_id = (await sched.submit(spec)).id
        with anyio.fail_after(60):  # real time: the file work itself
            while (await sched.get(task_id)).state not in ("completed", "failed"):
                if gov.statistics().waiting:
                    deadline = clock.next_deadline()
                    assert deadline is not None
                    clock.advance(deadline - clock.now_ms())
                await anyio.sleep(0.001)  # let the worker threads move the bytes
        elapsed_s = (clock.now_ms() - start) / 1000
        info = await sched.get(task_id)

    assert info.state == "completed", info.error
    expected_s = (mib - budget_mib) / budget_mib  # N / B minus the full bucket's second
    assert expected_s * 0.97 <= elapsed_s <= expected_s * 1.03 + 0.1, elapsed_s
    # The draws are the accounting: every byte counted once, nothing recorded twice.
    if task_type == "fs.copy":
        assert (root / "dst.bin").read_bytes() == data
        assert info.io_actual == IoBytes(disk_read=n, disk_write=n)
    else:
        assert info.io_actual == IoBytes(disk_read=n)


async def test_unbudgeted_copy_is_not_slowed(tmp_path: Path) -> None:
    """No budget (auto not yet established): consume_io never sleeps, fake time stands still."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "src.bin").write_bytes(b"x" * (5 * MiB + 17))
    cfg = SchedulerConfig(io=IoConfig(auto=True))
    async with open_scheduler(tmp_path / "t.db", cfg) as (sched, clock, _):
        for reg in builtin_executors(PathScope([root]), []):
            sched.register(reg.type, reg.fn, builtin=True, paced=reg.paced)
        start = clock.now_ms()
        spec = TaskSpec(
            type="fs.copy", payload={"src": str(root / "src.bin"), "dst": str(root / "d.bin")}
        )
        task_id = (await sched.submit(spec)).id
        with anyio.fail_after(30):
            await sched.wait_idle()
        info = await sched.get(task_id)
        assert info.state == "completed", info.error
        assert clock.now_ms() == start
        assert info.io_actual == IoBytes(disk_read=5 * MiB + 17, disk_write=5 * MiB + 17)


async def test_paced_upload_takes_n_over_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``http.upload`` draws ``netTx`` per chunk: 8 MiB at 2 MiB/s take 3 s of fake time."""
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "root"
    root.mkdir()
    n = 8 * MiB
    (root / "src.bin").write_bytes(random.Random(8).randbytes(n))
    cfg = SchedulerConfig(max_concurrency=2, io=IoConfig(net_bps=2 * MiB, auto=False))
    with serve() as srv:
        async with open_scheduler(tmp_path / "t.db", cfg) as (sched, clock, _):
            for reg in builtin_executors(PathScope([root]), []):
                sched.register(reg.type, reg.fn, builtin=True, paced=reg.paced)
            gov = sched.io_governor
            start = clock.now_ms()
            spec = TaskSpec(
                type="http.upload",
                payload={"src": str(root / "src.bin"), "url": srv.url("/up")},
                io_cost=IoBytes(disk_read=n, net_tx=n),
            )
            task_id = (await sched.submit(spec)).id
            with anyio.fail_after(60):
                while (await sched.get(task_id)).state not in ("completed", "failed"):
                    if gov.statistics().waiting:
                        deadline = clock.next_deadline()
                        assert deadline is not None
                        clock.advance(deadline - clock.now_ms())
                    await anyio.sleep(0.001)
            elapsed_s = (clock.now_ms() - start) / 1000
            info = await sched.get(task_id)
    assert info.state == "completed", info.error
    assert 3 * 0.97 <= elapsed_s <= 3 * 1.03 + 0.1, elapsed_s
    assert info.io_actual == IoBytes(disk_read=n, net_tx=n)
    assert srv.seen[-1].size == n
