"""The event bus: every state change becomes a typed event, delivered to each subscriber.

Each subscriber has its own queue. Lifecycle events (everything but ``task.progress`` and
``io.pressure``) are never dropped; progress is coalesced per task (the latest wins) and IO
pressure to a single slot, so a slow reader costs memory proportional to the running tasks,
not to the time it is slow. The lifecycle backlog is visible (:meth:`EventBus.backlog`) so the
scheduler can stop starting new work while a reader is far behind: that keeps the queue of
lifecycle events bounded too.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable

import anyio

from taskmill_core.types import Event, IoPressure, TaskProgress

__all__ = ["EventBus", "Subscription"]

_PROGRESS = 1
_PRESSURE = 2


class Subscription:
    """One reader's queue. Iterate it with ``async for``; ``close()`` when done."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._queue: deque[Event | tuple[int, int]] = deque()
        self._progress: dict[int, TaskProgress] = {}
        self._pressure: IoPressure | None = None
        self._lifecycle = 0
        self._ready = anyio.Event()
        self.closed = False

    def _push(self, event: Event) -> None:
        if isinstance(event, TaskProgress):
            if event.id not in self._progress:
                self._queue.append((_PROGRESS, event.id))
            self._progress[event.id] = event
        elif isinstance(event, IoPressure):
            if self._pressure is None:
                self._queue.append((_PRESSURE, 0))
            self._pressure = event
        else:
            self._queue.append(event)
            self._lifecycle += 1
        self._ready.set()

    def get_nowait(self) -> Event | None:
        """The next event, or None when the queue is empty."""
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, tuple):
                if item[0] == _PROGRESS:
                    return self._progress.pop(item[1])
                pressure, self._pressure = self._pressure, None
                if pressure is not None:
                    return pressure
                continue
            self._lifecycle -= 1
            self._bus._drained(self)
            return item
        return None

    async def get(self) -> Event:
        while True:
            event = self.get_nowait()
            if event is not None:
                return event
            if self.closed:
                raise anyio.EndOfStream
            self._ready = anyio.Event()
            await self._ready.wait()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        try:
            while True:
                try:
                    yield await self.get()
                except anyio.EndOfStream:
                    return
        finally:
            self.close()

    @property
    def backlog(self) -> int:
        """Lifecycle events waiting to be read."""
        return self._lifecycle

    def __len__(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)
            self._ready.set()

    def __repr__(self) -> str:
        return f"Subscription(queued={len(self._queue)}, lifecycle={self._lifecycle})"


class EventBus:
    """Fan-out of events to subscribers, with a backlog signal for backpressure."""

    def __init__(
        self,
        high_water: int = 10_000,
        on_drained: Callable[[], None] | None = None,
        observe: Callable[[Event], None] | None = None,
        observe_types: frozenset[type] = frozenset(),
    ):
        self._subs: list[Subscription] = []
        self.high_water = high_water
        self._on_drained = on_drained
        # The scheduler's metrics: every event is tallied by its type (a dict increment, no
        # call), and ``observe`` sees the events of ``observe_types`` (those a tally by type
        # cannot count, e.g. task.failed: a retry, a failure or a dead letter).
        self.tally: defaultdict[type, int] = defaultdict(int)
        self._observe = observe
        self._observe_types = observe_types if observe is not None else frozenset()
        self.published = 0

    def subscribe(self) -> Subscription:
        sub = Subscription(self)
        self._subs.append(sub)
        return sub

    def publish(self, event: Event) -> None:
        self.published += 1
        kind = type(event)
        self.tally[kind] += 1
        if kind in self._observe_types and self._observe is not None:
            self._observe(event)
        for sub in self._subs:
            sub._push(event)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()

    def backlog(self) -> int:
        return max((s.backlog for s in self._subs), default=0)

    @property
    def saturated(self) -> bool:
        return self.backlog() >= self.high_water

    def _drained(self, sub: Subscription) -> None:
        if sub.backlog == self.high_water // 2 and self._on_drained is not None:
            self._on_drained()

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            if self._on_drained is not None:
                self._on_drained()

    def __repr__(self) -> str:
        return f"EventBus(subscribers={len(self._subs)}, published={self.published})"
