"""When a follower's election deadline counts: only for time in which it could hear its
leader, and never for a replica that is not a voter. Called by our node (node.py) at the
start of each tick, before pysyncobj checks the deadline."""

from __future__ import annotations

import random
from typing import Any

# Past an election deadline missed while not reading: long enough that pysyncobj's own check
# later in the same tick does not fire, short against any election timeout.
HEAR_GRACE = 0.005
# A tick that starts this long after the last poll ended counts as a stall: a normal one
# starts within a follower's fdatasync (a few ms), and then a missed deadline elects at once
# (failover pays no extra poll).
STALL = 0.02
# A replica that has heard no leader since it started elects within this instead of its
# election timeout (1-2 s, config.py): a cluster starting up has no leader to wait for, and
# one second more at every start would be a second more for every `hacontrol dev` and test
# cluster. These are the election timeouts from before they grew; as then, a restarted
# replica that campaigns before its links to the leader are up deposes it.
FIRST_TIMEOUT = (0.25, 0.5)


def hear_before_electing(node: Any, now: float) -> None:
    """An election timeout counts only time in which this replica could hear the leader.
    pysyncobj checks its deadline at the start of a tick, before it reads its sockets:
    after the tick thread stalled (a slow fdatasync, a long apply, the GIL held by the
    event loop) past the deadline, the leader's heartbeats sit unread and it would start
    an election anyway. Read them first: one more poll. Only after a stall: a dead leader
    then costs at most that poll; a transfer's deadline 0 is left alone.

    `node._hc_polled_at`: when its tick thread last finished reading its sockets;
    `node._hc_grace_deadline`: the deadline a missed one was last moved to."""
    first_election_soon(node, now)
    deadline = node._SyncObj__raftElectionDeadline
    polled = node._hc_polled_at
    if (polled < deadline < now and now - polled > STALL
            and deadline != node._hc_grace_deadline):
        # Once per deadline: a quick tick can end its poll within the grace.
        node._hc_grace_deadline = now + HEAR_GRACE
        node._SyncObj__raftElectionDeadline = node._hc_grace_deadline


def no_campaign_outside(node: Any, owner: Any, now: float) -> None:
    """A replica that is not a voter in its own view (one still joining, or one removed)
    never starts an election: pysyncobj has no pre-vote, so its ever higher term would
    depose the leader the moment it is added (or re-added)."""
    # getattr: owners that know nothing of membership (tests) are always voters.
    voter = getattr(owner, "is_voter", None)
    if voter is not None and not voter():
        node._SyncObj__raftElectionDeadline = now + node._SyncObj__conf.raftMaxTimeout


def silence(node: Any, now: float) -> str:
    """Tick thread: why an election starts, for its log line: how long this replica has
    heard no heartbeat (`node._hc_heard_at`), and since when it has not read its sockets
    (long: the thread itself was held up, not the leader)."""
    heard = (f"no heartbeat for {now - node._hc_heard_at:.2f} s" if node._hc_heard_at
             else "no heartbeat yet")
    return f"{heard}, sockets last read {now - node._hc_polled_at:.2f} s ago"


def first_election_soon(node: Any, now: float) -> None:
    """Until its first deadline has passed, a replica that has heard no heartbeat yet
    (`node._hc_heard_at` 0) campaigns by then (FIRST_TIMEOUT after its first tick); from
    then on, or once it has heard a leader, its election timeout is the configured one."""
    first = node.__dict__.get("_hc_first_deadline")
    if first is None:
        first = node._hc_first_deadline = now + random.uniform(*FIRST_TIMEOUT)
    if not node._hc_heard_at and now < first < node._SyncObj__raftElectionDeadline:
        node._SyncObj__raftElectionDeadline = first
