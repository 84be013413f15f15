"""The one place where the CLI client meets the network.

A transport turns one plain `Request` into one plain `Response` (as httpx's
`BaseTransport.handle_request`): no retries, no failover, no redirects; those live in
`client.py` above this seam. `HttpTransport` speaks HTTP/1.1 over `http.client`;
`MockTransport` calls a function instead, for tests of everything above the seam.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import ssl
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from hacontrol.tls.context import TLSConfig, client_context
from hacontrol.tls.roles import Role

# What a non-streamed error answer is read up to; enough for any error document.
ERROR_BODY_LIMIT = 1 << 20


class TransportError(Exception):
    """The request produced no HTTP response: refused, reset, timed out, bad address."""


class StreamBroken(Exception):
    """A streamed body ended early: the connection was reset, closed or timed out."""


class ByteStream(Protocol):
    """A response body read while it arrives (logs, event streams)."""

    def read_chunk(self) -> bytes:
        """Whatever part of the body has arrived (at least one byte); b"" at the end.

        A body that breaks before its end raises StreamBroken.
        """
        ...

    def close(self) -> None: ...


class Headers(Mapping[str, str]):
    """Response headers; lookups ignore case, as header names do."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = {k.lower(): v for k, v in pairs}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True)
class Request:
    """One HTTP exchange to attempt.

    timeout_s bounds connecting and waiting for the response headers. With stream=True
    a successful (2xx) body is left open as `Response.stream`, each read of it waiting
    at most read_timeout_s (None: forever); other answers are read whole.
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout_s: float = 10.0
    stream: bool = False
    read_timeout_s: float | None = None


class Response:
    """One HTTP answer: status, headers, and either a whole body or an open stream."""

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        stream: ByteStream | None = None,
    ) -> None:
        self.status = status
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self.stream = stream

    def __repr__(self) -> str:
        return f"Response({self.status!r}, {self.headers!r}, {self.body[:80]!r})"


class Transport(Protocol):
    def handle_request(self, request: Request) -> Response:
        """Send one request; raise TransportError if no HTTP answer came back."""
        ...


# --- in memory ---------------------------------------------------------------------------


class IterStream:
    """A ByteStream over an iterable of chunks; an exception it raises is the break."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self.closed = False

    def read_chunk(self) -> bytes:
        for chunk in self._chunks:
            if chunk:
                return chunk
        return b""

    def close(self) -> None:
        self.closed = True
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class MockTransport:
    """A transport answering every request with a function (tests of the layers above)."""

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler

    def handle_request(self, request: Request) -> Response:
        return self.handler(request)


# --- over the network ------------------------------------------------------------------


class HttpTransport:
    """HTTP/1.1 with `http.client`, one connection per request.

    Uses the environment's proxy settings (unless use_env_proxy is False), except for
    loopback addresses: a proxy for the outside world must not intercept a local cluster.

    With `tls` (the cluster's CA, and a client certificate if the cluster asks for one),
    https:// addresses must present a controller's certificate from that CA: the name
    checked is the role's (`server.hacontrol`), not the address's, so an agent's
    certificate cannot pass for a controller. Without it, https uses the system's CAs and
    the usual host-name check. Bad TLS files raise at construction (ValueError, OSError,
    tls.files.ExposedFile).
    """

    def __init__(self, use_env_proxy: bool = True, tls: TLSConfig | None = None) -> None:
        self.use_env_proxy = use_env_proxy
        self.tls = tls
        self._context = client_context(tls) if tls is not None else None

    def handle_request(self, request: Request) -> Response:
        conn, target, proxy_headers = _connection(
            request.url, request.timeout_s, self.use_env_proxy, self._context)
        try:
            conn.connect()
            sock = conn.sock
            conn.request(request.method, target, body=request.body,
                         headers={**proxy_headers, **request.headers})
            response = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise TransportError("timed out") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(reason(exc)) from None
        headers = Headers(response.getheaders())
        ok = 200 <= response.status < 300
        if request.stream and ok:
            if sock is not None:
                # The body may stay quiet for long (a log nobody writes to); only the
                # connection and the response headers are bound by the timeout.
                sock.settimeout(request.read_timeout_s)
            return Response(response.status, headers, b"", _HttpStream(conn, response))
        try:
            body = response.read(ERROR_BODY_LIMIT) if request.stream else response.read()
        except (OSError, http.client.HTTPException) as exc:
            if ok:
                raise TransportError(reason(exc)) from None
            # An error status is known; its explanation is a bonus.
            body = b""
        finally:
            response.close()
            conn.close()
        return Response(response.status, headers, body)


class _HttpStream:
    def __init__(self, conn: http.client.HTTPConnection,
                 response: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._response = response

    def read_chunk(self) -> bytes:
        try:
            return self._response.read1(65536)
        except (OSError, http.client.HTTPException) as exc:
            raise StreamBroken(reason(exc)) from None

    def close(self) -> None:
        self._response.close()
        self._conn.close()


class _ControllerHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS whose certificate check asks for the controller role's name."""

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP, and the proxy tunnel if any
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=Role.SERVER.hostname)


def _https(host: str, port: int | None, timeout: float,
           context: ssl.SSLContext | None) -> http.client.HTTPSConnection:
    if context is None:
        return http.client.HTTPSConnection(host, port, timeout=timeout)
    return _ControllerHTTPSConnection(host, port, timeout=timeout, context=context)


def _connection(
    url: str, timeout: float, use_env_proxy: bool, context: ssl.SSLContext | None = None
) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """A connection for url (through the environment's proxy when one applies), the
    request target to send on it, and headers the proxy needs."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransportError(f"unsupported URL {url!r}")
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        raise TransportError(f"bad port in {url!r}") from None
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    https = parts.scheme == "https"
    proxy = None
    if use_env_proxy and not is_loopback(url) and not urllib.request.proxy_bypass(host):
        proxy = urllib.request.getproxies().get(parts.scheme)
    conn: http.client.HTTPConnection
    if not proxy:
        if https:
            return _https(host, port, timeout, context), target, {}
        return http.client.HTTPConnection(host, port, timeout=timeout), target, {}
    p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    auth = {}
    if p.username is not None:
        secret = f"{urllib.parse.unquote(p.username)}:{urllib.parse.unquote(p.password or '')}"
        auth = {"Proxy-Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    if https:
        conn = _https(p.hostname or "", p.port or 3128, timeout, context)
        conn.set_tunnel(host, port or 443, headers=auth)
        return conn, target, {}
    conn = http.client.HTTPConnection(p.hostname or "", p.port or 3128, timeout=timeout)
    return conn, url, auth


def reason(exc: BaseException) -> str:
    """A short human reason for a network failure ("Connection refused")."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)


def is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
