"""Three real replica processes on 127.0.0.1: failover, catch-up, crash recovery."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from tests.integration.raft_helpers.cluster import Cluster, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, size=3, compaction_min_entries=60)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def _ok(resp: dict) -> dict:
    assert resp["outcome"] == "ok", resp
    return resp["result"]


def _assert_has(c: Cluster, i: int, acked: dict[str, int], barrier: bool = True) -> None:
    data = c.read(i, barrier=barrier)["data"]
    missing = {k: v for k, v in acked.items() if data.get(k) != v}
    assert not missing, f"node {i} lost acknowledged writes: {sorted(missing)[:10]}"


def test_follower_writes_failover_and_catch_up(cluster: Cluster) -> None:
    c = cluster
    leader = c.leader()
    follower = (leader + 1) % 3
    acked: dict[str, int] = {}
    for n in range(30):
        _ok(c.set(follower, f"f{n}", n))
        acked[f"f{n}"] = n
    for i in range(3):
        _assert_has(c, i, acked)

    t0 = time.monotonic()
    c.kill(leader)
    survivors = [i for i in range(3) if i != leader]
    new_leader = c.leader(among=survivors, timeout=10)
    elected = time.monotonic() - t0
    assert new_leader != leader
    _ok(c.set(survivors[0], "after-failover", 1))
    first_commit = time.monotonic() - t0
    acked["after-failover"] = 1
    assert first_commit < 5.0, f"first commit after leader kill took {first_commit:.2f}s"
    print(f"leader kill -9: elected in {elected:.2f}s, first commit {first_commit:.2f}s")

    for n in range(100):  # enough to force a compaction on the survivors
        _ok(c.set(survivors[n % 2], f"s{n}", n))
        acked[f"s{n}"] = n
    for i in survivors:
        _assert_has(c, i, acked)

    c.start(leader)
    c.wait_http(leader)

    def caught_up() -> bool:
        data = c.read(leader, barrier=False)["data"]
        return all(data.get(k) == v for k, v in acked.items())

    wait_for(caught_up, 15, "restarted replica to catch up")
    st = c.status(leader)
    assert st is not None and st["healthy"], st


def test_whole_cluster_kill_after_compaction_keeps_acked_writes(cluster: Cluster) -> None:
    c = cluster
    leader = c.leader()
    acked: dict[str, int] = {}
    for n in range(150):
        _ok(c.set(n % 3, f"k{n}", n))
        acked[f"k{n}"] = n
    for i in range(3):
        c.compact(i)
    for i in range(3):
        dump = c.nodes[i].data_dir / "raft.dump"
        wait_for(dump.exists, 10, f"dump file of node {i}")
    # Entries after the dump, so recovery needs dump + journal tail.
    for n in range(150, 170):
        _ok(c.set(leader, f"k{n}", n))
        acked[f"k{n}"] = n

    for i in range(3):
        c.kill(i)
    for i in range(3):
        doc = msgpack.unpackb((c.nodes[i].data_dir / "raft.dump").read_bytes(), raw=False)
        assert doc["format"] == 1 and isinstance(doc["state"], bytes)
    c.start_all()
    c.leader(timeout=15)
    for i in range(3):
        _assert_has(c, i, acked)
    _ok(c.set(0, "after-restart", 1))


def test_outcome_unknown_and_failing_apply(cluster: Cluster) -> None:
    c = cluster
    leader = c.leader()
    follower = (leader + 1) % 3

    # A machine that raises must not stall the log.
    resp = c.submit(leader, op="boom")
    assert resp["outcome"] == "apply_failed", resp
    _ok(c.set(follower, "after-boom", 1))

    # Freeze the leader: the follower forwards to it and never hears back.
    c.signal(leader, signal.SIGSTOP)
    try:
        resp = c.submit(follower, timeout=0.25, retry=False, op="set", k="maybe", v=1)
        assert resp["outcome"] == "unknown", resp
    finally:
        c.signal(leader, signal.SIGCONT)

    c.leader(timeout=10)
    _ok(c.set(follower, "after-thaw", 1))
    for i in range(3):
        data = c.read(i)["data"]
        assert data["after-thaw"] == 1 and data["after-boom"] == 1
        st = c.status(i)
        assert st is not None and st["healthy"], st
