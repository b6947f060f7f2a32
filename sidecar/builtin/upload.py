"""``http.upload {src, url, method?, headers?, contentType?}``: send a file with PUT or POST.

The file is opened through :func:`sidecar.builtin.confined.open_file` (inside an
``--allow-path`` root, no symlink followed, checked when the task runs) and streamed as the
request body with a ``Content-Length`` of its size, chunk by chunk: never read whole into
memory. Byte progress follows the bytes handed to the socket.

The executor is *paced* like ``http.download`` (registered with ``paced=True``): before each
chunk moves it draws the chunk's bytes from the IO governor with ``ctx.consume_io`` —
``diskRead`` before reading it, ``netTx`` before sending it — so an upload is spread over the
network budget instead of bursting, and those draws are the run's IO accounting.

An upload is not resumable: a retryable failure (a network error, 408, 429 or 5xx, after the
server's ``Retry-After``) runs the whole upload again from byte 0. A 2xx answer is success:
``{status, etag?, bytes}``. Redirects are not followed (a 3xx fails with kind ``http``: the
body would have to be sent again somewhere the task did not name). 404/410 are ``notFound``,
401/403 ``forbidden``, other 4xx ``http``, all permanent. A server that answers before the
body is complete (a 413, a 401) and closes the connection is answered by that status.
TLS, proxies and headers: :mod:`sidecar.builtin._http`.
"""

from __future__ import annotations

import http.client
import io
import os
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec
from msgspec import Meta

from sidecar.builtin import confined
from sidecar.builtin._files import decode_payload, os_errors
from sidecar.builtin._http import (
    USER_AGENT,
    Exchange,
    Headers,
    HeaderValue,
    check_headers,
    network_error,
    status_error,
)
from sidecar.builtin.scope import PathScope
from taskmill_core.context import TaskContext
from taskmill_core.errors import PermanentError

__all__ = ["UploadPayload", "upload"]

NET_CHUNK = 256 << 10
"""Bytes read and sent per worker-thread hop: pacing, progress and cancellation come between."""


class UploadPayload(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    src: str
    url: Annotated[str, Meta(min_length=1, max_length=8192)]
    method: Literal["PUT", "POST"] = "PUT"
    headers: Headers | None = None
    content_type: HeaderValue | None = None


def _read(f: io.FileIO, n: int) -> bytes:
    return f.read(n) or b""


def _early_response(exchange: Exchange) -> http.client.HTTPResponse | None:
    """The response a server sent before it stopped reading the body, if there is one."""
    try:
        return exchange.response()
    except (OSError, http.client.HTTPException):
        return None


async def upload(ctx: TaskContext, payload: Any, *, scope: PathScope) -> dict[str, Any]:
    """``http.upload {src, url, method?, headers?, contentType?}`` → ``{status, etag?, bytes}``."""
    p: UploadPayload = decode_payload(payload, UploadPayload)
    parts = urlsplit(p.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"url must be an http or https URL: {p.url!r}", kind="invalidPayload")
    secret = check_headers(p.headers)
    if p.content_type is not None:
        secret = {k: v for k, v in secret.items() if k.lower() != "content-type"}
    with os_errors("cannot read the upload's source"):
        f = await anyio.to_thread.run_sync(lambda: confined.open_file(scope, p.src, field="src"))
    with f:
        size = os.fstat(f.fileno()).st_size
        return await _upload(ctx, p, f, size, secret)


async def _upload(
    ctx: TaskContext, p: UploadPayload, f: io.FileIO, size: int, secret: dict[str, str]
) -> dict[str, Any]:
    headers = {"User-Agent": USER_AGENT, **secret, "Content-Length": str(size)}
    if p.content_type is not None:
        headers["Content-Type"] = p.content_type
    elif not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/octet-stream"
    exchange = Exchange()
    sent = 0
    try:
        try:
            await exchange.call(exchange.start, p.method, p.url, headers)
        except (OSError, http.client.HTTPException) as exc:
            raise network_error(exc, p.url, "upload to") from exc
        ctx.progress(bytes_done=0, bytes_total=size)
        resp: http.client.HTTPResponse | None = None
        while sent < size:
            await anyio.lowlevel.checkpoint_if_cancelled()
            want = min(NET_CHUNK, size - sent)
            await ctx.consume_io("diskRead", want)
            with os_errors("cannot read the upload's source"):
                data = await anyio.to_thread.run_sync(_read, f, want)
            if not data:
                # The file shrank since its size was sent: the request cannot be completed.
                raise PermanentError(f"{p.src!r} changed while it was uploaded", kind="io")
            await ctx.consume_io("netTx", len(data))
            try:
                await exchange.call(exchange.send, data)
            except (OSError, http.client.HTTPException) as exc:
                resp = await exchange.call(_early_response, exchange)
                if resp is None:
                    raise network_error(exc, p.url, "upload to") from exc
                break
            sent += len(data)
            ctx.progress(bytes_done=sent, bytes_total=size)
        if resp is None:
            try:
                resp = await exchange.call(exchange.response)
                await exchange.call(resp.read)  # the body, so that the connection ends cleanly
            except (OSError, http.client.HTTPException) as exc:
                raise network_error(exc, p.url, "upload to") from exc
    finally:
        exchange.release()
    if not 200 <= resp.status < 300:
        if 300 <= resp.status < 400:
            where = resp.getheader("Location") or "nowhere"
            raise PermanentError(
                f"HTTP {resp.status} {resp.reason} from {p.url} (to {where}): "
                "an upload does not follow redirects",
                kind="http",
            )
        raise status_error(resp, p.url, forbidden=True)
    result: dict[str, Any] = {"status": resp.status, "bytes": sent}
    etag = resp.getheader("ETag")
    if etag:
        result["etag"] = etag
    return result
