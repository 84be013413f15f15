"""A crowd dialling a replica whose event loop is busy is queued by the kernel, not dropped.

After an election thousands of agents dial the new leader at once. A SYN that finds the
listen queue full is dropped and retried a second later, so a queue of aiohttp's default
128 made most of such a crowd wait a second or time out. The replica is stopped (SIGSTOP),
the busiest an event loop can be: the kernel still completes the handshake of every
connection its queue holds.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import time

from tests.integration.harness import Cluster

CROWD = 600
WINDOW_S = 0.8  # shorter than the 1 s after which a dropped SYN is sent again


def test_a_crowd_dialling_a_busy_replica_is_queued_not_dropped(cluster: Cluster) -> None:
    leader = cluster.leader()
    replica = next(r for r in cluster.live() if r is not leader)
    with contextlib.ExitStack() as stack:
        os.kill(replica.proc.pid, signal.SIGSTOP)
        stack.callback(os.kill, replica.proc.pid, signal.SIGCONT)
        sel = stack.enter_context(selectors.DefaultSelector())
        for _ in range(CROWD):
            s = stack.enter_context(socket.socket())
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", replica.api_port))
            sel.register(s, selectors.EVENT_WRITE)
        connected = 0
        deadline = time.monotonic() + WINDOW_S
        while connected < CROWD and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                sel.unregister(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    connected += 1
        assert connected == CROWD, f"{CROWD - connected} of {CROWD} connects were dropped"
    # Resumed, the replica serves the crowd's successors as before.
    assert cluster.api("GET", "/v1/status", replica=replica).status == 200
