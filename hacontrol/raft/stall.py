"""Saying so in the log when a replica stops making progress, with its Raft thread's stack.

A follower was once seen sitting at applied index 1 through a whole chaos run: no error, no
campaign, nothing in its log, while its two peers went on (and, once the leader was
killed, could not elect without it). Its silence was all that was left to go on. Now a
replica whose Raft thread stops ticking, whose applied index stays below its commit index,
whose commit index stays below its leader's, or which knows no leader, for `STALL_S`, logs
one warning that says which, with the Raft thread's current stack, and logs again when it
recovers. The readiness check already
turns false for a tick stall (`Replica._health`); this leaves a trace to read afterwards.

The checks run on a thread of their own: a stuck Raft thread or a blocked event loop
cannot silence them.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Long enough that a slow fdatasync, a long apply (a restore) or an election on a loaded
# machine never trips it (those take well under 5 s here); short enough to be seen in a
# 15-second chaos run.
STALL_S = 10.0
CHECK_S = 1.0


@dataclass(frozen=True)
class Sample:
    """What the reporter reads of its replica at one check (monotonic seconds)."""

    now: float
    last_tick: float
    applied: int
    commit: int
    leader: str | None
    # The commit index the leader last told this replica (its own, on the leader).
    leader_commit: int = 0
    # Why the Raft port is not bound (None: it is); the tick thread only retries until.
    not_listening: str | None = None


@dataclass
class Progress:
    """Since when the replica's applied index and its knowledge of a leader have stood
    where they stand."""

    applied: int = -1
    applied_since: float = 0.0
    leaderless_since: float | None = None
    commit: int = -1
    commit_since: float = 0.0


def stalled(s: Sample, p: Progress, stall_s: float | None = None) -> str | None:
    """Why the replica looks stalled at `s` (None: it does not). Updates `p`."""
    if stall_s is None:
        stall_s = STALL_S
    if s.applied != p.applied:
        p.applied, p.applied_since = s.applied, s.now
    if s.commit != p.commit:
        p.commit, p.commit_since = s.commit, s.now
    if s.leader is not None:
        p.leaderless_since = None
    elif p.leaderless_since is None:
        p.leaderless_since = s.now
    if s.now - s.last_tick >= stall_s:
        why = f"; {s.not_listening}" if s.not_listening else ""
        return f"no Raft tick for {s.now - s.last_tick:.1f} s{why}"
    if s.commit > s.applied and s.now - p.applied_since >= stall_s:
        return (f"applied index {s.applied} below commit index {s.commit} for "
                f"{s.now - p.applied_since:.1f} s")
    if s.leader_commit > s.commit and s.now - p.commit_since >= stall_s:
        # Heartbeats arrive (a leader is known) but the log does not: replication wedged.
        return (f"commit index {s.commit} behind its leader's {s.leader_commit} for "
                f"{s.now - p.commit_since:.1f} s")
    if p.leaderless_since is not None and s.now - p.leaderless_since >= stall_s:
        return f"no leader known for {s.now - p.leaderless_since:.1f} s"
    return None


class StallReporter:
    """Checks `sample()` every `CHECK_S` on its own thread; logs a stall once (with the
    stack of the thread `thread_id()` names) and its end once."""

    def __init__(self, name: str, sample: Callable[[], Sample | None],
                 thread_id: Callable[[], int | None]) -> None:
        self._name = name
        self._sample = sample
        self._thread_id = thread_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"raft-stall-{name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        progress = Progress()
        reported: str | None = None
        while not self._stop.wait(CHECK_S):
            try:
                s = self._sample()
                why = None if s is None else stalled(s, progress)
            except Exception:  # a replica mid-teardown: the next check sees it gone
                continue
            if why is not None and reported is None:
                logger.warning("replica %s stalled: %s; its Raft thread is at:\n%s",
                               self._name, why, self._stack())
                reported = why
            elif why is None and reported is not None:
                logger.warning("replica %s makes progress again (was: %s)", self._name,
                               reported)
                reported = None

    def _stack(self) -> str:
        tid = self._thread_id()
        frame = sys._current_frames().get(tid) if tid is not None else None
        if frame is None:
            return "  (no Raft thread)"
        return "".join(traceback.format_stack(frame)).rstrip()


def thread_ident(node: object) -> int | None:
    """The id of pysyncobj's tick thread, known before its first tick (which a replica
    that cannot bind its port never reaches)."""
    thread = getattr(node, "_SyncObj__thread", None)
    return thread.ident if isinstance(thread, threading.Thread) else None
