"""``http.download {url, dst, sha256?, headers?}``: a resumable HTTP(S) download, stdlib only.

The body streams into ``<dst>.taskmill-part`` (created, and at the end renamed over ``dst``,
within the descriptor of ``dst``'s directory: :mod:`sidecar.builtin.confined`); the checkpoint
``{"url", "offset", "validator"}`` lets the next run ask for the rest with
``Range: bytes=<offset>-`` (and ``If-Range`` with the strong ETag or Last-Modified it saw, so a
changed file starts over).
A ``206`` appends, a ``200`` starts again from byte 0. The file is fsynced, checked against
``sha256`` when one is given, and renamed over ``dst`` (an existing ``dst`` is replaced).

HTTP 404/410 fail permanently with kind ``notFound``, other 4xx with kind ``http`` (408 and 429
are retried, honouring ``Retry-After`` in seconds or as a date); 5xx and network errors are
retryable. Redirects are followed (at most 5, http and https only); the payload's ``headers``
are sent to the URL's origin only. TLS, proxies and headers: :mod:`sidecar.builtin._http`.

Blocking socket calls run in worker threads that a cancellation abandons; the socket is then
shut down so that the thread returns at once and closes the connection on its way out.

The executor is *paced* (registered with ``paced=True``): each chunk's bytes are drawn from the
IO governor with ``ctx.consume_io`` — ``netRx`` as the chunk arrives (its size is known only
then; waiting delays the next read, and TCP flow control holds the sender back), ``diskWrite``
(and ``diskRead`` when re-hashing a resumed part file) before the bytes are moved. Those draws
are the run's IO accounting; the bytes are not recorded again.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
from typing import Annotated, Any
from urllib.parse import urljoin, urlsplit

import anyio
import anyio.lowlevel
import anyio.to_thread
import msgspec
from msgspec import Meta

from sidecar.builtin import confined
from sidecar.builtin._files import (
    CHECKPOINT_BYTES,
    CHUNK,
    PART_SUFFIX,
    decode_payload,
    os_errors,
    resume_offset,
)
from sidecar.builtin._http import (
    USER_AGENT,
    Exchange,
    Headers,
    check_headers,
    network_error,
    status_error,
)
from sidecar.builtin.confined import Directory
from sidecar.builtin.scope import PathScope
from taskmill_core.context import TaskContext
from taskmill_core.errors import PermanentError, RetryableError

__all__ = ["DownloadPayload", "download"]

MAX_REDIRECTS = 5
NET_CHUNK = 256 << 10


class DownloadPayload(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    url: Annotated[str, Meta(min_length=1, max_length=8192)]
    dst: str
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    headers: Headers | None = None


def _open(
    exchange: Exchange, url: str, headers: dict[str, str], secret: dict[str, str]
) -> http.client.HTTPResponse:
    """Send the GET and return the response of the last hop (blocking).

    ``secret`` (the payload's headers) goes along only while the origin stays the same: a
    redirect to another scheme, host or port does not get the credentials.
    """
    origin = urlsplit(url)[:2]
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError(f"cannot follow a redirect to {url!r}", kind="http")
        same = parts[:2] == origin
        exchange.start("GET", url, {**headers, **secret} if same else headers)
        resp = exchange.response()
        location = resp.getheader("Location")
        if resp.status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        return resp
    raise PermanentError(f"more than {MAX_REDIRECTS} redirects", kind="http")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes a-b/total`` or ``bytes */total`` → (a, total); unknown parts are None."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, size = value[6:].partition("/")
    start: int | None = None
    if span.strip() != "*":
        first = span.partition("-")[0].strip()
        start = int(first) if first.isdigit() else None
    total = int(size) if size.strip().isdigit() else None
    return start, total


def _validator(resp: http.client.HTTPResponse) -> str | None:
    etag = resp.getheader("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.getheader("Last-Modified")


class _Part:
    """The part file and the running hash; each method runs in a worker thread."""

    def __init__(self, f: io.FileIO, want_hash: bool) -> None:
        self.f = f
        self.hasher = hashlib.sha256() if want_hash else None

    def restart(self) -> None:
        self.f.truncate(0)
        self.f.seek(0)
        if self.hasher is not None:
            self.hasher = hashlib.sha256()

    def hash_prefix(self, start: int, end: int) -> int:
        """Hash the part file's bytes ``start..`` (at most one chunk); returns how many."""
        assert self.hasher is not None
        self.f.seek(start)
        data = self.f.read(min(CHUNK, end - start)) or b""
        self.hasher.update(data)
        self.f.seek(end)
        return len(data)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.f.write(view) or 0
            view = view[n:]
        if self.hasher is not None:
            self.hasher.update(data)

    def sync(self) -> None:
        os.fsync(self.f.fileno())


async def download(ctx: TaskContext, payload: Any, *, scope: PathScope) -> dict[str, Any]:
    """``http.download {url, dst, sha256?}`` → ``{bytes, dst, sha256?}``."""
    p: DownloadPayload = decode_payload(payload, DownloadPayload)
    parts = urlsplit(p.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"url must be an http or https URL: {p.url!r}", kind="invalidPayload")
    secret = check_headers(p.headers)
    dst = scope.check(p.dst, field="dst")
    scope.check(str(dst) + PART_SUFFIX, field="dst")
    with os_errors("cannot write the download"):
        directory, name = await anyio.to_thread.run_sync(
            lambda: confined.open_parent(scope, p.dst, field="dst", create=True)
        )
    with directory:
        return await _download(ctx, p, directory, name, secret)


async def _download(
    ctx: TaskContext, p: DownloadPayload, directory: Directory, name: str, secret: dict[str, str]
) -> dict[str, Any]:
    """The download into ``<name>.taskmill-part`` in ``directory``, then renamed to ``name``."""
    partname = name + PART_SUFFIX
    state = ctx.resume_state
    offset = resume_offset(state, url=p.url)
    validator = state.get("validator") if offset and isinstance(state, dict) else None

    with os_errors("cannot write the download"):
        f, offset = await anyio.to_thread.run_sync(directory.open_part, partname, offset)
    part = _Part(f, p.sha256 is not None)
    exchange = Exchange()
    done = offset
    checkpoint: dict[str, Any] = {"url": p.url, "validator": validator}
    try:
        # Resuming with a checksum: the bytes kept from the last run are hashed first.
        if part.hasher is not None:
            pos = 0
            while pos < offset:
                await anyio.lowlevel.checkpoint_if_cancelled()
                await ctx.consume_io("diskRead", min(CHUNK, offset - pos))
                n = await anyio.to_thread.run_sync(part.hash_prefix, pos, offset)
                if not n:
                    raise RetryableError("the part file shrank while resuming", kind="io")
                pos += n

        total: int | None = None
        complete = False
        for _ in range(2):
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if isinstance(validator, str):
                    headers["If-Range"] = validator
            try:
                resp = await exchange.call(_open, exchange, p.url, headers, secret)
            except (OSError, http.client.HTTPException) as exc:
                raise network_error(exc, p.url, "download of") from exc
            if resp.status == 200:
                if offset:
                    with os_errors("cannot write the download"):
                        await anyio.to_thread.run_sync(part.restart)
                    done = offset = 0
                length = resp.getheader("Content-Length")
                total = int(length) if length and length.isdigit() else None
                break
            if offset and resp.status == 206:
                start, total = _content_range(resp.getheader("Content-Range"))
                if start == offset:
                    break
            elif offset and resp.status == 416:
                # Nothing left to send: the part file may already be whole.
                _, total = _content_range(resp.getheader("Content-Range"))
                if total == offset:
                    complete = True
                    break
            else:
                raise status_error(resp, p.url)
            # The server will not resume as asked: start over from byte 0.
            exchange.release()
            exchange = Exchange()
            with os_errors("cannot write the download"):
                await anyio.to_thread.run_sync(part.restart)
            done = offset = 0
            validator = None
        checkpoint = {"url": p.url, "validator": _validator(resp)}
        ctx.progress(bytes_done=done, bytes_total=total)

        since_checkpoint = 0
        while not complete:
            await anyio.lowlevel.checkpoint_if_cancelled()
            try:
                data = await exchange.call(exchange.read, NET_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise network_error(exc, p.url, "download of") from exc
            if not data:
                break
            n = len(data)
            await ctx.consume_io("netRx", n)
            await ctx.consume_io("diskWrite", n)
            with os_errors("cannot write the download"):
                await anyio.to_thread.run_sync(part.write, data)
            done += n
            since_checkpoint += n
            ctx.progress(bytes_done=done, bytes_total=total)
            if since_checkpoint >= CHECKPOINT_BYTES:
                with os_errors("cannot write the download"):
                    await anyio.to_thread.run_sync(part.sync)
                ctx.checkpoint({**checkpoint, "offset": done})
                since_checkpoint = 0
        with os_errors("cannot write the download"):
            await anyio.to_thread.run_sync(part.sync)
    except BaseException:
        # Keep what arrived for the next run (bytes already handed to the OS); an empty part
        # file is not worth keeping.
        f.close()
        if done:
            ctx.checkpoint({**checkpoint, "offset": done})
        else:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(directory.unlink, partname)
        raise
    finally:
        exchange.release()
        f.close()

    digest = part.hasher.hexdigest() if part.hasher is not None else None
    if p.sha256 is not None and digest != p.sha256.lower():
        await anyio.to_thread.run_sync(directory.unlink, partname)
        ctx.checkpoint(None)
        raise PermanentError(
            f"sha256 of {p.url} is {digest}, expected {p.sha256.lower()}", kind="checksumMismatch"
        )
    with os_errors("cannot move the download into place"):
        await anyio.to_thread.run_sync(lambda: directory.publish(partname, name, overwrite=True))
    ctx.progress(1.0, bytes_done=done, bytes_total=done)
    result: dict[str, Any] = {"bytes": done, "dst": p.dst}
    if digest is not None:
        result["sha256"] = digest
    return result
