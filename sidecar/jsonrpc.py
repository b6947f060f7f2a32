"""JSON-RPC 2.0 protocol object: ids, batches, errors, dispatch and server → client requests.

This is the layer between framing (:mod:`sidecar.framing`, which moves lines) and the method
handlers (thin typed functions that call the core). It implements the JSON-RPC 2.0
specification as PROTOCOL.md pins it down:

* A line that is not UTF-8 JSON is ``-32700`` with ``id: null``; a line over the size limit
  (reported by framing as :class:`~sidecar.framing.MessageTooLarge`) is ``-32600`` with
  ``data.kind = "messageTooLarge"``.
* Batches: an empty array gets one ``-32600``; the answer to a batch is one array holding the
  responses of its requests, sent once all of them are answered; a batch of notifications gets
  nothing back.
* An invalid Request object is ``-32600``, echoing its ``id`` when that is a valid id
  (string, number or null); ``"id": null`` is a request, not a notification. ``params`` must
  be an object or absent (an array is ``-32602``); an unknown method is ``-32601``.
* Handlers are registered with a msgspec type for their params; a conversion failure is
  ``-32602`` whose ``data.path`` names the field. Exceptions carrying a known ``kind`` (the
  :mod:`taskmill_core.errors` classes) map to their Taskmill codes with their ``data``; any
  other exception is logged and answered ``-32603`` (``kind: "internal"``).
* Every error's ``data`` has a ``kind``.

Requests run concurrently, each as its own task; a slow handler does not hold up the others.
Until :meth:`JsonRpcProtocol.set_ready` requests are held (and answered afterwards); after
:meth:`JsonRpcProtocol.begin_shutdown` every new request is answered ``-32005``, and so is
every request read after a request of a method registered with ``shuts_down=True`` (the
order the client wrote them in decides, not when the shutdown takes effect).

The sidecar also calls the client (host executors: ``task.execute``) with
:meth:`JsonRpcProtocol.request` and sends events with :meth:`JsonRpcProtocol.notify`;
responses from the client are matched to those requests by id (:mod:`sidecar.outgoing`).
Error codes and the mapping from exceptions to error objects are :mod:`sidecar.rpcerrors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar, overload

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup

from sidecar.framing import EndOfInput, MessageTooLarge
from sidecar.outgoing import OutgoingRequests
from sidecar.rpcerrors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    KIND_CODES,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ConnectionClosed,
    RemoteError,
    RpcError,
    error_from_exception,
)
from taskmill_core.validation import validation_path

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "KIND_CODES",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "ConnectionClosed",
    "JsonRpcProtocol",
    "MessageSink",
    "ProtocolStatistics",
    "RemoteError",
    "RpcError",
    "error_from_exception",
    "validation_path",
]

_log = structlog.get_logger("sidecar.jsonrpc")

P = TypeVar("P")
Id = str | int | float | None


class MessageSink(Protocol):
    """Where encoded messages go: :class:`sidecar.framing.LineWriter` or a test double."""

    async def send_raw(self, line: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class ProtocolStatistics:
    ready: bool
    shutting_down: bool
    input_closed: bool
    in_flight: int
    """Client messages (requests, notifications, batches) being handled now."""
    held: int
    """Requests waiting for :meth:`JsonRpcProtocol.set_ready`."""
    outgoing_pending: int
    """Server → client requests waiting for their response."""
    requests: int
    notifications: int
    errors: int
    unmatched_responses: int


def _valid_id(value: object) -> bool:
    return value is None or (isinstance(value, str | int | float) and not isinstance(value, bool))


BatchHandler = Callable[[list[Any]], Awaitable[Sequence[Any]]]
"""Handles many requests' converted params at once; one result or exception per entry."""


@dataclass(slots=True)
class _Handler:
    func: Callable[..., Awaitable[Any]]
    params_type: Any  # a type msgspec can convert to, or None: the handler takes no arguments
    batch: BatchHandler | None = None
    shuts_down: bool = False


# Requests of a batchable method taken into one group at most (a group is one task).
MAX_GROUP = 1024


class _ParseFailed:
    pass


_PARSE_FAILED: Final = _ParseFailed()
_MISSING: Final = object()


class JsonRpcProtocol:
    """One JSON-RPC 2.0 endpoint over a line transport.

    Wire it between a :class:`~sidecar.framing.LineReader` (the ``source`` of
    :meth:`serve`) and a :class:`~sidecar.framing.LineWriter` (the ``sink``)::

        proto = JsonRpcProtocol(writer, ready=False)
        proto.register("ping", ping)                       # async def ping() -> Pong
        proto.register("task.get", get_task, TaskIdParams)  # async def get_task(p) -> TaskInfo
        async with LineReader(sys.stdin.buffer) as reader:
            await proto.serve(reader)        # returns at EOF once in-flight requests finished

    ``max_concurrent`` bounds the client messages handled at once; when it is reached
    :meth:`serve` stops taking lines, which pushes back through the reader onto the client.
    Responses to the sidecar's own requests never need a slot. Handlers should therefore not
    wait on :meth:`request` themselves (the scheduler calls it from its own tasks).
    """

    def __init__(
        self, sink: MessageSink, *, ready: bool = True, max_concurrent: int = 1024
    ) -> None:
        self._sink = sink
        self._handlers: dict[str, _Handler] = {}
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()
        self._slots = anyio.Semaphore(max_concurrent)
        self._ready = ready
        self._shutting_down = False
        self._shutdown_read = False  # a valid request of a shuts_down method came in
        self._gate = anyio.Event()  # set by set_ready() or begin_shutdown()
        if ready:
            self._gate.set()
        self._input_closed = anyio.Event()
        self._outgoing = OutgoingRequests(sink.send_raw, self._encoder, _valid_id)
        self._groups: dict[str, list[tuple[Any, Any]]] = {}  # method -> requests not yet taken
        self._in_flight = 0
        self._held = 0
        self._requests = 0
        self._notifications = 0
        self._errors = 0
        # Told of every exception a handler raised before it becomes the error answer; may
        # return the exception to answer with instead (the server stops on one that says the
        # database file is damaged, and answers it as a storage error).
        self.on_handler_error: Callable[[Exception], Exception | None] | None = None

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<JsonRpcProtocol ready={s.ready} shutting_down={s.shutting_down} "
            f"in_flight={s.in_flight} outgoing={s.outgoing_pending}>"
        )

    # -- configuration ---------------------------------------------------------------------

    @overload
    def register(
        self,
        method: str,
        handler: Callable[[], Awaitable[Any]],
        params_type: None = None,
        *,
        shuts_down: bool = False,
    ) -> None: ...

    @overload
    def register(
        self,
        method: str,
        handler: Callable[[P], Awaitable[Any]],
        params_type: type[P],
        *,
        batch: Callable[[list[P]], Awaitable[Sequence[Any]]] | None = None,
        shuts_down: bool = False,
    ) -> None: ...

    def register(
        self,
        method: str,
        handler: Callable[..., Awaitable[Any]],
        params_type: type[Any] | None = None,
        *,
        batch: BatchHandler | None = None,
        shuts_down: bool = False,
    ) -> None:
        """Route ``method`` to ``handler``.

        With a ``params_type`` (a msgspec Struct, or any type :func:`msgspec.convert`
        accepts) the handler gets the converted params (``{}`` when omitted); with ``None``
        it is called without arguments and any params object is accepted and ignored.

        ``batch`` (with a ``params_type``) handles many requests of this method at once: the
        requests that arrive together (read in one go from the input, outside JSON-RPC batch
        arrays) are grouped, their params converted one by one, and ``batch`` gets the list
        of converted params in one task. It returns one entry per request: the result, or
        the exception that request's answer is made from. Each request still gets its own
        response, exactly as ``handler`` would have produced it.

        ``shuts_down`` marks the method that ends the session (``shutdown``): once a request
        of it with valid params has been read, every request read after it is answered
        ``-32005``, however soon it arrived (in the same read, before the handler ran).
        """
        if method in self._handlers:
            raise ValueError(f"method {method!r} is already registered")
        if batch is not None and params_type is None:
            raise ValueError("a batch handler needs a params_type")
        self._handlers[method] = _Handler(handler, params_type, batch, shuts_down)

    def retype(self, method: str, params_type: type[Any]) -> None:
        """Convert the params of the registered ``method`` to ``params_type`` from now on
        (the handler and its batch handler take it)."""
        self._handlers[method].params_type = params_type

    @property
    def methods(self) -> list[str]:
        return sorted(self._handlers)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def input_closed(self) -> bool:
        return self._input_closed.is_set()

    def set_ready(self) -> None:
        """Start dispatching; requests held so far run now (send ``sidecar.ready`` first)."""
        self._ready = True
        self._gate.set()

    def begin_shutdown(self) -> None:
        """From now on answer every new request with ``-32005`` (``kind: "shuttingDown"``).

        Requests already being handled finish normally; requests still held for readiness
        are answered ``-32005`` too.
        """
        self._shutting_down = True
        self._gate.set()

    async def wait_input_closed(self) -> None:
        """Return once :meth:`serve`'s source has ended (stdin EOF)."""
        await self._input_closed.wait()

    def statistics(self) -> ProtocolStatistics:
        return ProtocolStatistics(
            ready=self._ready,
            shutting_down=self._shutting_down,
            input_closed=self.input_closed,
            in_flight=self._in_flight,
            held=self._held,
            outgoing_pending=len(self._outgoing),
            requests=self._requests,
            notifications=self._notifications,
            errors=self._errors,
            unmatched_responses=self._outgoing.unmatched,
        )

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, source: AsyncIterable[bytes | MessageTooLarge | EndOfInput]) -> None:
        """Handle every item of ``source`` until it ends; then wait for in-flight requests.

        When the source ends, pending server → client requests fail with
        :class:`ConnectionClosed`.
        """
        try:
            async with anyio.create_task_group() as tg:
                async for item in source:
                    if isinstance(item, EndOfInput):
                        break
                    if isinstance(item, MessageTooLarge):
                        await self._send(self._too_large(item))
                        continue
                    message = self._parse(item)
                    if message is _PARSE_FAILED:
                        await self._send(self._parse_error())
                        continue
                    if _is_response(message):
                        self._outgoing.handle_response(message)
                        continue
                    refused = self._note_shutdown(message)
                    grouped = None if refused else self._group(message, tg)
                    if grouped is not None:
                        if grouped:  # the params were invalid: answered right away
                            await self._send(grouped)
                        continue
                    # Without a yield per line, the requests of one read chunk start
                    # together, and the scheduler can commit their submits in one group.
                    try:
                        self._slots.acquire_nowait()
                    except anyio.WouldBlock:
                        await self._slots.acquire()
                    self._in_flight += 1
                    tg.start_soon(self._serve_message, message, refused)
                self._close_input()
        finally:
            self._close_input()

    def _note_shutdown(self, message: Any) -> bool:
        """Whether ``message`` comes after a shutdown request (then its requests are refused);
        notes it when it is one (or a batch holding one) with valid params."""
        if self._shutdown_read:
            return True
        elements = message if isinstance(message, list) else [message]
        self._shutdown_read = any(self._is_shutdown_request(m) for m in elements)
        return False

    def _is_shutdown_request(self, message: Any) -> bool:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return False
        method = message.get("method")
        handler = self._handlers.get(method) if isinstance(method, str) else None
        if handler is None or not handler.shuts_down or not _valid_id(message.get("id")):
            return False
        params = message.get("params", {})
        if not isinstance(params, dict):
            return False
        try:  # a shutdown with invalid params is answered -32602 and shuts nothing down
            if handler.params_type is not None:
                msgspec.convert(params, handler.params_type)
        except Exception:
            return False
        return True

    def _group(self, message: Any, tg: TaskGroup) -> bytes | None:
        """Take a request of a batchable method into the current group of its method.

        Returns ``None`` when the message is not such a request (it takes the general path,
        which also produces every envelope error), ``b""`` when it joined a group, or the
        encoded error response when its params are invalid. The first request of a group
        starts the task that handles the group; it runs once the reader has handed over
        everything that arrived together, so a burst of pipelined requests becomes one
        task and one wake-up instead of one of each per request.
        """
        if not (self._ready and not self._shutting_down and isinstance(message, dict)):
            return None
        method = message.get("method")
        handler = self._handlers.get(method) if isinstance(method, str) else None
        if handler is None or handler.batch is None:
            return None
        rid = message.get("id", _MISSING)
        params = message.get("params", _MISSING)
        if (
            rid is _MISSING
            or not _valid_id(rid)
            or message.get("jsonrpc") != "2.0"
            or not (params is _MISSING or isinstance(params, dict))
        ):
            return None
        assert isinstance(method, str)
        try:  # each grouped request holds a slot, like a request handled on its own
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            return None  # at the limit: the general path waits for a slot
        self._requests += 1
        try:
            converted = msgspec.convert({} if params is _MISSING else params, handler.params_type)
        except Exception as exc:
            self._slots.release()
            self._errors += 1
            return self._error(rid, error_from_exception(exc, method=method))
        group = self._groups.get(method)
        if group is None or len(group) >= MAX_GROUP:
            group = self._groups[method] = []
            self._in_flight += 1
            tg.start_soon(self._serve_group, method, handler, group)
        group.append((rid, converted))
        return b""

    async def _serve_group(self, method: str, handler: _Handler, group: list[Any]) -> None:
        try:
            # Every request read together has joined by now (serve does not yield between
            # the lines of one read); later ones start a new group.
            if self._groups.get(method) is group:
                del self._groups[method]
            assert handler.batch is not None
            try:
                outcomes: Sequence[Any] = await handler.batch([p for _, p in group])
                if len(outcomes) != len(group):
                    raise RuntimeError(f"batch handler of {method} answered {len(outcomes)}")
            except Exception as exc:
                outcomes = [exc] * len(group)
            for (rid, _), outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    outcome = self._handler_failed(outcome)
                    self._errors += 1
                    line = self._error(rid, error_from_exception(outcome, method=method))
                else:
                    line = self._result(rid, outcome, method)
                await self._send(line)
        finally:
            self._in_flight -= 1
            for _ in group:
                self._slots.release()

    async def process_line(self, line: bytes) -> bytes | None:
        """Handle one line and return the encoded answer (``None``: nothing to send).

        The pure request → response step of :meth:`serve`, without concurrency limits.
        """
        message = self._parse(line)
        if message is _PARSE_FAILED:
            return self._parse_error()
        return await self._process(message, refused=self._note_shutdown(message))

    def process_too_large(self, item: MessageTooLarge) -> bytes:
        """The answer to a line the reader skipped for its size."""
        return self._too_large(item)

    async def _serve_message(self, message: Any, refused: bool) -> None:
        try:
            response = await self._process(message, refused=refused)
            if response is not None:
                await self._send(response)
        finally:
            self._in_flight -= 1
            self._slots.release()

    async def _send(self, data: bytes) -> None:
        try:
            await self._sink.send_raw(data)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            _log.warning("response dropped: output closed", error=repr(exc))

    def _parse(self, line: bytes) -> Any:
        try:
            return self._decoder.decode(line)
        except Exception as exc:  # DecodeError, UnicodeDecodeError, RecursionError
            _log.info("unparsable message", error=str(exc), size=len(line))
            return _PARSE_FAILED

    def _parse_error(self) -> bytes:
        self._errors += 1
        return self._error(None, RpcError(PARSE_ERROR, "Parse error", kind="parseError"))

    def _too_large(self, item: MessageTooLarge) -> bytes:
        self._errors += 1
        _log.warning("message too large; skipped", size=item.size, limit=item.limit)
        error = RpcError(
            INVALID_REQUEST,
            f"Message of {item.size} bytes exceeds the limit of {item.limit} bytes",
            {"size": item.size, "maxMessageBytes": item.limit},
            kind="messageTooLarge",
        )
        return self._error(None, error)

    async def _process(self, message: Any, *, refused: bool = False) -> bytes | None:
        """Answer a message; ``refused``: it came after a shutdown request (``-32005``)."""
        if not isinstance(message, list):
            return await self._process_one(message, refused)
        if not message:
            return self._invalid(None, "Empty batch")
        answers: list[bytes | None] = [None] * len(message)

        async def answer(index: int, element: Any) -> None:
            answers[index] = await self._process_one(element, refused)

        async with anyio.create_task_group() as tg:
            for index, element in enumerate(message):
                tg.start_soon(answer, index, element)
        parts = [a for a in answers if a is not None]
        if not parts:
            return None
        return b"[" + b",".join(parts) + b"]"

    async def _process_one(self, message: Any, refused: bool) -> bytes | None:
        if not isinstance(message, dict):
            return self._invalid(None, "A request must be an object")
        has_id = "id" in message
        rid = message.get("id")
        echo = rid if _valid_id(rid) else None
        if "method" not in message:
            if _is_response(message):
                self._outgoing.handle_response(message)
                return None
            return self._invalid(echo, "Missing 'method'")
        if message.get("jsonrpc") != "2.0":
            return self._invalid(echo, "'jsonrpc' must be \"2.0\"")
        method = message["method"]
        if not isinstance(method, str):
            return self._invalid(echo, "'method' must be a string")
        if has_id and not _valid_id(rid):
            return self._invalid(None, "'id' must be a string, a number or null")
        params = message.get("params", _MISSING)
        if params is not _MISSING and not isinstance(params, dict | list):
            return self._invalid(echo, "'params' must be an object")

        if has_id:
            self._requests += 1
        else:
            self._notifications += 1
        try:
            result = await self._dispatch(method, params, refused)
        except Exception as raised:
            exc = self._handler_failed(raised)
            error = error_from_exception(exc, method=method)
            if not has_id:
                _log.warning("notification failed", method=method, error=error.message)
                return None
            self._errors += 1
            return self._error(rid, error)
        if not has_id:
            return None
        return self._result(rid, result, method)

    def _handler_failed(self, exc: Exception) -> Exception:
        if self.on_handler_error is None:
            return exc
        return self.on_handler_error(exc) or exc

    def _result(self, rid: Any, result: Any, method: str) -> bytes:
        try:
            return self._encoder.encode({"jsonrpc": "2.0", "id": rid, "result": result})
        except (TypeError, msgspec.EncodeError) as exc:
            self._errors += 1
            return self._error(rid, error_from_exception(exc, method=method))

    async def _dispatch(self, method: str, params: Any, refused: bool) -> Any:
        if self._shutting_down or refused:
            raise RpcError(-32005, "The sidecar is shutting down", kind="shuttingDown")
        if not self._ready:
            self._held += 1
            try:
                await self._gate.wait()
            finally:
                self._held -= 1
            if not self._ready:
                raise RpcError(-32005, "The sidecar is shutting down", kind="shuttingDown")
        handler = self._handlers.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}", kind="methodNotFound")
        if isinstance(params, list):
            raise RpcError(
                INVALID_PARAMS,
                "params must be an object (by-name), not an array",
                {"path": "$"},
                kind="invalidParams",
            )
        if handler.params_type is None:
            return await handler.func()
        converted = msgspec.convert({} if params is _MISSING else params, handler.params_type)
        return await handler.func(converted)

    def _invalid(self, rid: Id, message: str) -> bytes:
        self._errors += 1
        return self._error(rid, RpcError(INVALID_REQUEST, message, kind="invalidRequest"))

    def _error(self, rid: Any, error: RpcError) -> bytes:
        body = {"jsonrpc": "2.0", "id": rid, "error": error.to_wire()}
        try:
            return self._encoder.encode(body)
        except (TypeError, msgspec.EncodeError):
            _log.error("error data not encodable", code=error.code, data=repr(error.data))
            body["error"] = {
                "code": error.code,
                "message": error.message,
                "data": {"kind": error.kind},
            }
            return self._encoder.encode(body)

    # -- server → client -------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a per-call deadline is the API)
    ) -> Any:
        """Call ``method`` on the client and return its result (see
        :meth:`sidecar.outgoing.OutgoingRequests.request` for the errors it raises)."""
        return await self._outgoing.request(method, params, timeout=timeout)

    async def notify(self, method: str, params: Any = None) -> None:
        """Send the notification (event) ``method``; waits while the output queue is full."""
        await self._sink.send_raw(
            self._encoder.encode(
                {"jsonrpc": "2.0", "method": method, "params": {} if params is None else params}
            )
        )

    def _close_input(self) -> None:
        if self._input_closed.is_set():
            return
        self._input_closed.set()
        self._outgoing.close()


def _is_response(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and "method" not in message
        and "id" in message
        and ("result" in message or "error" in message)
    )
