"""Linearizable reads on a follower: it asks the leader for a read index (ReadIndex, as etcd's
followers do) instead of committing a no-op through the log.

1. The follower sends `ASK` (its term, a round number) to the leader it knows, for every
   read that arrived since its last ask (reads arriving while an ask is out wait for the
   next one: an older ask may predate them).
2. The leader treats the ask as one of its own reads (readindex.py): it records its commit
   index, confirms its leadership with a heartbeat round, and answers `GIVEN` with that
   index once confirmed (or -1 when it cannot: it does not lead, its term has no committed
   entry yet, the round was lost). It then sends its commit index at once if the follower
   may not know it yet (commit_push.py).
3. The follower serves the reads once it has applied up to that index. Every write
   acknowledged before the read arrived is committed at or below the index, and the
   follower's applied entries are that same committed log: linearizable, as on the leader.

A refused or unanswered ask (the leader changed, a round lost, a leader too old to know the
message types) fails its reads with LOST or NOT_LEADER; the caller then commits a no-op as
before, which is always safe. A leader that left an ask unanswered until its deadline is
not asked again in that term: its followers go straight to the no-op.

This module is the decision logic only (no I/O, no pysyncobj); the tick thread feeds it and
sends what it asks for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hacontrol.raft.readindex import ReadBatches, ReadCallback, ReadOutcome, fail

ASK = "hc_read_ask"  # follower -> leader: {"type", "term", "seq"}
GIVEN = "hc_read_given"  # leader -> follower: {"type", "term", "seq", "index"}; -1: refused
REFUSED = -1


@dataclass
class _Ask:
    seq: int
    leader: Any  # the node asked
    term: int
    deadline: float
    callbacks: list[ReadCallback]


class FollowerReads(ReadBatches[_Ask]):
    """A follower's asks: the tick thread calls `step` every tick and `given` on every
    answer."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self._mute: tuple[Any, int] | None = None  # (leader, term) that let an ask expire
        self.answered = 0  # asks answered with an index, for status and tests

    def step(self, leader: Any, term: int, applied: int, now: float) -> int | None:
        """Expire the ask out, release answered reads, and start an ask for the reads
        waiting; returns the round number to ask `leader` with, if one started. `leader`
        is the leader this follower knows (None: none)."""
        ask = self._out
        if ask is not None and (ask.leader is not leader or ask.term != term):
            self._drop_out(ReadOutcome.LOST)  # a new leader or term: its answer may never come
        elif ask is not None and now > ask.deadline:
            self._mute = (ask.leader, ask.term)
            self._drop_out(ReadOutcome.LOST)
        self._release(applied)
        if self._out is not None:
            return None
        batch = self._take_batch()
        if not batch:
            return None
        if leader is None or self._mute == (leader, term):
            fail(batch, ReadOutcome.NOT_LEADER)
            return None
        self._seq += 1
        self._out = _Ask(self._seq, leader, term, now + self._timeout, batch)
        return self._seq

    def given(self, seq: int, index: int, applied: int) -> bool:
        """The leader's answer; True when it ended the ask out (start the next at once)."""
        ask = self._out
        if ask is None or seq != ask.seq:
            return False  # an answer to an ask already decided
        if index == REFUSED:
            self._drop_out(ReadOutcome.NOT_LEADER)
            return True
        self._out = None
        self.answered += 1
        self._confirm(index, ask.callbacks, applied)
        return True
