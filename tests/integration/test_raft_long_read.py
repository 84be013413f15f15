"""A long read of the state does not stop Raft: three real replicas in one process (real
sockets, real journals).

Reads run under the state lock that applies need. A read of the whole state (a list of
thousands of nodes) holds it for up to a second on a loaded machine; the tick thread used
to wait for it inside its apply, so a leader sent no heartbeats meanwhile and its followers
elected another. Now the applies wait for a later tick, and Raft goes on.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.raft import LogBridge, Replica
from hacontrol.raft.config import RaftTuning
from tests.integration.harness import wait_for
from tests.integration.raft_helpers.inproc import kv_replicas, kv_set, kv_value, leader

pytestmark = pytest.mark.timeout(90)

# Four times the longest election timeout: without the put-off applies, followers elect.
HOLD_S = 4 * RaftTuning().raft_max_timeout


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    with kv_replicas(tmp_path) as made:
        yield made


def test_a_read_holding_the_leaders_state_costs_no_election(replicas: list[Replica]) -> None:
    lead = wait_for(lambda: leader(replicas), 15, what="a leader")
    followers = [r for r in replicas if r is not lead]

    async def write(key: str, timeout: float) -> None:
        await LogBridge(lead).submit(kv_set(key, 1), timeout)
    asyncio.run(write("warm", 5.0))
    term = lead.status().term

    reading = threading.Event()

    def long_read() -> None:
        def hold(_machine: object) -> None:
            reading.set()
            time.sleep(HOLD_S)
        lead.read(hold)
    reader = threading.Thread(target=long_read)
    reader.start()
    try:
        assert reading.wait(5)
        started = time.monotonic()

        async def during() -> float:
            task = asyncio.create_task(write("during", 2 * HOLD_S + 5))
            # Committed and applied by the followers while the leader's state is held:
            # the leader's tick thread kept sending.
            await asyncio.to_thread(
                wait_for, lambda: all(kv_value(f, "during") == 1 for f in followers),
                HOLD_S * 0.75, what="the followers to apply a write during the read")
            assert reader.is_alive(), "the read ended first: the test lost its premise"
            await task  # acknowledged once the leader applies it, after the read
            return time.monotonic() - started
        took = asyncio.run(during())
    finally:
        reader.join()
    assert took >= HOLD_S * 0.9, f"acknowledged in {took:.2f} s, before the read ended"
    # The put-off applies resume once the read ends, not at some later event (an election).
    assert took < HOLD_S + 1.0, took
    assert kv_value(lead, "during") == 1
    # Every replica's own word (a deposed leader's tick thread, stuck in its apply, would
    # still say it leads in the old term): nobody started an election.
    wait_for(lambda: all(r.status().applied_index >= lead.status().applied_index
                         for r in replicas), 5, what="every replica to catch up")
    terms = {r.config.node_id: (r.status().role, r.status().term) for r in replicas}
    assert all(t == term for _, t in terms.values()), f"an election during the read: {terms}"
    assert leader(replicas) is lead, terms
