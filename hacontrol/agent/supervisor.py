"""Local process supervisor of the node agent: the allocation runners of one node.

Starts, adopts, stops and forgets :class:`AllocationRunner` s, one per
allocation, and holds what they share on the node (isolation layout,
listening sockets, the metrics and log sampler). Every runner and helper
task lives in a :class:`Nursery`, awaited or cancelled on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path

from hacontrol.agent import logs, procinfo
from hacontrol.agent.allocrunner import AllocationNotRunning, AllocationRunner
from hacontrol.agent.cgpool import CgroupPool
from hacontrol.agent.cgroups import (
    CGROUP_ROOT,
    MODE_RLIMIT,
    MODES,
    AllocationCgroup,
    Layout,
    detect,
)
from hacontrol.agent.digests import sha1_hex
from hacontrol.agent.hooks import Hook
from hacontrol.agent.hooks.cgroup import CgroupHook
from hacontrol.agent.hooks.health import HealthHook
from hacontrol.agent.hooks.logs import LogsHook
from hacontrol.agent.hooks.metrics import MetricsHook
from hacontrol.agent.hooks.pidrecord import PidRecordHook
from hacontrol.agent.hooks.sockets import SocketsHook
from hacontrol.agent.jitter import uniform
from hacontrol.agent.metrics import AllocationMetrics
from hacontrol.agent.nursery import Nursery
from hacontrol.agent.process import AdoptedHandle
from hacontrol.agent.sampler import Sampler
from hacontrol.agent.sockets import SocketRegistry
from hacontrol.agent.spec import AllocationEvent, AllocationSpec, parse_signal
from hacontrol.model.checks import ALLOC_ID_RE

__all__ = ["AllocationNotRunning", "Supervisor", "cgroup_scope", "sweep_leftovers", "sweep_scope"]


def cgroup_scope(data_dir: Path) -> str:
    """The suffix of the allocation cgroups of the agent whose data dir is `data_dir`."""
    return sha1_hex(str(data_dir.resolve()).encode())[:8]


def sweep_scope(layout: Layout, scope: str, busy: Collection[str] = ()) -> int:
    """Remove the empty allocation cgroups of `scope`, except those named in `busy`;
    returns how many (rmdir refuses a cgroup that still holds a process)."""
    suffix = f".{scope}"
    removed = 0
    for base in layout.bases.values():
        with contextlib.suppress(OSError):
            for entry in base.iterdir():
                if not entry.name.endswith(suffix) or entry.name in busy:
                    continue
                with contextlib.suppress(OSError):
                    entry.rmdir()
                    removed += 1
    return removed


def sweep_leftovers(data_dir: Path) -> int:
    """For whoever deletes an agent's data dir for good after the agent was killed (test,
    chaos and benchmark harnesses): the empty cgroups its allocations left behind. An agent
    sweeps its own on start, but one whose data dir is gone never starts again, and each
    leftover stays in every cgroup hierarchy until reboot."""
    return sweep_scope(detect(), cgroup_scope(data_dir))


class Supervisor:
    """Runs allocations as local process groups and reports their states.

    All methods must be called from the event loop the supervisor runs in.
    ``on_event`` is called synchronously from that loop for every transition;
    exceptions it raises are logged and otherwise ignored.

    ``isolation`` forces a mode ("cgroup-v2", "cgroup-v1" or "rlimit"; a cgroup
    mode the host does not offer raises ValueError); by default the best
    available one is detected. ``sample_interval_s`` paces metrics sampling,
    the rlimit-mode memory watchdog and log rotation.
    """

    def __init__(
        self,
        data_dir: Path,
        on_event: Callable[[AllocationEvent], None],
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = uniform,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        isolation: str | None = None,
        sample_interval_s: float = 1.0,
        cgroup_root: Path = CGROUP_ROOT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._on_event = on_event
        self._clock = clock
        self._rand = rand
        self._monotonic = monotonic
        self._runners: dict[str, AllocationRunner] = {}
        if isolation is not None and isolation not in MODES:
            raise ValueError(f"unknown isolation mode {isolation!r}")
        if isolation == MODE_RLIMIT:
            self._layout = Layout(MODE_RLIMIT, {})
        else:
            self._layout = detect(cgroup_root)
            if isolation is not None and self._layout.mode != isolation:
                raise ValueError(
                    f"isolation {isolation!r} unavailable here (detected {self._layout.mode!r})"
                )
        # Allocation cgroups of different supervisors (agents with different
        # data dirs on one host, parallel tests) must never collide: creating
        # one clears a leftover of the same name.
        self._cg_scope = cgroup_scope(self.data_dir)
        self._nursery = Nursery("supervisor")
        self._sampler = Sampler(sample_interval_s, self._nursery)
        self._sockets = SocketRegistry()
        # Emptied cgroups of ended allocations, for the next ones (v1; see cgpool).
        self._cgpool = CgroupPool(self._layout)
        self.sweep_cgroups()

    # ---------------------------------------------------------------- queries

    @property
    def isolation_mode(self) -> str:
        """ "cgroup-v2", "cgroup-v1" or "rlimit"."""
        return self._layout.mode

    def alloc_dir(self, alloc_id: str) -> Path:
        """The allocation's directory; raises `ValueError` for an id that is not one (it
        could name a path outside the data dir)."""
        if not ALLOC_ID_RE.fullmatch(alloc_id):
            raise ValueError(f"invalid allocation id {alloc_id!r}")
        return self.data_dir / "allocs" / alloc_id

    def allocations(self) -> dict[str, AllocationEvent]:
        """The latest event of every allocation known here (final ones until forget())."""
        return {alloc_id: r.last for alloc_id, r in self._runners.items()}

    def active(self, alloc_id: str) -> bool:
        """Whether the allocation is running or waiting to be restarted (not final)."""
        r = self._runners.get(alloc_id)
        return r is not None and r.active()

    def spec(self, alloc_id: str) -> AllocationSpec | None:
        r = self._runners.get(alloc_id)
        return r.spec if r else None

    def metrics(self) -> dict[str, AllocationMetrics]:
        """Latest sample of every running allocation (refreshed every sample_interval_s)."""
        return self._sampler.metrics()

    def cgroup_paths(self, alloc_id: str) -> dict[str, Path]:
        """The current process's cgroup directories (empty in rlimit mode or when not running)."""
        r = self._runners.get(alloc_id)
        if r is None or r.handle is None or r.handle.cg is None:
            return {}
        return dict(r.handle.cg.paths)

    def read_log(self, alloc_id: str, stream: str, tail_lines: int) -> bytes:
        """Last lines of "stdout" or "stderr", including the newest rotated file if needed."""
        return logs.read_log(self.alloc_dir(alloc_id), stream, tail_lines)

    def follow_log(self, alloc_id: str, stream: str, from_offset: int = 0) -> AsyncIterator[bytes]:
        """Bytes appended from ``from_offset`` on (negative: from the end), across rotations."""
        return logs.follow_log(self.alloc_dir(alloc_id), stream, from_offset)

    # ---------------------------------------------------------------- control

    async def ensure(self, spec: AllocationSpec) -> AllocationEvent:
        """Start the allocation unless it is already being supervised.

        While an allocation is active (running, or waiting to be restarted)
        calling this again with the same alloc_id is a no-op, even with a
        different spec: changing a spec means stop() then ensure(). One that
        reached a final state (completed, failed, stopped) is started afresh,
        and a stop in progress is finished first (the later request wins).
        Returns once the first start attempt has an outcome.
        """
        while True:
            r = self._runners.get(spec.alloc_id)
            if r is not None and r.active() and r.stopping:
                await self._finished(r)
                # Look again: a concurrent ensure may have started it meanwhile.
                continue
            if r is not None and r.active():
                await r.started.wait()
                return r.last
            break
        r = self._start_runner(spec, None)
        await r.started.wait()
        return r.last

    async def adopt(self, spec: AllocationSpec) -> AllocationEvent | None:
        """Re-attach to the process recorded in pid.json by an earlier agent.

        Only a process whose pid *and* create_time match the record is
        adopted, so a recycled pid is never mistaken for ours. Returns None
        when there is nothing to adopt (the caller may then ensure()).
        """
        r = self._runners.get(spec.alloc_id)
        if r is not None and r.active():
            return r.last
        alloc_dir = self.alloc_dir(spec.alloc_id)
        record = procinfo.read_pid_record(alloc_dir)
        if record is None:
            return None
        if not procinfo.matches(record):
            procinfo.remove_pid_record(alloc_dir)
            if record.cgroups:
                AllocationCgroup.from_record(record.cgroup_mode or "", record.cgroups).remove()
            return None
        cg = None
        if record.cgroups and record.cgroup_mode == self._layout.mode:
            cg = AllocationCgroup.from_record(record.cgroup_mode, record.cgroups)
        r = self._start_runner(
            spec, lambda runner: AdoptedHandle(record.pid, record.create_time, record.pgid, cg)
        )
        await r.started.wait()
        return r.last

    async def stop(self, alloc_id: str) -> AllocationEvent | None:
        """Stop the allocation's whole process group; it is not restarted afterwards.

        Sends the spec's stop signal to the group (and every other process in
        the allocation's cgroup), waits up to the stop timeout_s for every member
        to exit, then SIGKILLs the group and the cgroup. Returns the final
        event, or None for an unknown alloc_id. A caller that stops waiting
        does not abandon the process group half-killed: the runner finishes.
        """
        r = self._runners.get(alloc_id)
        if r is None:
            return None
        if r.active():
            r.request_stop()
            await self._finished(r)
        return r.last

    async def stop_all(self) -> None:
        """Stop every allocation; on return no process of ours is left running."""
        await asyncio.gather(*(self.stop(a) for a, r in self._runners.items() if r.active()))
        await self._sampler.stop()
        await asyncio.to_thread(self._cgpool.drain)

    async def detach_all(self) -> None:
        """Stop watching without touching the processes (they can be adopted later)."""
        runners = [
            r.supervising
            for r in self._runners.values()
            if r.active() and r.supervising is not None
        ]
        for r in self._runners.values():
            if r.handle is not None:
                r.handle.close()
        for task in runners:
            task.cancel()
        if runners:
            await asyncio.wait(runners)
        await self._sampler.stop()
        await asyncio.to_thread(self._cgpool.drain)

    def forget(self, alloc_id: str) -> bool:
        """Drop an allocation that reached a final state from allocations()."""
        r = self._runners.get(alloc_id)
        if r is None or r.active():
            return False
        del self._runners[alloc_id]
        return True

    async def pause(self, alloc_id: str) -> AllocationEvent | None:
        """Freeze the process (cgroup freezer, else SIGSTOP to its group).

        Returns the "paused" event (or the current one if already paused),
        None for an unknown alloc_id; raises AllocationNotRunning without a
        live process. Health checks are suspended while paused.
        """
        r = self._runners.get(alloc_id)
        return None if r is None else await r.pause()

    async def resume(self, alloc_id: str) -> AllocationEvent | None:
        """Undo pause(); an allocation that is not paused is left alone."""
        r = self._runners.get(alloc_id)
        return None if r is None else r.resume()

    def signal(self, alloc_id: str, name: str) -> bool | None:
        """Send a signal ("SIGUSR1", "USR1" or "10") to the allocation's process group.

        True if delivered, None for an unknown alloc_id; raises ValueError for
        an unknown signal and AllocationNotRunning without a live process.
        """
        sig: signal.Signals = parse_signal(name)
        r = self._runners.get(alloc_id)
        return None if r is None else r.signal(sig)

    async def restart(self, alloc_id: str) -> AllocationEvent | None:
        """Stop the process (stop signal, timeout, kill) and start a new one at once.

        Counts as a restart but ignores backoff and the restart limit. An
        allocation waiting out a backoff is started immediately. Returns the
        new process's "running" event (or the final event if it could not
        start), None for an unknown alloc_id; raises AllocationNotRunning for
        an allocation in a final state or being stopped.
        """
        r = self._runners.get(alloc_id)
        return None if r is None else await r.restart()

    def sweep_cgroups(self) -> int:
        """Remove empty allocation cgroups of this supervisor left by earlier runs.

        Processes that ended while no agent watched them (agent killed, then
        the processes died) leave their directories behind. Only empty ones
        of inactive allocations are removed (rmdir refuses populated cgroups).
        Returns how many were removed.
        """
        busy = {self._cg_name(a) for a, r in self._runners.items() if r.active()}
        return sweep_scope(self._layout, self._cg_scope, busy)

    # -------------------------------------------------------------- internals

    def _cg_name(self, alloc_id: str) -> str:
        return f"{alloc_id}.{self._cg_scope}"

    def _start_runner(
        self,
        spec: AllocationSpec,
        adopted: Callable[[AllocationRunner], AdoptedHandle] | None,
    ) -> AllocationRunner:
        r = AllocationRunner(
            spec,
            self.alloc_dir(spec.alloc_id),
            self._on_event,
            self._clock,
            self._rand,
            self._monotonic,
        )
        r.hooks = self._hooks(r)
        self._runners[spec.alloc_id] = r
        self._sampler.start()
        handle = adopted(r) if adopted is not None else None
        r.supervising = self._nursery.start(r.run(handle), name=f"supervise-{spec.alloc_id}")
        return r

    def _hooks(self, r: AllocationRunner) -> list[Hook]:
        """The concerns a runner composes; exited hooks run in this order. Health checks
        and listening sockets only for a spec that has them (a runner keeps its hooks for
        as long as its allocation runs)."""
        spec = r.spec
        cgroup = CgroupHook(
            r,
            self._layout,
            self._cg_name(r.spec.alloc_id),
            self._monotonic,
            self._sampler.retry_removal,
            self._cgpool,
        )
        return [
            *([HealthHook(r, self._monotonic)] if spec.health is not None else []),
            *([SocketsHook(r, self._sockets)] if spec.sockets else []),
            MetricsHook(r, self._sampler, cgroup.check_memory),
            LogsHook(r, self._sampler),
            PidRecordHook(r),
            cgroup,
        ]

    async def _finished(self, r: AllocationRunner) -> None:
        """Wait for the runner to end; cancelling the caller does not cancel the runner."""
        if r.supervising is not None and not r.supervising.done():
            await asyncio.wait({r.supervising})
