"""raft/long_apply.py: when the leader heartbeats first, and the grace after a long apply."""

from __future__ import annotations

from hacontrol.raft.long_apply import (
    LONG_APPLY_S,
    MAX_GRACE_S,
    LongApply,
    election_deadline,
    fallback_timeout,
    grace,
    heartbeat_first,
)

ON = LongApply(heartbeat_before_bytes=64 * 1024, grace_factor=1.0)
OFF = LongApply(heartbeat_before_bytes=0, grace_factor=0.0)


def test_the_leader_heartbeats_first_only_before_a_large_entry() -> None:
    assert heartbeat_first([100, 64 * 1024, 5], ON)
    assert not heartbeat_first([100, 64 * 1024 - 1], ON)
    assert not heartbeat_first([], ON)
    assert not heartbeat_first([10**7], OFF)
    assert OFF.off and not ON.off


def test_grace_follows_the_apply_and_is_bounded() -> None:
    assert grace(LONG_APPLY_S / 2, ON) == 0.0  # the usual timeouts absorb it
    assert grace(1.5, ON) == 1.5
    assert grace(1.5, LongApply(grace_factor=2.0)) == 3.0
    assert grace(100.0, ON) == MAX_GRACE_S
    assert grace(1.5, OFF) == 0.0


def test_a_follower_counts_its_timeout_from_after_the_grace() -> None:
    # A deadline that passed during the apply moves past the grace.
    assert election_deadline(deadline=10.0, now=12.0, grace_s=2.0, timeout=0.3) == 14.3
    # One already later stays (a heartbeat read meanwhile).
    assert election_deadline(deadline=20.0, now=12.0, grace_s=2.0, timeout=0.3) == 20.0
    # No grace, or a transfer's "campaign now" (0): untouched.
    assert election_deadline(deadline=10.0, now=12.0, grace_s=0.0, timeout=0.3) == 10.0
    assert election_deadline(deadline=0, now=12.0, grace_s=2.0, timeout=0.3) == 0


def test_the_leader_fallback_is_stretched_until_the_hold_ends() -> None:
    assert fallback_timeout(1.0, now=5.0, hold_until=6.0, extra=2.0) == 3.0
    assert fallback_timeout(1.0, now=6.0, hold_until=6.0, extra=2.0) == 1.0
    assert fallback_timeout(1.0, now=5.0, hold_until=0.0, extra=0.0) == 1.0
