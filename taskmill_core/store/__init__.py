"""The store: the only package that speaks SQL.

A domain-level interface over one SQLite file, :class:`SqliteStore`, composed of:

- :mod:`.connection` — opening, pragmas, closing; ``transaction()`` yielding a :data:`Tx`,
  and the mapping of disk and file failures to :class:`~taskmill_core.errors.StorageError`;
- :mod:`.schema` — DDL, the schema version and the forward migrations;
- :mod:`.ids` — ids handed out in order and never reused;
- :mod:`.submit` — a spec's stored form and the dedup decision, and the inserts;
- :mod:`.transitions` — every state change, in the caller's transaction, and what a final
  state sets off (parents, dependents);
- :mod:`.queries` — reads (also :class:`ReadOnlyStore`'s, the admin's read-only view).

Time is always passed in; the store never reads a clock.
"""

from __future__ import annotations

from taskmill_core.store.connection import WAL_SIZE_LIMIT, Tx
from taskmill_core.store.queries import Ready
from taskmill_core.store.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from taskmill_core.store.sqlite import ReadOnlyStore, SqliteStore
from taskmill_core.store.submit import MAX_PAYLOAD_BYTES, Prepared, Submitted, prepare
from taskmill_core.store.transitions import Follow, Started

__all__ = [
    "APPLICATION_ID",
    "MAX_PAYLOAD_BYTES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "WAL_SIZE_LIMIT",
    "Follow",
    "Prepared",
    "ReadOnlyStore",
    "Ready",
    "SqliteStore",
    "Started",
    "Submitted",
    "Tx",
    "prepare",
]
