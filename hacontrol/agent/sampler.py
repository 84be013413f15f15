"""One node-wide sampler: resource usage of every allocation, log rotation, and the
removal of cgroups that still held dying processes.

Its cost follows what changes on the node, not what runs there. Each allocation is
sampled ``interval_s`` after it started; every sample that finds its metrics unchanged
doubles that allocation's interval, up to ``max_interval_s``, and any change brings it
back to ``interval_s``. A node of sleeping processes is thus read a few times a minute,
a busy allocation every ``interval_s``. The allocations that are due are sampled
together, in one thread hop (it reads /proc and /sys); the loop sleeps until the next
one is due and is woken early only by a watch that is due sooner.

An allocation's metrics object is replaced only when its values change, so a reader can
tell "nothing new" by identity (:class:`hacontrol.agent.report.MetricsOutbox` sends
only what changed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from hacontrol.agent import logs
from hacontrol.agent.cgroups import AllocationCgroup
from hacontrol.agent.metrics import (
    AllocationMetrics,
    CpuMemo,
    ProcSample,
    aggregate,
    boot_clock,
    memo,
    pids_by_pgid,
    ran,
    sample_process,
)
from hacontrol.agent.nursery import Nursery, cancel_and_wait
from hacontrol.agent.process import STDERR_LOG, STDOUT_LOG, Handle
from hacontrol.model.spec import LogPolicy

log = logging.getLogger(__name__)

# Unchanged allocations are sampled at most this many times less often than interval_s
# (10 s at the agent's default of 1 s).
MAX_BACKOFF = 10.0
# Without a cgroup no kernel enforces an allocation's memory limit: the watchdog fed by
# these samples does (rlimit mode), so its samples back off less.
WATCHDOG_BACKOFF = 2.0
# Quick checks in a row that may stand in for a full sample of an unchanged allocation
# (about a minute at the longest interval).
QUICK_CHECKS = 6
# How much earlier than due an allocation may be sampled, to share a pass with others.
BATCH_SLACK_S = 1.0


@dataclass
class _Watched:
    handle: Handle
    on_sample: Callable[[AllocationMetrics], None]
    interval: float
    due: float  # monotonic
    last: AllocationMetrics | None = None
    # Run times of its processes at the last full sample, and how many more quick
    # checks (did any of them run?) may stand in for a full sample.
    ran: dict[int, bytes] = field(default_factory=dict)
    quick_left: int = 0
    prev_ts: float | None = None  # boot clock of the previous sample
    cpu_memo: CpuMemo = field(default_factory=dict)


class _Target(NamedTuple):
    alloc_id: str
    pgid: int
    cg: AllocationCgroup | None
    ran: dict[int, bytes] | None  # when last sampled: pid -> run time (see metrics.ran)
    logs: tuple[Path, LogPolicy] | None


class Sampler:
    def __init__(
        self,
        interval_s: float,
        nursery: Nursery,
        max_interval_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval_s = interval_s
        self._max_interval_s = max(
            interval_s * MAX_BACKOFF if max_interval_s is None else max_interval_s, interval_s
        )
        self._nursery = nursery
        self._monotonic = monotonic
        self._loop: asyncio.Task[None] | None = None
        self._watched: dict[str, _Watched] = {}
        self._logs: dict[str, tuple[Path, LogPolicy]] = {}
        # cgroups whose rmdir failed (an unreaped zombie still counted in them).
        self._stuck: list[AllocationCgroup] = []
        # When the loop wakes next (monotonic), and the event that wakes it sooner.
        # When the loop wakes next (monotonic), and the future it sleeps on, resolved
        # sooner by a kick.
        self._wake_at = 0.0
        self._waker: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ registration

    def watch(
        self, alloc_id: str, handle: Handle, on_sample: Callable[[AllocationMetrics], None]
    ) -> None:
        """Sample ``handle``'s processes until unwatch() or until it exits."""
        due = self._monotonic() + self._interval_s
        self._watched[alloc_id] = _Watched(handle, on_sample, self._interval_s, due)
        if due < self._wake_at:
            self._kick()

    def unwatch(self, alloc_id: str) -> None:
        self._watched.pop(alloc_id, None)

    def rotate_logs(self, alloc_id: str, alloc_dir: Path, policy: LogPolicy) -> None:
        self._logs[alloc_id] = (alloc_dir, policy)

    def stop_rotating(self, alloc_id: str) -> None:
        self._logs.pop(alloc_id, None)

    def forget(self, alloc_id: str) -> None:
        """The allocation's runner ended: drop its latest metrics."""
        self._watched.pop(alloc_id, None)

    def retry_removal(self, cg: AllocationCgroup) -> None:
        self._stuck.append(cg)
        self._kick()

    def metrics(self) -> dict[str, AllocationMetrics]:
        """The latest metrics of every running allocation; an object is the same as in the
        previous call when its values did not change."""
        return {
            alloc_id: w.last
            for alloc_id, w in self._watched.items()
            if w.last is not None and not w.handle.done.done()
        }

    def interval_of(self, alloc_id: str) -> float | None:
        """How often the allocation is sampled now (None: not watched)."""
        w = self._watched.get(alloc_id)
        return w.interval if w is not None else None

    # ---------------------------------------------------------------- the loop

    def start(self) -> None:
        if self._loop is None or self._loop.done():
            self._loop = self._nursery.start(self._run(), name="supervisor-sampler")

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        await cancel_and_wait(loop)

    def _kick(self) -> None:
        waker = self._waker
        if waker is not None and not waker.done():
            waker.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = self._monotonic()
            # Whatever falls due within the slack is read in this pass too: 200
            # allocations backed off to different moments would otherwise wake the agent
            # (and a thread) up to 20 times a second.
            due = [a for a, w in self._watched.items() if w.due <= now + BATCH_SLACK_S]
            if due or self._stuck:
                try:
                    await self._sample(due)
                except Exception:
                    log.exception("sampling allocations failed")
            wait = self._next_wait()
            self._wake_at = self._monotonic() + wait
            # A bare future and a timer rather than wait_for(event.wait()): no task per
            # wait, and no cancellation lost when the kick and a cancel coincide
            # (wait_for can swallow the cancel then, before Python 3.12).
            waker = self._waker = loop.create_future()
            timer = loop.call_later(wait, _wake, waker)
            try:
                await waker
            finally:
                timer.cancel()
                self._waker = None

    def _next_wait(self) -> float:
        now = self._monotonic()
        wait = min((w.due - now for w in self._watched.values()), default=self._max_interval_s)
        if self._stuck:
            wait = min(wait, self._interval_s)
        return max(wait, 0.0)

    async def sample_once(self) -> None:
        """Sample every watched allocation now, whenever it is due."""
        await self._sample(list(self._watched))

    async def _sample(self, due: list[str]) -> None:
        watched = [
            (a, w)
            for a in due
            if (w := self._watched.get(a)) is not None and not w.handle.done.done()
        ]
        targets = [
            _Target(
                a,
                w.handle.pgid,
                w.handle.cg,
                # Unchanged allocations are still read in full now and then: memory can
                # move without the process running (reclaim, shared pages).
                w.ran if w.quick_left > 0 else None,
                self._logs.get(a),
            )
            for a, w in watched
        ]
        # Logs of an allocation between two processes are checked on every pass.
        rotate = [p for a, p in self._logs.items() if a not in self._watched]
        stuck, self._stuck = self._stuck, []
        found, now = await asyncio.to_thread(_collect, targets, rotate, stuck)
        self._stuck.extend(cg for cg in stuck if cg.paths and _exists_any(cg))
        mono = self._monotonic()
        for alloc_id, w in watched:
            if self._watched.get(alloc_id) is not w:
                continue  # unwatched, or a new process, while we were reading
            result = found.get(alloc_id)
            if result is None:
                # Nothing in it ran since the last sample: same metrics, same CPU memo
                # (the next CPU figure averages over the whole quiet stretch).
                w.quick_left -= 1
                self._unchanged(w)
                continue
            procs, w.ran = result
            w.quick_left = QUICK_CHECKS
            m = aggregate(w.handle.pid, procs, w.cpu_memo, w.prev_ts, now)
            w.cpu_memo = memo(procs)
            w.prev_ts = now
            if w.last is not None and m.same_values(w.last):
                self._unchanged(w)
                continue
            w.last = m
            w.interval = self._interval_s
            w.due = mono + w.interval
            try:
                w.on_sample(m)
            except Exception:
                log.exception("handling the metrics of %s failed", alloc_id)

    def _unchanged(self, w: _Watched) -> None:
        cap = self._max_interval_s
        if w.handle.cg is None:
            cap = min(cap, self._interval_s * WATCHDOG_BACKOFF)
        w.interval = min(w.interval * 2, cap)
        w.due = self._monotonic() + w.interval


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)


def _exists_any(cg: AllocationCgroup) -> bool:
    return any(p.exists() for p in cg.paths.values())


def _rotate(rotate: list[tuple[Path, LogPolicy]]) -> None:
    for alloc_dir, policy in rotate:
        for name in (STDOUT_LOG, STDERR_LOG):
            path = alloc_dir / name
            try:
                # The common case, a small file, costs one stat.
                if os.stat(path).st_size > policy.max_bytes:
                    logs.rotate_if_needed(path, policy)
            except FileNotFoundError:
                continue
            except OSError:
                log.warning("cannot rotate %s", path, exc_info=True)


def _collect(
    targets: list[_Target],
    rotate: list[tuple[Path, LogPolicy]],
    stuck: list[AllocationCgroup],
) -> tuple[dict[str, tuple[list[ProcSample], dict[int, bytes]]], float]:
    """One pass over the due allocations (runs in a thread: it reads /proc and /sys).

    An allocation none of whose processes ran since ``ran`` was taken is left out of the
    answer: nothing in it can have changed, not even its membership (joining means a
    fork by a member, leaving means an exit). Otherwise its processes are sampled and
    their logs checked for rotation (a process that did not run wrote nothing).
    """
    for dead in stuck:
        dead.remove()
    changed = [t for t in targets if not _quiet(t.ran)]
    by_pgid = pids_by_pgid({t.pgid for t in changed if t.cg is None})
    out: dict[str, tuple[list[ProcSample], dict[int, bytes]]] = {}
    for t in changed:
        pids = t.cg.member_pids() if t.cg is not None else by_pgid.get(t.pgid, [])
        procs: list[ProcSample] = []
        ran_now: dict[int, bytes] = {}
        for pid in pids:
            # Read first: a run between the two reads then shows as a change next time.
            r = ran(pid)
            s = sample_process(pid)
            if s is not None:
                procs.append(s)
                if r is not None:
                    ran_now[pid] = r
        if len(ran_now) != len(procs):
            ran_now = {}  # some process without statistics: no quick checks for this one
        out[t.alloc_id] = (procs, ran_now)
        if t.logs is not None:
            rotate.append(t.logs)
    _rotate(rotate)
    return out, boot_clock()


def _quiet(before: dict[int, bytes] | None) -> bool:
    if not before:
        return False
    return all(ran(pid) == r for pid, r in before.items())
