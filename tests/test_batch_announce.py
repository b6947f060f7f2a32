"""``Scheduler.announce_batches``: one ``TaskBatchSubmitted`` per batch, before its tasks' events,
whichever road the batch takes (inline, the dispatcher's tick, or a large chunked batch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskmill_core import TaskSpec
from taskmill_core.scheduler import BATCH_CHUNK
from taskmill_core.scheduler.submitting import QueuedSubmit
from taskmill_core.types import (
    Event,
    SubmitResult,
    TaskBatchSubmitted,
    TaskStarted,
    TaskSubmitted,
)

from .helpers import drain, open_scheduler, recorder, settle

pytestmark = pytest.mark.anyio


def task_of(event: Event) -> int | None:
    if isinstance(event, TaskSubmitted):
        return event.task.id
    return getattr(event, "id", None)


def check_announced(events: list[Event], batches: list[list[SubmitResult]]) -> None:
    """Each batch has one marker naming its inserted tasks in order, before any of their
    events; their task.submitted still follow (other subscribers see them as ever)."""
    markers = [(i, e) for i, e in enumerate(events) if isinstance(e, TaskBatchSubmitted)]
    assert len(markers) == len(batches)
    for results in batches:
        ids = [r.id for r in results if r.outcome in ("inserted", "superseded")]
        (at, marker) = next((i, m) for i, m in markers if m.ids == ids)
        assert marker.count == len(ids)
        assert not [e for e in events[:at] if task_of(e) in set(ids)]
        submitted = [e.task.id for e in events[at:] if isinstance(e, TaskSubmitted)]
        assert [i for i in submitted if i in set(ids)] == ids


async def test_off_by_default_nothing_new_is_published(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        assert s.announce_batches is False
        await s.submit_batch([TaskSpec(type="noop") for _ in range(3)])
        await settle()
        assert not [e for e in drain(sub) if isinstance(e, TaskBatchSubmitted)]


async def test_every_road_announces_the_batch_before_its_tasks(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        _, run = recorder()
        s.register("rec", run)
        s.announce_batches = True
        submitter = s._submitter
        write_queued = submitter.write_queued
        ticked: list[int] = []  # batches the dispatcher's tick wrote

        def spy(tx: Any, submits: Sequence[QueuedSubmit], follow: Any) -> None:
            ticked.extend(len(ps.prepared) for ps in submits if ps.batch)
            write_queued(tx, submits, follow)

        submitter.write_queued = spy  # type: ignore[method-assign]
        batches: list[list[SubmitResult]] = []
        # Inline: a small batch alone in its loop turn.
        batches.append(await s.submit_batch([TaskSpec(type="rec", payload=i) for i in range(5)]))
        # Through the tick: two small batches submitted in the same loop turn.
        async with anyio.create_task_group() as tg:

            async def one(n: int) -> None:
                specs = [TaskSpec(type="rec", payload=[n, i]) for i in range(7)]
                batches.append(await s.submit_batch(specs))

            tg.start_soon(one, 1)
            tg.start_soon(one, 2)
        assert ticked == [7]  # the second of the two went through the tick
        # Large: announced in chunks over several loop turns; with an in-batch duplicate.
        specs = [TaskSpec(type="rec", payload=i) for i in range(3 * BATCH_CHUNK + 17)]
        specs[50] = TaskSpec(type="rec", dedup_key="k")
        specs[250] = TaskSpec(type="rec", dedup_key="k")
        large = await s.submit_batch(specs)
        assert large[250].outcome == "duplicate"
        batches.append(large)
        for _ in range(50):
            await settle()
        events = drain(sub)
        check_announced(events, batches)
        started = {e.id for e in events if isinstance(e, TaskStarted)}
        assert {r.id for b in batches for r in b} <= started

        # Turned off: no marker for the next batch.
        s.announce_batches = False
        await s.submit_batch([TaskSpec(type="rec") for _ in range(2)])
        await settle()
        assert not [e for e in drain(sub) if isinstance(e, TaskBatchSubmitted)]


async def test_a_batch_of_only_duplicates_publishes_no_marker(tmp_path: Path) -> None:
    async with open_scheduler(tmp_path / "t.db") as (s, _, sub):
        await s.pause_all()
        await s.submit(TaskSpec(type="noop", dedup_key="d"))
        s.announce_batches = True
        drain(sub)
        results = await s.submit_batch([TaskSpec(type="noop", dedup_key="d")] * 3)
        assert [r.outcome for r in results] == ["duplicate"] * 3
        assert drain(sub) == []
