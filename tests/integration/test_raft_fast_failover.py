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
    c = Cluster(tmp_path, size=3, env={"HC_LOG_LEVEL": "INFO"})
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


def test_a_leader_that_nobody_dials_is_found_gone_by_a_probe(cluster: Cluster) -> None:
    """pysyncobj's greater address dials: when the leader has the greatest, neither
    follower redials it after its links close, and only a probe of its port can show that
    its process is gone (raft/fast_failover.py). The followers then log that the leader
    refused a probe; without the probe they only ever log that it closed its link."""
    c = cluster
    top = max(range(3), key=lambda i: c.nodes[i].raft_addr)
    deadline = time.monotonic() + 40
    leader = c.leader(timeout=15)
    while leader != top:  # kill -9 other leaders until the greatest address leads
        assert time.monotonic() < deadline, "the greatest address never led"
        c.kill(leader)
        c.start(leader)
        c.wait_http(leader)
        leader = c.leader(timeout=15)
    c.set(leader, "k", 1)  # every link is up
    st = c.status(leader)
    assert st is not None
    survivors = [i for i in range(3) if i != leader]
    c.kill(leader)
    wait_for(lambda: _new_leader(c, survivors, st["term"]), 10, "a new leader",
             interval=0.005)
    logs = "".join(c.log(i) for i in survivors)
    assert "refused a probe" in logs, logs[-2000:]
