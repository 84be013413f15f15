"""The real transport against real sockets: a small aiohttp server on 127.0.0.1 (two
listening ports, to see which one a reconnect reaches). Everything above the transport
is tested over the in-memory one (test_cli_output.py, test_cli_commands.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from hacontrol.cli.main import build_parser, main, run_client_command
from hacontrol.cli.transport import (
    HttpTransport,
    Request,
    StreamBroken,
    TransportError,
)

from .http_server import serve_in_thread

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    port: int
    target: str


@dataclass
class Server:
    urls: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def last(self) -> Seen:
        return self.seen[-1]


@pytest.fixture
def server() -> Iterator[Server]:
    fake = Server()

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        fake.seen.append(Seen(request.method, request.path, dict(request.query),
                              dict(request.headers), raw, int(sock[1]) if sock else 0,
                              str(request.url)))
        handler = fake.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response({"error": {"code": "not_found", "message": "no route"}},
                                     status=404)
        return await handler(request)

    with serve_in_thread(handle, sites=2) as (loop, ports):
        fake.loop = loop
        fake.urls = [f"http://127.0.0.1:{p}" for p in ports]
        yield fake


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)
    return handler


# --- one exchange ---------------------------------------------------------------------------


def test_exchange_sends_everything_and_returns_the_answer(server: Server) -> None:
    server.routes[("PUT", "/v1/jobs/a b")] = reply(201, b'{"ok": true}', {"X-Thing": "1"})
    response = HttpTransport().handle_request(Request(
        "PUT", server.url + "/v1/jobs/a%20b?x=1&y=%2F",
        {"Authorization": "Bearer t", "Idempotency-Key": "k", "Content-Type": "application/json"},
        b'{"count": 2}'))
    assert (response.status, response.body, response.stream) == (201, b'{"ok": true}', None)
    assert response.headers["x-thing"] == response.headers["X-THING"] == "1"
    seen = server.last
    assert (seen.method, seen.path, seen.query) == ("PUT", "/v1/jobs/a b", {"x": "1", "y": "/"})
    assert seen.body == b'{"count": 2}'
    assert seen.headers["Authorization"] == "Bearer t"
    assert seen.headers["Idempotency-Key"] == "k"
    assert seen.headers["Content-Type"] == "application/json"


def test_error_statuses_and_redirects_are_answers_not_exceptions(server: Server) -> None:
    server.routes[("POST", "/busy")] = reply(503, b'{"error": {}}', {"Retry-After": "1"})
    server.routes[("POST", "/moved")] = reply(307, b"", {"Location": "/elsewhere"})
    transport = HttpTransport()
    busy = transport.handle_request(Request("POST", server.url + "/busy", body=b"{}"))
    assert (busy.status, busy.body, busy.headers["retry-after"]) == (503, b'{"error": {}}', "1")
    # Redirects are the client's business (it keeps method, body and key); not followed here.
    moved = transport.handle_request(Request("POST", server.url + "/moved", body=b"{}"))
    assert (moved.status, moved.headers["Location"]) == (307, "/elsewhere")
    assert [s.path for s in server.seen] == ["/busy", "/moved"]


def test_refused_connection_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="(?i)refused"):
        HttpTransport().handle_request(Request("GET", closed_port_url() + "/v1/status"))


def test_loopback_never_goes_through_a_proxy(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", closed_port_url())
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    server.routes[("GET", "/v1/status")] = reply(200, b"{}")
    assert HttpTransport().handle_request(Request("GET", server.url + "/v1/status")).status == 200


def test_other_hosts_go_through_the_proxy_with_its_credentials(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy_port = port_of(server.url)
    monkeypatch.setenv("http_proxy", f"http://us%40er:pw@127.0.0.1:{proxy_port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    server.routes[("GET", "/v1/status")] = reply(200, b"{}")
    url = "http://cluster.example:8101/v1/status"
    assert HttpTransport().handle_request(Request("GET", url)).status == 200
    assert server.last.target == url
    expected = base64.b64encode(b"us@er:pw").decode()
    assert server.last.headers["Proxy-Authorization"] == f"Basic {expected}"
    # Unless told not to use the environment's proxy (hacontrol dev's own probes).
    with pytest.raises(TransportError):
        HttpTransport(use_env_proxy=False).handle_request(
            Request("GET", "http://cluster.invalid:8101/v1/status", timeout_s=2))


# --- streamed bodies ------------------------------------------------------------------------


class ByteSink:
    """Stands in for stdout: a text side and the bytes underneath it."""

    def __init__(self, on_write: Callable[[bytes], None] | None = None) -> None:
        self.buffer = self
        self.data = b""
        self.on_write = on_write

    def write(self, chunk: Any) -> int:
        if isinstance(chunk, str):
            chunk = chunk.encode()
        self.data += chunk
        if self.on_write is not None:
            self.on_write(self.data)
        return len(chunk)

    def flush(self) -> None:
        pass


def run_with_out(server: Server, out: Any, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args([*argv, "--addr", ",".join(server.urls), "--token", "t"])
    err = io.StringIO()
    return run_client_command(args, out, err), err.getvalue()


def test_alloc_logs_streams_while_the_body_is_still_open(server: Server) -> None:
    printed = threading.Event()
    waited: list[bool] = []

    async def logs(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        await resp.write(b"first line\n")
        # The second part only comes once the first has been printed.
        assert server.loop is not None
        waited.append(await server.loop.run_in_executor(None, printed.wait, 5.0))
        await resp.write(b"second \xff line\n")
        await resp.write_eof()
        return resp

    server.routes[("GET", "/v1/allocations/web-1/logs")] = logs
    out = ByteSink(lambda data: printed.set() if b"first line\n" in data else None)
    code, err = run_with_out(server, out, "alloc", "logs", "web-1", "-f", "--stderr",
                             "--tail", "5")
    assert (code, err) == (0, "")
    assert waited == [True]
    assert out.data == b"first line\nsecond \xff line\n"
    assert server.last.query == {"stream": "stderr", "tail": "5", "follow": "true"}
    assert server.last.headers["Authorization"] == "Bearer t"


def test_a_quiet_stream_times_out_per_read(server: Server) -> None:
    async def quiet(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"one\n")
        await asyncio.sleep(5)
        return resp

    server.routes[("GET", "/quiet")] = quiet
    response = HttpTransport().handle_request(
        Request("GET", server.url + "/quiet", stream=True, read_timeout_s=0.2))
    assert response.stream is not None
    try:
        assert response.stream.read_chunk() == b"one\n"
        with pytest.raises(StreamBroken):
            response.stream.read_chunk()
    finally:
        response.stream.close()


def test_a_streamed_error_answer_is_read_whole(server: Server) -> None:
    server.routes[("GET", "/gone")] = reply(404, b'{"error": {"message": "gone"}}')
    response = HttpTransport().handle_request(Request("GET", server.url + "/gone", stream=True))
    assert (response.status, response.body, response.stream) == (
        404, b'{"error": {"message": "gone"}}', None)


def event(index: int, kind: str, seq: int = 0, **payload: Any) -> dict[str, Any]:
    return {"index": index, "seq": seq, "id": f"{index}.{seq}", "ts": 1700000000.0 + index,
            "type": kind, **payload}


def sse(ev: dict[str, Any]) -> bytes:
    return f"id: {ev['id']}\nevent: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode()


def test_events_follow_resumes_on_the_other_port_after_a_cut(server: Server) -> None:
    evs = [event(3, "job_registered", job="web"), event(4, "node_ready", node="n1"),
           event(4, "node_drain", 1, node="n1", enable=True), event(5, "job_stopped", job="web")]

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if len(server.seen) == 1:
            for ev in evs[:2]:
                await resp.write(sse(ev))
            # Half of the next event, then the connection is cut.
            await resp.write(sse(evs[2])[:20])
            assert request.transport is not None
            request.transport.close()
            return resp
        head, _, tail = request.headers["Last-Event-ID"].partition(".")
        after = (int(head), int(tail or -1))
        for ev in evs:
            if (ev["index"], ev["seq"]) > after:
                await resp.write(sse(ev))
        await asyncio.sleep(30)
        return resp

    server.routes[("GET", "/v1/events")] = stream
    lines: list[dict[str, Any]] = []

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            lines.append(json.loads(text))
            if len(lines) == len(evs):
                raise KeyboardInterrupt
            return len(text)

    code, err = run_with_out(server, Out(), "events", "-f", "--json", "--index", "2")
    assert (code, err) == (0, "")
    assert lines == evs
    first, second = server.seen
    assert second.headers["Last-Event-ID"] == "4.0"
    assert (first.port, second.port) == (port_of(server.urls[0]), port_of(server.urls[1]))


# --- the command line over it ----------------------------------------------------------------


def test_fails_over_from_a_closed_port(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.routes[("GET", "/v1/status")] = reply(
        200, b'{"id": "c2", "role": "leader", "leader": "c2", "members": []}')
    addrs = f"{closed_port_url()},{server.url}"
    assert main(["status", "--json", "--addr", addrs, "--token", "t"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "c2"


def test_nobody_answering_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "list", "--addr", closed_port_url(), "--token", "t"]) == 1
    assert capsys.readouterr().err.startswith("error: no replica answered")
