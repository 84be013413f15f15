"""A replica that has heard no leader since it started campaigns within FIRST_TIMEOUT, not
its (longer) election timeout; once it has heard one, or once that first deadline has
passed, only the configured timeouts count (`raft/election_grace.py`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hacontrol.raft.config import RaftTuning
from hacontrol.raft.election_grace import FIRST_TIMEOUT, first_election_soon


def _node(deadline: float, heard_at: float = 0.0) -> Any:
    return SimpleNamespace(_SyncObj__raftElectionDeadline=deadline, _hc_heard_at=heard_at)


def test_a_replica_that_heard_no_leader_campaigns_soon_after_it_starts() -> None:
    tuning = RaftTuning()
    assert FIRST_TIMEOUT[1] < tuning.raft_min_timeout
    for _ in range(50):
        start = 100.0
        node = _node(start + tuning.raft_min_timeout)
        first_election_soon(node, start)
        assert start + FIRST_TIMEOUT[0] <= node._SyncObj__raftElectionDeadline \
            <= start + FIRST_TIMEOUT[1]


def test_the_first_deadline_counts_once_so_a_lost_vote_waits_the_usual_timeout() -> None:
    node = _node(110.0)
    first_election_soon(node, 100.0)
    first = node._SyncObj__raftElectionDeadline
    # The campaign at `first` found no majority: pysyncobj sets a new deadline.
    node._SyncObj__raftElectionDeadline = first + 1.5
    first_election_soon(node, first + 0.01)
    assert node._SyncObj__raftElectionDeadline == first + 1.5


def test_a_replica_that_heard_a_leader_keeps_its_election_timeout() -> None:
    node = _node(102.0, heard_at=100.2)
    first_election_soon(node, 100.25)
    assert node._SyncObj__raftElectionDeadline == 102.0
    transfer = _node(0.0)  # a leadership transfer's forced election is left alone
    first_election_soon(transfer, 100.0)
    assert transfer._SyncObj__raftElectionDeadline == 0.0
