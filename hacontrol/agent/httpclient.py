"""The agent's HTTP client: HTTP/1.1 on asyncio streams, the protocol done by h11.

Why not aiohttp, as the controllers use: the agent stands where a process supervisor
would, and aiohttp with its dependencies took a third of its resident memory. What the
agent asks of a client is small: JSON requests to the controllers, kept alive on one
connection (TLS with the agent's certificate when configured), and GETs of its
allocations' metrics pages with a cap on the answer. h11 (pure Python, maintained by the
python-hyper project) parses and frames the messages; this module only moves bytes, keeps
idle connections and applies the deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import h11

from hacontrol.model import keepalive

if TYPE_CHECKING:
    import ssl

READ_CHUNK = 64 * 1024
# An idle connection older than this is closed rather than reused: a server may have
# dropped it meanwhile (aiohttp's client keeps them 15 s too).
KEEPALIVE_S = 15.0


class HTTPError(Exception):
    """No complete answer: refused, reset, closed early, malformed or too long."""


class RequestTimeout(HTTPError, TimeoutError):
    """The request's deadline (or its connect deadline) passed."""


class TooLarge(HTTPError):
    """The answer is longer than the caller's cap."""


class ConnectFailed(HTTPError):
    """No connection was made (refused, unreachable, TLS refused): the request never
    reached the server."""


class ConnectTimeout(RequestTimeout, ConnectFailed):
    """The connect deadline passed."""


class ConnectionTimedOut(HTTPError, TimeoutError):
    """The kernel gave the connection up: no answer to keep-alive probes or to data sent,
    for as long as the socket allows (`model/keepalive.py` on keep-alive clients)."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body)


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    server_hostname: str | None  # the name TLS verifies (None: the host)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = time.monotonic()

    def reusable(self, now: float) -> bool:
        return (now - self.idle_since < KEEPALIVE_S and not self.writer.is_closing()
                and not self.reader.at_eof() and self.h11.our_state is h11.IDLE)

    def close(self) -> None:
        self.writer.close()


def _split(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, request target) of an http(s) URL; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target


class Client:
    """Requests with keep-alive, one idle connection pool per origin.

    `tls`: the context for https URLs (None: the system's CAs, made when first needed);
    `headers`: sent with every request (a request's own win); `keepalive`: TCP keep-alive
    on every connection, so a peer that vanished fails the request within
    `keepalive.WINDOW_S` even while the request waits for a long poll's answer."""

    def __init__(self, headers: Mapping[str, str] | None = None,
                 tls: ssl.SSLContext | None = None, keepalive: bool = False) -> None:
        self.headers = dict(headers or {})
        self.tls = tls
        self.keepalive = keepalive
        # When the last request was written on an established connection, and when a
        # server last closed or reset a connection after a request was written on it
        # (monotonic): what a failed request says of its server.
        self.last_sent_at = 0.0
        self.last_closed_at = 0.0
        self._idle: dict[_Origin, list[_Conn]] = {}

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        conns = [c for idle in self._idle.values() for c in idle]
        self._idle.clear()
        for c in conns:
            c.close()
        for c in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.writer.wait_closed(), 1.0)

    async def request(self, method: str, url: str, *, json_body: Any = None,
                      headers: Mapping[str, str] | None = None, timeout_s: float,
                      connect_timeout_s: float | None = None,
                      server_hostname: str | None = None,
                      max_bytes: int | None = None) -> Response:
        """One request and its whole answer. Raises HTTPError (RequestTimeout past
        `timeout_s`, or past `connect_timeout_s` while connecting; TooLarge past
        `max_bytes`); ValueError for a URL that is not http(s)."""
        scheme, host, port, target = _split(url)
        origin = _Origin(scheme, host, port, server_hostname if scheme == "https" else None)
        body = b"" if json_body is None else json.dumps(json_body).encode()
        sent = {**self.headers, **(headers or {})}
        if json_body is not None:
            sent.setdefault("Content-Type", "application/json")
        shown = f"[{host}]" if ":" in host else host
        head = [("Host", shown if port in (80, 443) else f"{shown}:{port}"),
                *sent.items(), ("Content-Length", str(len(body)))]
        try:
            async with asyncio.timeout(timeout_s):
                conn = self._take(origin)
                if conn is not None:
                    try:
                        return await self._exchange(origin, conn, method, target, head, body,
                                                    max_bytes)
                    except _Stale:
                        # Closed with no answer: most likely by the server's keep-alive
                        # timeout racing this request. Sent again on a new connection;
                        # every request of the agent may be repeated (a sync carries
                        # its reports again anyway, the join retries its own).
                        pass
                conn = await self._connect(origin, connect_timeout_s)
                try:
                    return await self._exchange(origin, conn, method, target, head, body,
                                                max_bytes)
                except _Stale as exc:
                    raise HTTPError(f"{host}:{port} closed the connection") from exc.__cause__
        except TimeoutError as exc:
            if isinstance(exc, HTTPError):
                raise
            raise RequestTimeout(f"no answer from {host}:{port} within {timeout_s:g}s") from None

    def _take(self, origin: _Origin) -> _Conn | None:
        now = time.monotonic()
        for key in list(self._idle):  # close the expired ones of every origin
            keep = []
            for c in self._idle[key]:
                if c.reusable(now):
                    keep.append(c)
                else:
                    c.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        idle = self._idle.get(origin)
        return idle.pop() if idle else None

    async def _connect(self, origin: _Origin, timeout_s: float | None) -> _Conn:
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(origin.host, origin.port)
        except TimeoutError:
            raise ConnectTimeout(f"cannot connect to {origin.host}:{origin.port} "
                                 f"within {timeout_s:g}s") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {origin.host}:{origin.port}: {exc}"
                                ) from None
        if self.keepalive:
            keepalive.apply(writer.get_extra_info("socket"))
        if origin.scheme == "https":
            try:
                # Under the request's deadline, not the connect one (as aiohttp's
                # sock_connect): a busy server may take a while to finish a handshake.
                await writer.start_tls(self._tls(), server_hostname=origin.server_hostname
                                       or origin.host)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                writer.close()
                raise ConnectFailed(f"TLS with {origin.host}:{origin.port}: {exc}") from None
            except BaseException:  # cancelled or timed out mid-handshake
                writer.close()
                raise
        return _Conn(reader, writer)

    def _tls(self) -> ssl.SSLContext:
        if self.tls is None:
            import ssl  # only for an https URL without the cluster's context

            self.tls = ssl.create_default_context()
        return self.tls

    async def _exchange(self, origin: _Origin, conn: _Conn, method: str, target: str,
                        head: list[tuple[str, str]], body: bytes,
                        max_bytes: int | None) -> Response:
        answered = written = False
        try:
            conn.writer.write(conn.h11.send(h11.Request(method=method, target=target,
                                                        headers=head)))
            if body:
                conn.writer.write(conn.h11.send(h11.Data(data=body)))
            conn.writer.write(conn.h11.send(h11.EndOfMessage()))
            await conn.writer.drain()
            self.last_sent_at = time.monotonic()
            written = True
            status, headers, chunks, size = 0, {}, [], 0
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    data = await conn.reader.read(READ_CHUNK)
                    if not data and not answered:
                        self.last_closed_at = time.monotonic()
                        raise _Stale()
                    conn.h11.receive_data(data)
                    continue
                if isinstance(event, h11.InformationalResponse):
                    continue
                if isinstance(event, h11.Response):
                    answered = True
                    status = event.status_code
                    headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                               for k, v in event.headers}
                    length = headers.get("content-length", "")
                    if max_bytes is not None and length.isdigit() and int(length) > max_bytes:
                        raise TooLarge(f"answer of {length} bytes")
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if max_bytes is not None and size > max_bytes:
                        raise TooLarge(f"answer over {max_bytes} bytes")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:  # ConnectionClosed
                    self.last_closed_at = time.monotonic()
                    raise HTTPError(f"{origin.host}:{origin.port} closed the connection")
        except _Stale:
            conn.close()
            raise
        except (h11.ProtocolError, OSError) as exc:
            conn.close()
            if written and isinstance(exc, ConnectionError):
                self.last_closed_at = time.monotonic()
            if not answered and isinstance(exc, ConnectionError):
                raise _Stale() from exc
            if isinstance(exc, TimeoutError):  # ETIMEDOUT: keep-alive or user timeout
                raise ConnectionTimedOut(f"{origin.host}:{origin.port}: {exc}") from None
            raise HTTPError(f"{origin.host}:{origin.port}: {exc}") from None
        except BaseException:  # cancelled, timed out, too long: the connection is mid-message
            conn.close()
            raise
        self._release(origin, conn)
        return Response(status, headers, b"".join(chunks))

    def _release(self, origin: _Origin, conn: _Conn) -> None:
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            conn.idle_since = time.monotonic()
            self._idle.setdefault(origin, []).append(conn)
        else:  # the server asked to close, or framed the answer by closing
            conn.close()


class _Stale(Exception):
    """A kept-alive connection that the server had closed before this request."""
