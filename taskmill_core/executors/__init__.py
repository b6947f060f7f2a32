"""Executor registry: who runs which task type.

Executors are registered in code (``Scheduler.register``), collected from plugin modules
(functions decorated with :func:`executor`), loaded from the ``taskmill.executors`` entry-point
group, or provided by a host client over RPC (the sidecar registers a proxy function).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from taskmill_core.context import TaskContext

__all__ = ["ENTRY_POINT_GROUP", "ExecutorFn", "Registration", "Registry", "executor"]

ENTRY_POINT_GROUP = "taskmill.executors"

ExecutorFn = Callable[["TaskContext", Any], Awaitable[Any]]
F = TypeVar("F", bound=ExecutorFn)

_MARK = "__taskmill_executor__"


@dataclass(frozen=True, slots=True)
class Registration:
    type: str
    fn: ExecutorFn
    concurrency: int | None = None
    builtin: bool = False
    paced: bool = False
    """The executor draws its bytes through ``ctx.consume_io``: the IO governor charges it
    only a first chunk at admission and paces the rest."""


def executor(task_type: str, *, concurrency: int | None = None) -> Callable[[F], F]:
    """Mark a function in a plugin module as the executor of ``task_type``."""

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (task_type, concurrency))
        return fn

    return mark


def marked(module: ModuleType) -> Iterator[Registration]:
    for value in vars(module).values():
        mark = getattr(value, _MARK, None)
        if mark is not None:
            yield Registration(mark[0], value, mark[1])


class Registry:
    """The executors a scheduler knows, by task type."""

    def __init__(self) -> None:
        self._by_type: dict[str, Registration] = {}

    def add(self, reg: Registration) -> None:
        self._by_type[reg.type] = reg

    def remove(self, task_type: str) -> Registration | None:
        return self._by_type.pop(task_type, None)

    def get(self, task_type: str) -> Registration | None:
        return self._by_type.get(task_type)

    def types(self) -> list[str]:
        return sorted(self._by_type)

    def limits(self) -> dict[str, int]:
        return {t: r.concurrency for t, r in self._by_type.items() if r.concurrency is not None}

    def load_module(self, name: str) -> list[str]:
        """Import a plugin module and register every ``@executor`` in it."""
        module = importlib.import_module(name)
        regs = list(marked(module))
        if not regs:
            raise ValueError(f"plugin module {name!r} defines no @executor functions")
        for reg in regs:
            self.add(reg)
        return [r.type for r in regs]

    def load_entry_points(self) -> list[str]:
        """Register executors advertised by installed packages (group ``taskmill.executors``).

        An entry point names either a module (all its ``@executor`` functions) or one function
        (registered under the entry point's name).
        """
        loaded: list[str] = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            obj = ep.load()
            if isinstance(obj, ModuleType):
                for reg in marked(obj):
                    self.add(reg)
                    loaded.append(reg.type)
            else:
                mark = getattr(obj, _MARK, None)
                task_type, conc = mark if mark else (ep.name, None)
                self.add(Registration(task_type, obj, conc))
                loaded.append(task_type)
        return loaded

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._by_type

    def __repr__(self) -> str:
        return f"Registry({self.types()})"
