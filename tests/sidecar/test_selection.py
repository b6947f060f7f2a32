"""The forwarder's event selection on its own: what it admits as the selection changes while
events are queued (each task announced once, either way)."""

from __future__ import annotations

import pytest

from sidecar.methods import EVENT_NAMES
from sidecar.selection import EventSelection
from taskmill_core.errors import InvalidParams
from taskmill_core.types import (
    Event,
    IoBytes,
    TaskBatchSubmitted,
    TaskCompleted,
    TaskInfo,
    TaskStarted,
    TaskSubmitted,
)


def submitted(task_id: int) -> TaskSubmitted:
    info = TaskInfo(
        id=task_id,
        type="noop",
        state="pending",
        priority=128,
        payload=None,
        tags={},
        io_cost=IoBytes(),
        attempt=0,
        max_retries=3,
        created_at=1,
    )
    return TaskSubmitted(task=info)


def sent(sel: EventSelection, events: list[Event]) -> list[Event]:
    return [e for e in events if not sel.active or sel.admit(e)]


def test_nothing_configured_is_inactive_and_an_empty_call_keeps_it_so() -> None:
    sel = EventSelection(EVENT_NAMES)
    assert not sel.active
    sel.configure([], False)
    assert not sel.active
    sel.configure(["task.progress"], False)
    assert sel.active
    sel.configure([], False)
    assert not sel.active


def test_refusals_change_nothing() -> None:
    sel = EventSelection(EVENT_NAMES)
    sel.configure(["task.started"], False)
    for bad, index in ((["task.progress", "sidecar.ready"], 1), (["nope"], 0)):
        with pytest.raises(InvalidParams) as exc:
            sel.configure(bad, True)
        assert exc.value.data["index"] == index and exc.value.path == f"$.exclude[{index}]"
    assert sel.excluded == {"task.started"} and not sel.batch_submitted
    with pytest.raises(InvalidParams):
        sel.configure(["executor.cancel"], False)  # not an event of the forwarder


def test_the_batch_form_replaces_task_submitted_of_its_ids_only() -> None:
    sel = EventSelection(EVENT_NAMES)
    sel.configure([], True)
    marker = TaskBatchSubmitted(ids=[1, 2], count=2)
    other = submitted(3)
    started = TaskStarted(id=1, type="noop", attempt=0, priority=128, started_at=2)
    out = sent(sel, [marker, submitted(1), other, submitted(2), started])
    assert out == [marker, other, started]


def test_turned_off_with_a_marker_still_queued_sends_task_submitted_instead() -> None:
    sel = EventSelection(EVENT_NAMES)
    sel.configure([], True)
    sel.configure([], False)  # the marker was published while on, is read now
    events: list[Event] = [TaskBatchSubmitted(ids=[1], count=1), submitted(1)]
    assert sent(sel, events) == [events[1]]


def test_turned_off_after_the_marker_was_sent_does_not_announce_twice() -> None:
    sel = EventSelection(EVENT_NAMES)
    sel.configure([], True)
    marker = TaskBatchSubmitted(ids=[1, 2], count=2)
    assert sel.admit(marker)
    sel.configure([], False)
    done = TaskCompleted(id=1, type="noop", attempt=0, duration_ms=1)
    assert sent(sel, [submitted(1), submitted(2), done, submitted(3)]) == [done, submitted(3)]


def test_exclude_works_on_wire_names_independently_of_the_batch_form() -> None:
    sel = EventSelection(EVENT_NAMES)
    sel.configure(["task.submitted"], True)
    marker = TaskBatchSubmitted(ids=[1], count=1)
    assert sent(sel, [marker, submitted(1), submitted(2)]) == [marker]
    sel.configure(["task.batchSubmitted"], True)
    assert sent(sel, [TaskBatchSubmitted(ids=[5], count=1), submitted(5), submitted(6)]) == [
        submitted(6)
    ]
