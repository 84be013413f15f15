"""Where a replica's Raft port listens: a real replica in this process, its port contested by
sockets this test holds."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hacontrol.raft import Replica, ReplicaConfig
from hacontrol.raft.keys import generate_secret
from hacontrol.raft.listen import bind_address
from tests.integration.harness import free_ports, wait_for
from tests.integration.raft_helpers.kv_node import KvMachine

pytestmark = pytest.mark.timeout(60)


def test_the_bind_address_follows_the_raft_address() -> None:
    assert bind_address("127.0.0.5:36023") == "127.0.0.5:36023"
    assert bind_address("0.0.0.0:7000") == "0.0.0.0:7000"
    # A name may resolve to an address the replica does not hold (a container's).
    assert bind_address("c1:7000") is None
    assert bind_address("[::1]:7000") is None
    assert bind_address("::1:7000") is None
    assert bind_address("nonsense") is None


def listener(host: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen()
    return s


@contextmanager
def lone_replica(tmp_path: Path, addr: str) -> Iterator[Replica]:
    r = Replica(ReplicaConfig(node_id="n0", raft_addr=addr, peers=[], data_dir=tmp_path / "n0",
                              secret=generate_secret()), KvMachine())
    try:
        yield r
    finally:
        r.destroy()


def test_a_port_taken_on_another_local_address_does_not_keep_a_replica_out(
        tmp_path: Path) -> None:
    # Any socket on the port, on any address (a client connection's ephemeral port is
    # enough), made the wildcard bind fail: the replica never ticked.
    port = free_ports(1)[0]
    with listener("127.0.0.1", port), lone_replica(tmp_path, f"127.0.0.2:{port}") as r:
        wait_for(r.listening, 15, what="the replica listening on 127.0.0.2")
        wait_for(lambda: r.status().role == "leader", 15, what="the replica leading")
        assert r.status().healthy, r.status()
        with socket.create_connection(("127.0.0.2", port), timeout=5):
            pass


def test_a_replica_that_cannot_listen_says_why_and_listens_once_it_can(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="hacontrol.raft.listen")
    port = free_ports(1)[0]
    addr = f"127.0.0.3:{port}"
    with listener("127.0.0.3", port) as held, lone_replica(tmp_path, addr) as r:
        wait_for(lambda: "Address already in use" in str(r.status().unhealthy_reason),
                 15, what="the health naming the bind error")
        st = r.status()
        assert not st.healthy and addr in str(st.unhealthy_reason), st
        assert not r.listening()
        assert any(f"raft cannot listen on {addr}" in rec.getMessage()
                   for rec in caplog.records)
        held.close()
        wait_for(r.listening, 15, what="the replica listening once the port is free")
        wait_for(lambda: r.status().role == "leader" and r.status().healthy, 15,
                 what="the replica leading and healthy")
