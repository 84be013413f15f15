"""Electing soon after the leader's process is gone, instead of a whole election timeout.

When a leader's process dies (kill -9, a crash, an exit), its kernel closes its sockets:
each follower reads EOF (or a reset) on its link to the leader at once. A follower that
then waits its election timeout (1-2 s, config.py) waits for heartbeats that cannot
come. Instead, a follower whose link to its current leader was closed *by the leader's
side* moves its election deadline forward to a short delay (`delay`).

What a closed link does not prove, and why a live leader is not deposed by it:

* the delay (`first`) is more than a heartbeat period: a live leader whose side closed the
  link (an error on its side, a link it dropped) is redialled at once by whichever of the
  two dials (pysyncobj reconnects in the disconnect callback) and its next AppendEntries
  resets the deadline to a full timeout, as any heartbeat does;
* only a close by the peer counts (EOF or a reset, checked on the socket when pysyncobj
  disconnects it): a link this replica dropped itself (a refused frame, a membership
  change, its own shutdown) leaves the deadline alone;
* a partition, a paused leader or a dead host close nothing: the usual timeout applies;
* a replica that is not a voter never campaigns (election_grace.py's `no_campaign_outside` moves
  the deadline out again every tick); a leadership transfer's deadline 0 stays 0.

A dial that fails right after such a close is proof: the replica that dials (pysyncobj:
the one with the greater address) redials at once, and a dial that fails means nothing
listens on the leader's Raft port any more (its process is gone). Then the follower goes
after `confirmed` instead of `first`, still in its turn.

Only the follower that dials its leader learns this from a redial, and only when the
redial is not held back (pysyncobj waits `connection_retry_time` between dials): when the
leader has the greatest address of the three no follower dials it, and both used to wait
`first` (a third of kill -9 trials took about 100 ms instead of 25). So a follower whose
leader closed their link without a failed dial probes the leader's Raft port once, with a
connect of its own that it drops at once (`Probe`): refused is the same proof as a failed
redial. A probe that connects, or never completes (a dead host answers nothing), proves
nothing and leaves the deadline as it was.

A leader's graceful stop closes its links too: the others elect at once, which is what a
stopping leader wants. Raft's safety does not depend on when an election starts (votes,
terms and the log check decide); only liveness does.

Two followers see the close at the same instant; if both campaigned within the time one
request_vote takes to arrive (a durable term write, then the message), they would split
the vote and wait a full timeout. So the followers go in turns, ranked by address among
the voters other than the leader (those that dial it first, see `rank`), `step` apart
(plus a little jitter): the first one wins unless its log is behind, in which case the
second one, refused the vote, campaigns at its own turn and wins. Turns still collide when the followers see the close at different
times or stall together (on a loaded machine a durable term write alone can take 100 ms):
so a campaign that follows a close retries at its turn again, not a whole election timeout
later, up to `FAST_CAMPAIGNS` campaigns, until a leader is heard. Meanwhile the follower's
tick wakes at its deadline (`tick_wait`): pysyncobj checks it only as a tick starts, and
its poll period (50 ms) would otherwise come on top of every turn.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Campaigns, after a close, whose next try comes at this follower's turn.
FAST_CAMPAIGNS = 3
_CANDIDATE = 1  # pysyncobj's _RAFT_STATE
_lock = threading.Lock()
_installed = False


@dataclass(frozen=True)
class FastFailover:
    """`first`: the delay of the first follower in turn after a close; `confirmed`: the
    same once a dial to the leader failed; `step`: between turns; `jitter`: random spread
    within a turn. `first` <= 0 turns the shortcut off."""

    first: float
    confirmed: float
    step: float
    jitter: float

    @classmethod
    def from_heartbeat(cls, period: float) -> FastFailover:
        # A live leader redialled at once is heard again within one heartbeat period (plus
        # a handshake round trip): 1.6 periods leave it that. A turn of 0.8 periods covers
        # what a request_vote usually takes to arrive (a durable write of the term: 13 ms
        # p50, 27 ms p90 on this disk); fast retries cover the slower ones.
        return cls(first=1.6 * period, confirmed=0.1 * period, step=0.8 * period,
                   jitter=0.2 * period)


def rank(self_addr: str, voters: Iterable[str], leader: str) -> int:
    """This replica's turn among the voters other than the leader (0 goes first). Those
    that dial the leader (pysyncobj: the greater address dials) go first: a dead leader's
    closed port answers their redial at once, so theirs are the short (`confirmed`) turns."""
    others = sorted({v for v in voters if v != leader} | {self_addr},
                    key=lambda a: (a < leader, a))
    return others.index(self_addr)


def delay(policy: FastFailover, turn: int, rand: float, confirmed: bool = False) -> float:
    """Seconds from the close (or the failed dial, `confirmed`) to this follower's
    election; `rand` in [0, 1)."""
    start = policy.confirmed if confirmed else policy.first
    return start + turn * policy.step + rand * policy.jitter


def poll_wait(wait: float, deadline: float, now: float) -> float:
    """A follower's poll timeout: it wakes at its election deadline instead of up to a
    poll period (`auto_tick_period`) after it, since pysyncobj checks the deadline only at
    the start of a tick. A deadline already past (no peer connected to campaign with, or a
    transfer's 0) leaves the timeout alone: polling at once again would spin."""
    return min(wait, deadline - now) if deadline > now else wait


def tick_wait(node: Any, wait: float, now: float) -> float:
    """The poll timeout of a follower's tick: `poll_wait` only after its leader closed the
    link. An ordinary election timeout keeps the slack of the poll period: a heartbeat
    late on a busy machine still lands in that poll and prevents an election."""
    if getattr(node, "_hc_fast_left", 0) <= 0:
        return wait
    return poll_wait(wait, float(node._SyncObj__raftElectionDeadline), now)


def closed_by_peer(sock: Any) -> bool:
    """Whether the other end closed this socket (EOF or reset), as opposed to a healthy
    link this side is dropping: peeks, reads nothing."""
    if sock is None:
        return False
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False  # open, nothing to read: a close of our own
    except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError,
            ConnectionAbortedError):
        return True  # a reset, or a dial refused (reported as such or as an EOF)
    except OSError:
        return False  # not connected (a failed dial), or already closed here
    return bool(data == b"")


def install() -> None:
    """Have pysyncobj's connections record, as they disconnect, whether the peer closed
    them (`_hc_peer_closed`); idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        from pysyncobj import tcp_connection

        cls = tcp_connection.TcpConnection
        orig = cls.disconnect
        connecting = tcp_connection.CONNECTION_STATE.CONNECTING

        def disconnect(self: Any) -> None:
            self._hc_peer_closed = closed_by_peer(self._TcpConnection__socket)
            self._hc_dial_failed = self._TcpConnection__state == connecting
            orig(self)

        cls.disconnect = disconnect
        _installed = True


def on_link_closed(node: Any, peer: Any, policy: FastFailover, now: float) -> float | None:
    """Tick thread, from pysyncobj's node-disconnected callback: move the election deadline
    forward when `peer` is our leader and closed the link, or a dial to it failed. The new
    deadline, or None."""
    if policy.first <= 0 or peer is None or peer != node._SyncObj__raftLeader:
        return None
    if node._SyncObj__raftState != 0 or node._SyncObj__transferInProgress:
        return None  # 0: pysyncobj's FOLLOWER
    conn = node._SyncObj__transport._connections.get(peer)
    if conn is None or not getattr(conn, "_hc_peer_closed", False):
        return None
    me = node._SyncObj__selfNode
    if me is None:
        return None  # a read-only node never campaigns
    voters = [n.address for n in node._SyncObj__otherNodes]
    turn = rank(me.address, voters, peer.address)
    confirmed = bool(getattr(conn, "_hc_dial_failed", False))
    deadline = _elect_by(node, peer, policy, turn, now, confirmed,
                         "failed a dial" if confirmed else "closed its link")
    if not confirmed:
        _start_probe(node, peer, policy)
    return deadline


def _elect_by(node: Any, peer: Any, policy: FastFailover, turn: int, now: float,
              confirmed: bool, why: str) -> float:
    deadline = min(float(node._SyncObj__raftElectionDeadline),
                   now + delay(policy, turn, random.random(), confirmed))
    node._SyncObj__raftElectionDeadline = deadline
    node._hc_fast_turn = turn
    node._hc_fast_from = peer
    node._hc_fast_left = FAST_CAMPAIGNS
    logger.info("raft: leader %s %s; electing in %.0f ms (turn %d) unless it is heard",
                peer.address, why, (deadline - now) * 1000, turn)
    return deadline


class Probe:
    """One non-blocking connect to `(host, port)`, dropped as soon as it is decided:
    `outcome` is None while pending, then "refused", "connected" or "failed" (any other
    error). Its socket is watched by pysyncobj's poller on the tick thread."""

    def __init__(self, host: str, port: int) -> None:
        self.outcome: str | None = None
        self.sock: socket.socket | None = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        err = self.sock.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._decide(err)

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def ready(self) -> None:
        """The socket is writable or in error: read the connect's result, close."""
        if self.sock is not None and self.outcome is None:
            self._decide(self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    def _decide(self, err: int) -> None:
        self.outcome = ("connected" if err == 0 else
                        "refused" if err == errno.ECONNREFUSED else "failed")
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _start_probe(node: Any, peer: Any, policy: FastFailover) -> None:
    _drop_probe(node)
    # `ip`: pysyncobj's cached resolution, as its own dials use (a name would be resolved
    # here, blocking the tick thread).
    ip = peer.ip
    if not ip:
        return
    try:
        probe = Probe(ip, peer.port)
    except OSError:
        return
    if probe.outcome is not None:
        _probed(node, peer, policy, probe)
        return
    node._hc_probe = probe

    def on_event(_descr: int, _events: int) -> None:
        _unwatch(node)
        probe.ready()
        _probed(node, peer, policy, probe)

    from pysyncobj.poller import POLL_EVENT_TYPE
    node._poller.subscribe(probe.fileno(), on_event,
                           POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)


def _unwatch(node: Any) -> Probe | None:
    """Stop watching the pending probe (its socket is still open: the fd is its own)."""
    probe: Probe | None = getattr(node, "_hc_probe", None)
    if probe is None:
        return None
    node._hc_probe = None
    try:
        node._poller.unsubscribe(probe.fileno())
    except (KeyError, ValueError, OSError):
        pass
    return probe


def _drop_probe(node: Any) -> None:
    probe = _unwatch(node)
    if probe is not None:
        probe.close()


def _probed(node: Any, peer: Any, policy: FastFailover, probe: Probe) -> None:
    """A refused probe moves the deadline as a failed redial would, while this follower
    still waits for that leader."""
    if probe.outcome != "refused" or getattr(node, "_hc_fast_left", 0) <= 0:
        return
    if node._SyncObj__raftState != 0 or node._SyncObj__raftLeader != peer:
        return
    from pysyncobj.monotonic import monotonic
    _elect_by(node, peer, policy, node._hc_fast_turn, monotonic(), True, "refused a probe")


def after_tick(node: Any, term_before: float, policy: FastFailover, now: float) -> None:
    """Tick thread, after each tick: a campaign this tick, after a close, retries at this
    follower's turn; a leader heard (or this replica leading) ends the fast retries."""
    left = getattr(node, "_hc_fast_left", 0)
    if left <= 0:
        return
    leader = node._SyncObj__raftLeader
    # Until a campaign, pysyncobj still names the leader that closed the link.
    if leader is not None and (leader != node._hc_fast_from
                               or leader in node._SyncObj__connectedNodes):
        node._hc_fast_left = 0
        _drop_probe(node)
        return
    if node._SyncObj__raftState == _CANDIDATE and node._SyncObj__raftCurrentTerm > term_before:
        node._hc_fast_left = left - 1
        node._SyncObj__raftElectionDeadline = now + delay(policy, node._hc_fast_turn,
                                                          random.random())
