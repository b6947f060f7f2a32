"""Event selection (``events.configure``): which events this connection's client receives.

``exclude`` names events that are not sent; ``batchSubmitted`` replaces the ``task.submitted``
of each task a ``task.submitBatch`` inserted or that superseded another with one
``task.batchSubmitted {ids, count}``.

Where the batch form comes from: with ``batchSubmitted`` on, the scheduler publishes one
:class:`~taskmill_core.types.TaskBatchSubmitted` per batch *before* the batch's
``task.submitted`` events (and so before any of its tasks can start, even when a large batch
is announced over several loop turns). The forwarder sends it, remembers its ids, and drops
the ``task.submitted`` of those ids as they come. A marker published while the option was on
but read after it was turned off is dropped and its tasks get their ``task.submitted``:
either way each task is announced once.

The forwarder's hot path pays one attribute check per event while nothing is configured
(:attr:`EventSelection.active`); once ``batchSubmitted`` has been on, markers may still be
queued, so the selection stays active for the rest of the connection.
"""

from __future__ import annotations

from collections.abc import Sequence

from taskmill_core.errors import InvalidParams
from taskmill_core.types import Event, TaskBatchSubmitted, TaskSubmitted

__all__ = ["EventSelection"]


class EventSelection:
    """The client's selection, as the event forwarder applies it."""

    def __init__(self, names: Sequence[str]) -> None:
        """``names``: every event this sidecar sends (``capabilities.events``)."""
        self.selectable = frozenset(n for n in names if not n.startswith("sidecar."))
        self.excluded: frozenset[str] = frozenset()
        self.batch_submitted = False
        self.active = False  # whether the forwarder must ask admit() at all
        self._batched_once = False
        self._announced: set[int] = set()  # ids of a forwarded batch whose task.submitted is due

    def configure(self, exclude: Sequence[str], batch_submitted: bool) -> None:
        """Replace the whole selection; refuses (changing nothing) an event that cannot be
        excluded: a ``sidecar.*`` event or a name this sidecar never sends."""
        for i, name in enumerate(exclude):
            if name in self.selectable:
                continue
            path = f"$.exclude[{i}]"
            if name.startswith("sidecar."):
                raise InvalidParams(f"{name} cannot be excluded", path, index=i)
            raise InvalidParams(
                f"unknown event {name!r} (capabilities.events lists those sent)", path, index=i
            )
        self.excluded = frozenset(exclude)
        self.batch_submitted = batch_submitted
        self._batched_once = self._batched_once or batch_submitted
        self.active = bool(self.excluded) or self._batched_once

    def admit(self, event: Event) -> bool:
        """Whether to send ``event`` (call only while :attr:`active`)."""
        if isinstance(event, TaskSubmitted):
            announced = self._announced
            if announced and event.task.id in announced:
                announced.discard(event.task.id)
                return False
        elif isinstance(event, TaskBatchSubmitted):
            if not self.batch_submitted:
                return False  # published before the client turned it off: per task instead
            self._announced.update(event.ids)
        return event.EVENT not in self.excluded
