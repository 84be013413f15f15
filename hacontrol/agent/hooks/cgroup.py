"""Resource limits and OOM detection: a cgroup per process, or rlimits plus a watchdog.

In a cgroup mode each allocation gets a cgroup of its own (made, or taken from the pool,
before its first launch; removed or pooled once its runner ends) and the kernel enforces
the limits and counts
OOM kills. A restart reuses the allocation's emptied cgroup: moving a process into a
just-created memory cgroup took 12-57 ms here (against 0.1 ms into an existing one),
most of a crash-to-restart. An allocation that ends hands its emptied cgroup to the
supervisor's pool (:mod:`hacontrol.agent.cgpool`, cgroup v1) for the next new one. In
rlimit mode there is no per-allocation enforcement by the
kernel, so the metrics sampler feeds :meth:`CgroupHook.check_memory` and the
hook kills a process that goes over its memory limit, reporting it as OOM.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Callable

from hacontrol.agent import procinfo
from hacontrol.agent.cgpool import CgroupPool
from hacontrol.agent.cgroups import MODE_RLIMIT, AllocationCgroup, Layout
from hacontrol.agent.hooks import HookHost, Outcome
from hacontrol.agent.limits import over_memory, rlimits_for
from hacontrol.agent.metrics import AllocationMetrics
from hacontrol.agent.process import Handle, LaunchConfig, live
from hacontrol.model.resources import Resources

log = logging.getLogger(__name__)

# How often to look again while a cgroup still holds dying processes.
POLL_S = 0.02
# After SIGKILL the kernel needs a moment to tear processes down; bound the
# wait so a stuck (e.g. uninterruptible) process cannot hang a stop forever.
KILL_GRACE_S = 2.0


async def discard_cgroup(
    cg: AllocationCgroup | None,
    monotonic: Callable[[], float],
    on_stuck: Callable[[AllocationCgroup], None],
    pool: CgroupPool | None = None,
) -> None:
    """Kill what is left in ``cg``, then give it to ``pool`` or remove it; hand it to
    ``on_stuck`` if it keeps holding processes."""
    if cg is None:
        return
    if live(cg.pids()):
        await asyncio.to_thread(cg.kill)
    deadline = monotonic() + KILL_GRACE_S
    while True:
        if pool is not None and pool.give(cg):  # it refuses one that lists processes
            return
        # In a thread: a removal first reclaims the cgroup's page cache (AllocationCgroup.
        # remove), a millisecond or two, and up to 100 ms behind writeback.
        if await asyncio.to_thread(cg.remove):
            return
        if monotonic() > deadline:
            on_stuck(cg)
            return
        await asyncio.sleep(POLL_S)


def pooled_or_new(pool: CgroupPool, layout: Layout, name: str,
                  res: Resources | None) -> AllocationCgroup:
    """A kept cgroup reset for `res`, else a fresh one (blocking: in the start thread)."""
    return pool.take(name, res) or AllocationCgroup.create(layout, name, res)


class CgroupHook:
    # One of each per allocation: slots keep them small (no __dict__ each).
    __slots__ = ("_created", "_handle", "_host", "_kept", "_layout", "_cg_name", "_monotonic",
                 "_on_stuck", "_oom_before", "_pool", "_watchdog_fired")

    def __init__(
        self,
        host: HookHost,
        layout: Layout,
        cg_name: str,
        monotonic: Callable[[], float],
        on_stuck: Callable[[AllocationCgroup], None],
        pool: CgroupPool,
    ) -> None:
        self._host = host
        self._pool = pool
        self._layout = layout
        self._cg_name = cg_name
        self._monotonic = monotonic
        self._on_stuck = on_stuck
        self._created: AllocationCgroup | None = None
        # Emptied by the last exit, kept for the next start of this allocation.
        self._kept: AllocationCgroup | None = None
        # OOM kills counted in the cgroup before the current process started.
        self._oom_before = 0
        self._handle: Handle | None = None
        # The rlimit-mode watchdog killed the current process.
        self._watchdog_fired = False

    async def prestart(self, config: LaunchConfig) -> None:
        res = self._host.spec.resources
        if self._layout.mode == MODE_RLIMIT:
            config.rlimits = rlimits_for(res)
            return
        kept, self._kept = self._kept, None
        if kept is not None:
            # Found empty, thawed and counted by exited(); nothing enters an empty cgroup
            # of ours but what we start, so it is not read again on a restart's way.
            self._created = kept
            config.cg = kept
            return
        # Taken from the pool or made by the start thread itself, right before the spawn:
        # one thread hop per start instead of two. Known here from poststart's handle.
        self._created = None
        config.new_cg = functools.partial(
            pooled_or_new, self._pool, self._layout, self._cg_name, res)

    def poststart(self, handle: Handle) -> None:
        self._handle = handle
        if handle.cg is not None:
            self._created = handle.cg
            self._oom_before = handle.cg.oom_base
        self._watchdog_fired = False

    def check_memory(self, m: AllocationMetrics) -> None:
        """Called with each metrics sample of the current process (rlimit mode only acts)."""
        handle = self._handle
        if handle is None or handle.cg is not None or self._watchdog_fired:
            return
        if over_memory(m.rss_bytes, self._host.spec.resources):
            # No kernel enforcement per allocation here, so this watchdog is
            # the limit; the kill is reported as an OOM.
            self._watchdog_fired = True
            log.warning(
                "%s over its memory limit (%d bytes resident), killing",
                self._host.spec.alloc_id,
                m.rss_bytes,
            )
            procinfo.signal_group(handle.pgid, signal.SIGKILL)

    async def exited(self, outcome: Outcome) -> None:
        cg = outcome.handle.cg if outcome.handle is not None else self._created
        self._created = None
        self._handle = None
        oom_kills = cg.oom_kills() if cg is not None else 0
        if outcome.handle is not None:
            outcome.oom = self._watchdog_fired or oom_kills > self._oom_before
        if cg is not None and not self._host.stopping and (
                outcome.emptied or not live(cg.pids())):
            if self._host.paused:
                # A pause outlived its process: a start thread joins the cgroup for the
                # next spawn (hacontrol.agent.direct), and a frozen cgroup would hold it.
                cg.thaw()
            cg.oom_base = oom_kills  # the next process's OOM kills are those above it
            self._kept = cg  # for a restart; pooled by stop() if none comes
            return
        await discard_cgroup(cg, self._monotonic, self._on_stuck, self._pool)

    def stop(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None and not self._pool.give(kept) and not kept.remove():
            self._on_stuck(kept)
