"""Three real replica processes: after kill -9 of the leader the others elect as soon as
they see its links close (raft/fast_failover.py), not an election timeout later."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.raft.config import RaftTuning
from tests.integration.raft_helpers.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(60)

TRIALS = 5


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, size=3)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def _new_leader(c: Cluster, survivors: list[int], term: int) -> int | None:
    for i in survivors:
        st = c.status(i)
        if st is not None and st["role"] == "leader" and st["term"] > term:
            return i + 1  # truthy even for node 0
    return None


def test_kill9_of_the_leader_elects_before_an_election_timeout(cluster: Cluster) -> None:
    """Without the shortcut no follower can campaign before `raft_min_timeout` after the
    last heartbeat; with it most kills see a new leader sooner. (Most, not all: the machine
    is shared, and a slow fsync of a vote is not what this checks.)"""
    c = cluster
    min_timeout = RaftTuning().raft_min_timeout
    took: list[float] = []
    for trial in range(TRIALS):
        leader = c.leader(timeout=15)
        c.set(leader, f"k{trial}", trial)  # the cluster is live, every link is up
        st = c.status(leader)
        assert st is not None
        term: int = st["term"]
        survivors = [i for i in range(3) if i != leader]
        t0 = time.monotonic()
        c.kill(leader)
        wait_for(lambda s=survivors, t=term: _new_leader(c, s, t), 10, "a new leader",
                 interval=0.005)
        took.append(time.monotonic() - t0)
        c.start(leader)
        c.wait_http(leader)
        c.leader(timeout=15)
    fast = [t for t in took if t < min_timeout]
    assert len(fast) > TRIALS // 2, (
        f"new leader after {[round(t * 1000) for t in took]} ms; at least "
        f"{TRIALS // 2 + 1} of {TRIALS} should be under {min_timeout * 1000:.0f} ms")
