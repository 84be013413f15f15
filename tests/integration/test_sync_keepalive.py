"""An agent's long poll over a path that went silent (power cut, partition) is given up
within the keep-alive window at both ends, however long the poll: the leader stops
counting the node as alive, the agent stops waiting for an answer. Packets of one
loopback connection are dropped with nftables (root)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hacontrol.agent.httpclient import Client, ConnectionTimedOut, HTTPError, Response
from hacontrol.agent.link import heard_until
from hacontrol.model import keepalive
from hacontrol.scheduler.liveness import DEFAULT_GRACE_S

from .harness import Cluster, silenced, wait_for

POLL_S = 30.0  # the longest the leader grants


def _node_status(cluster: Cluster, name: str) -> str | None:
    nodes = cluster.api("GET", "/v1/nodes", replica=cluster.leader()).body["nodes"]
    return next((n["status"] for n in nodes if n["name"] == name), None)


def _sync_request(token: str, port: int, body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    return (f"POST /v1/agent/sync HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw)}\r\n\r\n").encode() + raw


def test_a_node_whose_poll_went_silent_is_marked_down_long_before_the_poll_ends(
        cluster: Cluster) -> None:
    leader = cluster.leader()
    node = {"name": "ghost", "cpu": 1.0, "memory_mb": 64, "address": ""}
    first = cluster.api("POST", "/v1/agent/sync", {"node": node, "reports": [], "index": 0,
                                                   "wait_s": 0, "term": 0}, replica=leader)
    assert first.status == 200, first.body
    wait_for(lambda: _node_status(cluster, "ghost") == "ready", 15, what="ghost ready")
    # A long poll held open on a plain socket: the kernel acknowledges the leader's
    # keep-alive probes as long as packets flow.
    sock = socket.create_connection(("127.0.0.1", leader.api_port), timeout=5)
    try:
        sock.sendall(_sync_request(cluster.token, leader.api_port, {
            "node": node, "reports": [], "index": first.body["index"], "wait_s": POLL_S,
            "term": first.body["term"], "fingerprint": first.body["fingerprint"]}))
        polled = time.monotonic()
        # While the poll is in flight the node is alive, past the grace period.
        while time.monotonic() - polled < DEFAULT_GRACE_S + 1.5:
            assert _node_status(cluster, "ghost") == "ready"
            time.sleep(0.2)
        with silenced(sock.getsockname()[1], leader.api_port):
            cut = time.monotonic()
            wait_for(lambda: _node_status(cluster, "ghost") == "down", POLL_S,
                     interval=0.2, what="the silent node marked down")
            took = time.monotonic() - cut
        # The poll still had over 20 s to run: only the keep-alive can have ended it.
        assert took < keepalive.WINDOW_S + DEFAULT_GRACE_S + 5, took
        assert time.monotonic() - polled < POLL_S - 5
    finally:
        sock.close()


@dataclass
class HeldPoll:
    """A request of the agent's keep-alive client that its server has read and holds."""

    client: Client
    call: asyncio.Future[Response]
    server: asyncio.Server
    server_port: int
    client_port: int
    sent_after: float  # monotonic, just before the request


@contextlib.asynccontextmanager
async def held_poll(hold: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                   Awaitable[None]]) -> AsyncIterator[HeldPoll]:
    """A server on loopback that reads a request's head, then runs `hold` on its
    connection; yields once it has read the request."""
    got_request = asyncio.Event()
    peers: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[1])
        await reader.readuntil(b"\r\n\r\n")
        got_request.set()
        await hold(reader, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = Client(keepalive=True)
    try:
        started = time.monotonic()
        call = asyncio.ensure_future(client.request(
            "GET", f"http://127.0.0.1:{port}/poll", timeout_s=POLL_S))
        await asyncio.wait_for(got_request.wait(), 10)
        yield HeldPoll(client, call, server, port, peers[0], started)
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def test_the_agents_client_gives_up_a_silent_connection_within_the_window() -> None:
    async def never_answer(reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # until the client goes
        except OSError:
            pass
        writer.close()

    async def main() -> None:
        async with held_poll(never_answer) as poll:
            with silenced(poll.client_port, poll.server_port):
                cut = time.monotonic()
                with pytest.raises(ConnectionTimedOut) as err:
                    await asyncio.wait_for(poll.call, POLL_S + 5)
                failed = time.monotonic()
            assert failed - cut < keepalive.WINDOW_S + 3, failed - cut
            assert poll.client.last_sent_at >= poll.sent_after
            until = heard_until(poll.client.last_sent_at, None, failed, err.value)
            assert until is not None and until <= cut + 1.5  # never later than the cut
    asyncio.run(main())


def test_a_poll_closed_by_its_server_counts_until_it_closed() -> None:
    """The leader dies mid-poll: its host closes the connection, and the retry on a new
    connection is refused. The agent's silence counts from the close, not from its last
    answer (a poll may have been open for many seconds)."""
    async def main() -> None:
        close_now = asyncio.Event()

        async def close_when_told(reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
            await close_now.wait()
            writer.close()

        async with held_poll(close_when_told) as poll:
            poll.server.close()  # no new connection is accepted from now on
            closed = time.monotonic()
            close_now.set()
            with pytest.raises(HTTPError) as err:
                await asyncio.wait_for(poll.call, 10)
            failed = time.monotonic()
            client = poll.client
            assert client.last_sent_at >= poll.sent_after
            assert closed <= client.last_closed_at <= failed
            assert heard_until(client.last_sent_at, client.last_closed_at, failed,
                               err.value) == client.last_closed_at
    asyncio.run(main())


def test_a_leader_with_polls_in_flight_stops_at_once(cluster: Cluster) -> None:
    """A stopping replica answers its long polls instead of waiting them out: a 30 s poll
    must not hold a restart for 30 s."""
    leader = cluster.leader()
    node = {"name": "waiter", "cpu": 1.0, "memory_mb": 64, "address": ""}
    first = cluster.api("POST", "/v1/agent/sync", {"node": node, "reports": [], "index": 0,
                                                   "wait_s": 0, "term": 0}, replica=leader)
    assert first.status == 200, first.body
    sock = socket.create_connection(("127.0.0.1", leader.api_port), timeout=POLL_S)
    try:
        sock.sendall(_sync_request(cluster.token, leader.api_port, {
            "node": node, "reports": [], "index": first.body["index"], "wait_s": POLL_S,
            "term": first.body["term"], "fingerprint": first.body["fingerprint"]}))
        # Held: no answer comes while the cluster is quiet.
        sock.settimeout(2.0)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        started = time.monotonic()
        leader.proc.stop(timeout=POLL_S + 10)
        took = time.monotonic() - started
        assert took < 10, took
    finally:
        sock.close()


def _get_request(token: str, port: int, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n").encode()


def _read_until(sock: socket.socket, marker: bytes, deadline: float) -> bytes:
    """What the socket gave until `marker` appeared, or it closed, or `deadline` passed."""
    got = b""
    while marker not in got and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        got += chunk
    return got


def test_a_replica_with_streams_and_blocking_queries_open_stops_at_once(
        cluster: Cluster) -> None:
    """An event stream (which never ends by itself) and a 60 s blocking query end when
    their replica stops, the query with its answer and the stream cleanly: aiohttp would
    wait for them up to a minute, and the stream's next write failed with an error in the
    log."""
    replica = cluster.replicas[0]
    index = cluster.api("GET", "/v1/services", replica=replica).headers["X-Hacontrol-Index"]
    stream = socket.create_connection(("127.0.0.1", replica.api_port), timeout=5)
    query = socket.create_connection(("127.0.0.1", replica.api_port), timeout=5)
    try:
        stream.sendall(_get_request(cluster.token, replica.api_port,
                                    "/v1/events?follow=true&type=nothing"))
        head = _read_until(stream, b": keep-alive", time.monotonic() + 10)
        assert head.startswith(b"HTTP/1.1 200") and b": keep-alive" in head, head
        query.sendall(_get_request(cluster.token, replica.api_port,
                                   f"/v1/services?index={index}&wait=60s"))
        # Held: nothing changes while the cluster is quiet.
        assert _read_until(query, b"\r\n", time.monotonic() + 1.5) == b""
        started = time.monotonic()
        replica.proc.stop(timeout=70)
        took = time.monotonic() - started
        assert took < 5, f"the replica took {took:.1f} s to stop"
        answer = _read_until(query, b"}", time.monotonic() + 5)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        # The stream was ended (the last chunk), not cut.
        assert _read_until(stream, b"0\r\n\r\n", time.monotonic() + 5).endswith(b"0\r\n\r\n")
    finally:
        stream.close()
        query.close()
    errors = [line for line in replica.proc.log.read_text().splitlines() if " ERROR " in line]
    assert not errors, errors
