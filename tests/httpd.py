"""Local HTTP(S) servers for the http.* built-ins: a scripted file server and a CONNECT proxy.

Everything listens on 127.0.0.1 and runs in daemon threads; nothing needs the internet.
:class:`TestServer` serves ``files`` to GET, takes PUT/POST bodies (read in pieces, recorded
by size and digest; the first MiB of each is kept in ``bodies``), and answers
from ``script[path]`` (a queue of ``(status, headers)``) before its defaults. With a TLS
context (a ``trustme`` CA's server certificate) it speaks HTTPS. :class:`ConnectProxy` is an
HTTP proxy that records what it was asked: ``CONNECT host:port`` tunnels, and absolute-form
requests (plain HTTP through a proxy), which it forwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import trustme


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    size: int = 0
    sha256: str = ""


class TestServer(ThreadingHTTPServer):
    daemon_threads = True
    __test__ = False  # (not a pytest class)

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls = tls
        self.files: dict[str, bytes] = {}
        self.script: dict[str, deque[tuple[int, dict[str, str]]]] = {}
        self.seen: list[Seen] = []
        self.bodies: list[bytes] = []

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                raise
        return sock, addr

    def url(self, path: str) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}{path}"

    def answer(self, path: str, *responses: tuple[int, dict[str, str]]) -> None:
        """Answer the next requests for ``path`` with these, then as usual."""
        self.script.setdefault(path, deque()).extend(responses)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (or refuse the certificate) are expected


class _Handler(BaseHTTPRequestHandler):
    server: TestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _scripted(self) -> tuple[int, dict[str, str]] | None:
        queue = self.server.script.get(self.path)
        return queue.popleft() if queue else None

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.log_request(status)
        self.send_response_only(status)
        if "Date" not in headers:
            self.send_header("Date", self.date_time_string())
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:
        seen = Seen("GET", self.path, dict(self.headers.items()))
        self.server.seen.append(seen)
        scripted = self._scripted()
        if scripted is not None:
            self._reply(*scripted)
            return
        body = self.server.files.get(self.path)
        if body is None:
            self._reply(404, {})
            return
        self._reply(200, {"ETag": '"v1"'}, body)

    def _receive(self) -> None:
        seen = Seen(self.command, self.path, dict(self.headers.items()))
        self.server.seen.append(seen)
        scripted = self._scripted()
        if scripted is not None and scripted[1].pop("X-Test-Early", None):
            self._reply(*scripted)  # before reading the body, then hang up
            return
        length = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        left = length
        kept = bytearray()
        while left:
            chunk = self.rfile.read(min(left, 64 << 10))
            if not chunk:
                break
            digest.update(chunk)
            if len(kept) < 1 << 20:
                kept += chunk
            left -= len(chunk)
        seen.size = length - left
        seen.sha256 = digest.hexdigest()
        self.server.bodies.append(bytes(kept))
        status, headers = scripted or (201, {"ETag": f'"{seen.sha256[:16]}"'})
        self._reply(status, headers)

    do_PUT = _receive
    do_POST = _receive


@contextlib.contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[TestServer]:
    srv = TestServer(tls)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 and localhost issued by ``ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


class ConnectProxy:
    """An HTTP proxy on 127.0.0.1: ``CONNECT`` tunnels and absolute-form forwarding."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []  # request lines, e.g. "CONNECT 127.0.0.1:443 HTTP/1.0"
        self.headers: list[dict[str, str]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            client.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(4096)
                if not data:
                    return
                head += data
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            self.requests.append(lines[0])
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            self.headers.append(headers)
            method, target, version = lines[0].split(" ")
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = stack.enter_context(socket.create_connection((host, int(port)), 10))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                origin = (parts.hostname or "", parts.port or 80)
                upstream = stack.enter_context(socket.create_connection(origin, 10))
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                kept = [f"{method} {path} {version}", *lines[1:]]
                upstream.sendall("\r\n".join(kept).encode("latin-1") + b"\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            _pipe(client, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    def one_way(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=one_way, args=(b, a), daemon=True)
    t.start()
    one_way(a, b)
    t.join(10)
