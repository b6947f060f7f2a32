"""The JSON-RPC 2.0 protocol object, driven with lines in memory (no pipes, no threads)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from anyio.streams.memory import MemoryObjectSendStream

from sidecar.framing import MessageTooLarge
from sidecar.jsonrpc import (
    ConnectionClosed,
    JsonRpcProtocol,
    RemoteError,
    RpcError,
    error_from_exception,
    validation_path,
)
from taskmill_core import errors

pytestmark = pytest.mark.anyio


# -- handlers used throughout (the JSON-RPC specification's examples, by name) ---------------


class SubtractParams(msgspec.Struct):
    minuend: int
    subtrahend: int


class SumParams(msgspec.Struct):
    values: list[int]


class UpdateParams(msgspec.Struct):
    values: list[int] = []


class Entry(msgspec.Struct, rename="camel"):
    type: str
    max_retries: int = 3


class BatchParams(msgspec.Struct, forbid_unknown_fields=True):
    tasks: list[Entry]


class Point(msgspec.Struct):
    x: int
    y: int


class Forbidden(Exception):
    """Stands in for a core error class that does not exist yet; mapped by its kind."""

    kind = "forbidden"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.data = {"type": "noop"}


updates: list[list[int]] = []


async def subtract(p: SubtractParams) -> int:
    return p.minuend - p.subtrahend


async def total(p: SumParams) -> int:
    return sum(p.values)


async def update(p: UpdateParams) -> None:
    updates.append(p.values)


async def get_data() -> list[Any]:
    return ["hello", 5]


async def submit_batch(p: BatchParams) -> dict[str, int]:
    return {"count": len(p.tasks)}


async def point() -> Point:
    return Point(1, 2)


def make_protocol(**kwargs: Any) -> JsonRpcProtocol:
    proto = JsonRpcProtocol(Collector(), **kwargs)
    proto.register("subtract", subtract, SubtractParams)
    proto.register("sum", total, SumParams)
    proto.register("update", update, UpdateParams)
    proto.register("notify_hello", update, UpdateParams)
    proto.register("get_data", get_data)
    proto.register("task.submitBatch", submit_batch, BatchParams)
    proto.register("point", point)
    return proto


class Collector:
    """A MessageSink that keeps what it is given and lets a test wait for it."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._changed = anyio.Event()

    async def send_raw(self, line: bytes) -> None:
        self.lines.append(line)
        self._changed.set()
        self._changed = anyio.Event()

    def messages(self) -> list[Any]:
        return [msgspec.json.decode(line) for line in self.lines]

    async def wait_for(self, count: int) -> list[Any]:
        with anyio.fail_after(5):
            while len(self.lines) < count:
                await self._changed.wait()
        return self.messages()


async def answer(proto: JsonRpcProtocol, line: str | bytes) -> Any:
    raw = line.encode() if isinstance(line, str) else line
    out = await proto.process_line(raw)
    return None if out is None else msgspec.json.decode(out)


def err(code: int, kind: str, rid: Any = None) -> dict[str, Any]:
    """The parts of an error response a test checks (message text is free)."""
    return {"jsonrpc": "2.0", "id": rid, "code": code, "kind": kind}


def shape(response: Any) -> Any:
    if isinstance(response, list):
        return [shape(r) for r in response]
    if "error" in response:
        e = response["error"]
        return {"jsonrpc": response["jsonrpc"], "id": response["id"], "code": e["code"],
                "kind": e["data"]["kind"]}  # fmt: skip
    return response


# -- the specification's examples (https://www.jsonrpc.org/specification#examples) ---------


async def test_spec_call_with_named_parameters() -> None:
    proto = make_protocol()
    assert await answer(
        proto,
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, '
        '"minuend": 42}, "id": 3}',
    ) == {"jsonrpc": "2.0", "result": 19, "id": 3}
    assert await answer(
        proto,
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, '
        '"subtrahend": 23}, "id": 4}',
    ) == {"jsonrpc": "2.0", "result": 19, "id": 4}


async def test_spec_call_with_positional_parameters_is_invalid_params_here() -> None:
    proto = make_protocol()
    response = await answer(
        proto, '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}'
    )
    assert shape(response) == err(-32602, "invalidParams", 1)
    assert response["error"]["data"]["path"] == "$"


async def test_spec_notifications_get_no_response() -> None:
    proto = make_protocol()
    updates.clear()
    line = '{"jsonrpc": "2.0", "method": "update", "params": {"values": [1,2,3,4,5]}}'
    assert await answer(proto, line) is None
    assert updates == [[1, 2, 3, 4, 5]]
    # Even when they would fail: positional params, unknown method.
    assert await answer(proto, '{"jsonrpc": "2.0", "method": "update", "params": [1,2,3]}') is None
    assert await answer(proto, '{"jsonrpc": "2.0", "method": "foobar"}') is None
    assert proto.statistics().notifications == 3


async def test_spec_non_existent_method() -> None:
    proto = make_protocol()
    response = await answer(proto, '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert shape(response) == err(-32601, "methodNotFound", "1")


async def test_spec_invalid_json() -> None:
    proto = make_protocol()
    line = '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]'
    assert shape(await answer(proto, line)) == err(-32700, "parseError")


async def test_spec_invalid_request_object() -> None:
    proto = make_protocol()
    line = '{"jsonrpc": "2.0", "method": 1, "params": "bar"}'
    assert shape(await answer(proto, line)) == err(-32600, "invalidRequest")


async def test_spec_batch_invalid_json() -> None:
    proto = make_protocol()
    line = """[
      {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
      {"jsonrpc": "2.0", "method"
    ]"""
    assert shape(await answer(proto, line)) == err(-32700, "parseError")


async def test_spec_empty_array() -> None:
    proto = make_protocol()
    response = await answer(proto, "[]")
    assert isinstance(response, dict)  # one error, not an array
    assert shape(response) == err(-32600, "invalidRequest")


async def test_spec_invalid_batch_but_not_empty() -> None:
    proto = make_protocol()
    assert shape(await answer(proto, "[1]")) == [err(-32600, "invalidRequest")]


async def test_spec_invalid_batch() -> None:
    proto = make_protocol()
    assert shape(await answer(proto, "[1,2,3]")) == [err(-32600, "invalidRequest")] * 3


async def test_spec_rpc_call_batch_verbatim() -> None:
    """The spec's batch, verbatim: positional params are -32602 here (PROTOCOL.md)."""
    proto = make_protocol()
    line = """[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"""
    assert shape(await answer(proto, line)) == [
        err(-32602, "invalidParams", "1"),
        err(-32602, "invalidParams", "2"),
        err(-32600, "invalidRequest"),
        err(-32601, "methodNotFound", "5"),
        {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"},
    ]


async def test_spec_rpc_call_batch_by_name() -> None:
    """The same batch with by-name params gets exactly the spec's answers."""
    proto = make_protocol()
    line = """[
        {"jsonrpc": "2.0", "method": "sum", "params": {"values": [1,2,4]}, "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": {"values": [7]}},
        {"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23},
         "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"""
    assert shape(await answer(proto, line)) == [
        {"jsonrpc": "2.0", "result": 7, "id": "1"},
        {"jsonrpc": "2.0", "result": 19, "id": "2"},
        err(-32600, "invalidRequest"),
        err(-32601, "methodNotFound", "5"),
        {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"},
    ]


async def test_spec_batch_of_notifications() -> None:
    proto = make_protocol()
    line = """[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]"""
    assert await answer(proto, line) is None


# -- request objects ------------------------------------------------------------------------


async def test_id_null_is_a_request() -> None:
    proto = make_protocol()
    assert await answer(proto, '{"jsonrpc":"2.0","method":"get_data","id":null}') == {
        "jsonrpc": "2.0",
        "id": None,
        "result": ["hello", 5],
    }


@pytest.mark.parametrize("rid", ['"abc"', "7", "-1", "2.5", "null"])
async def test_ids_are_echoed_exactly(rid: str) -> None:
    proto = make_protocol()
    response = await answer(proto, f'{{"jsonrpc":"2.0","method":"get_data","id":{rid}}}')
    assert response["id"] == msgspec.json.decode(rid)
    assert type(response["id"]) is type(msgspec.json.decode(rid))


@pytest.mark.parametrize(
    ("line", "rid"),
    [
        ('{"method":"get_data","id":5}', 5),  # no "jsonrpc"
        ('{"jsonrpc":"1.0","method":"get_data","id":"a"}', "a"),
        ('{"jsonrpc":2.0,"method":"get_data","id":6}', 6),
        ('{"jsonrpc":"2.0","method":["x"],"id":7}', 7),
        ('{"jsonrpc":"2.0","method":"get_data","params":"bar","id":8}', 8),
        ('{"jsonrpc":"2.0","method":"get_data","params":null,"id":9}', 9),
        ('{"jsonrpc":"2.0","method":"get_data","id":{"a":1}}', None),  # invalid id → null
        ('{"jsonrpc":"2.0","method":"get_data","id":[1]}', None),
        ('{"jsonrpc":"2.0","method":"get_data","id":true}', None),
        ('{"jsonrpc":"2.0","id":3}', 3),  # neither request nor response
        ('{"jsonrpc":"2.0"}', None),
        ('"just a string"', None),
        ("42", None),
        ("null", None),
    ],
)
async def test_invalid_requests(line: str, rid: Any) -> None:
    proto = make_protocol()
    assert shape(await answer(proto, line)) == err(-32600, "invalidRequest", rid)


async def test_invalid_utf8_is_a_parse_error() -> None:
    proto = make_protocol()
    line = b'{"jsonrpc":"2.0","method":"get_\xff\xfe","id":1}'
    assert shape(await answer(proto, line)) == err(-32700, "parseError")
    assert shape(await answer(proto, b"\xff\n")) == err(-32700, "parseError")


async def test_deeply_nested_json_is_a_parse_error() -> None:
    proto = make_protocol()
    assert shape(await answer(proto, "[" * 100_000)) == err(-32700, "parseError")


async def test_params_omitted_means_empty_object() -> None:
    proto = make_protocol()
    updates.clear()
    assert await answer(proto, '{"jsonrpc":"2.0","method":"update","id":1}') == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": None,
    }
    assert updates == [[]]


async def test_no_params_method_ignores_a_params_object() -> None:
    proto = make_protocol()
    response = await answer(proto, '{"jsonrpc":"2.0","method":"get_data","params":{"x":1},"id":1}')
    assert response["result"] == ["hello", 5]


async def test_struct_results_are_encoded_natively() -> None:
    proto = make_protocol()
    response = await answer(proto, '{"jsonrpc":"2.0","method":"point","id":1}')
    assert response["result"] == {"x": 1, "y": 2}


# -- invalid params -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ('{"tasks":[{"type":"a"},{"type":"b","maxRetries":"x"}]}', "$.tasks[1].maxRetries"),
        ('{"tasks":[{"type":"a"},{}]}', "$.tasks[1].type"),  # missing field: named
        ("{}", "$.tasks"),
        ('{"tasks":[],"extra":1}', "$.extra"),  # unknown field (forbid_unknown_fields)
        ('{"tasks":5}', "$.tasks"),
    ],
)
async def test_invalid_params_name_the_field(params: str, path: str) -> None:
    proto = make_protocol()
    line = f'{{"jsonrpc":"2.0","method":"task.submitBatch","params":{params},"id":1}}'
    response = await answer(proto, line)
    assert shape(response) == err(-32602, "invalidParams", 1)
    assert response["error"]["data"]["path"] == path


def test_validation_path() -> None:
    assert validation_path("Expected `int`, got `str` - at `$.foo.bar`") == "$.foo.bar"
    assert validation_path("Expected `object`, got `int`") == "$"
    assert validation_path("Object missing required field `type`") == "$.type"
    assert validation_path("Object missing required field `a b` - at `$.x[2]`") == '$.x[2]["a b"]'
    assert validation_path("Object contains unknown field `zz` - at `$.t`") == "$.t.zz"


# -- error mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "kind", "data"),
    [
        (errors.InvalidParams("bad priority", path="$.priority"), -32602, "invalidParams",
         {"path": "$.priority"}),
        (errors.TaskNotFound("no task 5", id=5), -32001, "taskNotFound", {"id": 5}),
        (errors.InvalidState("task 5 is completed", id=5, state="completed"), -32002,
         "invalidState", {"id": 5, "state": "completed"}),
        (errors.DuplicateRejected("duplicate", existing_id=9), -32003, "duplicateRejected",
         {"existingId": 9}),
        (errors.PayloadTooLarge("payload over 1 MiB", index=3), -32004, "payloadTooLarge",
         {"index": 3}),
        (errors.ShuttingDown("shutting down"), -32005, "shuttingDown", {}),
        (errors.StorageError("disk full"), -32006, "storage", {}),
        (errors.NotATaskmillDatabase("not ours"), -32006, "storage", {}),
        (Forbidden("built-in type"), -32007, "forbidden", {"type": "noop"}),
        (RpcError(-32099, "custom", {"x": 1}, kind="custom"), -32099, "custom", {"x": 1}),
        (RpcError(-32002, "custom"), -32002, "invalidState", {}),
    ],
)  # fmt: skip
async def test_core_errors_map_to_codes(
    exc: Exception, code: int, kind: str, data: dict[str, Any]
) -> None:
    proto = make_protocol()

    async def fail() -> None:
        raise exc

    proto.register("fail", fail)
    response = await answer(proto, '{"jsonrpc":"2.0","method":"fail","id":"x"}')
    assert response["id"] == "x"
    assert response["error"] == {"code": code, "message": str(exc), "data": {**data, "kind": kind}}


async def test_unexpected_exception_is_internal_and_server_keeps_serving() -> None:
    proto = make_protocol()

    async def crash() -> None:
        raise ValueError("secret detail")

    proto.register("crash", crash)
    response = await answer(proto, '{"jsonrpc":"2.0","method":"crash","id":1}')
    assert response["error"] == {
        "code": -32603,
        "message": "Internal error",
        "data": {"kind": "internal"},
    }
    assert (await answer(proto, '{"jsonrpc":"2.0","method":"get_data","id":2}'))["result"]


async def test_unencodable_result_is_internal_error() -> None:
    proto = make_protocol()

    async def weird() -> object:
        return object()

    proto.register("weird", weird)
    response = await answer(proto, '{"jsonrpc":"2.0","method":"weird","id":1}')
    assert shape(response) == err(-32603, "internal", 1)


async def test_unencodable_error_data_keeps_code_and_kind() -> None:
    proto = make_protocol()

    async def fail() -> None:
        raise errors.TaskNotFound("gone", thing=object())

    proto.register("fail", fail)
    response = await answer(proto, '{"jsonrpc":"2.0","method":"fail","id":1}')
    assert response["error"] == {
        "code": -32001,
        "message": "gone",
        "data": {"kind": "taskNotFound"},
    }


def test_single_exception_group_is_unwrapped() -> None:
    group = ExceptionGroup("g", [errors.TaskNotFound("no task")])
    mapped = error_from_exception(group)
    assert (mapped.code, mapped.kind) == (-32001, "taskNotFound")


def test_register_twice_is_an_error() -> None:
    proto = make_protocol()
    with pytest.raises(ValueError):
        proto.register("get_data", get_data)
    assert "get_data" in proto.methods


async def test_message_too_large_answer() -> None:
    proto = make_protocol()
    response = msgspec.json.decode(proto.process_too_large(MessageTooLarge(size=50, limit=10)))
    assert response == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": -32600,
            "message": response["error"]["message"],
            "data": {"kind": "messageTooLarge", "size": 50, "maxMessageBytes": 10},
        },
    }


# -- serving: concurrency, readiness, shutdown ----------------------------------------------


class Session:
    """A protocol being served from an in-memory line source; the test plays the client."""

    def __init__(self, proto: JsonRpcProtocol, send: MemoryObjectSendStream[Any]) -> None:
        self.proto = proto
        self.out: Collector = proto._sink  # type: ignore[assignment]
        self._send = send

    async def line(self, text: str | bytes | MessageTooLarge) -> None:
        await self._send.send(text.encode() if isinstance(text, str) else text)

    def close(self) -> None:
        self._send.close()


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    async with served(make_protocol()) as s:
        yield s


@asynccontextmanager
async def served(proto: JsonRpcProtocol) -> AsyncIterator[Session]:
    """Run ``proto.serve`` over an in-memory source for the duration of the block."""
    send, receive = anyio.create_memory_object_stream[Any](100)

    async def serve() -> None:
        async with receive:
            await proto.serve(receive)

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        session = Session(proto, send)
        try:
            yield session
        finally:
            session.close()


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not predicate():
            await anyio.lowlevel.checkpoint()


async def test_slow_handler_does_not_block_others() -> None:
    proto = make_protocol()
    release = anyio.Event()
    started = anyio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "slow"

    proto.register("slow", slow)
    async with served(proto) as s:
        await s.line('{"jsonrpc":"2.0","method":"slow","id":1}')
        await started.wait()
        await s.line('{"jsonrpc":"2.0","method":"get_data","id":2}')
        assert [m["id"] for m in await s.out.wait_for(1)] == [2]
        assert proto.statistics().in_flight == 1
        release.set()
        assert [m["id"] for m in await s.out.wait_for(2)] == [2, 1]


async def test_batch_answer_waits_for_all_its_requests() -> None:
    proto = make_protocol()
    release = anyio.Event()

    async def slow() -> str:
        await release.wait()
        return "slow"

    proto.register("slow", slow)
    async with served(proto) as s:
        await s.line(
            '[{"jsonrpc":"2.0","method":"slow","id":1},'
            '{"jsonrpc":"2.0","method":"get_data","id":2}]'
        )
        await s.line('{"jsonrpc":"2.0","method":"get_data","id":3}')
        assert [m["id"] for m in await s.out.wait_for(1)] == [3]
        release.set()
        messages = await s.out.wait_for(2)
    assert [m["id"] for m in messages[1]] == [1, 2]
    assert messages[1][0]["result"] == "slow"


async def test_serve_answers_too_large_and_parse_errors_in_order(session: Session) -> None:
    await session.line(MessageTooLarge(size=10_000_000, limit=1_000_000))
    await session.line(b"{not json")
    await session.line('{"jsonrpc":"2.0","method":"get_data","id":1}')
    messages = await session.out.wait_for(3)
    assert [shape(m) for m in messages[:2]] == [
        err(-32600, "messageTooLarge"),
        err(-32700, "parseError"),
    ]
    assert messages[2]["result"] == ["hello", 5]


async def test_requests_are_held_until_ready() -> None:
    proto = make_protocol(ready=False)
    async with served(proto) as s:
        await s.line('{"jsonrpc":"2.0","method":"get_data","id":1}')
        await s.line(
            '{"jsonrpc":"2.0","method":"subtract","params":{"minuend":1,"subtrahend":1},"id":2}'
        )
        await wait_until(lambda: proto.statistics().held >= 2)
        assert s.out.lines == []
        await proto.notify("sidecar.ready", {"protocolVersion": 1})
        proto.set_ready()
        messages = await s.out.wait_for(3)
    assert messages[0] == {
        "jsonrpc": "2.0",
        "method": "sidecar.ready",
        "params": {"protocolVersion": 1},
    }
    assert sorted(m["id"] for m in messages[1:]) == [1, 2]
    assert proto.statistics().held == 0


async def test_shutdown_releases_held_requests_with_shutting_down() -> None:
    proto = make_protocol(ready=False)
    async with served(proto) as s:
        await s.line('{"jsonrpc":"2.0","method":"get_data","id":1}')
        await wait_until(lambda: proto.statistics().held >= 1)
        proto.begin_shutdown()
        assert shape((await s.out.wait_for(1))[0]) == err(-32005, "shuttingDown", 1)


async def test_shutting_down_mode() -> None:
    proto = make_protocol()
    release = anyio.Event()

    async def slow() -> str:
        await release.wait()
        return "finished"

    async def shutdown() -> dict[str, Any]:
        proto.begin_shutdown()
        return {}

    proto.register("slow", slow)
    proto.register("shutdown", shutdown)
    async with served(proto) as s:
        await s.line('{"jsonrpc":"2.0","method":"slow","id":1}')
        await s.line('{"jsonrpc":"2.0","method":"shutdown","id":2}')
        assert (await s.out.wait_for(1))[0] == {"jsonrpc": "2.0", "id": 2, "result": {}}
        assert proto.shutting_down
        await s.line('{"jsonrpc":"2.0","method":"get_data","id":3}')
        await s.line('{"jsonrpc":"2.0","method":"nope","id":4}')
        await s.line(
            '[{"jsonrpc":"2.0","method":"get_data","id":5},{"jsonrpc":"2.0","method":"x"}]'
        )
        await s.line('{"jsonrpc":"2.0","method":"update"}')  # a notification: no answer
        messages = await s.out.wait_for(4)
        assert [shape(m) for m in messages[1:4]] == [
            err(-32005, "shuttingDown", 3),
            err(-32005, "shuttingDown", 4),
            [err(-32005, "shuttingDown", 5)],
        ]
        release.set()  # a request that was running before shutdown still completes
        messages = await s.out.wait_for(5)
    assert messages[4] == {"jsonrpc": "2.0", "id": 1, "result": "finished"}
    assert len(messages) == 5


class GraceParams(msgspec.Struct):
    graceMs: int = 0


async def test_requests_read_after_a_shutdown_request_are_refused_in_order() -> None:
    """The sidecar shuts down some loop turns after its ``shutdown`` handler ran; what the
    client wrote after ``shutdown`` is refused all the same, because it came after it."""
    calls: list[list[int]] = []
    proto = grouping_protocol(calls)  # "double" requests read together are handled as a group
    stops: list[int] = []

    async def shutdown(p: GraceParams) -> dict[str, Any]:
        stops.append(p.graceMs)  # asks for the stop; begin_shutdown() comes later
        return {}

    proto.register("shutdown", shutdown, GraceParams, shuts_down=True)
    async with served(proto) as s:
        await s.line('{"jsonrpc":"2.0","method":"get_data","id":1}')
        await s.line('{"jsonrpc":"2.0","method":"shutdown","params":{"graceMs":"x"},"id":2}')
        await s.line('{"jsonrpc":"2.0","method":"get_data","id":3}')  # that one failed
        await s.line('{"jsonrpc":"2.0","method":"shutdown","id":4}')
        await s.line('{"jsonrpc":"2.0","method":"task.submitBatch","params":{"tasks":[]},"id":5}')
        await s.line('[{"jsonrpc":"2.0","method":"get_data","id":6}]')
        await s.line('{"jsonrpc":"2.0","method":"shutdown","id":7}')
        await s.line(call(8, 21))
        messages = await s.out.wait_for(8)
    by_id = {m["id"] if isinstance(m, dict) else m[0]["id"]: m for m in messages}
    assert "result" in by_id[1] and "result" in by_id[3]
    assert shape(by_id[2]) == err(-32602, "invalidParams", 2)
    assert by_id[4] == {"jsonrpc": "2.0", "id": 4, "result": {}}
    assert shape(by_id[5]) == err(-32005, "shuttingDown", 5)
    assert shape(by_id[6]) == [err(-32005, "shuttingDown", 6)]
    assert shape(by_id[7]) == err(-32005, "shuttingDown", 7)
    assert shape(by_id[8]) == err(-32005, "shuttingDown", 8)
    assert stops == [0] and calls == []


async def test_concurrency_limit_pushes_back() -> None:
    proto = JsonRpcProtocol(Collector(), max_concurrent=2)
    release = anyio.Event()

    async def slow() -> None:
        await release.wait()

    proto.register("slow", slow)
    async with served(proto) as s:
        for i in range(5):
            await s.line(f'{{"jsonrpc":"2.0","method":"slow","id":{i}}}')
        await wait_until(lambda: proto.statistics().in_flight >= 2)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert proto.statistics().in_flight == 2
        release.set()
        await s.out.wait_for(5)


# -- server → client requests ---------------------------------------------------------------


async def test_server_request_round_trip(session: Session) -> None:
    proto = session.proto
    result: list[Any] = []

    async def call() -> None:
        result.append(await proto.request("task.execute", {"task": {"id": 1}}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        sent = (await session.out.wait_for(1))[0]
        assert sent == {
            "jsonrpc": "2.0",
            "id": sent["id"],
            "method": "task.execute",
            "params": {"task": {"id": 1}},
        }
        assert proto.statistics().outgoing_pending == 1
        # Client requests keep being served while ours is pending.
        await session.line('{"jsonrpc":"2.0","method":"get_data","id":"c1"}')
        assert (await session.out.wait_for(2))[1]["id"] == "c1"
        await session.line(msgspec.json.encode({"jsonrpc": "2.0", "id": sent["id"],
                                                "result": {"result": 42}}))  # fmt: skip
    assert result == [{"result": 42}]
    assert proto.statistics().outgoing_pending == 0


async def test_server_request_error(session: Session) -> None:
    proto = session.proto
    caught: list[RemoteError] = []

    async def call() -> None:
        with pytest.raises(RemoteError) as info:
            await proto.request("task.execute", {})
        caught.append(info.value)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        sent = (await session.out.wait_for(1))[0]
        error = {"code": -32000, "message": "disk gone", "data": {"retryable": True,
                                                                  "retryAfterMs": 500}}  # fmt: skip
        await session.line(
            msgspec.json.encode({"jsonrpc": "2.0", "id": sent["id"], "error": error})
        )
    (exc,) = caught
    assert (exc.code, exc.message) == (-32000, "disk gone")
    assert exc.data == {"retryable": True, "retryAfterMs": 500, "kind": "error"}


async def test_server_request_ids_are_fresh_and_responses_matched_in_any_order(
    session: Session,
) -> None:
    proto = session.proto
    results: dict[str, Any] = {}

    async def call(name: str) -> None:
        results[name] = await proto.request("ask", {"name": name})

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "a")
        tg.start_soon(call, "b")
        sent = await session.out.wait_for(2)
        assert sent[0]["id"] != sent[1]["id"]
        # Answered out of order, in one batch.
        await session.line(
            msgspec.json.encode(
                [
                    {"jsonrpc": "2.0", "id": m["id"], "result": m["params"]["name"]}
                    for m in sent[::-1]
                ]
            )
        )
    assert results == {"a": "a", "b": "b"}
    assert len(session.out.lines) == 2  # a batch of responses gets no answer


async def test_server_request_timeout_and_late_answer(session: Session) -> None:
    proto = session.proto
    with pytest.raises(TimeoutError):
        await proto.request("task.execute", {}, timeout=0.01)
    assert proto.statistics().outgoing_pending == 0
    sent = session.out.messages()[0]
    await session.line(msgspec.json.encode({"jsonrpc": "2.0", "id": sent["id"], "result": 1}))
    await session.line('{"jsonrpc":"2.0","id":"never-sent","error":{"code":1,"message":"x"}}')
    await session.line('{"jsonrpc":"2.0","method":"get_data","id":9}')
    assert (await session.out.wait_for(2))[1]["id"] == 9
    assert proto.statistics().unmatched_responses == 2


async def test_pending_requests_fail_when_input_closes() -> None:
    proto = make_protocol()
    failures: list[BaseException] = []

    async def call() -> None:
        try:
            await proto.request("task.execute", {})
        except ConnectionClosed as exc:
            failures.append(exc)

    async with served(proto) as s, anyio.create_task_group() as tg:
        tg.start_soon(call)
        await s.out.wait_for(1)
        s.close()
        await proto.wait_input_closed()
    assert len(failures) == 1
    with pytest.raises(ConnectionClosed):
        await proto.request("task.execute", {})


async def test_notify() -> None:
    proto = make_protocol()
    await proto.notify("task.cancelled", {"id": 1, "type": "noop"})
    await proto.notify("scheduler.paused")
    assert proto._sink.messages() == [  # type: ignore[attr-defined]
        {"jsonrpc": "2.0", "method": "task.cancelled", "params": {"id": 1, "type": "noop"}},
        {"jsonrpc": "2.0", "method": "scheduler.paused", "params": {}},
    ]


# -- grouping pipelined requests of a batchable method ---------------------------------------


class Burst:
    """A line source that hands over each burst of lines without yielding in between, the
    way the stdin reader hands over everything one read returned."""

    def __init__(self) -> None:
        self.send, self._receive = anyio.create_memory_object_stream[list[Any]](10)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[Any]:
        async with self._receive:
            async for burst in self._receive:
                for line in burst:
                    yield line.encode() if isinstance(line, str) else line


@asynccontextmanager
async def bursts(proto: JsonRpcProtocol) -> AsyncIterator[Burst]:
    source = Burst()
    async with anyio.create_task_group() as tg:
        tg.start_soon(proto.serve, source)
        try:
            yield source
        finally:
            source.send.close()


def grouping_protocol(calls: list[list[int]], **kwargs: Any) -> JsonRpcProtocol:
    """``double`` doubles ``x``; its batch handler records each group and fails on 13."""

    class X(msgspec.Struct, forbid_unknown_fields=True):
        x: int

    async def double(p: X) -> int:
        calls.append([p.x])
        return 2 * p.x

    async def double_many(ps: list[X]) -> list[int | Exception]:
        calls.append([p.x for p in ps])
        return [errors.InvalidState("unlucky") if p.x == 13 else 2 * p.x for p in ps]

    proto = make_protocol(**kwargs)
    proto.register("double", double, X, batch=double_many)
    return proto


def call(rid: Any, x: Any) -> str:
    return msgspec.json.encode(
        {"jsonrpc": "2.0", "method": "double", "params": {"x": x}, "id": rid}
    ).decode()


async def test_requests_read_together_are_handled_as_one_group() -> None:
    calls: list[list[int]] = []
    proto = grouping_protocol(calls)
    async with bursts(proto) as source:
        await source.send.send([call(1, 1), call("b", 2), call(3, "not a number"), call(4, 13)])
        messages = await proto._sink.wait_for(4)  # type: ignore[attr-defined]
        await source.send.send([call(5, 5)])
        later = await proto._sink.wait_for(5)  # type: ignore[attr-defined]
    assert calls == [[1, 2, 13], [5]]
    by_id = {m["id"]: m for m in messages}
    assert by_id[1] == {"jsonrpc": "2.0", "id": 1, "result": 2}
    assert by_id["b"] == {"jsonrpc": "2.0", "id": "b", "result": 4}
    assert shape(by_id[3]) == err(-32602, "invalidParams", 3)
    assert by_id[3]["error"]["data"]["path"] == "$.x"
    assert shape(by_id[4]) == err(-32002, "invalidState", 4)
    assert later[4] == {"jsonrpc": "2.0", "id": 5, "result": 10}
    stats = proto.statistics()
    assert (stats.in_flight, stats.requests, stats.errors) == (0, 5, 2)


async def test_a_failing_batch_handler_fails_each_request_of_its_group() -> None:
    proto = make_protocol()

    async def broken(ps: list[SubtractParams]) -> list[int]:
        raise errors.ShuttingDown("closing")

    proto.register("minus", subtract, SubtractParams, batch=broken)
    line = '{{"jsonrpc":"2.0","method":"minus","params":{{"minuend":3,"subtrahend":1}},"id":{}}}'
    async with bursts(proto) as source:
        await source.send.send([line.format(1), line.format(2)])
        messages = await proto._sink.wait_for(2)  # type: ignore[attr-defined]
    assert sorted(shape(m)["id"] for m in messages) == [1, 2]
    assert {shape(m)["kind"] for m in messages} == {"shuttingDown"}


async def test_notifications_arrays_and_held_requests_use_the_single_handler() -> None:
    calls: list[list[int]] = []
    proto = grouping_protocol(calls, ready=False)
    async with bursts(proto) as source:
        await source.send.send([call(1, 1)])  # held until ready: the general path
        await wait_until(lambda: proto.statistics().held == 1)
        proto.set_ready()
        await source.send.send(
            [
                '{"jsonrpc":"2.0","method":"double","params":{"x":2}}',  # a notification
                f"[{call(3, 3)},{call(4, 4)}]",  # a JSON-RPC batch array
            ]
        )
        messages = await proto._sink.wait_for(2)  # type: ignore[attr-defined]
        await wait_until(lambda: len(calls) == 4)
    assert sorted(calls) == [[1], [2], [3], [4]]
    assert messages[0] == {"jsonrpc": "2.0", "id": 1, "result": 2}
    assert sorted(m["id"] for m in messages[1]) == [3, 4]


def test_a_batch_handler_needs_a_params_type() -> None:
    proto = make_protocol()

    async def many(ps: list[Any]) -> list[Any]:
        return ps

    with pytest.raises(ValueError, match="params_type"):
        proto.register("x", get_data, None, batch=many)  # type: ignore[call-overload]
