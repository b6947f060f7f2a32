"""Client and server in one process over real ``os.pipe()`` pairs: reader thread → protocol →
writer thread, wired exactly as the sidecar wires stdin and stdout."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest

from sidecar.framing import EOF, LineReader
from sidecar.jsonrpc import ConnectionClosed, JsonRpcProtocol
from sidecar.writer import LineWriter
from taskmill_core import errors

from .conftest import Pipe

pytestmark = pytest.mark.anyio


class EchoParams(msgspec.Struct):
    value: Any = None


class Client:
    """The test's side of the pipes: writes raw bytes, reads decoded messages."""

    def __init__(self, out: Pipe, reader: LineReader) -> None:
        self._out = out
        self._reader = reader

    async def write(self, data: bytes) -> None:
        def write() -> None:
            self._out.writer.write(data)
            self._out.writer.flush()

        await anyio.to_thread.run_sync(write)

    async def call(self, line: str) -> None:
        await self.write(line.encode() + b"\n")

    async def receive(self) -> Any:
        with anyio.fail_after(5):
            item = await self._reader.receive()
        assert isinstance(item, bytes), item
        return msgspec.json.decode(item)

    async def receive_eof(self) -> bool:
        with anyio.fail_after(5):
            return await self._reader.receive() is EOF

    def close(self) -> None:
        self._out.close_writer()


@asynccontextmanager
async def sidecar(
    make_pipe: type[Pipe],
    setup: Callable[[JsonRpcProtocol], None] | None = None,
    max_message_bytes: int = 1 << 20,
) -> AsyncIterator[tuple[Client, JsonRpcProtocol]]:
    """A server over two pipes: its stdin reader thread, the protocol, its stdout writer."""
    to_server, to_client = make_pipe(), make_pipe()
    writer = LineWriter(to_client.writer)
    proto = JsonRpcProtocol(writer)
    if setup is not None:
        setup(proto)

    async def echo(p: EchoParams) -> Any:
        return p.value

    async def missing(p: EchoParams) -> None:
        raise errors.TaskNotFound(f"task {p.value} not found", id=p.value)

    proto.register("echo", echo, EchoParams)
    proto.register("missing", missing, EchoParams)

    async def serve() -> None:
        async with LineReader(to_server.reader, max_message_bytes=max_message_bytes) as reader:
            await proto.serve(reader)
        writer.close()
        await writer.wait_closed()
        to_client.close_writer()  # the client sees EOF only after every response

    async with (
        anyio.create_task_group() as tg,
        LineReader(to_client.reader) as client_reader,
    ):
        tg.start_soon(writer.run)
        tg.start_soon(serve)
        client = Client(to_server, client_reader)
        try:
            yield client, proto
        finally:
            client.close()


async def test_round_trip_with_crlf_empty_blank_and_split_lines(make_pipe: type[Pipe]) -> None:
    async with sidecar(make_pipe) as (client, _):
        await client.write(b'{"jsonrpc":"2.0","method":"echo","params":{"value":1},"id":1}\r\n')
        assert await client.receive() == {"jsonrpc": "2.0", "id": 1, "result": 1}
        await client.write(b'\n\r\n  \t \n\t\r\n{"jsonrpc":"2.0","method":"echo",')
        await client.write(b'"params":{"value":"h\xc3\xa9"},"id":2}\n\n')
        assert await client.receive() == {"jsonrpc": "2.0", "id": 2, "result": "hé"}
        await client.call('{"jsonrpc":"2.0","method":"missing","params":{"value":5},"id":3}')
        assert await client.receive() == {
            "jsonrpc": "2.0",
            "id": 3,
            "error": {
                "code": -32001,
                "message": "task 5 not found",
                "data": {"id": 5, "kind": "taskNotFound"},
            },
        }
        client.close()
        assert await client.receive_eof()


async def test_oversized_line_is_answered_and_skipped(make_pipe: type[Pipe]) -> None:
    async with sidecar(make_pipe, max_message_bytes=1 << 20) as (client, _):
        big = b'{"jsonrpc":"2.0","method":"echo","params":{"value":"' + b"x" * 10_000_000
        await client.write(big + b'"},"id":1}\n{"jsonrpc":"2.0","method":"echo","id":2}\n')
        too_large = await client.receive()
        assert too_large["id"] is None
        assert too_large["error"]["code"] == -32600
        assert too_large["error"]["data"]["kind"] == "messageTooLarge"
        assert await client.receive() == {"jsonrpc": "2.0", "id": 2, "result": None}


async def test_bad_input_never_stops_the_server(make_pipe: type[Pipe]) -> None:
    async with sidecar(make_pipe) as (client, _):
        await client.write(b'{"jsonrpc":"2.0","method":"echo","id":"\xff"}\n')
        await client.write(b"][\n[]\n")
        await client.call('{"jsonrpc":"2.0","method":"echo","params":[1],"id":1}')
        await client.call('{"jsonrpc":"2.0","method":"nope","id":2}')
        await client.call('{"jsonrpc":"2.0","method":"echo","params":{"value":"ok"},"id":3}')
        codes = [(await client.receive()).get("error", {}).get("code") for _ in range(5)]
        assert codes == [-32700, -32700, -32600, -32602, -32601]
        assert await client.receive() == {"jsonrpc": "2.0", "id": 3, "result": "ok"}


async def test_slow_request_does_not_hold_up_others(make_pipe: type[Pipe]) -> None:
    release = anyio.Event()

    async def slow() -> str:
        await release.wait()
        return "slow"

    async with sidecar(make_pipe, lambda p: p.register("slow", slow)) as (client, _):
        await client.call('{"jsonrpc":"2.0","method":"slow","id":1}')
        await client.call('{"jsonrpc":"2.0","method":"echo","params":{"value":2},"id":2}')
        assert (await client.receive())["id"] == 2
        release.set()
        assert await client.receive() == {"jsonrpc": "2.0", "id": 1, "result": "slow"}


async def test_server_to_client_request_over_pipes(make_pipe: type[Pipe]) -> None:
    async with sidecar(make_pipe) as (client, proto), anyio.create_task_group() as tg:
        results: list[Any] = []

        async def execute() -> None:
            results.append(await proto.request("task.execute", {"task": {"id": 7}}))

        tg.start_soon(execute)
        request = await client.receive()
        assert request["method"] == "task.execute" and request["params"] == {"task": {"id": 7}}
        await client.call(f'{{"jsonrpc":"2.0","id":{request["id"]},"result":{{"result":"done"}}}}')
    assert results == [{"result": "done"}]


async def test_eof_fails_pending_server_requests(make_pipe: type[Pipe]) -> None:
    async with sidecar(make_pipe) as (client, proto):
        async with anyio.create_task_group() as tg:

            async def close_after_request() -> None:
                await client.receive()
                client.close()

            tg.start_soon(close_after_request)
            with pytest.raises(ConnectionClosed):
                await proto.request("task.execute", {})
        await proto.wait_input_closed()
        assert await client.receive_eof()
