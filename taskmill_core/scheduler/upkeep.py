"""Upkeep: keeping the database small while the scheduler runs.

Two chores, both off the hot path: folding the write-ahead log back into the database about
once a second while there are writes (so the WAL cannot grow without bound), and pruning
final tasks by the configured retention — one bounded batch every ``PRUNE_EVERY`` final
tasks, or all at once when asked (``prune``).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.abc
import structlog

from taskmill_core.clock import Clock
from taskmill_core.errors import StorageError
from taskmill_core.scheduler.signals import WriteGate
from taskmill_core.store import SqliteStore
from taskmill_core.types import Retention

__all__ = ["CHECKPOINT_EVERY_S", "PRUNE_BATCH", "PRUNE_EVERY", "WAL_CATCH_UP_PAGES", "Upkeep"]

log = structlog.get_logger("taskmill.scheduler")

PRUNE_EVERY = 1000  # final tasks between two amortized prunes
PRUNE_BATCH = 500  # rows one prune statement removes at most
CHECKPOINT_EVERY_S = 1.0  # how often the WAL is folded into the database while writes go on
WAL_CATCH_UP_PAGES = 2048  # past this, writes are held to let the WAL start over


class Upkeep:
    """WAL checkpoints and history pruning."""

    def __init__(
        self,
        *,
        store: SqliteStore,
        clock: Clock,
        gate: WriteGate,
        retention: Callable[[], Retention],
    ) -> None:
        self._store = store
        self._clock = clock
        self._gate = gate
        self._retention = retention
        self._dirty = anyio.Event()  # something was written: a checkpoint is due
        self._changes_seen = 0
        self._finals_since_prune = 0
        self._pruning = False
        self._tg: anyio.abc.TaskGroup | None = None

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Prune in ``tg`` from now on, starting with what an earlier run left; the caller
        runs :meth:`checkpoint_loop`."""
        self._tg = tg
        self._pruning = True
        tg.start_soon(self._prune_some)

    def note_writes(self) -> None:
        """Called after each tick: a checkpoint is due if anything was committed since."""
        changes = self._store.changes
        if changes != self._changes_seen:  # (also a lone submit's own commit)
            self._changes_seen = changes
            self._dirty.set()

    def note_final(self) -> None:
        """A task became final: every ``PRUNE_EVERY`` of them, prune one batch."""
        self._finals_since_prune += 1
        if self._finals_since_prune >= PRUNE_EVERY and not self._pruning and self._tg:
            self._finals_since_prune = 0
            self._pruning = True
            self._tg.start_soon(self._prune_some)

    async def checkpoint_loop(self) -> None:
        """Fold the WAL into the database about once a second while there are writes.

        The checkpoint runs off the loop while writes go on, so it folds in what the WAL
        held when it began. The WAL starts over from its beginning only once it has been
        folded in whole; under steady writes that never happens, and it would grow without
        bound. So when writes came in during the checkpoint and the WAL had grown past
        ``WAL_CATCH_UP_PAGES``, a second checkpoint folds in the rest with every write held
        (milliseconds: the pages written meanwhile, and an fsync). SQLite then starts the
        WAL over, and trims its file to ``WAL_SIZE_LIMIT`` (``journal_size_limit``).
        """
        while True:
            self._dirty = anyio.Event()
            await self._dirty.wait()
            await self._clock.sleep(CHECKPOINT_EVERY_S * 1000)
            try:
                changes = self._store.changes
                await self._store.checkpoint()
                if self._store.changes != changes and self._store.wal_pages >= WAL_CATCH_UP_PAGES:
                    async with self._gate.hold():
                        await self._store.checkpoint()
            except Exception as exc:  # a busy checkpoint is retried on the next write
                log.debug("wal checkpoint skipped", error=str(exc))

    async def prune(self, *, older_than_ms: int | None, keep: int | None) -> int:
        """Remove final tasks older than ``older_than_ms`` or beyond the newest ``keep``
        (both None: the configured retention). Returns how many were removed."""
        await self._gate.wait_open()
        if older_than_ms is None and keep is None:
            retention = self._retention()
            older_than_ms, keep = retention.max_age_ms, retention.max_count
        removed = 0
        while True:
            ids = await self._store.prunable(self._clock.now_ms(), keep, older_than_ms, PRUNE_BATCH)
            if ids:
                with self._store.transaction() as tx:
                    removed += self._store.delete_final(tx, ids)
            if len(ids) < PRUNE_BATCH:
                return removed

    async def _prune_some(self) -> None:
        """Amortized retention: one bounded batch."""
        await self._gate.wait_open()
        r = self._retention()
        try:
            ids = await self._store.prunable(
                self._clock.now_ms(), r.max_count, r.max_age_ms, PRUNE_BATCH
            )
            if ids:
                with self._store.transaction() as tx:
                    self._store.delete_final(tx, ids)
        except StorageError as exc:  # (disk full: the next round tries again)
            log.warning("pruning history failed", error=str(exc))
        finally:
            self._pruning = False
