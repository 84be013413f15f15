"""One periodic pass over every allocation on the node.

Samples resource usage (metrics), rotates logs and retries the removal of
cgroups that still held dying processes, all in one thread hop per interval
so that the cost does not grow with a task per allocation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hacontrol.agent import logs
from hacontrol.agent.cgroups import AllocationCgroup
from hacontrol.agent.metrics import (
    AllocationMetrics,
    CpuMemo,
    ProcSample,
    aggregate,
    memo,
    pids_by_pgid,
    sample_process,
)
from hacontrol.agent.nursery import Nursery, cancel_and_wait
from hacontrol.agent.process import STDERR_LOG, STDOUT_LOG, Handle
from hacontrol.model.spec import LogPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Watched:
    handle: Handle
    on_sample: Callable[[AllocationMetrics], None]


# (alloc_id, leader pid, pgid, cgroup)
_Target = tuple[str, int, int, AllocationCgroup | None]


class Sampler:
    def __init__(self, interval_s: float, nursery: Nursery) -> None:
        self._interval_s = interval_s
        self._nursery = nursery
        self._loop: asyncio.Task[None] | None = None
        self._watched: dict[str, _Watched] = {}
        self._logs: dict[str, tuple[Path, LogPolicy]] = {}
        self._metrics: dict[str, AllocationMetrics] = {}
        self._cpu_memo: dict[str, CpuMemo] = {}
        self._sample_ts: dict[str, float] = {}
        # cgroups whose rmdir failed (an unreaped zombie still counted in them).
        self._stuck: list[AllocationCgroup] = []

    # ------------------------------------------------------------ registration

    def watch(
        self, alloc_id: str, handle: Handle, on_sample: Callable[[AllocationMetrics], None]
    ) -> None:
        """Sample ``handle``'s processes until unwatch() or until it exits."""
        self._watched[alloc_id] = _Watched(handle, on_sample)

    def unwatch(self, alloc_id: str) -> None:
        self._watched.pop(alloc_id, None)

    def rotate_logs(self, alloc_id: str, alloc_dir: Path, policy: LogPolicy) -> None:
        self._logs[alloc_id] = (alloc_dir, policy)

    def stop_rotating(self, alloc_id: str) -> None:
        self._logs.pop(alloc_id, None)

    def forget(self, alloc_id: str) -> None:
        """The allocation's runner ended: drop its latest metrics."""
        self._watched.pop(alloc_id, None)
        self._metrics.pop(alloc_id, None)

    def retry_removal(self, cg: AllocationCgroup) -> None:
        self._stuck.append(cg)

    def metrics(self) -> dict[str, AllocationMetrics]:
        return dict(self._metrics)

    # ---------------------------------------------------------------- the loop

    def start(self) -> None:
        if self._loop is None or self._loop.done():
            self._loop = self._nursery.start(self._run(), name="supervisor-sampler")

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        await cancel_and_wait(loop)

    async def _run(self) -> None:
        while True:
            try:
                await self.sample_once()
            except Exception:
                log.exception("sampling allocations failed")
            await asyncio.sleep(self._interval_s)

    async def sample_once(self) -> None:
        targets: list[_Target] = [
            (a, w.handle.pid, w.handle.pgid, w.handle.cg)
            for a, w in self._watched.items()
            if not w.handle.done.done()
        ]
        rotate = list(self._logs.values())
        stuck, self._stuck = self._stuck, []
        samples, now = await asyncio.to_thread(_collect, targets, rotate, stuck)
        self._stuck.extend(cg for cg in stuck if cg.paths and _exists_any(cg))
        current = {a for a, _, _, _ in targets}
        for alloc_id in list(self._metrics):
            if alloc_id not in current:
                self._metrics.pop(alloc_id, None)
                self._cpu_memo.pop(alloc_id, None)
                self._sample_ts.pop(alloc_id, None)
        for alloc_id, pid, _, _ in targets:
            procs = samples.get(alloc_id, [])
            m = aggregate(
                pid, procs, self._cpu_memo.get(alloc_id, {}), self._sample_ts.get(alloc_id), now
            )
            self._metrics[alloc_id] = m
            self._cpu_memo[alloc_id] = memo(procs)
            self._sample_ts[alloc_id] = now
            watched = self._watched.get(alloc_id)
            if watched is not None:
                watched.on_sample(m)


def _exists_any(cg: AllocationCgroup) -> bool:
    return any(p.exists() for p in cg.paths.values())


def _collect(
    targets: list[_Target],
    rotate: list[tuple[Path, LogPolicy]],
    stuck: list[AllocationCgroup],
) -> tuple[dict[str, list[ProcSample]], float]:
    """One pass over all allocations (runs in a thread: it reads /proc and /sys)."""
    for alloc_dir, policy in rotate:
        for name in (STDOUT_LOG, STDERR_LOG):
            try:
                logs.rotate_if_needed(alloc_dir / name, policy)
            except OSError:
                log.warning("cannot rotate %s", alloc_dir / name, exc_info=True)
    for dead in stuck:
        dead.remove()
    by_pgid = pids_by_pgid({pgid for _, _, pgid, cg in targets if cg is None})
    out: dict[str, list[ProcSample]] = {}
    for alloc_id, _, pgid, cg in targets:
        pids = cg.pids() if cg is not None else by_pgid.get(pgid, [])
        out[alloc_id] = [s for s in (sample_process(p) for p in pids) if s is not None]
    return out, time.monotonic()
