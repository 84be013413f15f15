"""A replica whose Raft thread stops says so in its log, with that thread's stack, and says
so again when it goes on: three real replicas in one process, one follower's Raft thread
held in a call of this test."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from hacontrol.raft import LogBridge, Replica, stall
from tests.integration.harness import wait_for
from tests.integration.raft_helpers.inproc import kv_replicas, kv_set, kv_value, leader

pytestmark = pytest.mark.timeout(90)


def write(lead: Replica, key: str, value: int) -> None:
    asyncio.run(LogBridge(lead).submit(kv_set(key, value), 10.0))


def held_by_the_test(release: threading.Event) -> None:
    release.wait(60)


def test_a_stuck_raft_thread_is_reported_with_its_stack(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stall, "STALL_S", 2.0)
    caplog.set_level(logging.WARNING, logger="hacontrol.raft.stall")
    with kv_replicas(tmp_path) as replicas:
        lead = wait_for(lambda: leader(replicas), 30, what="a leader")
        write(lead, "a", 1)
        follower = next(r for r in replicas if r is not lead)
        wait_for(lambda: kv_value(follower, "a") == 1, 10, what="the follower applied")
        assert not [r for r in caplog.records if "stalled" in r.getMessage()]
        release = threading.Event()
        follower._tick_calls.append(lambda: held_by_the_test(release))
        follower._wake()
        try:
            rec = wait_for(lambda: next((r for r in caplog.records
                                         if "stalled: no Raft tick" in r.getMessage()), None),
                           15, what="the stall reported")
            name = follower.config.node_id
            assert f"replica {name} stalled" in rec.getMessage()
            assert "held_by_the_test" in rec.getMessage()  # where its Raft thread is
            # The others go on, and are not reported.
            write(lead, "b", 2)
            assert all(f"replica {name} " in r.getMessage() for r in caplog.records
                       if r.name == "hacontrol.raft.stall")
        finally:
            release.set()
        wait_for(lambda: any("makes progress again" in r.getMessage()
                             for r in caplog.records), 15, what="the recovery reported")
        wait_for(lambda: kv_value(follower, "b") == 2, 10, what="the follower caught up")


def test_the_stall_rules() -> None:
    p = stall.Progress()
    def s(now: float, tick: float, applied: int, commit: int,
          leader: str | None = "c1") -> stall.Sample:
        return stall.Sample(now, tick, applied, commit, leader)
    assert stall.stalled(s(0, 0, 5, 5), p, 10) is None
    assert stall.stalled(s(9, 9, 5, 9), p, 10) is None  # behind, but only for 9 s
    assert "applied index 5 below commit index 9" in str(stall.stalled(s(10, 10, 5, 9), p, 10))
    assert stall.stalled(s(11, 11, 6, 9), p, 10) is None  # it moved
    assert "no Raft tick for 10.0 s" in str(stall.stalled(s(21, 11, 6, 6), p, 10))
    assert stall.stalled(s(22, 22, 6, 6, None), p, 10) is None
    assert "no leader known" in str(stall.stalled(s(32, 32, 6, 6, None), p, 10))
    assert stall.stalled(s(33, 33, 6, 6), p, 10) is None
    # Heartbeats from a leader that is ahead, and a log that does not follow.
    behind = stall.Sample(40, 40, 6, 6, "c1", leader_commit=9)
    assert "commit index 6 behind its leader's 9" in str(stall.stalled(behind, p, 10))
    assert stall.stalled(stall.Sample(41, 41, 7, 7, "c1", leader_commit=9), p, 10) is None
    assert stall.stalled(stall.Sample(60, 60, 9, 9, "c1", leader_commit=9), p, 10) is None
    # A tick thread that only retries its bind says why.
    unbound = stall.Sample(80, 60, 9, 9, None, not_listening="cannot listen on h:1: in use")
    assert str(stall.stalled(unbound, p, 10)).endswith("s; cannot listen on h:1: in use")
