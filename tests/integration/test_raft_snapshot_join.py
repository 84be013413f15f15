"""A replica joins through a leader that itself joined after the snapshot it sends.

Real replicas in one process (real sockets, journals and dumps). pysyncobj installs a
received snapshot together with the configuration stored in it: the members at the time the
snapshot was taken, which need not include the leader sending it (a leader that joined
later forwards the dump it received when it joined). pysyncobj then dropped the link to that
leader, and since a replica only accepts connections from members of its own configuration
(and only one side of each pair dials), the joiner never heard from it again: it stayed at
the snapshot's index, and the leader saw it dead with match index 0, until another replica
led (the chaos `membership` nemesis, netns seed 4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.raft import LogBridge, NotApplied, Replica, ReplicaConfig
from hacontrol.raft.keys import generate_secret
from hacontrol.raft.membership import MemberBook, MemberInfo, change_payload
from tests.integration.harness import free_ports, wait_for
from tests.integration.raft_helpers.inproc import kv_set, leader
from tests.integration.raft_helpers.kv_node import KvMachine

pytestmark = pytest.mark.timeout(90)


def _first_index(r: Replica) -> int:
    """Where the replica's log starts: above 1 once it compacted or installed a snapshot
    (0 while the tick thread is replacing its log)."""
    try:
        return int(r._node._SyncObj__raftLog[0][1])
    except IndexError:
        return 0


class Nodes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.secret = generate_secret()
        self.ports = free_ports(5)
        self.made: list[Replica] = []

    def info(self, i: int) -> MemberInfo:
        addr = f"127.0.0.1:{self.ports[i]}"
        return MemberInfo(f"n{i}", addr, f"http://{addr}")

    def start(self, i: int, peers: list[int], joining: bool = False) -> Replica:
        me = self.info(i)
        book = MemberBook(None, me, [self.info(p) for p in peers], joining=joining)
        config = ReplicaConfig(node_id=me.id, raft_addr=me.raft,
                               peers=[self.info(p).raft for p in peers],
                               data_dir=self.root / me.id, secret=self.secret)
        r = Replica(config, KvMachine(), book)
        self.made.append(r)
        return r


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        for r in n.made:
            r.destroy()


async def _join(nodes: Nodes, lead: Replica, i: int, peers: list[int]) -> Replica:
    joiner = nodes.start(i, peers, joining=True)
    await LogBridge(lead).change_membership(change_payload("add", nodes.info(i)), 10.0)
    return joiner


def _caught_up(among: list[Replica], joiner: Replica, index: int) -> bool:
    lead = leader(among)
    if lead is None:
        return False
    match, _seen, connected = lead.peer_view().get(joiner.config.raft_addr, (0, None, False))
    return joiner.status().applied_index >= index and match >= index and connected


def test_a_joiner_catches_up_from_a_leader_missing_from_the_snapshot(nodes: Nodes) -> None:
    async def scenario() -> None:
        first = [nodes.start(i, [p for p in range(3) if p != i]) for i in range(3)]
        lead = await asyncio.to_thread(wait_for, lambda: leader(first), 15, what="a leader")
        bridge = LogBridge(lead)
        for v in range(20):
            await bridge.submit(kv_set("k", v), 5.0)
        # A snapshot of n0-n2 only: every later joiner is sent this dump.
        lead.force_compaction()
        await asyncio.to_thread(wait_for, lambda: _first_index(lead) > 1, 15,
                                what="a compaction")

        d = await _join(nodes, lead, 3, [0, 1, 2])
        await asyncio.to_thread(wait_for, lambda: _first_index(d) > 1 and _caught_up(
            first, d, lead.status().commit_index), 20,
            what="n3 installed the snapshot, caught up")

        # n3 leads: the dump it would send a joiner names n0-n2, not n3.
        async def hand_over() -> None:
            while leader(first + [d]) is not d:
                try:
                    await LogBridge(lead).transfer_leadership(d.config.raft_addr, 1.0)
                except NotApplied:
                    pass
                await asyncio.sleep(0.2)
        await asyncio.wait_for(hand_over(), 20)
        await LogBridge(d).submit(kv_set("k", 100), 5.0)

        e = await _join(nodes, d, 4, [0, 1, 2, 3])
        target = d.status().commit_index
        try:
            await asyncio.to_thread(wait_for, lambda: _caught_up(nodes.made, e, target), 20,
                                    what="n4 caught up through n3")
        except AssertionError as exc:
            peers = sorted(n.address for n in e._node._SyncObj__otherNodes)
            raise AssertionError(f"{exc}: n4 {e.status()}, its peers {peers}; n3 {d.status()} "
                                 f"sees it as {d.peer_view().get(e.config.raft_addr)}"
                                 ) from None
        assert _first_index(e) > 1, "n4 was expected to start from a snapshot"
        await LogBridge(d).submit(kv_set("k", 101), 5.0)
        await asyncio.to_thread(
            wait_for, lambda: e.read(lambda m: m.data.get("k")) == 101, 10,  # type: ignore[attr-defined]
            what="n4 applying new entries")
        assert e.book.is_member() and d.config.raft_addr in {
            m.raft for m in e.book.members()}
        # The link kept for n3 became the member's own: one connection, nothing left kept.
        assert e._node._hc_kept is None
        assert d.config.raft_addr in {n.address for n in e._node._SyncObj__otherNodes}

    asyncio.run(scenario())
