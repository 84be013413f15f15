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

import threading
from dataclasses import dataclass
from typing import Any

from hacontrol.raft.readindex import ReadCallback, ReadOutcome

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


class FollowerReads:
    """A follower's asks. `add` is thread-safe; everything else runs on the tick thread,
    which calls `step` every tick and `given` on every answer."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._incoming: list[ReadCallback] = []
        self._ask: _Ask | None = None
        self._confirmed: list[tuple[int, ReadCallback]] = []
        self._seq = 0
        self._mute: tuple[Any, int] | None = None  # (leader, term) that let an ask expire
        self.answered = 0  # asks answered with an index, for status and tests

    def add(self, callback: ReadCallback) -> bool:
        """Queue a read; True when the tick thread must be woken to send its ask."""
        with self._lock:
            behind = bool(self._incoming)
            self._incoming.append(callback)
            return not behind and self._ask is None

    def idle(self) -> bool:
        return self._ask is None and not self._confirmed and not self._incoming

    def step(self, leader: Any, term: int, applied: int, now: float) -> int | None:
        """Expire the ask out, release answered reads, and start an ask for the reads
        waiting; returns the round number to ask `leader` with, if one started. `leader`
        is the leader this follower knows (None: none)."""
        ask = self._ask
        if ask is not None and (ask.leader is not leader or ask.term != term):
            self._ask = None  # a new leader or term: its answer may never come
            _fire(ask.callbacks, ReadOutcome.LOST)
        elif ask is not None and now > ask.deadline:
            self._ask = None
            self._mute = (ask.leader, ask.term)
            _fire(ask.callbacks, ReadOutcome.LOST)
        self._release(applied)
        if self._ask is not None:
            return None
        with self._lock:
            batch, self._incoming = self._incoming, []
        if not batch:
            return None
        if leader is None or self._mute == (leader, term):
            _fire(batch, ReadOutcome.NOT_LEADER)
            return None
        self._seq += 1
        self._ask = _Ask(self._seq, leader, term, now + self._timeout, batch)
        return self._seq

    def given(self, seq: int, index: int, applied: int) -> bool:
        """The leader's answer; True when it ended the ask out (start the next at once)."""
        ask = self._ask
        if ask is None or seq != ask.seq:
            return False  # an answer to an ask already decided
        self._ask = None
        if index == REFUSED:
            _fire(ask.callbacks, ReadOutcome.NOT_LEADER)
            return True
        self.answered += 1
        self._confirmed.extend((index, cb) for cb in ask.callbacks)
        self._release(applied)
        return True

    def fail_all(self, outcome: ReadOutcome) -> None:
        ask, self._ask = self._ask, None
        confirmed, self._confirmed = self._confirmed, []
        with self._lock:
            batch, self._incoming = self._incoming, []
        if ask is not None:
            _fire(ask.callbacks, outcome)
        for _index, callback in confirmed:
            callback(0, outcome)
        _fire(batch, outcome)

    def _release(self, applied: int) -> None:
        if not self._confirmed:
            return
        ready = [(i, cb) for i, cb in self._confirmed if i <= applied]
        if not ready:
            return
        self._confirmed = [(i, cb) for i, cb in self._confirmed if i > applied]
        for index, callback in ready:
            callback(index, ReadOutcome.OK)


def _fire(callbacks: list[ReadCallback], outcome: ReadOutcome) -> None:
    for callback in callbacks:
        callback(0, outcome)
