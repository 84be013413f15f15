"""The only bridge between asyncio code and pysyncobj's tick thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from hacontrol.raft.readindex import ReadOutcome
from hacontrol.raft.replica import (
    FAIL_DISCARDED,
    FAIL_MISSING_LEADER,
    FAIL_NAMES,
    FAIL_NOT_LEADER,
    FAIL_QUEUE_FULL,
    FAIL_REQUEST_DENIED,
    FAIL_SUCCESS,
    Applied,
    ApplyError,
    Machine,
    RaftStatus,
    Replica,
)

T = TypeVar("T")


class RaftError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotApplied(RaftError):
    """The command is certainly not in the log and never will be: safe to retry."""


class OutcomeUnknown(RaftError):
    """The command may or may not be applied, now or later."""


class ApplyFailed(RaftError):
    """The command was committed, but the state machine raised while applying it."""

    def __init__(self, reason: str, index: int) -> None:
        super().__init__(reason)
        self.index = index


# Which pysyncobj outcomes prove the entry never made it into the log:
# - QUEUE_FULL: refused by the local or the leader's queue before any append.
# - MISSING_LEADER (we run with commandsWaitLeader=False): failed in the queue
#   before being forwarded or appended.
# - NOT_LEADER: the node we forwarded to was no longer leader and replied so
#   instead of appending.
# - REQUEST_DENIED: membership changes only, refused before appending.
# - DISCARDED: the entry was appended at (index, term) but the entry committed
#   at that index carries another term; by Raft's log matching property
#   (index, term) then never commits, and nothing re-submits it for us.
# Uncertain: LEADER_CHANGED (a forwarded command may have been appended before
# the reply was lost), UNKNOWN_OUTCOME (the index was applied before we learned
# it, e.g. through a snapshot), and every timeout or cancellation.
CERTAINLY_NOT_APPLIED = frozenset(
    {FAIL_QUEUE_FULL, FAIL_MISSING_LEADER, FAIL_NOT_LEADER, FAIL_REQUEST_DENIED, FAIL_DISCARDED}
)
# Transient: an election or a burst; a resubmission has a fair chance.
RETRYABLE = frozenset({FAIL_QUEUE_FULL, FAIL_MISSING_LEADER, FAIL_NOT_LEADER, FAIL_DISCARDED})

_TIMED_OUT = -1
_BACKOFF_START = 0.01
_BACKOFF_MAX = 0.1


def _fail_name(err: int) -> str:
    return FAIL_NAMES.get(err, f"FAIL_{err}")


class LogBridge:
    def __init__(self, replica: Replica, max_in_flight: int = 1000) -> None:
        self._replica = replica
        self._max_in_flight = max_in_flight
        self._inbox = _Inbox()
        self._slots: asyncio.Semaphore | None = None
        self._barrier_inflight: asyncio.Future[int] | None = None
        self._barrier_next: asyncio.Future[int] | None = None
        self._barrier_next_args: tuple[bytes, float] | None = None

    @property
    def replica(self) -> Replica:
        return self._replica

    def status(self) -> RaftStatus:
        return self._replica.status()

    def read(self, fn: Callable[[Machine], T]) -> T:
        return self._replica.read(fn)

    async def submit(self, command: bytes, timeout: float, retry: bool = True) -> Any:
        """Commit ``command`` and return the machine's result once applied here.

        Raises NotApplied (certainly not applied, after retrying transient
        refusals until the deadline when ``retry``), OutcomeUnknown or
        ApplyFailed.
        """
        applied = await self.submit_applied(command, timeout, retry)
        if isinstance(applied.result, ApplyError):
            raise ApplyFailed(applied.result.error, applied.index)
        return applied.result

    async def change_membership(self, payload: bytes, timeout: float) -> int:
        """Commit a membership entry (`membership.change_payload`); its index once applied
        here. NotApplied("REQUEST_DENIED") when the leader refuses it: another change not
        yet applied, its term's no-op not yet applied, or nothing to change."""
        applied = await self.submit_applied(payload, timeout, membership=True)
        return applied.index

    async def transfer_leadership(self, target: str | None, timeout: float) -> None:
        """Ask a caught-up follower to take over; NotApplied when the request could not go
        out (not the leader, no follower caught up). Poll the status to see it done."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, int]] = loop.create_future()
        self._replica.transfer_leadership(target, self._inbox.resolver(loop, fut))
        timer = loop.call_later(timeout, _expire, fut)
        try:
            _res, err = await fut
        finally:
            timer.cancel()
        if err != FAIL_SUCCESS:
            raise NotApplied(_fail_name(err) if err != _TIMED_OUT else "timeout")

    async def submit_applied(self, command: bytes, timeout: float, retry: bool = True,
                             membership: bool = False) -> Applied:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_in_flight)
        # Bounding what is in flight keeps pysyncobj away from the load where
        # followers were seen to wedge (5000+ outstanding commands).
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise NotApplied("too many commands in flight") from None
        else:
            await self._slots.acquire()
        try:
            return await self._submit_loop(loop, command, deadline, retry, membership)
        finally:
            self._slots.release()

    async def _submit_loop(
        self, loop: asyncio.AbstractEventLoop, command: bytes, deadline: float, retry: bool,
        membership: bool = False,
    ) -> Applied:
        backoff = _BACKOFF_START
        last: NotApplied | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise last or NotApplied("deadline passed before submission")
            if self._replica.status().leader is None:
                last = NotApplied("no leader known")
            else:
                fut: asyncio.Future[tuple[Applied | None, int]] = loop.create_future()
                if membership:
                    self._replica.submit(command, self._inbox.resolver(loop, fut), True)
                else:
                    self._replica.submit(command, self._inbox.resolver(loop, fut))
                # A plain timer instead of wait_for: no extra task per command,
                # which measurably limited throughput with 1000 in flight.
                timer = loop.call_later(remaining, _expire, fut)
                try:
                    res, err = await fut
                finally:
                    timer.cancel()
                if err == _TIMED_OUT:
                    raise OutcomeUnknown("timeout")
                if err == FAIL_SUCCESS and res is not None:
                    return res
                if err not in CERTAINLY_NOT_APPLIED:
                    raise OutcomeUnknown(_fail_name(err))
                last = NotApplied(_fail_name(err))
                if err not in RETRYABLE:
                    raise last
            if not retry:
                raise last
            await asyncio.sleep(min(backoff, max(deadline - loop.time(), 0.0)))
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def read_index(self, timeout: float) -> int:
        """ReadIndex on this replica (see readindex.py; on a follower, asked of the leader,
        follower_reads.py): once this returns an index, state read here reflects every
        write acknowledged before the call.

        Raises NotApplied when this replica cannot answer (no leader to ask, or the
        leader's term has no committed entry yet) and OutcomeUnknown when leadership could
        not be confirmed (a newer term, no majority in time, no answer).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, int]] = loop.create_future()
        self._replica.read_index(self._inbox.resolver(loop, fut))
        timer = loop.call_later(timeout, _expire, fut)
        try:
            index, outcome = await fut
        finally:
            timer.cancel()
        if outcome == ReadOutcome.OK:
            return int(index)
        if outcome in (ReadOutcome.NOT_LEADER, ReadOutcome.NOT_READY):
            raise NotApplied(f"read index: {ReadOutcome(outcome).name}")
        if outcome == _TIMED_OUT:
            raise OutcomeUnknown("read index timeout")
        raise OutcomeUnknown(f"read index: {ReadOutcome(outcome).name}")

    async def linearize(self, noop_command: bytes, timeout: float) -> int:
        """Wait until a linearizable read may be served from this replica's state.

        The leader confirms its leadership by a heartbeat round (ReadIndex); a follower
        asks its leader for that round's index (follower_reads.py). A replica that cannot
        have one (no leader known, a leader just elected, a round lost, a leader that does
        not answer asks) commits a no-op through the log instead (`barrier`), which is
        always safe.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            return await self.read_index(timeout)
        except (NotApplied, OutcomeUnknown):
            pass
        return await self.barrier(noop_command, max(deadline - loop.time(), 0.0))

    async def barrier(self, noop_command: bytes, timeout: float) -> int:
        """Commit a no-op and return its index once applied on this replica.

        A read served after this returns observes every write acknowledged
        before the call. Concurrent callers share one no-op: callers arriving
        while one is in flight join the next one, which is only submitted
        after they arrived (sharing an older one would not be linearizable).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise OutcomeUnknown("barrier timeout")
            fut = self._join_barrier(noop_command, remaining)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), remaining)
            except TimeoutError:
                raise OutcomeUnknown("barrier timeout") from None
            except (NotApplied, OutcomeUnknown):
                # A no-op is harmless to repeat whatever happened to it.
                if deadline - loop.time() <= 0:
                    raise
                await asyncio.sleep(min(_BACKOFF_START, max(deadline - loop.time(), 0.0)))

    def _join_barrier(self, noop: bytes, timeout: float) -> asyncio.Future[int]:
        if self._barrier_next is not None:
            return self._barrier_next
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        fut.add_done_callback(_consume_exception)
        if self._barrier_inflight is None:
            self._start_barrier(fut, noop, timeout)
        else:
            self._barrier_next = fut
            self._barrier_next_args = (noop, timeout)
        return fut

    def _start_barrier(self, fut: asyncio.Future[int], noop: bytes, timeout: float) -> None:
        self._barrier_inflight = fut
        task = asyncio.ensure_future(self._run_barrier(fut, noop, timeout))
        task.add_done_callback(lambda _t: self._barrier_done())

    async def _run_barrier(self, fut: asyncio.Future[int], noop: bytes, timeout: float) -> None:
        try:
            applied = await self.submit_applied(noop, timeout, retry=True)
        except BaseException as exc:  # propagate everything, including cancellation
            if not fut.done():
                if isinstance(exc, asyncio.CancelledError):
                    fut.cancel()
                else:
                    fut.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not fut.done():
            fut.set_result(applied.index)

    def _barrier_done(self) -> None:
        self._barrier_inflight = None
        nxt, args = self._barrier_next, self._barrier_next_args
        self._barrier_next = self._barrier_next_args = None
        if nxt is not None and args is not None:
            self._start_barrier(nxt, *args)


class _Inbox:
    """Results handed from the tick thread to the event loop in batches.

    One `call_soon_threadsafe` per result costs a write to the loop's self-pipe each; under
    load that was a tenth of the leader's CPU. Results queue here and one wake-up drains
    every result that arrived in the meantime.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Future[Any], Any, int]] = []
        self._scheduled = False

    def resolver(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[tuple[Any, int]]
                 ) -> Callable[[Any, int], None]:
        """A callback for the tick thread that resolves ``fut`` with ``(value, code)``."""

        def callback(res: Any, err: int) -> None:
            with self._lock:
                self._items.append((fut, res, err))
                if self._scheduled:
                    return
                self._scheduled = True
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                pass  # loop closed: nobody is waiting any more

        return callback

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        for fut, res, err in items:
            if not fut.done():
                fut.set_result((res, err))


def _expire(fut: asyncio.Future[tuple[Any, int]]) -> None:
    if not fut.done():
        fut.set_result((None, _TIMED_OUT))


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
