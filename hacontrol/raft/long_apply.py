"""Keeping a cluster calm while every replica applies one large entry (a restore).

pysyncobj applies committed entries on its tick thread, which also sends heartbeats and
reads the sockets. A `state_restore` of 10,000 jobs takes each replica a second or more to
apply; left alone that cost 12-54 elections per restore (`make bench-snapshot`):

* the leader applied the entry before it told anyone the entry committed (pysyncobj sends
  the commit index at the end of the tick), so the followers heard nothing for the whole
  apply, timed out, and only then started their own apply;
* a follower that finished its apply before the leader found no heartbeat waiting and
  elected itself; a leader that finished first found no answer from the (still applying)
  followers within `leaderFallbackTimeout` and stepped down.

So (the decisions are here, `node.py` only calls them):

1. Before it applies an entry of `heartbeat_before_bytes` or more, the leader sends
   AppendEntries: the followers learn the commit index and apply alongside the leader,
   with their election timers just reset.
2. After an apply that took `took` seconds, silence from the others is expected for about
   as long again (they apply the same entry, possibly slower on a busy machine): a follower
   starts its election timeout only after that grace, a leader stretches its fallback
   timeout by it. Neither touches safety (Raft's timeouts only decide when to act); the
   cost is that a leader dying right after a long apply is noticed `grace` seconds later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# An apply shorter than this keeps the usual timeouts: four heartbeats of silence are
# within what the election timeouts (1-2 s) and node.py's read-before-electing absorb,
# and a busy follower then does not delay noticing a dead leader.
LONG_APPLY_S = 0.2
# The grace never exceeds this: a replica stuck for longer is not applying an entry.
MAX_GRACE_S = 10.0


@dataclass(frozen=True)
class LongApply:
    """`heartbeat_before_bytes`: 0 never sends early. `grace_factor`: the grace as a
    multiple of the apply's duration; 0 grants none."""

    heartbeat_before_bytes: int = 64 * 1024
    grace_factor: float = 1.0

    @property
    def off(self) -> bool:
        return self.heartbeat_before_bytes <= 0 and self.grace_factor <= 0


def heartbeat_first(sizes: Iterable[int], policy: LongApply) -> bool:
    """Whether the leader sends AppendEntries before applying entries of these sizes."""
    limit = policy.heartbeat_before_bytes
    return limit > 0 and any(size >= limit for size in sizes)


def grace(took: float, policy: LongApply) -> float:
    """Seconds of silence from the others to expect after an apply that took `took`."""
    if took < LONG_APPLY_S or policy.grace_factor <= 0:
        return 0.0
    return min(took * policy.grace_factor, MAX_GRACE_S)


def election_deadline(deadline: float, now: float, grace_s: float, timeout: float) -> float:
    """A follower's election deadline after a long apply: the usual timeout counted from
    the end of the grace, never earlier than it already was. A deadline of 0 is a
    leadership transfer's order to campaign now: kept."""
    if grace_s <= 0 or deadline == 0:
        return deadline
    return max(deadline, now + grace_s + timeout)


def fallback_timeout(base: float, now: float, hold_until: float, extra: float) -> float:
    """The leader's `leaderFallbackTimeout` now: stretched by `extra` until `hold_until`."""
    return base + extra if now < hold_until else base
