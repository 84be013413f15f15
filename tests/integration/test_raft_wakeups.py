"""What wakes the Raft tick thread: three real replicas in one process (real sockets, real
journals), whose timers are then pushed out of reach.

Once the cluster runs, every replica's poll period and heartbeat are set to 60 s and its
election and leader-fallback timeouts far beyond: from then on nothing but an event (a
proposal, a read, a message on a socket, a finished sync) makes any tick thread work. A
write, a write through a follower and a ReadIndex read must each still complete well within
one such period, and a leader with nothing to do must not tick at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.controller.replica import Controller
from hacontrol.controller.status import Member
from hacontrol.model.resources import Quota
from hacontrol.raft import LogBridge, Replica, ReplicaConfig, commit_push
from hacontrol.raft.keys import generate_secret
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from tests.integration.harness import free_ports, wait_for
from tests.integration.raft_helpers.inproc import kv_replicas, kv_set, kv_value, leader

pytestmark = pytest.mark.timeout(90)

SLOW = 60.0  # the timers' period once pushed out: far beyond every deadline below
WITHIN = 10.0  # what an event-driven step may take on a loaded machine


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    with kv_replicas(tmp_path) as made:
        yield made


def _stop_timers(replicas: list[Replica]) -> None:
    """Push every timer of every replica out to `SLOW` and beyond (pysyncobj reads these
    from its conf at each use; our node keeps its own copy of the fallback timeout)."""
    for r in replicas:
        node = r._node
        conf = node._SyncObj__conf
        conf.autoTickPeriod = SLOW
        conf.appendEntriesPeriod = SLOW
        conf.raftMinTimeout = 10 * SLOW
        conf.raftMaxTimeout = 20 * SLOW
        node._hc_fallback = 10 * SLOW


class _Ticks:
    """Counts a replica's ticks (pysyncobj's on-tick callbacks run once per tick)."""

    def __init__(self, replica: Replica) -> None:
        self.count = 0
        replica._node.addOnTickCallback(self._tick)

    def _tick(self) -> None:
        self.count += 1


def _settled(replicas: list[Replica]) -> None:
    """Every replica has applied what the leader has and been through a tick since the
    timers were pushed out (its poll now waits `SLOW`)."""
    lead = leader(replicas)
    assert lead is not None, "the leader changed: the test lost its premise"
    target = lead.status().commit_index
    wait_for(lambda: all(r.status().applied_index >= target for r in replicas), WITHIN,
             what="every replica to apply the leader's entries")


def _quieten(replicas: list[Replica]) -> None:
    _stop_timers(replicas)
    # One heartbeat may still be due from the old period; let every thread get through it.
    time.sleep(0.5)
    _settled(replicas)


def _quiet_pair(replicas: list[Replica],
                monkeypatch: pytest.MonkeyPatch) -> tuple[Replica, Replica]:
    """The leader and a follower of a quietened cluster whose leader would push a commit
    index alone only after the test's deadline."""
    lead = wait_for(lambda: leader(replicas), 15, what="a leader")
    follower = next(r for r in replicas if r is not lead)
    _quieten(replicas)
    monkeypatch.setattr(commit_push, "DELAY_S", 3 * WITHIN)
    return lead, follower


def test_only_events_wake_the_tick_threads(replicas: list[Replica]) -> None:
    lead = wait_for(lambda: leader(replicas), 15, what="a leader")
    followers = [r for r in replicas if r is not lead]

    async def warm_up() -> None:
        await LogBridge(lead).submit(kv_set("warm", 1), 5.0)
    asyncio.run(warm_up())
    wait_for(lambda: all(kv_value(r, "warm") == 1 for r in replicas), WITHIN,
             what="the warm-up write")
    _quieten(replicas)

    # Idle: no timer is due for a minute and nobody proposes or reads, so no tick thread
    # has anything to do. (A leader whose journal sync woke it after every empty sync
    # ticked thousands of times a second here.)
    ticks = {id(r): _Ticks(r) for r in replicas}
    time.sleep(1.0)
    idle = {r.config.node_id: ticks[id(r)].count for r in replicas}
    assert all(n <= 3 for n in idle.values()), f"ticks in an idle second: {idle}"

    async def events() -> None:
        # A proposal wakes the leader, the append goes out at once, each follower's socket
        # wakes it to sync and answer, the answers wake the leader to commit and apply.
        started = time.monotonic()
        await LogBridge(lead).submit(kv_set("a", 1), WITHIN)
        # ... and the commit index follows within commit_push.DELAY_S: the followers
        # apply too.
        await asyncio.to_thread(wait_for, lambda: all(kv_value(r, "a") == 1 for r in followers),
                                WITHIN, what="the followers to apply the write")
        # A write through a follower: forwarded when proposed, applied there once the
        # leader's commit reaches it.
        await LogBridge(followers[0]).submit(kv_set("b", 2), WITHIN)
        # A read: the leader probes when asked, and is woken by the answers.
        index = await LogBridge(lead).read_index(WITHIN)
        assert index >= lead.status().commit_index - 1 and kv_value(lead, "b") == 2
        assert time.monotonic() - started < SLOW, "a timer must have fired"

    asyncio.run(events())
    assert leader(replicas) is lead, "the leader changed: the test lost its premise"


def test_a_write_through_a_follower_does_not_wait_for_a_delayed_commit_push(
        replicas: list[Replica], monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower applies its own proposal before it answers: once a follower has proposed,
    the leader pushes commit indexes at once, not `DELAY_S` later (here beyond the test's
    deadline) nor with the next heartbeat (a minute out)."""
    lead, follower = _quiet_pair(replicas, monkeypatch)

    async def through_follower() -> None:
        for i in range(3):
            await LogBridge(follower).submit(kv_set(f"f{i}", i), WITHIN)
    asyncio.run(through_follower())
    assert [kv_value(follower, f"f{i}") for i in range(3)] == [0, 1, 2]
    assert leader(replicas) is lead, "the leader changed: the test lost its premise"


def test_a_follower_given_a_read_index_hears_the_commit_index_at_once(
        replicas: list[Replica], monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower's read waits until it has applied the index the leader gave it, which
    may be beyond the commit index it knows: the leader pushes it with its answer."""
    lead, follower = _quiet_pair(replicas, monkeypatch)

    async def scenario() -> None:
        for i in range(3):
            await LogBridge(lead).submit(kv_set("r", i), WITHIN)
            last = lead._node._SyncObj__raftLog[-1][1]
            await LogBridge(follower).linearize(kv_set("noop", 0), WITHIN)
            assert kv_value(follower, "r") == i
            assert lead._node._SyncObj__raftLog[-1][1] == last, "read through the log"
    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < WITHIN
    assert follower._node._hc_asks.answered == 3
    assert leader(replicas) is lead, "the leader changed: the test lost its premise"


def test_a_writer_hears_its_result_before_the_change_feed_wakes_anyone(
        tmp_path: Path) -> None:
    """Waiters on the change feed (the leader loop, long polls) run on the same event loop
    as the write's answer: woken by the apply itself, the leader loop's pass over the
    state ran before every answer. They are woken once the results are handed over."""
    addr = f"127.0.0.1:{free_ports(1)[0]}"
    machine = StateMachine()
    replica = Replica(ReplicaConfig(node_id="n0", raft_addr=addr, peers=[],
                                    data_dir=tmp_path / "n0", secret=generate_secret()),
                      machine)
    ctl = Controller(Member("n0", addr, "http://127.0.0.1:9"), [], replica, machine)
    try:
        wait_for(lambda: replica.status().role == "leader", 15,
                 what="the single replica to lead")

        async def scenario() -> list[str]:
            ctl.attach_loop(asyncio.get_running_loop())
            order: list[str] = []

            async def watch() -> None:
                await ctl.wait_changed(WITHIN)
                order.append("changed")

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(0)  # the watcher is waiting on the feed
            for i in range(3):
                await ctl.write(C.NS_PUT, {"name": f"ns{i}", "quota": Quota().to_dict()})
                order.append("written")
                await watcher
                watcher = asyncio.create_task(watch())
                await asyncio.sleep(0)
            watcher.cancel()
            return order

        assert asyncio.run(scenario()) == ["written", "changed"] * 3
    finally:
        replica.destroy()
