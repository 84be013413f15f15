"""The agent's HTTP client and server on real loopback sockets: against aiohttp (what the
controllers run) both ways, against each other, and against raw sockets sending what
neither library would (malformed requests, a server that drops idle connections)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from hacontrol.agent.httpclient import Client, HTTPError, RequestTimeout, TooLarge
from hacontrol.agent.httpserver import Request, Response, json_response, parse_target, serve


@contextlib.asynccontextmanager
async def aiohttp_site(handler: web.RequestHandler | object) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def our_site(handler: object) -> AsyncIterator[str]:
    server = await serve(handler, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def test_the_client_speaks_to_aiohttp_and_keeps_the_connection() -> None:
    peers: list[object] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername")  # type: ignore[union-attr]
                     if request.transport else None)
        if request.path == "/chunked":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for i in range(3):
                await resp.write(f"part{i};".encode())
            await resp.write_eof()
            return resp
        body = await request.json() if request.can_read_body else None
        return web.json_response({"path": request.path, "query": dict(request.query),
                                  "auth": request.headers.get("Authorization"),
                                  "body": body}, status=201)

    async def go() -> None:
        async with aiohttp_site(handle) as url, Client({"Authorization": "Bearer t"}) as c:
            r = await c.request("POST", f"{url}/a/b?x=1&y=%20", json_body={"k": [1, "é"]},
                                timeout_s=5)
            assert r.status == 201
            assert r.json() == {"path": "/a/b", "query": {"x": "1", "y": " "},
                                "auth": "Bearer t", "body": {"k": [1, "é"]}}
            r = await c.request("GET", f"{url}/chunked", timeout_s=5)
            assert r.body == b"part0;part1;part2;"
            with pytest.raises(TooLarge):
                await c.request("GET", f"{url}/chunked", timeout_s=5, max_bytes=10)
            await c.request("GET", f"{url}/again", timeout_s=5)
    asyncio.run(go())
    # One connection for the first three (kept alive); the cut one was closed, not reused.
    assert peers[0] == peers[1] == peers[2] != peers[3]


def test_timeouts_refusals_and_bad_urls() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    async def go() -> None:
        async with aiohttp_site(slow) as url, Client() as c:
            with pytest.raises(RequestTimeout):
                await c.request("GET", url, timeout_s=0.2)
            with socket.socket() as s:  # bound, never listening: refused
                s.bind(("127.0.0.1", 0))
                dead = f"http://127.0.0.1:{s.getsockname()[1]}"
                with pytest.raises(HTTPError):
                    await c.request("GET", dead, timeout_s=2)
            with pytest.raises(ValueError):
                await c.request("GET", "ftp://127.0.0.1/", timeout_s=1)
    asyncio.run(go())


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    """A raw server that answers one request per connection but says nothing of closing:
    the kept connection is dead by the next request, which goes on a new one."""
    served: list[int] = []

    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def go() -> None:
        server = await asyncio.start_server(one_shot, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        try:
            async with Client() as c:
                for _ in range(3):
                    assert (await c.request("POST", url, json_body={}, timeout_s=5)).body == b"ok"
        finally:
            server.close()
    asyncio.run(go())
    assert len(served) == 3


def test_the_server_answers_aiohttp_and_reads_what_it_sent() -> None:
    seen: list[Request] = []

    async def handle(request: Request) -> Response:
        seen.append(request)
        if request.path == "/text":
            return Response(200, b"plain", {"Content-Type": "text/plain"})
        return json_response({"body": request.json() if request.body else None}, 202)

    async def go() -> None:
        async with our_site(handle) as url, aiohttp.ClientSession() as s:
            async with s.post(f"{url}/v1/x%2Fy/z?tail=5&tail=6&e=",
                              json={"signal": "SIGHUP"},
                              headers={"Authorization": "Bearer abc"}) as r:
                assert r.status == 202
                assert await r.json() == {"body": {"signal": "SIGHUP"}}
            async with s.get(f"{url}/text") as r:
                assert (r.status, await r.text()) == (200, "plain")
            async with s.head(f"{url}/text") as r:
                assert r.status == 200 and await r.read() == b""
    asyncio.run(go())
    first = seen[0]
    assert first.method == "POST" and first.segments == ("v1", "x/y", "z")
    assert first.query == {"tail": "5", "e": ""}
    assert first.headers["authorization"] == "Bearer abc" and not first.tls


def test_our_client_and_server_together_and_a_failing_handler() -> None:
    async def handle(request: Request) -> Response:
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return json_response({"n": len(request.body)})

    async def go() -> None:
        async with our_site(handle) as url, Client() as c:
            r = await c.request("POST", f"{url}/n", json_body="x" * 100_000, timeout_s=5)
            assert r.json() == {"n": 100_002}
            r = await c.request("GET", f"{url}/boom", timeout_s=5)
            assert r.status == 500 and r.json()["error"]["code"] == "internal"
            assert (await c.request("GET", f"{url}/n", timeout_s=5)).json() == {"n": 0}
    asyncio.run(go())


async def _raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def test_malformed_and_oversized_requests_get_a_4xx_and_a_close() -> None:
    async def handle(request: Request) -> Response:
        return json_response({"ok": True})

    async def go() -> None:
        async with our_site(handle) as url:
            bad = await _raw(url, b"NOT HTTP AT ALL\r\n\r\n")
            assert bad.startswith(b"HTTP/1.1 400 ")
            assert json.loads(bad.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "bad_request"
            huge = await _raw(url, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
                              b"\r\n" + b"x" * 1_100_000)
            assert huge.startswith(b"HTTP/1.1 413 ")
            # A well-formed request on the same server still works afterwards.
            ok = await _raw(url, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200 ")
    asyncio.run(go())


def test_a_stream_ends_when_its_caller_goes_away() -> None:
    """A followed log never ends on its own: the server must stop reading it when the
    caller closes the connection."""
    state = {"closed": False, "sent": 0}

    async def forever() -> AsyncIterator[bytes]:
        try:
            while True:
                state["sent"] += 1
                yield b"line\n"
                await asyncio.sleep(0.01)
        finally:
            state["closed"] = True

    async def handle(request: Request) -> Response:
        return Response(200, b"head\n", {"Content-Type": "text/plain"}, stream=forever())

    async def go() -> None:
        async with our_site(handle) as url:
            async with aiohttp.ClientSession() as s, s.get(url) as r:
                got = b""
                while got.count(b"line") < 3:
                    got += await r.content.readany()
                assert got.startswith(b"head\nline\n")
            deadline = asyncio.get_running_loop().time() + 5
            while not state["closed"] and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            assert state["closed"]
    asyncio.run(go())


def test_target_segments_are_decoded_one_by_one() -> None:
    assert parse_target("/v1/allocations/..%2F../logs?x=%2F") == (
        "/v1/allocations/..%2F../logs", ("v1", "allocations", "../..", "logs"), {"x": "/"})
    assert parse_target("/") == ("/", ("",), {})
