"""The pickle and frame fence around pysyncobj."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hacontrol.raft import safety
from hacontrol.raft.keys import generate_secret, make_encryptor
from hacontrol.raft.safety import FenceError, SecretError, install_fence, require_secret

install_fence()

import pysyncobj.journal  # noqa: E402
import pysyncobj.pickle as pso_pickle  # noqa: E402
import pysyncobj.serializer  # noqa: E402
from pysyncobj.poller import createPoller  # noqa: E402
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection  # noqa: E402


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.cmd,))


class _Open:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


class Arbitrary:
    pass


APPEND_ENTRIES = {
    "type": "append_entries",
    "term": 3,
    "commit_index": 17,
    "entries": [(b"\x00cmd", 17, 3), (b"", 18, 3)],
    "prevLogIdx": 16,
    "prevLogTerm": 2,
    "serialized": (b"", False, True),
}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_refuses_os_system(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    for payload in (_System(f"touch {marker}"), _Open(str(marker))):
        data = pickle.dumps(payload, protocol)
        for loads in (pso_pickle.loads, pysyncobj.journal.loads, safety.safe_loads):
            with pytest.raises(pickle.UnpicklingError):
                loads(data)
    assert not marker.exists()


def test_refuses_arbitrary_classes() -> None:
    import collections

    for obj in (Arbitrary(), [1, Arbitrary()], collections.OrderedDict(a=1), {1, 2}):
        for protocol in (2, 4):
            with pytest.raises(FenceError):
                pso_pickle.loads(pickle.dumps(obj, protocol if not isinstance(obj, set) else 2))


def test_refuses_abusive_uses_of_allowed_globals() -> None:
    # _codecs.encode with a byte-doubling codec, and bytes(<huge int>).
    hex_bomb = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x03\x00\x00\x00hex\x86R."
    with pytest.raises(FenceError):
        pso_pickle.loads(hex_bomb)
    huge_bytes = b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R."
    with pytest.raises(FenceError):
        pso_pickle.loads(huge_bytes)


def test_unrestricted_fallback_is_unreachable(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(_System(f"touch {marker}"), 2)
    with pytest.raises(FenceError):
        pso_pickle.pickle._loads(data)  # type: ignore[attr-defined]
    with pytest.raises(pickle.UnpicklingError):
        pysyncobj.serializer.pickle.loads(data)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_accepts_what_pysyncobj_sends(protocol: int) -> None:
    data = pickle.dumps(APPEND_ENTRIES, protocol)
    assert pso_pickle.loads(data) == APPEND_ENTRIES
    meta = {"raftCommitIndex": 5, "currentTerm": 2, "votedForNodeId": "127.0.0.1:1"}
    assert pysyncobj.journal.loads(pickle.dumps(meta, protocol)) == meta
    cmd = (0, (b"\x81\xa2op\xa4noop",))
    assert pso_pickle.loads(pickle.dumps(cmd, protocol)) == cmd


def test_pysyncobj_pickles_with_protocol_4() -> None:
    data = pso_pickle.dumps(APPEND_ENTRIES)
    assert data[:2] == b"\x80\x04"
    safety.find_class_log = []
    try:
        assert pso_pickle.loads(data) == APPEND_ENTRIES
        assert safety.find_class_log == []
    finally:
        safety.find_class_log = None


def test_install_fence_is_idempotent() -> None:
    loads = pso_pickle.loads
    install_fence()
    install_fence()
    assert pso_pickle.loads is loads is safety.safe_loads


def test_secret_required() -> None:
    for bad in (None, "", "short", "x" * 32, "ab" * 32):
        with pytest.raises(SecretError):
            require_secret(bad)
    good = generate_secret()
    assert require_secret(good) == good


def test_replica_refuses_to_start_without_secret(tmp_path: Path) -> None:
    from hacontrol.raft import Replica, ReplicaConfig

    cfg = ReplicaConfig("n0", "127.0.0.1:1", [], tmp_path, secret="")
    with pytest.raises(SecretError):
        Replica(cfg, object())  # type: ignore[arg-type]
    assert not (tmp_path / "raft.journal").exists()


# ---- frame cap ---------------------------------------------------------------


@pytest.fixture
def conn_pair() -> Iterator[tuple[TcpConnection, socket.socket, list[Any]]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    received: list[Any] = []
    conn = TcpConnection(createPoller("select"), onMessageReceived=received.append, socket=a)
    yield conn, b, received
    conn.disconnect()
    b.close()


def _frame(message: Any) -> bytes:
    body = zlib.compress(pso_pickle.dumps(message), 3)
    return struct.pack("i", len(body)) + body


def _read_all(conn: TcpConnection) -> None:
    while conn._TcpConnection__processRead():  # type: ignore[attr-defined]
        pass


def _parse_all(conn: TcpConnection) -> list[Any]:
    out = []
    while conn.state != CONNECTION_STATE.DISCONNECTED:
        msg = conn._TcpConnection__processParseMessage()  # type: ignore[attr-defined]
        if msg is None:
            break
        out.append(msg)
    return out


def test_an_earlier_frame_replayed_into_a_connection_is_refused(
    conn_pair: tuple[TcpConnection, socket.socket, list[Any]],
) -> None:
    """pysyncobj refuses a frame "older" than the connection's last; with hcraft2 keys a
    frame's age is its sender's counter, so even frames of the same second are told apart."""
    conn, peer, _ = conn_pair
    secret = generate_secret()
    conn.encryptor = make_encryptor(secret)
    sender = make_encryptor(secret)

    def sealed(message: Any) -> bytes:
        body = sender.encrypt_at_time(zlib.compress(pso_pickle.dumps(message)), 7)
        return struct.pack("i", len(body)) + body

    first, second = sealed("first"), sealed("second")
    peer.sendall(first + second)
    _read_all(conn)
    assert _parse_all(conn) == ["first", "second"]
    peer.sendall(first)
    _read_all(conn)
    assert _parse_all(conn) == []
    assert conn.state == CONNECTION_STATE.DISCONNECTED


@pytest.mark.parametrize("prefix", [2**31 - 1, safety.DEFAULT_MAX_FRAME_BYTES + 1, -1, -(2**31)])
def test_frame_cap_refuses_before_buffering(
    conn_pair: tuple[TcpConnection, socket.socket, list[Any]],
    prefix: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn, peer, _ = conn_pair
    peer.setblocking(False)
    chunk = b"\x00" * 65536
    peer.send(struct.pack("i", prefix))
    try:
        for _ in range(16):
            peer.send(chunk)
    except BlockingIOError:
        pass
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="hacontrol.raft.safety"):
            _read_all(conn)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert conn.state == CONNECTION_STATE.DISCONNECTED
    assert conn._TcpConnection__readBuffer == b""  # type: ignore[attr-defined]
    assert peak < 1024 * 1024
    assert "length prefix" in caplog.text


def test_frames_under_the_cap_still_flow(
    conn_pair: tuple[TcpConnection, socket.socket, list[Any]],
) -> None:
    conn, peer, _ = conn_pair
    frames = b"".join(_frame({"type": "m", "i": i, "data": os.urandom(300)}) for i in range(50))
    # Deliver in awkward pieces so prefixes straddle reads.
    got: list[Any] = []
    for pos in range(0, len(frames), 777):
        peer.sendall(frames[pos : pos + 777])
        _read_all(conn)
        got += _parse_all(conn)
    assert conn.state != CONNECTION_STATE.DISCONNECTED
    assert [m["i"] for m in got] == list(range(50))


def test_decompression_bomb_refused(
    conn_pair: tuple[TcpConnection, socket.socket, list[Any]],
) -> None:
    conn, peer, _ = conn_pair
    bomb = zlib.compress(b"\x00" * (safety.DEFAULT_MAX_FRAME_BYTES + 1024), 9)
    peer.sendall(struct.pack("i", len(bomb)) + bomb)
    _read_all(conn)
    tracemalloc.start()
    try:
        assert _parse_all(conn) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert conn.state == CONNECTION_STATE.DISCONNECTED
    assert peak < safety.DEFAULT_MAX_FRAME_BYTES * 3 // 2


# ---- LogBridge outcome mapping and barrier coalescing (no processes) --------


class _FakeReplica:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, Any]] = []
        self.leader: str | None = "127.0.0.1:1"

    def submit(self, command: bytes, callback: Any) -> None:
        self.calls.append((command, callback))

    def status(self) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(leader=self.leader)


def test_bridge_maps_outcomes_and_coalesces_barriers() -> None:
    import asyncio
    import threading

    from hacontrol.raft import Applied, LogBridge, NotApplied, OutcomeUnknown
    from hacontrol.raft.replica import FAIL_LEADER_CHANGED, FAIL_NOT_LEADER, FAIL_SUCCESS

    fake = _FakeReplica()
    bridge = LogBridge(fake)  # type: ignore[arg-type]

    def reply(n: int, res: Any, err: int) -> None:
        # Callbacks arrive on another thread, as from pysyncobj's tick thread.
        t = threading.Thread(target=fake.calls[n][1], args=(res, err))
        t.start()
        t.join()

    async def scenario() -> None:
        task = asyncio.ensure_future(bridge.submit(b"a", 2))
        await asyncio.sleep(0)
        reply(0, Applied(7, {"ok": True}), FAIL_SUCCESS)
        assert await task == {"ok": True}

        task = asyncio.ensure_future(bridge.submit(b"b", 2, retry=False))
        await asyncio.sleep(0)
        reply(1, None, FAIL_NOT_LEADER)
        with pytest.raises(NotApplied):
            await task

        task = asyncio.ensure_future(bridge.submit(b"c", 2))
        await asyncio.sleep(0)
        reply(2, None, FAIL_LEADER_CHANGED)
        with pytest.raises(OutcomeUnknown):
            await task

        with pytest.raises(OutcomeUnknown):
            await bridge.submit(b"d", 0.05)  # never answered

        fake.leader = None
        with pytest.raises(NotApplied):
            await bridge.submit(b"e", 0.05)
        fake.leader = "127.0.0.1:1"

        # 50 readers, one in flight: the first gets its own no-op, all who
        # arrive while it is in flight share exactly one more.
        base = len(fake.calls)
        first = asyncio.ensure_future(bridge.barrier(b"noop", 2))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(bridge.barrier(b"noop", 2)) for _ in range(49)]
        await asyncio.sleep(0.01)
        assert len(fake.calls) == base + 1
        reply(base, Applied(100, None), FAIL_SUCCESS)
        assert await first == 100
        await asyncio.sleep(0.01)
        assert len(fake.calls) == base + 2
        reply(base + 1, Applied(101, None), FAIL_SUCCESS)
        assert await asyncio.gather(*rest) == [101] * 49

    asyncio.run(scenario())


def test_socket_inet_ntop_still_works_after_importing_pysyncobj() -> None:
    import socket

    import pysyncobj.tcp_connection  # noqa: F401

    import hacontrol.raft  # noqa: F401

    assert socket.inet_ntop(socket.AF_INET, b"\x7f\x00\x00\x01") == "127.0.0.1"
    assert socket.inet_ntop(socket.AF_INET6, b"\x00" * 15 + b"\x01") == "::1"


def test_raft_sockets_abort_when_the_peer_stops_acknowledging() -> None:
    """A partitioned link must not sit in TCP's retransmission backoff after the heal."""
    import socket

    from pysyncobj.poller import createPoller
    from pysyncobj.tcp_connection import TcpConnection

    from hacontrol.raft.safety import TCP_USER_TIMEOUT_MS, install_fence

    install_fence()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    conn = TcpConnection(createPoller("auto"), keepalive=(2, 1, 3))
    try:
        assert conn.connect("127.0.0.1", listener.getsockname()[1])
        sock = conn._TcpConnection__socket  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == \
            TCP_USER_TIMEOUT_MS
    finally:
        conn.disconnect()
        listener.close()
