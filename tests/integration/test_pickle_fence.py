"""Attacks on a running replica's Raft port: pickles and oversized frames."""

from __future__ import annotations

import os
import pickle
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from hacontrol.raft.keys import make_encryptor
from tests.integration.raft_helpers.cluster import SECRET, Cluster, wait_for

pytestmark = pytest.mark.timeout(60)


class _Touch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


class _Open:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.fixture
def single(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", size=1)
    try:
        c.start_all()
        c.leader()
        yield c
    finally:
        c.stop_all()


def _send(port: int, data: bytes) -> None:
    """Deliver ``data`` and wait until the replica hangs up (it must)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.settimeout(5)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass


def _still_serving(c: Cluster, key: str) -> None:
    resp = c.set(0, key, 1)
    assert resp["outcome"] == "ok", resp
    st = c.status(0)
    assert st is not None and st["healthy"], st


def _frames(payload: Any, encrypted: bool) -> list[bytes]:
    out = []
    for protocol in (2, 4):
        body = zlib.compress(pickle.dumps(payload, protocol), 3)
        if encrypted:
            # Exactly what pysyncobj's TcpConnection.send does with a password.
            body = make_encryptor(SECRET).encrypt_at_time(body, int(time.monotonic()))
        out.append(struct.pack("i", len(body)) + body)
    return out


@pytest.mark.parametrize("encrypted", [False, True], ids=["raw", "encrypted-with-secret"])
def test_malicious_pickle_never_runs(single: Cluster, tmp_path: Path, encrypted: bool) -> None:
    c = single
    markers = [tmp_path / "pwned-system", tmp_path / "pwned-open"]
    payloads = [_Touch(markers[0]), _Open(markers[1])]
    for payload in payloads:
        for frame in _frames(payload, encrypted):
            _send(c.nodes[0].raft_port, frame)
    _still_serving(c, f"after-{encrypted}")
    for m in markers:
        assert not m.exists(), f"{m} created: the pickle ran"
    if encrypted:
        # Decryption succeeded, so it was the fence that stopped the payload.
        wait_for(lambda: "raft pickle refused: global posix.system" in c.log(0), 5, "fence log")
        assert "raft pickle refused: global io.open" in c.log(0)


def test_oversized_length_prefix(single: Cluster) -> None:
    c = single
    proc = psutil.Process(c.nodes[0].pid)
    rss_before = proc.memory_info().rss
    port = c.nodes[0].raft_port
    for prefix in (2**31 - 1, -5):
        sent = 0
        chunk = b"\x00" * (1024 * 1024)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(struct.pack("i", prefix))
            try:
                while sent < 256 * 1024 * 1024:
                    sent += s.send(chunk)
            except (ConnectionResetError, BrokenPipeError):
                pass
        # Refused at the prefix: only socket buffers' worth went out.
        assert sent < 32 * 1024 * 1024, f"replica kept reading {sent} bytes"
    rss_after = proc.memory_info().rss
    assert rss_after - rss_before < 32 * 1024 * 1024, (rss_before, rss_after)
    assert "length prefix 2147483647 outside" in c.log(0)
    _still_serving(c, "after-prefix")
