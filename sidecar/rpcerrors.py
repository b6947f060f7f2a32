"""JSON-RPC error codes and objects, and the mapping from exceptions to what the client gets.

Standard codes, the Taskmill codes (``KIND_CODES``: each error's ``data.kind`` names it), the
:class:`RpcError` a handler raises to answer with exactly that error, :class:`RemoteError` for
the client's answer to a server → client request, and :func:`error_from_exception`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
import structlog

from taskmill_core.validation import validation_path

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "KIND_CODES",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "ConnectionClosed",
    "RemoteError",
    "RpcError",
    "error_from_exception",
    "remote_error",
]

_log = structlog.get_logger("sidecar.jsonrpc")

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603

KIND_CODES: Final[Mapping[str, int]] = {
    "parseError": PARSE_ERROR,
    "invalidRequest": INVALID_REQUEST,
    "messageTooLarge": INVALID_REQUEST,
    "methodNotFound": METHOD_NOT_FOUND,
    "invalidParams": INVALID_PARAMS,
    "internal": INTERNAL_ERROR,
    "taskNotFound": -32001,
    "invalidState": -32002,
    "duplicateRejected": -32003,
    "payloadTooLarge": -32004,
    "shuttingDown": -32005,
    "storage": -32006,
    "forbidden": -32007,
    "scheduleNotFound": -32008,
}
"""``data.kind`` → error code. Exceptions whose ``kind`` is a key here map to that code."""

# The kind an RpcError gets when it was raised without one.
_DEFAULT_KINDS: Final[Mapping[int, str]] = {
    code: kind for kind, code in reversed(list(KIND_CODES.items()))
}


class RpcError(Exception):
    """A JSON-RPC error object. Raise it from a handler to answer with exactly this error."""

    def __init__(
        self, code: int, message: str, data: Mapping[str, Any] | None = None, *, kind: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data: dict[str, Any] = dict(data or {})
        if kind:
            self.data["kind"] = kind
        self.data.setdefault("kind", _DEFAULT_KINDS.get(code, "error"))

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r}, {self.data!r})"

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.data}


class RemoteError(RpcError):
    """The client answered a server → client request with this error.

    ``data`` is the client's ``data`` as sent (``kind`` is filled in as ``"error"`` when the
    client gave none).
    """


class ConnectionClosed(Exception):
    """Input from the client ended, so a server → client request can get no answer."""


def error_from_exception(exc: BaseException, *, method: str | None = None) -> RpcError:
    """Map an exception raised while handling a request to the error the client gets.

    :class:`RpcError` passes through; :class:`msgspec.ValidationError` is ``-32602``; an
    exception with a known ``kind`` (the :mod:`taskmill_core.errors` classes, and any future
    ``forbidden`` error) gets that kind's code, its message and its ``data``; an exception
    group holding one exception is mapped as that exception. Anything else is logged with
    its traceback and becomes a generic ``-32603``.
    """
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return error_from_exception(exc.exceptions[0], method=method)
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, msgspec.ValidationError):
        message = str(exc)
        return RpcError(
            INVALID_PARAMS, message, {"path": validation_path(message)}, kind="invalidParams"
        )
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str) and kind in KIND_CODES and kind != "internal":
        raw = getattr(exc, "data", None)
        data = dict(raw) if isinstance(raw, Mapping) else {}
        text = getattr(exc, "message", None)
        if not isinstance(text, str) or not text:
            text = str(exc) or kind
        return RpcError(KIND_CODES[kind], text, data, kind=kind)
    _log.error(
        "request handler failed",
        method=method,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return RpcError(INTERNAL_ERROR, "Internal error", kind="internal")


def remote_error(error: Any) -> RemoteError:
    """The :class:`RemoteError` a client's error object stands for (a malformed one too)."""
    if not isinstance(error, dict):
        return RemoteError(INTERNAL_ERROR, "Malformed error response", {"error": error})
    code = error.get("code")
    message = error.get("message")
    data = error.get("data")
    return RemoteError(
        code if isinstance(code, int) and not isinstance(code, bool) else INTERNAL_ERROR,
        message if isinstance(message, str) else "",
        data if isinstance(data, dict) else ({} if data is None else {"value": data}),
    )
