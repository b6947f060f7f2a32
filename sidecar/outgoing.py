"""Server → client requests: the sidecar calling its client (host executors' ``task.execute``).

Each request gets a fresh integer id and waits for the response with that id;
:meth:`OutgoingRequests.handle_response` matches the client's answers (a client may echo 1 as
1.0), and :meth:`OutgoingRequests.close` fails whatever still waits once the client's input
has ended.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import structlog

from sidecar.rpcerrors import ConnectionClosed, remote_error

__all__ = ["OutgoingRequests"]

_log = structlog.get_logger("sidecar.jsonrpc")


class _Pending:
    """A server → client request waiting for its response."""

    __slots__ = ("done", "error", "method", "result")

    def __init__(self, method: str) -> None:
        self.method = method
        self.done = anyio.Event()
        self.result: Any = None
        self.error: Exception | None = None

    def resolve(self, result: Any = None, error: Exception | None = None) -> None:
        if not self.done.is_set():
            self.result = result
            self.error = error
            self.done.set()


class OutgoingRequests:
    """The sidecar's own requests to its client, waiting for their responses."""

    def __init__(
        self,
        send: Callable[[bytes], Any],
        encoder: msgspec.json.Encoder,
        valid_id: Callable[[object], bool],
    ) -> None:
        self._send = send
        self._encoder = encoder
        self._valid_id = valid_id
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self.closed = False
        self.unmatched = 0  # responses that answered no request of ours

    def __len__(self) -> int:
        return len(self._pending)

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a per-call deadline is the API)
    ) -> Any:
        """Call ``method`` on the client and return its result.

        Raises :class:`RemoteError` with the client's error, :class:`TimeoutError` after
        ``timeout`` seconds (a late answer is then logged and ignored), or
        :class:`ConnectionClosed` if the client's input ends first.
        """
        if self.closed:
            raise ConnectionClosed(f"cannot call {method}: client input closed")
        rid = next(self._ids)
        pending = _Pending(method)
        self._pending[rid] = pending
        try:
            with anyio.fail_after(timeout):
                await self._send(
                    self._encoder.encode(
                        {
                            "jsonrpc": "2.0",
                            "id": rid,
                            "method": method,
                            "params": {} if params is None else params,
                        }
                    )
                )
                await pending.done.wait()
        finally:
            self._pending.pop(rid, None)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def handle_response(self, message: dict[str, Any]) -> None:
        rid = message.get("id")
        # Our ids are ints; a client may echo 1 as 1.0. (bool is an int subclass: no match.)
        pending = (
            self._pending.get(int(rid))
            if (isinstance(rid, int) and not isinstance(rid, bool))
            or (isinstance(rid, float) and rid.is_integer())
            else None
        )
        if pending is None:
            self.unmatched += 1
            _log.warning(
                "unmatched response ignored",
                id=rid if self._valid_id(rid) else repr(rid),
                error=message.get("error"),
            )
            return
        if "error" in message:
            pending.resolve(error=remote_error(message["error"]))
        else:
            pending.resolve(result=message.get("result"))

    def close(self) -> None:
        """The client's input ended: nothing waiting can be answered any more."""
        self.closed = True
        for rid, pending in list(self._pending.items()):
            pending.resolve(error=ConnectionClosed(f"client input closed before it answered {rid}"))
