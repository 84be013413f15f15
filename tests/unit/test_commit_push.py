"""When the leader pushes AppendEntries between heartbeats (raft/commit_push.py)."""

from __future__ import annotations

import pytest

from hacontrol.raft.commit_push import DELAY_S, CommitPush


def test_new_entries_go_out_at_once() -> None:
    p = CommitPush()
    assert p.push_now(last_index=5, commit=4, now=0.0)
    assert not p.push_now(last_index=5, commit=4, now=0.001)  # nothing new
    assert p.push_now(last_index=6, commit=4, now=0.002)


def test_a_commit_index_alone_waits_and_the_poll_ends_when_it_is_due() -> None:
    p = CommitPush()
    assert p.push_now(last_index=5, commit=4, now=0.0)
    # The acks arrive; the next tick learns the commit: its poll ends when the push is due.
    assert p.wait(0.05, commit=5, now=1.0) == pytest.approx(DELAY_S)
    assert not p.push_now(last_index=5, commit=5, now=1.0)
    assert p.wait(0.05, commit=5, now=1.0 + DELAY_S / 2) == pytest.approx(DELAY_S / 2)
    assert not p.push_now(last_index=5, commit=5, now=1.0 + DELAY_S / 2)
    assert p.push_now(last_index=5, commit=5, now=1.0 + DELAY_S)
    assert p.wait(0.05, commit=5, now=1.1) == 0.05  # nothing left to push


def test_the_next_entries_carry_the_commit_index() -> None:
    p = CommitPush()
    p.push_now(last_index=5, commit=4, now=0.0)
    p.wait(0.05, commit=5, now=1.0)
    assert p.push_now(last_index=6, commit=5, now=1.001)  # the next write goes out at once
    assert p.wait(0.05, commit=5, now=1.002) == 0.05  # and took the commit index along
    assert not p.push_now(last_index=6, commit=5, now=1.0 + 2 * DELAY_S)


def test_until_a_followers_proposal_is_committed_commit_indexes_go_out_at_once() -> None:
    p = CommitPush()
    p.push_now(last_index=5, commit=4, now=0.0)
    p.proposed_by_follower()  # in the poll; the next tick appends it as 6
    assert p.push_now(last_index=6, commit=4, now=1.0)
    p.wait(0.05, commit=5, now=1.001)
    assert p.push_now(last_index=6, commit=5, now=1.001)  # 6 not yet, but 5 goes at once
    p.wait(0.05, commit=6, now=1.002)
    assert p.push_now(last_index=6, commit=6, now=1.002)  # the follower waits to apply 6
    # Once that commit went out, a commit index waits again.
    assert p.push_now(last_index=7, commit=6, now=1.003)
    p.wait(0.05, commit=7, now=1.004)
    assert not p.push_now(last_index=7, commit=7, now=1.004)


def test_a_push_overdue_at_the_start_of_a_tick_never_makes_the_poll_spin() -> None:
    p = CommitPush()
    p.push_now(last_index=5, commit=4, now=0.0)
    p.wait(0.05, commit=5, now=1.0)
    # Due, and nobody pushed (say group commit is off): the poll keeps its own timeout.
    assert p.wait(0.05, commit=5, now=1.0 + DELAY_S) == 0.05
