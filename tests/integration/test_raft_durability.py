"""Real controller processes and their files: durability reported, damage refused, torn
tails cut. (The power-loss runs themselves are the chaos suite's.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol import planted
from hacontrol.raft import records

from .harness import Cluster, http, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """Three replicas; c1 runs with --unsafe-no-fsync (allowed: this is a test)."""
    monkeypatch.setenv(planted.ALLOW_ENV, "1")
    c = Cluster(tmp_path / "cluster")
    c.replicas[0].proc.argv.append("--unsafe-no-fsync")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def put_jobs(c: Cluster, n: int, prefix: str) -> None:
    for i in range(n):
        resp = c.write("PUT", f"/v1/jobs/default/{prefix}{i}",
                       {"command": ["sleep", str(i)], "count": 0})
        assert resp.status == 200, resp


def restart(c: Cluster, rid: str) -> None:
    r = next(r for r in c.replicas if r.id == rid)
    r.proc.start()


def test_status_says_which_replicas_fsync(mixed: Cluster) -> None:
    c = mixed
    durable = {r.id: (c.status(r) or {}).get("durable") for r in c.replicas}
    assert durable == {"c1": False, "c2": True, "c3": True}
    assert "FSYNC IS OFF" in c.replicas[0].proc.log.read_text()


def test_damage_before_the_tail_stops_the_replica_torn_tail_is_cut(mixed: Cluster) -> None:
    c = mixed
    put_jobs(c, 20, "a")
    c2, c3 = c.replicas[1], c.replicas[2]
    journal2 = c.root / "c2" / "raft.journal"
    journal3 = c.root / "c3" / "raft.journal"
    c2.proc.stop()
    c3.proc.stop()

    # c2: one flipped bit in a record that has intact records after it.
    data = bytearray(journal2.read_bytes())
    scan = records.scan(bytes(data))
    assert len(scan.offsets) > 10
    data[scan.offsets[len(scan.offsets) // 2] + 20] ^= 0x10
    journal2.write_bytes(bytes(data))
    # c3: the last record was being written when the power went.
    with open(journal3, "ab") as f:
        f.write(records.encode(b"\x01never-synced", 10**6, 99)[:17])
    restart(c, "c2")
    restart(c, "c3")

    def refusing() -> dict | None:
        st = c.status(c2)
        return st if st and st.get("storage_error") else None

    st = wait_for(refusing, 30, what="c2 to report its damaged journal")
    assert "damaged before its tail" in st["storage_error"] and not st["healthy"]
    assert http("GET", f"{c2.api}/v1/health/ready", timeout=2).status == 503
    assert c.api("GET", "/v1/jobs/default/a1", replica=c2).status == 503
    assert c.api("PUT", "/v1/jobs/default/b0", {"command": ["sleep", "1"], "count": 0},
                 replica=c2).status == 503

    # c3 cut its torn tail, caught up, and serves; c1 and c3 keep the cluster going.
    wait_for(lambda: http("GET", f"{c3.api}/v1/health/ready", timeout=2).status == 200, 30,
             what="c3 ready after cutting its torn tail")
    assert "cutting off a torn tail" in c3.proc.log.read_text()
    put_jobs(c, 3, "b")
    got = c.api("GET", "/v1/jobs/default/a19", replica=c3)
    assert got.status == 200, got
