"""Persisted settings: the scheduler's config and its scheduler-wide pauses.

Both live in the store's settings table, so a restart keeps a paused app paused and keeps
what ``configure`` changed. ``durability`` is the exception: it is how this process opened
the file, not a persisted choice.
"""

from __future__ import annotations

from typing import Any

import msgspec

from taskmill_core.errors import InvalidParams
from taskmill_core.store import SqliteStore
from taskmill_core.types import SchedulerConfig
from taskmill_core.validation import camel, invalid

__all__ = ["Pauses", "Settings"]

_PAUSES_KEY = "pauses"
_CONFIG_KEY = "config"


class Pauses(msgspec.Struct):
    """Scheduler-wide pauses: everything, some groups, some types."""

    paused: bool = False
    groups: list[str] = msgspec.field(default_factory=list)
    types: list[str] = msgspec.field(default_factory=list)

    def add(self, *, group: str | None, type: str | None) -> None:
        if group is not None:
            if group not in self.groups:
                self.groups.append(group)
        elif type is not None:
            if type not in self.types:
                self.types.append(type)
        else:
            self.paused = True

    def remove(self, *, group: str | None, type: str | None) -> None:
        if group is not None:
            if group in self.groups:
                self.groups.remove(group)
        elif type is not None:
            if type in self.types:
                self.types.remove(type)
        else:
            self.paused = False


class Settings:
    """The config in force and the pauses, loaded from and saved to the store."""

    def __init__(self, store: SqliteStore, config: SchedulerConfig) -> None:
        self._store = store
        self.config = config
        self.pauses = Pauses()

    def load(self) -> None:
        """Read what an earlier process persisted (at open, off the loop)."""
        raw = self._store.get_setting(_PAUSES_KEY)
        if raw is not None:
            self.pauses = msgspec.json.decode(raw, type=Pauses)
        raw = self._store.get_setting(_CONFIG_KEY)
        if raw is not None:
            stored = msgspec.json.decode(raw)
            merged = msgspec.to_builtins(self.config)
            merged.update(stored)
            # durability is how this process opened the file, not a persisted choice
            merged["durability"] = self.config.durability
            self.config = msgspec.convert(merged, SchedulerConfig)

    def save_pauses(self) -> None:
        with self._store.transaction() as tx:
            self._store.put_setting(tx, _PAUSES_KEY, msgspec.json.encode(self.pauses))

    def change(self, changes: dict[str, Any]) -> SchedulerConfig:
        """Apply and persist ``changes`` (snake_case or camelCase names; None leaves a setting
        as it is; a given object replaces its setting whole). Returns the new config."""
        current = msgspec.to_builtins(self.config)
        persisted = msgspec.json.decode(self._store.get_setting(_CONFIG_KEY) or b"{}")
        for name, value in changes.items():
            if value is None:
                continue
            key = camel(name)
            if key == "durability":
                raise InvalidParams("durability is chosen when the database is opened", "$")
            if isinstance(value, msgspec.Struct):
                value = msgspec.to_builtins(value)
            # A given object replaces the setting whole (io, retention, groupLimits), so a
            # budget or limit is removed by leaving it out.
            current[key] = value
            persisted[key] = value
        try:
            new = msgspec.convert(current, SchedulerConfig)
        except msgspec.ValidationError as exc:
            raise invalid(exc) from None
        self.config = new
        with self._store.transaction() as tx:
            self._store.put_setting(tx, _CONFIG_KEY, msgspec.json.encode(persisted))
        return new
