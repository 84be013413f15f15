"""The Raft layer's durability points, driven message by message (no timers, no sockets).

Our pysyncobj node runs with a recording transport and a journal on in-memory files that
can lose everything not synced. Each send is checked against what was on "disk" at that
moment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.node import TCPNode
from pysyncobj.transport import Transport

from hacontrol.raft import records
from hacontrol.raft.config import VOTE_NO_FSYNC, Durability
from hacontrol.raft.journal import DurableJournal, decode_meta
from hacontrol.raft.node import node_class
from hacontrol.raft.safety import install_fence
from tests.unit.lossy_files import LossyFiles

J = Path("/d/raft.journal")
M = Path("/d/raft.journal.meta")
ME, A, B = "127.0.0.1:7003", "127.0.0.1:7001", "127.0.0.1:7002"


class Recorder(Transport):  # type: ignore[misc]
    """Records what the node sends, and what was synced when it did."""

    def __init__(self, files: LossyFiles) -> None:
        super().__init__(None, None, None)
        self.files = files
        self.sent: list[tuple[str, dict[str, Any], bytes, bytes]] = []
        self.owner: Owner | None = None

    def send(self, node: Any, message: Any) -> bool:
        self.sent.append((node.id, dict(message), self.files.on_disk(J),
                          self.files.on_disk(M)))
        return True

    def of_type(self, kind: str) -> list[tuple[str, dict[str, Any], bytes, bytes]]:
        return [s for s in self.sent if s[1]["type"] == kind]


class Owner:
    def __init__(self) -> None:
        self.applied: list[int] = []
        self.storage_error: str | None = None

    def apply_entry(self, command: bytes, index: int) -> Any:
        self.applied.append(index)
        return index

    def on_storage_error(self, message: str) -> None:
        self.storage_error = message


def start(files: LossyFiles, durability: Durability | None = None,
          peers: list[str] | None = None) -> tuple[Any, Recorder]:
    install_fence()
    conf = SyncObjConf(autoTick=False, appendEntriesUseBatch=True, raftMinTimeout=1000.0,
                       raftMaxTimeout=2000.0, connectionTimeout=1e9,
                       leaderFallbackTimeout=1e9, dynamicMembershipChange=False)
    journal = DurableJournal(J, M, durability or Durability(), files)
    transport = Recorder(files)
    transport.owner = Owner()  # the node holds its owner weakly
    node = node_class()(transport.owner, ME, [A, B] if peers is None else peers, conf,
                        journal, transport)
    return node, transport


def ask_vote(node: Any, who: str, term: int) -> None:
    node._SyncObj__onMessageReceived(TCPNode(who), {
        "type": "request_vote", "term": term, "last_log_index": 1, "last_log_term": 0})


def votes_to(transport: Recorder, who: str, term: int) -> list[Any]:
    return [s for s in transport.of_type("response_vote") if s[0] == who and s[1]["term"] == term]


@pytest.mark.parametrize("durability,double_vote", [
    (Durability(), False),
    (Durability.choose(plant=VOTE_NO_FSYNC), True),
], ids=["durable", "vote-no-fsync"])
def test_a_vote_survives_a_power_loss(durability: Durability, double_vote: bool) -> None:
    files = LossyFiles()
    node, transport = start(files, durability)
    ask_vote(node, A, 5)
    [(_, _, _, meta_when_sent)] = votes_to(transport, A, 5)
    on_disk = decode_meta(meta_when_sent, "meta")
    assert (on_disk.term, on_disk.voted_for) == ((5, A) if not double_vote else (0, None))

    files.power_loss()  # nothing else of the first life reaches the disk
    node2, transport2 = start(files, durability)
    ask_vote(node2, B, 5)
    if double_vote:
        assert votes_to(transport2, B, 5), "the planted fault should vote twice in term 5"
    else:
        assert not votes_to(transport2, B, 5)
        assert (node2.raftCurrentTerm, node2._SyncObj__votedForNodeId) == (5, A)


def test_a_candidate_stores_its_new_term_before_asking_for_votes() -> None:
    files = LossyFiles()
    node, transport = start(files)
    for peer in (A, B):
        node._SyncObj__onNodeConnected(TCPNode(peer))
    node._SyncObj__raftElectionDeadline = 0
    node.doTick(0)
    asks = transport.of_type("request_vote")
    assert {s[0] for s in asks} == {A, B}
    for _, msg, _, meta_when_sent in asks:
        stored = decode_meta(meta_when_sent, "meta")
        assert (stored.term, stored.voted_for) == (msg["term"], ME)


def become_leader(node: Any, transport: Recorder) -> int:
    for peer in (A, B):
        node._SyncObj__onNodeConnected(TCPNode(peer))
    node._SyncObj__raftElectionDeadline = 0
    node.doTick(0)
    term = node.raftCurrentTerm
    node._SyncObj__onMessageReceived(TCPNode(A), {"type": "response_vote", "term": term})
    assert node._isLeader()
    return int(term)


def synced_indexes(files: LossyFiles) -> list[int]:
    return [e[1] for e in records.scan(files.on_disk(J)).entries]


def test_the_leader_counts_itself_only_for_synced_entries() -> None:
    files = LossyFiles()
    node, transport = start(files)
    become_leader(node, transport)
    assert 2 in synced_indexes(files)  # its no-op, synced as it became leader
    node.apply_command(b"x", callback=lambda res, err: None)
    node.doTick(0)  # appends index 3 and sends it; nothing synced it yet
    assert node._SyncObj__getCurrentLogIndex() == 3 and 3 not in synced_indexes(files)
    node._SyncObj__onMessageReceived(TCPNode(A), {
        "type": "next_node_idx", "next_node_idx": 4, "reset": False, "success": True})
    node.doTick(0)  # A and the leader make a majority for index 3
    assert node.raftCommitIndex == 3
    assert 3 in synced_indexes(files)


def leader_with_sync_thread(files: LossyFiles) -> tuple[Any, Recorder]:
    """A leader whose journal syncs in the background; the test plays the sync thread
    (`journal.sync()`), so what is durable when is decided here, not by timing."""
    node, transport = start(files)
    node._hc_journal.background = True
    become_leader(node, transport)
    node.apply_command(b"x", callback=lambda res, err: None)
    node.doTick(0)  # appends index 3
    node._SyncObj__sendAppendEntries()  # as the replica's group-commit push does
    node.hc_flush()  # as at the end of the replica's tick: only asks for a sync
    assert node._SyncObj__getCurrentLogIndex() == 3
    assert node._hc_journal._sync_requested
    [sent] = [s for s in transport.of_type("append_entries")
              if any(e[1] == 3 for e in s[1]["entries"]) and s[0] == A]
    assert 3 not in [e[1] for e in records.scan(sent[2]).entries]  # sent before durable
    return node, transport


def ack(node: Any, who: str, next_idx: int) -> None:
    node._SyncObj__onMessageReceived(TCPNode(who), {
        "type": "next_node_idx", "next_node_idx": next_idx, "reset": False, "success": True})


def test_the_leader_does_not_count_itself_for_an_entry_before_its_fsync() -> None:
    files = LossyFiles()
    node, _ = leader_with_sync_thread(files)
    ack(node, A, 4)
    node.doTick(0)
    node.doTick(0)
    # A has index 3 on disk, the leader only in its buffer: one of three is no majority.
    assert node.raftCommitIndex == 2 and node._hc_journal.durable_index == 2
    assert 3 not in synced_indexes(files)
    node._hc_journal.sync()  # the sync thread's fdatasync completes
    assert node._hc_journal.durable_index == 3
    node.doTick(0)
    assert node.raftCommitIndex == 3


def test_two_followers_commit_an_entry_the_leader_has_not_synced_yet() -> None:
    files = LossyFiles()
    node, _ = leader_with_sync_thread(files)
    ack(node, A, 4)
    ack(node, B, 4)
    node.doTick(0)
    assert node.raftCommitIndex == 3 and 3 not in synced_indexes(files)


def test_a_single_node_syncs_its_no_op_before_committing_it() -> None:
    files = LossyFiles()
    node, _ = start(files, peers=[])
    node._SyncObj__raftElectionDeadline = 0
    node.doTick(0)  # elected, and computes its commit index in the same tick
    assert node._isLeader() and node.raftCommitIndex == 2
    assert 2 in synced_indexes(files)


def append(node: Any, prev: int, prev_term: int, entries: list[tuple[bytes, int, int]],
           term: int = 1, commit: int = 1) -> None:
    node._SyncObj__onMessageReceived(TCPNode(A), {
        "type": "append_entries", "term": term, "commit_index": commit,
        "entries": entries, "prevLogIdx": prev, "prevLogTerm": prev_term})


def successes(transport: Recorder) -> list[tuple[str, dict[str, Any], bytes, bytes]]:
    return [s for s in transport.of_type("next_node_idx") if s[1]["success"]]


def test_a_follower_acknowledges_only_synced_entries_one_fsync_per_poll() -> None:
    files = LossyFiles()
    node, transport = start(files)
    syncs = files.log_syncs
    append(node, 1, 0, [(b"x2", 2, 1), (b"x3", 3, 1)])
    append(node, 3, 1, [(b"x4", 4, 1)])
    assert successes(transport) == []  # held until synced
    assert node.hc_flush()
    assert files.log_syncs == syncs + 1  # one fdatasync for both messages
    acks = successes(transport)
    assert [s[1]["next_node_idx"] for s in acks] == [4, 5]
    for _, msg, journal_when_sent, _ in acks:
        have = [e[1] for e in records.scan(journal_when_sent).entries]
        assert have[-1] >= msg["next_node_idx"] - 1


def test_a_held_ack_is_dropped_when_the_log_is_cut_before_it_goes_out() -> None:
    files = LossyFiles()
    node, transport = start(files)
    append(node, 1, 0, [(b"x2", 2, 1), (b"x3", 3, 1)])
    # A new leader of term 2 replaces index 3 before the first ack was sent.
    append(node, 2, 1, [(b"y3", 3, 2)], term=2)
    assert node.hc_flush()
    assert [s[1]["next_node_idx"] for s in successes(transport)] == [4]
    assert [e[2] for e in records.scan(files.on_disk(J)).entries] == [0, 1, 2]


def test_a_failed_fsync_stops_the_node_without_acknowledging() -> None:
    files = LossyFiles()
    node, transport = start(files)
    journal = node._hc_journal

    def broken() -> None:
        raise OSError(5, "Input/output error")

    journal._log.sync = broken
    append(node, 1, 0, [(b"x2", 2, 1)])
    assert not node.hc_flush()
    assert successes(transport) == []
    assert transport.owner is not None and transport.owner.storage_error is not None
    assert "Input/output error" in transport.owner.storage_error
    append(node, 2, 1, [(b"x3", 3, 1)])  # ignored from now on
    assert successes(transport) == []


def test_a_follower_reads_its_sockets_before_an_election_timeout_missed_in_a_stall() -> None:
    files = LossyFiles()
    node, transport = start(files)
    for peer in (A, B):
        node._SyncObj__onNodeConnected(TCPNode(peer))
    node.doTick(0)  # reads its sockets once
    # The thread then stalled past its deadline without reading (a long fdatasync, say).
    node._hc_polled_at -= 1.0
    node._SyncObj__raftElectionDeadline = node._hc_polled_at + 0.5
    node.doTick(0)
    assert transport.of_type("request_vote") == []  # heard nobody, but read first
    # Nothing came in that poll: the next tick elects.
    while raft_clock() <= node._SyncObj__raftElectionDeadline:
        pass
    node.doTick(0)
    assert {s[0] for s in transport.of_type("request_vote")} == {A, B}


def test_a_follower_that_read_its_sockets_just_before_its_deadline_elects_at_once() -> None:
    files = LossyFiles()
    node, transport = start(files)
    for peer in (A, B):
        node._SyncObj__onNodeConnected(TCPNode(peer))
    node.doTick(0)
    node._SyncObj__raftElectionDeadline = node._hc_polled_at + 0.001
    while raft_clock() <= node._SyncObj__raftElectionDeadline:
        pass
    node.doTick(0)
    assert {s[0] for s in transport.of_type("request_vote")} == {A, B}
