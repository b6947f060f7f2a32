"""What ``http.download`` and ``http.upload`` share: TLS, proxies, headers and status mapping.

Both speak HTTP/1.1 through the standard library's :mod:`http.client` on worker threads (an
:class:`Exchange` per request). The stdlib was chosen over httpx: it streams a request body
chunk by chunk (``send`` after each paced draw), tunnels through a CONNECT proxy
(``set_tunnel``), takes any :class:`ssl.SSLContext`, and costs the frozen binary nothing;
httpx would add httpx, httpcore, h11, idna and sniffio for the same three things.

**Trust.** Certificates are verified against the operating system's trust store through
``truststore`` (the macOS keychain, Windows' certificate store, and on Linux and BSD the
distribution's CA bundle), so a frozen binary does not depend on the CA paths of the machine
that built it, and roots a company installed are honoured. On Linux ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` name the store, as for OpenSSL and curl. Where no system store exists (a
minimal container without CA files) the Mozilla bundle of ``certifi`` is used instead.

**Proxies.** ``HTTPS_PROXY`` / ``HTTP_PROXY`` (either case; lower case wins) name an HTTP
proxy, ``NO_PROXY`` the hosts reached directly (:func:`urllib.request.getproxies_environment`
and ``proxy_bypass_environment`` read them, as urllib does). HTTPS goes through the proxy with
``CONNECT`` (TLS end to end; the proxy sees only the host name), plain HTTP as an
absolute-form request. ``user:password@`` in a proxy URL becomes ``Proxy-Authorization``.

**Headers** given in a payload are secrets (PROTOCOL.md): they are sent, never put into an
error message or a log line, and dropped when a redirect leaves the origin.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http.client
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit

import anyio.to_thread
from msgspec import Meta

from taskmill_core.errors import PermanentError, RetryableError

__all__ = [
    "TIMEOUT_S",
    "USER_AGENT",
    "Exchange",
    "HeaderValue",
    "Headers",
    "Released",
    "check_headers",
    "network_error",
    "retry_after_s",
    "status_error",
    "tls_context",
    "trust_store",
]

T = TypeVar("T")

TIMEOUT_S = 30.0
"""Connect and read timeout: a server silent this long is a retryable network error."""
USER_AGENT = "taskmill-sidecar"

HeaderName = Annotated[str, Meta(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")]
HeaderValue = Annotated[str, Meta(max_length=8192, pattern=r"^[\t\x20-\x7e\x80-\xff]*$")]
Headers = Annotated[dict[HeaderName, HeaderValue], Meta(max_length=64)]
"""A payload's ``headers``: token names; values of visible Latin-1 characters, spaces and
tabs (RFC 9110), so no line break can inject a header and every value can be sent."""

# Headers the executors set themselves: framing and ranges are theirs to decide.
_RESERVED = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "expect",
        "te",
        "trailer",
        "upgrade",
        "range",
        "if-range",
        "accept-encoding",
        "proxy-authorization",
    }
)

# The Linux and BSD CA bundles, as truststore looks for them (after OpenSSL's own defaults).
_CA_FILE_CANDIDATES = (
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)
_HASHED = re.compile(r"^[0-9a-fA-F]{8}\.[0-9]$")


def check_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The payload's headers, refusing those the executor controls (``invalidPayload``)."""
    if not headers:
        return {}
    for name in headers:
        if name.lower() in _RESERVED:
            raise PermanentError(
                f"header {name!r} is set by the executor and cannot be given",
                kind="invalidPayload",
            )
    return dict(headers)


# --- trust ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustStore:
    """Where certificates are verified: ``system`` (via truststore) or ``certifi``."""

    kind: str
    source: str
    """The CA bundle or folder used (on macOS and Windows: the OS's store)."""
    ca_count: int | None
    """Trusted CAs found (None on macOS and Windows, whose stores are asked per connection)."""


def _system_bundle() -> str | None:
    """The CA bundle or hashed folder that truststore uses on Linux and BSD, if any."""
    defaults = ssl.get_default_verify_paths()  # honours SSL_CERT_FILE and SSL_CERT_DIR
    if defaults.cafile:
        return defaults.cafile
    capath = defaults.capath
    if capath and os.path.isdir(capath) and any(_HASHED.match(n) for n in os.listdir(capath)):
        return capath
    for cafile in _CA_FILE_CANDIDATES:
        if os.path.isfile(cafile):
            return cafile
    return None


def _count(source: str) -> int:
    """The CAs in a bundle, or the certificate files of a hashed folder."""
    if os.path.isdir(source):
        return sum(1 for n in os.listdir(source) if _HASHED.match(n))
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.load_verify_locations(cafile=source)
    return probe.cert_store_stats()["x509_ca"]


def _store() -> tuple[str, str]:
    """(kind, source) of the store to verify against: cheap (a few ``stat`` calls)."""
    if sys.platform in ("darwin", "win32"):
        return "system", sys.platform
    bundle = _system_bundle()
    if bundle is not None:
        return "system", bundle
    import certifi

    return "certifi", certifi.where()


def trust_store() -> TrustStore:
    """Which store :func:`tls_context` verifies against on this machine, now, and how many
    CAs it holds (``taskmill-sidecar --check-tls`` reports it)."""
    kind, source = _store()
    return TrustStore(kind, source, None if source == sys.platform else _count(source))


def tls_context() -> ssl.SSLContext:
    """A client context for one connection: the OS trust store (truststore), else certifi's.

    Not cached: making one costs ~0.35 ms, and on Linux truststore reloads the CA bundle at
    each handshake anyway (~25 ms for ~150 roots, measured), so a changed store (a root
    installed, ``SSL_CERT_FILE`` set) counts from the next connection on.
    """
    kind, source = _store()
    if kind == "system":
        import truststore

        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return ssl.create_default_context(cafile=source)


# --- proxies --------------------------------------------------------------------------------


def _proxy_for(url: SplitResult) -> SplitResult | None:
    """The HTTP proxy the environment names for ``url``, or None to connect directly."""
    proxies = urllib.request.getproxies_environment()
    value = proxies.get(url.scheme)
    if not value:
        return None
    host = url.hostname or ""
    netloc = f"{host}:{url.port}" if url.port else host
    if urllib.request.proxy_bypass_environment(netloc, proxies):  # type: ignore[attr-defined]
        return None
    if "://" not in value:
        value = "http://" + value
    proxy = urlsplit(value)
    if not proxy.hostname:
        return None
    return proxy


def _proxy_auth(proxy: SplitResult) -> dict[str, str]:
    if proxy.username is None:
        return {}
    user = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(user.encode()).decode("ascii")}


# --- one exchange ---------------------------------------------------------------------------


class Released(Exception):
    """The exchange was released while a worker thread was about to use it."""


class Exchange:
    """One HTTP request and its response. Blocking calls go through :meth:`call`, in a
    worker thread that a cancellation abandons: :meth:`release` then shuts the socket down, so
    the thread returns at once and closes the connection on its way out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._busy = False
        self._released = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a worker thread; a cancellation abandons the thread at once."""
        return await anyio.to_thread.run_sync(self._guarded, fn, *args, abandon_on_cancel=True)

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._released:
                raise Released
            self._busy = True
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._busy = False
                if self._released:
                    self._close()

    def release(self) -> None:
        """Close the connection; or, while a thread is inside it, make that thread close it."""
        with self._lock:
            self._released = True
            if not self._busy:
                self._close()
            elif self._conn is not None and self._conn.sock is not None:
                with contextlib.suppress(OSError):
                    self._conn.sock.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def start(self, method: str, url: str, headers: dict[str, str]) -> None:
        """Connect (through the proxy the environment names) and send the request line and
        ``headers``; the body, if any, follows with :meth:`send` (blocking)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PermanentError(f"not an http or https URL: {url!r}", kind="http")
        proxy = _proxy_for(parts)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            if proxy is not None:
                conn = http.client.HTTPSConnection(
                    proxy.hostname or "", proxy.port or 80, timeout=TIMEOUT_S, context=tls_context()
                )
                conn.set_tunnel(parts.hostname, parts.port or 443, headers=_proxy_auth(proxy))
            else:
                conn = http.client.HTTPSConnection(
                    parts.hostname, parts.port, timeout=TIMEOUT_S, context=tls_context()
                )
        elif proxy is not None:
            conn = http.client.HTTPConnection(
                proxy.hostname or "", proxy.port or 80, timeout=TIMEOUT_S
            )
            target = parts._replace(fragment="").geturl()  # the absolute form
            headers = {**headers, **_proxy_auth(proxy)}
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_S)
        with self._lock:
            self._close()
            self._conn = conn
        conn.connect()
        if self._released:
            raise Released
        # skip_host: the Host header names the origin also through a proxy (http.client
        # would name the proxy); skip_accept_encoding: the caller decides.
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        default_port = 443 if parts.scheme == "https" else 80
        host_header = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port and parts.port != default_port:
            host_header += f":{parts.port}"
        conn.putheader("Host", host_header)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()

    def send(self, data: bytes) -> None:
        """Send part of the request body (blocking)."""
        assert self._conn is not None
        self._conn.send(data)

    def response(self) -> http.client.HTTPResponse:
        """Wait for the response's status and headers (blocking)."""
        assert self._conn is not None
        resp = self._conn.getresponse()
        with self._lock:
            self._resp = resp
        return resp

    def read(self, n: int) -> bytes:
        assert self._resp is not None
        return self._resp.read1(n)


# --- failures -------------------------------------------------------------------------------


def retry_after_s(value: str | None, date: str | None = None) -> float | None:
    """A ``Retry-After`` header in seconds from now: delta-seconds or an HTTP-date.

    An HTTP-date counts from the response's ``Date`` when it has one (the server's own clock,
    so the two clocks need not agree), else from this machine's clock; a date in the past is
    0. Unparsable: None. :class:`RetryableError` clamps the result to the longest delay.
    """
    if not value:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    when = _http_date(v)
    if when is None:
        return None
    now = _http_date(date) if date else None
    return max(0.0, when - (now if now is not None else time.time()))


def _http_date(value: str) -> float | None:
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        return None  # an HTTP-date is always GMT; a date without a zone is not one
    return dt.timestamp()


def status_error(resp: http.client.HTTPResponse, url: str, *, forbidden: bool = False) -> Exception:
    """The executor error for a response that is not a success.

    404/410 are ``notFound`` (with ``forbidden``: 401/403 are ``forbidden``), 408, 429 and
    5xx are ``http`` and retryable (after ``Retry-After``), anything else is ``http``.
    """
    status = resp.status
    message = f"HTTP {status} {resp.reason} from {url}"
    if status in (404, 410):
        return PermanentError(message, kind="notFound")
    if forbidden and status in (401, 403):
        return PermanentError(message, kind="forbidden")
    if status in (408, 429) or status >= 500:
        delay = retry_after_s(resp.getheader("Retry-After"), resp.getheader("Date"))
        return RetryableError(message, kind="http", retry_after=delay)
    return PermanentError(message, kind="http")


def network_error(exc: Exception, url: str, what: str) -> Exception:
    """A failed connection: a refused certificate is ``tls`` (permanent), the rest
    ``network`` (retryable)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(f"TLS certificate of {url} not accepted: {exc}", kind="tls")
    return RetryableError(f"{what} {url} failed: {exc!r}", kind="network")
