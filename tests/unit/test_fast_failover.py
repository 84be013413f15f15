"""raft/fast_failover.py: who goes first after the leader's link closes, and telling a close
by the peer from a link this side drops (on real sockets)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

from hacontrol.raft import fast_failover
from hacontrol.raft.config import RaftTuning
from hacontrol.raft.fast_failover import (
    FastFailover,
    closed_by_peer,
    delay,
    poll_wait,
    rank,
)

POLICY = FastFailover.from_heartbeat(RaftTuning().append_entries_period)


def test_followers_take_turns_by_address_and_the_leader_has_none() -> None:
    voters = ["10.0.0.3:1", "10.0.0.1:1", "10.0.0.2:1"]
    assert rank("10.0.0.1:1", voters[1:], "10.0.0.3:1") == 0
    assert rank("10.0.0.2:1", ["10.0.0.1:1", "10.0.0.3:1"], "10.0.0.3:1") == 1
    # Those that dial the leader (greater addresses) learn first that it is gone: first.
    assert rank("10.0.0.3:1", ["10.0.0.1:1", "10.0.0.2:1"], "10.0.0.2:1") == 0
    assert rank("10.0.0.1:1", ["10.0.0.3:1", "10.0.0.2:1"], "10.0.0.2:1") == 1
    # Five replicas: four turns, all distinct, whichever of them is asked.
    five = [f"10.0.0.{i}:1" for i in range(5)]
    turns = {rank(me, [v for v in five if v != me], five[2]) for me in five if me != five[2]}
    assert turns == {0, 1, 2, 3}


def test_turns_do_not_overlap_and_all_come_before_an_election_timeout() -> None:
    tuning = RaftTuning()
    period = tuning.append_entries_period
    # A live leader that closed the link is heard again within a heartbeat period.
    assert delay(POLICY, 0, 0.0) > period
    # The latest time of one turn is before the earliest of the next.
    assert delay(POLICY, 0, 0.999) < delay(POLICY, 1, 0.0)
    # Three replicas: both turns are well inside the minimum election timeout.
    assert delay(POLICY, 1, 0.999) < tuning.raft_min_timeout
    # Once a dial proved the leader's port closed, sooner, still in turns.
    assert delay(POLICY, 0, 0.999, confirmed=True) < delay(POLICY, 0, 0.0)
    assert delay(POLICY, 0, 0.999, confirmed=True) < delay(POLICY, 1, 0.0, confirmed=True)


def test_a_follower_wakes_at_its_deadline_but_never_spins() -> None:
    assert abs(poll_wait(0.05, 10.02, 10.0) - 0.02) < 1e-9
    assert poll_wait(0.05, 11.0, 10.0) == 0.05
    # Already past (no peer to campaign with) or a transfer's 0: the usual timeout.
    assert poll_wait(0.05, 9.0, 10.0) == 0.05
    assert poll_wait(0.05, 0.0, 10.0) == 0.05


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    server.close()
    return client, accepted


def test_a_close_by_the_peer_is_told_from_a_drop_of_our_own() -> None:
    ours, theirs = _tcp_pair()
    try:
        assert not closed_by_peer(ours)  # open, idle: we would be the ones closing
        theirs.sendall(b"x")
        theirs.close()
        # Unread data still ahead of the EOF: a drop of ours (a refused frame) looks so.
        assert not closed_by_peer(ours)
        assert ours.recv(10) == b"x"
        assert closed_by_peer(ours)  # EOF: the peer's process closed it, or exited
    finally:
        ours.close()
    assert not closed_by_peer(None)


def test_a_reset_counts_as_a_close_by_the_peer() -> None:
    ours, theirs = _tcp_pair()
    try:
        # SO_LINGER 0: close sends RST, as a killed process with unread data does.
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()
        assert _eventually(lambda: closed_by_peer(ours))
    finally:
        ours.close()


def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return False


def _connection(port: int, gone: list[bool]) -> object:
    from pysyncobj.poller import createPoller
    from pysyncobj.tcp_connection import TcpConnection

    fast_failover.install()
    poller = createPoller("auto")
    conn = TcpConnection(poller, onDisconnected=lambda: gone.append(True), timeout=10.0)
    assert conn.connect("127.0.0.1", port)
    return poller, conn


def _poll_until(poller: object, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5.0
    while not check():
        assert time.monotonic() < deadline, "no disconnect within 5 s"
        poller.poll(0.01)  # type: ignore[attr-defined]


def test_pysyncobj_connections_record_who_closed_them() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    # A dial to a port nothing listens on: failed, and counted as the peer's doing.
    free = socket.create_server(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()
    gone: list[bool] = []
    poller, conn = _connection(closed_port, gone)
    _poll_until(poller, lambda: bool(gone))
    assert conn._hc_peer_closed and conn._hc_dial_failed  # type: ignore[attr-defined]
    # An established link the peer closes (EOF).
    gone.clear()
    poller, conn = _connection(port, gone)
    accepted, _ = server.accept()
    _poll_until(poller, lambda: conn.state == 2)  # type: ignore[attr-defined]  # CONNECTED
    accepted.close()
    _poll_until(poller, lambda: bool(gone))
    assert conn._hc_peer_closed and not conn._hc_dial_failed  # type: ignore[attr-defined]
    # A healthy link this side drops.
    gone.clear()
    poller, conn = _connection(port, gone)
    accepted, _ = server.accept()
    _poll_until(poller, lambda: conn.state == 2)  # type: ignore[attr-defined]
    conn.disconnect()  # type: ignore[attr-defined]
    assert gone and not conn._hc_peer_closed  # type: ignore[attr-defined]
    accepted.close()
    server.close()


def _probe_outcome(port: int) -> str | None:
    """A `Probe` to `port`, decided through pysyncobj's poller as the tick thread does."""
    from pysyncobj.poller import POLL_EVENT_TYPE, createPoller

    poller = createPoller("auto")
    probe = fast_failover.Probe("127.0.0.1", port)
    if probe.outcome is None:
        poller.subscribe(probe.fileno(), lambda _d, _e: probe.ready(),
                         POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)
        _poll_until(poller, lambda: probe.outcome is not None)
    assert probe.sock is None  # decided: dropped at once
    return probe.outcome


def test_a_probe_tells_a_port_nothing_listens_on_from_a_live_one() -> None:
    live = socket.create_server(("127.0.0.1", 0))
    try:
        assert _probe_outcome(live.getsockname()[1]) == "connected"
    finally:
        live.close()
    gone = socket.create_server(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()
    assert _probe_outcome(port) == "refused"
