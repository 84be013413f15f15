"""ReadIndex on three real replicas in one process (real sockets, real journals).

The partition is made by dropping messages at each replica's transport: nothing reaches the
isolated replica and nothing leaves it. Its leader fallback is set far beyond the test, so
it keeps believing it leads while the other two elect a leader and commit a write: the case
where serving a read from local state (or from `_isLeader()`) would be stale.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hacontrol.raft import LogBridge, NotApplied, OutcomeUnknown, RaftTuning, Replica
from hacontrol.raft.follower_reads import ASK
from hacontrol.raft.readindex import ACK, PROBE
from tests.integration.harness import wait_for
from tests.integration.raft_helpers.inproc import kv_replicas, kv_set, kv_value, leader
from tests.integration.raft_helpers.kv_node import NOOP

pytestmark = pytest.mark.timeout(60)

# Long enough that the isolated leader never steps down by itself during the test.
TUNING = RaftTuning(leader_fallback_timeout=120.0)


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    with kv_replicas(tmp_path, TUNING) as made:
        yield made


def _isolate(replicas: list[Replica], lone: Replica) -> set[str]:
    """Drop every Raft message between `lone` and the others, both ways, except those whose
    type is added to the returned set."""
    passing: set[str] = set()
    lone_addr = lone.config.raft_addr
    others = {r.config.raft_addr for r in replicas if r is not lone}
    for r in replicas:
        blocked = others if r is lone else {lone_addr}
        transport = r._node._SyncObj__transport
        real = transport.send

        def send(node: Any, message: Any, real: Any = real, blocked: set[str] = blocked) -> bool:
            if (getattr(node, "address", None) in blocked
                    and not (isinstance(message, dict) and message.get("type") in passing)):
                return False
            return bool(real(node, message))

        transport.send = send
    return passing


def _last_index(r: Replica) -> int:
    return int(r._node._SyncObj__raftLog[-1][1])


def test_leader_reads_by_read_index_and_batches_concurrent_reads(
        replicas: list[Replica]) -> None:
    async def scenario() -> None:
        lead = await asyncio.to_thread(wait_for, lambda: leader(replicas), 15,
                                      what="a leader")
        bridge = LogBridge(lead)
        await bridge.submit(kv_set("k", 1), 5.0)
        before = lead.read_index_rounds
        index = await bridge.read_index(2.0)
        assert index >= lead.status().commit_index - 1 and kv_value(lead, "k") == 1
        assert lead.read_index_rounds == before + 1
        # 64 concurrent reads share a handful of rounds instead of one each.
        before = lead.read_index_rounds
        got = await asyncio.gather(*(bridge.linearize(NOOP, 2.0) for _ in range(64)))
        assert all(i >= index for i in got)
        assert 1 <= lead.read_index_rounds - before <= 8, lead.read_index_rounds - before
        # A follower asks the leader for a read index: no entry in the log, and the
        # write acknowledged before is in what the follower serves.
        follower = next(r for r in replicas if r is not lead)
        await bridge.submit(kv_set("k", 2), 5.0)
        last = _last_index(lead)
        rounds = lead.read_index_rounds
        given = await LogBridge(follower).linearize(NOOP, 5.0)
        assert given >= last and kv_value(follower, "k") == 2
        assert follower._node._hc_asks.answered == 1 and lead.read_index_rounds > rounds
        got = await asyncio.gather(*(LogBridge(follower).linearize(NOOP, 2.0)
                                     for _ in range(32)))
        assert all(i >= given for i in got)
        assert 2 <= follower._node._hc_asks.answered <= 9  # a handful of asks for all
        assert _last_index(lead) == last, "a follower's read wrote to the log"

    asyncio.run(scenario())


def test_a_follower_whose_leader_does_not_answer_asks_reads_through_the_log(
        replicas: list[Replica]) -> None:
    """A leader too old to know the asks (here: the asks are dropped on the way) costs the
    first read one ask's deadline, then the follower goes to the log at once."""
    async def scenario() -> None:
        lead = await asyncio.to_thread(wait_for, lambda: leader(replicas), 15,
                                      what="a leader")
        await LogBridge(lead).submit(kv_set("k", 1), 5.0)
        follower = next(r for r in replicas if r is not lead)
        transport = follower._node._SyncObj__transport
        real = transport.send

        def send(node: Any, message: Any) -> bool:
            if isinstance(message, dict) and message.get("type") == ASK:
                return False
            return bool(real(node, message))
        transport.send = send
        last = _last_index(lead)
        bridge = LogBridge(follower)
        await bridge.linearize(NOOP, 5.0)  # after the ask's deadline, by a no-op
        assert _last_index(lead) > last and kv_value(follower, "k") == 1
        started = time.monotonic()
        for _ in range(3):
            await bridge.linearize(NOOP, 5.0)
        assert time.monotonic() - started < 0.5, "asked a mute leader again"
        assert follower._node._hc_asks.answered == 0

    asyncio.run(scenario())


def test_a_deposed_leader_that_still_believes_it_leads_serves_no_read(
        replicas: list[Replica]) -> None:
    async def scenario() -> None:
        old = await asyncio.to_thread(wait_for, lambda: leader(replicas), 15,
                                      what="a leader")
        old_bridge = LogBridge(old)
        await old_bridge.submit(kv_set("k", 1), 5.0)
        assert await old_bridge.read_index(2.0) > 0
        old_term = old.status().term
        rounds = old.read_index_rounds

        passing = _isolate(replicas, old)
        rest = [r for r in replicas if r is not old]
        new = await asyncio.to_thread(wait_for, lambda: leader(rest, old_term), 15,
                                      what="a leader among the majority")
        await LogBridge(new).submit(kv_set("k", 2), 5.0)

        # The old leader has not noticed: it still says it leads, in its old term, and
        # its own state is stale.
        st = old.status()
        assert (st.role, st.term) == ("leader", old_term)
        assert kv_value(old, "k") == 1
        with pytest.raises(OutcomeUnknown):
            await old_bridge.read_index(3.0)
        # The whole linearizable path (ReadIndex, then the log) refuses too.
        with pytest.raises((NotApplied, OutcomeUnknown)):
            await old_bridge.linearize(NOOP, 1.5)
        # Let only the probes and their answers through: the voters answer with their
        # newer term, and the old leader learns from that it may not serve the read.
        passing.update({PROBE, ACK})
        started = time.monotonic()
        with pytest.raises(OutcomeUnknown, match="LOST"):
            await old_bridge.read_index(3.0)
        assert time.monotonic() - started < 1.0  # told, not timed out
        st = old.status()
        assert (st.role, st.term) == ("leader", old_term), "the test lost its premise"
        assert old.read_index_rounds == rounds
        # The new leader serves the new value by ReadIndex.
        assert await LogBridge(new).read_index(2.0) > 0 and kv_value(new, "k") == 2

    asyncio.run(scenario())
