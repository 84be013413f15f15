"""ReadIndex: linearizable reads confirmed by one heartbeat round instead of a log entry.

Raft thesis section 6.4 (paper section 8), as etcd does it. For a batch of reads the leader
1. has committed an entry of its own term (the no-op pysyncobj appends on election), so its
   commit index covers every entry committed before it was elected;
2. records its commit index as the batch's read index;
3. sends a probe carrying its term and a round number to every voter, and waits for a
   majority (itself included) to answer that their current term is the same. A voter
   whose term is the leader's has voted in no later term, so no other leader was elected
   before it answered: when the majority has answered, no write acknowledged before the
   batch arrived is missing below the read index;
4. serves the reads once its applied index reaches the read index.

Reads arriving while a round is in flight wait for the next one (an older round's
confirmation may predate them). A round that loses its term or its majority within the
deadline is reported as lost; the caller falls back to a no-op through the log.

This module is the decision logic only (no I/O, no pysyncobj): `ReadRounds` runs on the tick
thread, which feeds it the leader's view and sends the probes it asks for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Generic, Protocol, TypeVar


class ReadOutcome(IntEnum):
    OK = 0
    NOT_LEADER = 1  # this replica does not lead: ask through the log (it forwards)
    NOT_READY = 2  # leading, but its own term has no committed entry yet
    LOST = 3  # term changed, a voter has a newer term, or no majority in time


# (read index, outcome); the index is meaningful only with OK. Runs on the tick thread.
ReadCallback = Callable[[int, ReadOutcome], None]

PROBE = "hc_read_probe"
ACK = "hc_read_ack"


@dataclass(frozen=True)
class LeaderView:
    """What the tick thread knows, read once per decision."""

    leader: bool
    term: int
    commit_index: int
    applied_index: int
    own_term_committed: bool  # an entry of `term` is committed (the election no-op)
    voters: int  # members with a vote, this replica included


@dataclass
class _Round:
    seq: int
    term: int
    index: int
    deadline: float
    callbacks: list[ReadCallback]
    acks: set[str] = field(default_factory=set)


def quorum(voters: int) -> int:
    return voters // 2 + 1


def probe_answer(probe_term: int, my_term: int) -> int | None:
    """The term a voter answers a probe with, or None to stay silent.

    The same term confirms the prober still leads; a newer one tells it that it no longer
    does. A probe from a newer term than ours is left unanswered: the prober's heartbeat
    will bring us that term, and the next round confirms.
    """
    if probe_term > my_term:
        return None
    return my_term


class _Batch(Protocol):
    callbacks: list[ReadCallback]


_BatchT = TypeVar("_BatchT", bound=_Batch)


class ReadBatches(Generic[_BatchT]):
    """What the leader's rounds and a follower's asks share: reads queued by any thread, at
    most one batch out at a time (`_out`), and confirmed reads held until the replica has
    applied up to their index. `add` is thread-safe; everything else runs on the tick
    thread."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._incoming: list[ReadCallback] = []
        self._out: _BatchT | None = None
        self._confirmed: list[tuple[int, ReadCallback]] = []
        self._seq = 0

    def add(self, callback: ReadCallback) -> bool:
        """Queue a read; True when the tick thread must be woken to send its batch out.

        Under load a batch is nearly always out, and the answer that completes it starts
        the next one at once (`ack`/`given` return True), taking every read queued
        meanwhile; a read queued behind others rides on whatever they arranged. Skipping
        those wake-ups matters: each is a pipe write and a GIL hand-off on the event loop,
        measured at an eighth of the leader's loop under 64 readers. A batch that is lost
        instead expires at the next tick, which then takes the queue too.
        """
        with self._lock:
            behind = bool(self._incoming)
            self._incoming.append(callback)
            # Read under the lock that `step` takes after clearing `_out`: a batch seen
            # here is one whose completion has not yet taken the queue.
            return not behind and self._out is None

    def idle(self) -> bool:
        return self._out is None and not self._confirmed and not self._incoming

    def fail_all(self, outcome: ReadOutcome) -> None:
        out, self._out = self._out, None
        confirmed, self._confirmed = self._confirmed, []
        with self._lock:
            batch, self._incoming = self._incoming, []
        if out is not None:
            fail(out.callbacks, outcome)
        fail([callback for _index, callback in confirmed], outcome)
        fail(batch, outcome)

    def _drop_out(self, outcome: ReadOutcome) -> None:
        out, self._out = self._out, None
        if out is not None:
            fail(out.callbacks, outcome)

    def _take_batch(self) -> list[ReadCallback]:
        with self._lock:
            batch, self._incoming = self._incoming, []
        return batch

    def _confirm(self, index: int, callbacks: list[ReadCallback], applied: int) -> None:
        self._confirmed.extend((index, cb) for cb in callbacks)
        self._release(applied)

    def _release(self, applied: int) -> None:
        if not self._confirmed:
            return
        ready = [(i, cb) for i, cb in self._confirmed if i <= applied]
        if not ready:
            return
        self._confirmed = [(i, cb) for i, cb in self._confirmed if i > applied]
        for index, callback in ready:
            callback(index, ReadOutcome.OK)
        # Let the event loop have the GIL now. The first callback woke it, but this thread
        # would hold the GIL on through the rest of its poll round (the other follower's
        # answer, the tick) before it next blocks: 0.19 ms of a median single-client read
        # (`bench.cp_trace --kinds get`: answer handed over -> loop has it), 0.06 ms with
        # this zero sleep, which releases the GIL to the waiting loop. Throughput under 64
        # readers is unchanged (bench/README.md, "Reads hand over the GIL").
        time.sleep(0)


class ReadRounds(ReadBatches[_Round]):
    """The leader's read batches: the tick thread calls `step` every tick and `ack` on
    every probe answer."""

    def __init__(self, round_timeout: float) -> None:
        super().__init__(round_timeout)
        self.rounds = 0  # rounds confirmed, for status and tests

    def step(self, view: LeaderView, now: float) -> int | None:
        """Expire the round in flight, release confirmed reads, and start a round for
        the reads waiting; returns the round number to probe with, if one started."""
        rnd = self._out
        if rnd is not None and (not view.leader or view.term != rnd.term or now > rnd.deadline):
            self._drop_out(ReadOutcome.LOST)
        self._release(view.applied_index)
        if self._out is not None:
            return None
        batch = self._take_batch()
        if not batch:
            return None
        if not view.leader:
            fail(batch, ReadOutcome.NOT_LEADER)
            return None
        if not view.own_term_committed:
            fail(batch, ReadOutcome.NOT_READY)
            return None
        self._seq += 1
        rnd = _Round(self._seq, view.term, view.commit_index, now + self._timeout, batch)
        if quorum(view.voters) <= 1:
            self._confirm_round(rnd, view.applied_index)
            return None
        self._out = rnd
        return rnd.seq

    def ack(self, voter: str, seq: int, term: int, view: LeaderView) -> bool:
        """A voter's answer; True when it completed the round (start the next at once)."""
        rnd = self._out
        if rnd is None or seq != rnd.seq:
            return False  # an answer to a round already decided
        if term != rnd.term or not view.leader or view.term != rnd.term:
            self._drop_out(ReadOutcome.LOST)
            return True
        rnd.acks.add(voter)
        if len(rnd.acks) + 1 < quorum(view.voters):
            return False
        self._out = None
        self._confirm_round(rnd, view.applied_index)
        return True

    def _confirm_round(self, rnd: _Round, applied: int) -> None:
        self.rounds += 1
        self._confirm(rnd.index, rnd.callbacks, applied)


def fail(callbacks: list[ReadCallback], outcome: ReadOutcome) -> None:
    """Answer reads with an outcome other than OK (whose index is meaningless: 0)."""
    for callback in callbacks:
        callback(0, outcome)
