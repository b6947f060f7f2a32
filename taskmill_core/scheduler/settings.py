"""Persisted settings: the scheduler's config and its scheduler-wide pauses.

Both live in the store's settings table, so a restart keeps a paused app paused and keeps
what ``configure`` changed. ``durability`` is the exception: it is how this process opened
the file, not a persisted choice.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from taskmill_core.errors import InvalidParams
from taskmill_core.store import SqliteStore
from taskmill_core.types import PauseInfo, SchedulerConfig
from taskmill_core.validation import camel, invalid

__all__ = ["POLICY_SETTINGS", "Pauses", "Settings"]

_PAUSES_KEY = "pauses"
_CONFIG_KEY = "config"

POLICY_SETTINGS = frozenset({"rateLimits", "aging", "fairShare", "throttle", "typeDefaults"})
"""The settings for which ``None`` (``null``) removes the setting instead of leaving it."""


class Pauses(msgspec.Struct):
    """Scheduler-wide pauses: everything, some groups, some types."""

    paused: bool = False
    groups: list[str] = msgspec.field(default_factory=list)
    types: list[str] = msgspec.field(default_factory=list)
    # Timed pauses: their end (epoch ms) by scope key ("" global, "g:<group>", "t:<type>").
    until: dict[str, int] = msgspec.field(default_factory=dict)

    @staticmethod
    def key(*, group: str | None, type: str | None) -> str:
        if group is not None:
            return f"g:{group}"
        if type is not None:
            return f"t:{type}"
        return ""

    def add(self, *, group: str | None, type: str | None, until_at: int | None = None) -> None:
        """Pause a scope; pausing it again replaces its end (None: until resumed)."""
        key = self.key(group=group, type=type)
        if until_at is None:
            self.until.pop(key, None)
        else:
            self.until[key] = until_at
        if group is not None:
            if group not in self.groups:
                self.groups.append(group)
        elif type is not None:
            if type not in self.types:
                self.types.append(type)
        else:
            self.paused = True

    def remove(self, *, group: str | None, type: str | None) -> None:
        self.until.pop(self.key(group=group, type=type), None)
        if group is not None:
            if group in self.groups:
                self.groups.remove(group)
        elif type is not None:
            if type in self.types:
                self.types.remove(type)
        else:
            self.paused = False

    def next_end(self) -> int | None:
        """When the next timed pause lifts by itself."""
        return min(self.until.values(), default=None)

    def ended(self, now: int) -> list[tuple[str | None, str | None]]:
        """The scopes ``(group, type)`` whose timed pause has ended by ``now``."""
        out: list[tuple[str | None, str | None]] = []
        for key, at in self.until.items():
            if at <= now:
                if key.startswith("g:"):
                    out.append((key[2:], None))
                elif key.startswith("t:"):
                    out.append((None, key[2:]))
                else:
                    out.append((None, None))
        return out

    def listing(self) -> list[PauseInfo]:
        """Every pause in force (``scheduler.status``), the global one first."""
        out: list[PauseInfo] = []
        if self.paused:
            out.append(PauseInfo(until_at=self.until.get("")))
        out += [PauseInfo(group=g, until_at=self.until.get(f"g:{g}")) for g in self.groups]
        out += [PauseInfo(type=t, until_at=self.until.get(f"t:{t}")) for t in self.types]
        return out


_SEGMENT = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.|"(?:[^"\\]|\\.)*")\]')
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _only(node: Any, steps: list[str | int], key: str) -> Any:
    """A copy of ``node`` in which the mapping at ``steps`` holds only ``key`` (the containers
    on the way are copied shallowly; nothing else is)."""
    if not steps:
        return {key: node[key]}
    copied: Any = dict(node) if isinstance(node, dict) else list(node)
    copied[steps[0]] = _only(node[steps[0]], steps[1:], key)
    return copied


def _name_the_key(current: dict[str, Any], error: InvalidParams) -> InvalidParams:
    """msgspec names a bad entry of a mapping ``[...]``; find its key (the entry that fails
    on its own) so that ``data.path`` names the field, e.g. ``$.rateLimits.types.upload``."""
    path = error.path
    while "[...]" in path:
        node: Any = current
        steps: list[str | int] = []
        for m in _SEGMENT.finditer(path[1:]):
            name, index = m.group(1), m.group(2)
            if index == "...":
                if not isinstance(node, dict):
                    return error
                for key in node:
                    try:
                        msgspec.convert(_only(current, steps, key), SchedulerConfig)
                    except msgspec.ValidationError:
                        seg = (
                            f".{key}"
                            if _IDENT.fullmatch(key)
                            else f"[{msgspec.json.encode(key).decode()}]"
                        )
                        path = path.replace("[...]", seg, 1)
                        break
                else:
                    return error
                break
            step: str | int
            if name is not None:
                step = name
            elif index is not None and index.isdigit():
                step = int(index)
            else:
                step = msgspec.json.decode(index or '""')
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                return error
            steps.append(step)
        else:
            return error
    return InvalidParams(error.message, path)


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
            for key, value in stored.items():
                if value is None and key in POLICY_SETTINGS:
                    del merged[key]  # removed by configure: the default
            # durability is how this process opened the file, not a persisted choice
            merged["durability"] = self.config.durability
            self.config = msgspec.convert(merged, SchedulerConfig)

    def save_pauses(self) -> None:
        with self._store.transaction() as tx:
            self._store.put_setting(tx, _PAUSES_KEY, msgspec.json.encode(self.pauses))

    def change(self, changes: dict[str, Any]) -> SchedulerConfig:
        """Apply and persist ``changes`` (snake_case or camelCase names; None leaves a setting
        as it is, but removes a policy setting (:data:`POLICY_SETTINGS`; ``throttle`` goes
        back to the default tiers); a given object replaces its setting whole). Returns the
        new config. An invalid value changes nothing, also not the valid ones beside it."""
        current = msgspec.to_builtins(self.config)
        persisted = msgspec.json.decode(self._store.get_setting(_CONFIG_KEY) or b"{}")
        for name, value in changes.items():
            key = camel(name)
            if value is None and key in POLICY_SETTINGS:
                current.pop(key, None)  # back to its default
                persisted[key] = None  # (so a reopen does not bring back the opener's value)
                continue
            if value is None:
                continue
            if key == "durability":
                raise InvalidParams("durability is chosen when the database is opened", "$")
            if isinstance(value, (msgspec.Struct, list, dict)):
                value = msgspec.to_builtins(value)  # (also Structs inside a list or a dict)
            # A given object replaces the setting whole (io, retention, groupLimits), so a
            # budget or limit is removed by leaving it out.
            current[key] = value
            persisted[key] = value
        try:
            new = msgspec.convert(current, SchedulerConfig)
        except msgspec.ValidationError as exc:
            error = invalid(exc)
            if "[...]" in error.path:
                error = _name_the_key(current, error)
            raise error from None
        self.config = new
        with self._store.transaction() as tx:
            self._store.put_setting(tx, _CONFIG_KEY, msgspec.json.encode(persisted))
        return new
