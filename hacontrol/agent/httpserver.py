"""The agent's HTTP server: HTTP/1.1 on asyncio streams, the protocol done by h11.

Why not aiohttp's: see `httpclient`. The agent's API has four routes and few callers (the
controllers, a Prometheus); what it needs is keep-alive, TLS (the peer's certificate is
handed to the handler), a capped request body, and one streamed answer (a followed log),
which ends when the caller goes away. Routing and authorization are the caller's
(`agent/http.py`): the server hands every request to one handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import h11

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
MAX_BODY = 1024 * 1024  # the largest request body read (the agent's are a few bytes)
# How long a connection may wait for its next request (aiohttp's keepalive_timeout).
IDLE_S = 75.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # as sent, before the query
    segments: tuple[str, ...]  # the path's parts, each percent-decoded on its own
    query: Mapping[str, str]  # the first value of each name
    headers: Mapping[str, str]  # names in lower case
    body: bytes
    tls: bool  # came over TLS
    peercert: Mapping[str, Any] | None  # the verified client certificate, if one was sent

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Sent after `body`, chunk by chunk, until it ends or the caller goes away.
    stream: AsyncIterator[bytes] | None = None


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode(),
                    {"Content-Type": "application/json; charset=utf-8"})


Handler = Callable[[Request], Awaitable[Response]]


def parse_target(target: str) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """(path, decoded segments, query) of a request target. A segment is decoded after the
    split, so `%2F` never makes two of one."""
    path, _, query = target.partition("?")
    segments = tuple(unquote(s) for s in path.split("/")[1:])
    params: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        params.setdefault(k, v)
    return path, segments, params


async def serve(handler: Handler, host: str, port: int,
                tls: ssl.SSLContext | None = None) -> asyncio.Server:
    """Listen on host:port (port 0: any free one) and answer every request with
    `handler`; close the returned server to stop."""
    async def on_connection(reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        await _Connection(handler, reader, writer).run()

    return await asyncio.start_server(on_connection, host, port, ssl=tls,
                                      reuse_address=True)


class _Closed(Exception):
    """The caller went away."""


class _Connection:
    def __init__(self, handler: Handler, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.handler = handler
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER)
        self.tls = writer.get_extra_info("ssl_object") is not None
        self.peercert: Mapping[str, Any] | None = writer.get_extra_info("peercert")

    async def run(self) -> None:
        try:
            while True:
                try:
                    request = await self._request()
                except h11.RemoteProtocolError as exc:
                    await self._refuse(exc)
                    return
                if request is None:
                    return
                await self._answer(request)
                if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                    return  # one side asked to close (or a body was left unread)
                self.h11.start_next_cycle()
        except (_Closed, OSError, TimeoutError, h11.ProtocolError):
            pass
        finally:
            self.writer.close()

    async def _next(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(IDLE_S):
                data = await self.reader.read(READ_CHUNK)
            self.h11.receive_data(data)

    async def _request(self) -> Request | None:
        event = await self._next()
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None
        if not isinstance(event, h11.Request):
            raise h11.RemoteProtocolError("expected a request")
        chunks, size = [], 0
        while True:
            part = await self._next()
            if isinstance(part, h11.Data):
                size += len(part.data)
                if size > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large",
                                                  error_status_hint=413)
                chunks.append(bytes(part.data))
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return None
        path, segments, query = parse_target(event.target.decode("latin-1"))
        return Request(event.method.decode("ascii"), path, segments, query,
                       {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in event.headers},
                       b"".join(chunks), self.tls, self.peercert)

    async def _answer(self, request: Request) -> None:
        try:
            response = await self.handler(request)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = json_response({"error": {"code": "internal", "field": None,
                                                "message": "internal error"}}, 500)
        headers = dict(response.headers)
        if response.stream is None:
            headers["Content-Length"] = str(len(response.body))
        await self._send(h11.Response(status_code=response.status,
                                      headers=list(headers.items())))
        if request.method == "HEAD":
            await self._send(h11.EndOfMessage())
            aclose = getattr(response.stream, "aclose", None)
            if aclose is not None:
                await aclose()
            return
        if response.body:
            await self._send(h11.Data(data=response.body))
        if response.stream is not None:
            await self._pump(response.stream)
        await self._send(h11.EndOfMessage())

    async def _pump(self, stream: AsyncIterator[bytes]) -> None:
        """Send the stream's chunks while watching the connection: a caller that closes it
        ends the stream (a followed log would otherwise be read forever)."""
        it = aiter(stream)
        watch = asyncio.ensure_future(self.reader.read(READ_CHUNK))
        following: asyncio.Future[bytes] | None = None
        try:
            while True:
                if following is None:
                    following = asyncio.ensure_future(anext(it))
                done, _ = await asyncio.wait({following, watch},
                                             return_when=asyncio.FIRST_COMPLETED)
                if watch in done:
                    data = watch.result()
                    if not data:
                        raise _Closed()
                    self.h11.receive_data(data)  # a next request, kept for later
                    watch = asyncio.ensure_future(self.reader.read(READ_CHUNK))
                if following in done:
                    got, following = following, None
                    try:
                        chunk = got.result()
                    except StopAsyncIteration:
                        return
                    if chunk:
                        await self._send(h11.Data(data=chunk))
        finally:
            watch.cancel()
            if following is not None:
                following.cancel()
                await asyncio.wait({following})  # the generator unwound: it may be closed
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def _refuse(self, exc: h11.RemoteProtocolError) -> None:
        """A malformed request: answer its status (400, 413...) if a response may still
        be sent, then close."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps({"error": {"code": "bad_request", "message": str(exc),
                                     "field": None}}).encode()
        with contextlib.suppress(h11.ProtocolError, OSError):
            await self._send(h11.Response(status_code=exc.error_status_hint, headers=[
                ("Content-Type", "application/json; charset=utf-8"),
                ("Content-Length", str(len(body))), ("Connection", "close")]))
            await self._send(h11.Data(data=body))
            await self._send(h11.EndOfMessage())
