"""The acknowledgement gate: when a write may be told to the outside world.

With durability ``normal`` a commit is acknowledged at once (SQLite's WAL survives a crash of
the process; a power cut may lose the last commits). With ``full`` nothing is acknowledged —
a submit's return, an event — before the WAL that holds it has been fsynced, and the fsync
runs in a worker thread so the loop is not held. The mode is chosen once: :attr:`publish` is
the event bus's own ``publish`` in ``normal`` mode, so the hot path pays no check per event.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.to_thread
import structlog

from taskmill_core.events import EventBus
from taskmill_core.store import SqliteStore
from taskmill_core.types import Event

__all__ = ["Durability"]

log = structlog.get_logger("taskmill.scheduler")


class Durability:
    """Publishes events and releases acknowledgements once what they report is durable."""

    def __init__(self, store: SqliteStore, bus: EventBus, *, full: bool) -> None:
        self._store = store
        self._bus = bus
        self.full = full
        self._synced = 0  # store commits covered by the last completed fsync
        self._unsynced_events: list[Event] = []  # events waiting for that fsync, in order
        self._after_sync: list[Callable[[], None]] = []
        self._sync_wanted = anyio.Event()
        self.publish: Callable[[Event], None] = self._publish_full if full else bus.publish

    def _sync_due(self) -> bool:
        """Something committed or held since the last fsync (durability "full")."""
        return bool(self._unsynced_events) or self._store.commits != self._synced

    def _publish_full(self, event: Event) -> None:
        if self._sync_due():
            self._unsynced_events.append(event)
            self._sync_wanted.set()
            return
        self._bus.publish(event)

    def when_durable(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything committed so far is durable (at once, unless
        durability is "full" and an fsync is due)."""
        if self.full and self._sync_due():
            self._after_sync.append(callback)
            self._sync_wanted.set()
            return
        callback()

    async def wait(self) -> None:
        """Return once everything committed so far is durable. Shielded: the write is done,
        so a cancelled caller still waits the few milliseconds of its fsync."""
        if self.full:
            done = anyio.Event()
            self.when_durable(done.set)
            with anyio.CancelScope(shield=True):
                await done.wait()

    async def sync_loop(self) -> None:
        """Durability "full": fsync whenever something waits for it."""
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted = anyio.Event()
            await self.sync_now()

    async def sync_now(self) -> None:
        """fsync the WAL in a worker thread, then release what waited for it: acknowledgements
        first (a submitter answers before its task's events), then the events, in order."""
        target = self._store.commits
        callbacks, self._after_sync = self._after_sync, []
        events, self._unsynced_events = self._unsynced_events, []
        if target != self._synced:
            # Shielded: what was taken off the lists above must be released, even when the
            # scheduler closes while the fsync runs.
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self._store.sync_wal)
                except OSError as exc:  # as SQLite's own FULL would, say so; nothing more
                    log.error("fsync of the write-ahead log failed", error=str(exc))
            self._synced = target
        for callback in callbacks:
            callback()
        for event in events:
            self._bus.publish(event)
