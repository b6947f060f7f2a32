"""Checks of what callers hand in, shared by the Python API and the sidecar.

A spec built in Python is checked against the same constraints that decoding enforces on the
wire; a :class:`msgspec.ValidationError` becomes an :class:`~taskmill_core.errors.InvalidParams`
whose ``path`` names the offending field, the same on both roads.
"""

from __future__ import annotations

import re

import msgspec

from taskmill_core.errors import InvalidParams
from taskmill_core.types import PRIORITY_NAMES, TaskSpec

__all__ = ["camel", "check_spec", "priority_value", "validation_message", "validation_path"]

_AT = re.compile(r" - at `(\$[^`]*)`$")
_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]*)`")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validation_path(message: str) -> str:
    """The JSON path a :class:`msgspec.ValidationError` message points at.

    ``"Expected `int`, got `str` - at `$.foo.bar`"`` → ``"$.foo.bar"``; no location → ``"$"``.
    For a missing or unknown field the field itself is appended (``$.tasks[0].type``), so the
    path always names the offending field.
    """
    match = _AT.search(message)
    path = match.group(1) if match else "$"
    field = _FIELD.match(message)
    if field:
        name = field.group(1)
        path += f".{name}" if _IDENT.match(name) else f"[{msgspec.json.encode(name).decode()}]"
    return path


def validation_message(message: str) -> str:
    """The message of a :class:`msgspec.ValidationError` without its location suffix."""
    return message.split(" - at `")[0]


def invalid(exc: msgspec.ValidationError) -> InvalidParams:
    """The :class:`InvalidParams` a validation error stands for."""
    text = str(exc)
    return InvalidParams(validation_message(text), validation_path(text))


def check_spec(spec: TaskSpec) -> TaskSpec:
    """Enforce the declared constraints on a spec built in Python (decoding already does)."""
    try:
        return msgspec.convert(msgspec.to_builtins(spec), TaskSpec)
    except msgspec.ValidationError as exc:
        raise invalid(exc) from None
    except (TypeError, msgspec.EncodeError) as exc:
        raise InvalidParams(f"payload is not JSON-serializable: {exc}", "$.payload") from None


def priority_value(value: int | str) -> int:
    """A priority given as 0..255 or as a name (``"urgent"``, ``"background"``...)."""
    if isinstance(value, str):
        if value not in PRIORITY_NAMES:
            raise InvalidParams(f"unknown priority name {value!r}", "$.priority")
        return PRIORITY_NAMES[value]
    if isinstance(value, bool) or not 0 <= value <= 255:
        raise InvalidParams("priority must be 0..255 or a priority name", "$.priority")
    return value


def camel(name: str) -> str:
    """A setting's wire name: ``max_concurrency`` → ``maxConcurrency`` (camelCase passes)."""
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)
