"""The Raft thread's side of linearizable reads: the messages of ReadIndex rounds (the
leader's probes and its voters' acks, readindex.py) and of followers' asks
(follower_reads.py), over our pysyncobj node's links.

These run on the tick thread, over our node's attributes (`_hc_reads`, `_hc_asks`,
`_hc_push`) and pysyncobj's (read from outside its class, so unmangled here). Older
replicas ignore these message types: their leaders never probe and never answer an ask,
and as voters they never answer a probe, so reads there fall back to the log.
"""

from __future__ import annotations

from typing import Any

from hacontrol.raft.follower_reads import ASK, GIVEN, REFUSED
from hacontrol.raft.readindex import ACK, PROBE, LeaderView, ReadOutcome, probe_answer

TYPES = (PROBE, ACK, ASK, GIVEN)
_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER


def leader_view(node: Any) -> LeaderView:
    leader = node._SyncObj__raftState == _LEADER
    commit = node._SyncObj__raftCommitIndex
    noop = node._SyncObj__noopIDx
    return LeaderView(
        leader=leader, term=node._SyncObj__raftCurrentTerm, commit_index=commit,
        applied_index=node._SyncObj__raftLastApplied,
        # The no-op pysyncobj appends on election is this term's first entry.
        own_term_committed=leader and noop is not None and commit >= noop,
        voters=len(node._SyncObj__otherNodes) + 1)


def step(node: Any, now: float) -> None:
    """Every tick: expire, release and start the leader's rounds and the follower's asks."""
    reads, asks = node._hc_reads, node._hc_asks
    send = node._SyncObj__transport.send
    if not reads.idle():
        seq = reads.step(leader_view(node), now)
        if seq is not None:
            probe = {"type": PROBE, "term": node._SyncObj__raftCurrentTerm, "seq": seq}
            for peer in node._SyncObj__otherNodes:
                send(peer, probe)
    if not asks.idle():
        # A replica that leads asks nobody: its reads fail over to the log.
        leading = node._SyncObj__raftState == _LEADER
        leader = None if leading else node._SyncObj__raftLeader
        term = node._SyncObj__raftCurrentTerm
        seq = asks.step(leader, term, node._SyncObj__raftLastApplied, now)
        if seq is not None:
            send(leader, {"type": ASK, "term": term, "seq": seq})


def on_message(node: Any, peer: Any, message: dict[str, Any], now: float) -> None:
    term, seq = message.get("term"), message.get("seq")
    if not isinstance(term, int) or not isinstance(seq, int):
        return
    kind = message["type"]
    if kind == PROBE:
        answer = probe_answer(term, node._SyncObj__raftCurrentTerm)
        if answer is not None:
            node._SyncObj__transport.send(peer, {"type": ACK, "term": answer, "seq": seq})
        return
    if peer not in node._SyncObj__otherNodes:
        return  # acks and asks count from members only
    if kind == ACK:
        if node._hc_reads.ack(str(peer.id), seq, term, leader_view(node)):
            step(node, now)  # reads that arrived meanwhile go at once
    elif kind == ASK:
        if node._SyncObj__raftState != _LEADER:
            _give(node, peer, seq, 0, ReadOutcome.NOT_LEADER)
            return
        node._hc_reads.add(lambda index, outcome: _give(node, peer, seq, index, outcome))
        step(node, now)  # starts a round unless one is out (its end starts the next)
    elif kind == GIVEN:
        index = message.get("index")
        if isinstance(index, int) and node._hc_asks.given(
                seq, index, node._SyncObj__raftLastApplied):
            step(node, now)  # asks queued meanwhile go at once


def _give(node: Any, peer: Any, seq: int, index: int, outcome: ReadOutcome) -> None:
    """The leader's answer to a follower's ask, with the commit index behind it."""
    ok = outcome == ReadOutcome.OK
    node._SyncObj__transport.send(peer, {"type": GIVEN, "term": node._SyncObj__raftCurrentTerm,
                                         "seq": seq, "index": index if ok else REFUSED})
    if ok and node._SyncObj__raftState == _LEADER:
        node._hc_push.wanted_by_follower(index)
        node.hc_push()
