"""Local process supervisor of the node agent.

Starts, watches, restarts and stops the OS processes of allocations and
reports every state change through a callback. Restart decisions live in
:mod:`hacontrol.agent.backoff`; this module only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import json
import logging
import os
import pwd
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from hacontrol.agent import execwrap, logs, procinfo
from hacontrol.agent.backoff import (
    ACTION_COMPLETE,
    ACTION_GIVE_UP,
    RestartState,
    decide,
)
from hacontrol.agent.cgroups import (
    CGROUP_ROOT,
    MODE_RLIMIT,
    MODES,
    InstanceCgroup,
    Layout,
    detect,
)
from hacontrol.agent.health import HealthState, health_step, probe
from hacontrol.agent.limits import over_memory, rlimits_for
from hacontrol.agent.metrics import (
    CpuMemo,
    InstanceMetrics,
    ProcSample,
    aggregate,
    memo,
    pids_by_pgid,
    sample_process,
)
from hacontrol.agent.sockets import SocketRegistry
from hacontrol.agent.spec import (
    HEALTH_STARTING,
    HEALTH_UNHEALTHY,
    REASON_EXIT,
    REASON_FAILED_START,
    REASON_HEALTH,
    REASON_OOM,
    REASON_SIGNAL,
    REASON_STOPPED,
    STATE_EXITED,
    STATE_FAILED,
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_STARTING,
    STATE_STOPPED,
    TaskEvent,
    TaskSpec,
    parse_signal,
)

log = logging.getLogger(__name__)

STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"

# How often to look for group members that outlive the group leader while a
# stop is in progress. Only used during stops; exits of the leader itself are
# delivered by the child watcher without polling.
_GROUP_POLL_S = 0.02
# After SIGKILL the kernel needs a moment to tear processes down; bound the
# wait so a stuck (e.g. uninterruptible) process cannot hang a stop forever.
_KILL_GRACE_S = 2.0
# Non-child processes cannot be waited for by the kernel, so adopted ones are
# watched by a thread that checks on them at this interval.
_ADOPTED_POLL_S = 0.05
# Freezing takes microseconds to milliseconds; a freezer that has not settled
# by then is stuck (e.g. a task in uninterruptible sleep).
_FREEZE_TIMEOUT_S = 2.0
_FREEZE_POLL_S = 0.005

WRAPPER = str(Path(execwrap.__file__).resolve())

ExitStatus = tuple[int | None, str | None]


class TaskNotRunning(RuntimeError):
    """The operation needs a live instance and the task has none right now."""


# ------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class Identity:
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None


def resolve_identity(user: str | None, group: str | None, euid: int) -> Identity:
    """uid/gid/supplementary groups for the child; ValueError if not possible.

    Names or numbers are accepted. Changing identity needs root; a non-root
    agent may only "change" to its own ids.
    """
    if user is None and group is None:
        return Identity()
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    if user is not None:
        try:
            pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError):
            raise ValueError(f"unknown user {user!r}") from None
        uid, gid = pw.pw_uid, pw.pw_gid
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"unknown group {group!r}") from None
    if user is not None:
        assert gid is not None
        groups = sorted(set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)))  # type: ignore[arg-type]
    elif gid is not None:
        groups = [gid]
    if euid != 0:
        if (uid is None or uid == euid) and (gid is None or gid == os.getegid()):
            return Identity()
        raise ValueError("user/group can only be set when the agent runs as root")
    return Identity(uid, gid, groups)


def shell_command(spec: TaskSpec) -> list[str]:
    """The argv to exec: /bin/sh -c only when the spec asks for a shell."""
    if not spec.shell:
        return list(spec.command)
    # Like subprocess with shell=True: further items become $0, $1, ...
    return ["/bin/sh", "-c", spec.command[0], *spec.command[1:]]


def exit_reason(
    exit_code: int | None, sig: str | None, oom: bool, requested: str | None
) -> str:
    """Why an instance ended; an ending we caused names our cause."""
    if requested is not None:
        return requested
    if oom:
        return REASON_OOM
    if sig is not None:
        return REASON_SIGNAL
    return REASON_EXIT


# ---------------------------------------------------------------- handles


class _Handle(Protocol):
    """A running process group being watched."""

    pid: int
    pgid: int
    done: asyncio.Future[ExitStatus]
    adopted: bool
    cg: InstanceCgroup | None

    def close(self) -> None: ...


class _ChildHandle:
    """A process we spawned; its exit arrives via the asyncio child watcher."""

    adopted = False

    def __init__(self, proc: asyncio.subprocess.Process, cg: InstanceCgroup | None) -> None:
        self.proc = proc
        self.pid = proc.pid
        # start_new_session makes the child the leader of its own group.
        self.pgid = proc.pid
        self.cg = cg
        self.done: asyncio.Future[ExitStatus] = asyncio.ensure_future(self._wait())

    async def _wait(self) -> ExitStatus:
        return procinfo.decode_returncode(await self.proc.wait())

    def close(self) -> None:
        pass


class _AdoptedHandle:
    """A process left behind by an earlier agent; not our child, so no waitpid."""

    adopted = True

    def __init__(self, proc: psutil.Process, pgid: int, cg: InstanceCgroup | None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = pgid
        self.cg = cg
        self._closed = threading.Event()
        self.done: asyncio.Future[ExitStatus] = asyncio.ensure_future(
            asyncio.to_thread(self._watch)
        )

    def _watch(self) -> ExitStatus:
        # Not psutil.Process.wait: it calls waitpid, which would steal the
        # exit from asyncio's child watcher if the process is still our child
        # (adopted after detach_all in the same agent), and it never returns
        # for a zombie whose parent (some container inits) does not reap it.
        # is_running() also compares create_time, so pid reuse reads as exit.
        while not self._closed.wait(_ADOPTED_POLL_S):
            try:
                if not self.proc.is_running() or self.proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
        # The exit status of a non-child is not ours to collect.
        return None, None

    def close(self) -> None:
        self._closed.set()


@dataclass
class _Task:
    spec: TaskSpec
    alloc_dir: Path
    last: TaskEvent
    restarts: int = 0
    rstate: RestartState = field(default_factory=RestartState)
    handle: _Handle | None = None
    runner: asyncio.Task[None] | None = None
    stopper: asyncio.Task[TaskEvent] | None = None
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    # Resolved once the first start attempt has an outcome (running or failed).
    started: asyncio.Event = field(default_factory=asyncio.Event)
    # The runner reached a final state by itself (completed / gave up / could not start).
    terminal: bool = False
    last_exit: ExitStatus = (None, None)
    last_pid: int | None = None
    # Per instance: set by restart() or the health checker to end the current
    # instance (or cut a backoff short) for the cause in kill_reason.
    poke: asyncio.Event = field(default_factory=asyncio.Event)
    kill_reason: str | None = None
    paused: bool = False
    health: str | None = None
    health_task: asyncio.Task[None] | None = None
    # The memory watchdog (rlimit mode) killed this instance.
    oom_flag: bool = False
    restart_waiters: list[asyncio.Future[TaskEvent]] = field(default_factory=list)
    socket_key: str | None = None
    socks: list[socket.socket] = field(default_factory=list)

    def active(self) -> bool:
        return self.runner is not None and not self.runner.done()


def _live(pids: list[int]) -> list[int]:
    out: list[int] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
    return out


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
        on_event: Callable[[TaskEvent], None],
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
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
        self._tasks: dict[str, _Task] = {}
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
        # Instance cgroups of different supervisors (agents with different
        # data dirs on one host, parallel tests) must never collide: creating
        # one clears a leftover of the same name.
        self._cg_scope = hashlib.sha1(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        self._sample_interval_s = sample_interval_s
        self._sampler: asyncio.Task[None] | None = None
        self._metrics: dict[str, InstanceMetrics] = {}
        self._cpu_memo: dict[str, CpuMemo] = {}
        self._sample_ts: dict[str, float] = {}
        self._sockets = SocketRegistry()
        # cgroups whose rmdir failed (an unreaped zombie still counted in
        # them); retried by the sampler.
        self._dead_cgroups: list[InstanceCgroup] = []
        self.sweep_cgroups()

    # ---------------------------------------------------------------- queries

    @property
    def isolation_mode(self) -> str:
        """"cgroup-v2", "cgroup-v1" or "rlimit"."""
        return self._layout.mode

    def alloc_dir(self, alloc_id: str) -> Path:
        return self.data_dir / "allocs" / alloc_id

    def tasks(self) -> dict[str, TaskEvent]:
        return {alloc_id: t.last for alloc_id, t in self._tasks.items()}

    def active(self, alloc_id: str) -> bool:
        """Whether the task is running or waiting to be restarted (not final)."""
        t = self._tasks.get(alloc_id)
        return t is not None and t.active()

    def spec(self, alloc_id: str) -> TaskSpec | None:
        t = self._tasks.get(alloc_id)
        return t.spec if t else None

    def metrics(self) -> dict[str, InstanceMetrics]:
        """Latest sample of every running instance (refreshed every sample_interval_s)."""
        return dict(self._metrics)

    def cgroup_paths(self, alloc_id: str) -> dict[str, Path]:
        """The current instance's cgroup directories (empty in rlimit mode or when not running)."""
        t = self._tasks.get(alloc_id)
        if t is None or t.handle is None or t.handle.cg is None:
            return {}
        return dict(t.handle.cg.paths)

    def read_log(self, alloc_id: str, stream: str, tail_lines: int) -> bytes:
        """Last lines of "stdout" or "stderr", including the newest rotated file if needed."""
        return logs.read_log(self.alloc_dir(alloc_id), stream, tail_lines)

    def follow_log(
        self, alloc_id: str, stream: str, from_offset: int = 0
    ) -> AsyncIterator[bytes]:
        """Bytes appended from ``from_offset`` on (negative: from the end), across rotations."""
        return logs.follow_log(self.alloc_dir(alloc_id), stream, from_offset)

    # ---------------------------------------------------------------- control

    async def ensure(self, spec: TaskSpec) -> TaskEvent:
        """Start the task unless it is already being supervised.

        While a task is active (running, or waiting to be restarted) calling
        this again with the same alloc_id is a no-op, even with a different
        spec: changing a spec means stop() then ensure(). A task that reached
        a final state (completed, failed, stopped) is started afresh, and a
        stop in progress is finished first (the later request wins).
        Returns once the first start attempt has an outcome.
        """
        while True:
            t = self._tasks.get(spec.alloc_id)
            if t is not None and t.stopper is not None and not t.stopper.done():
                await asyncio.shield(t.stopper)
                # Look again: a concurrent ensure may have started it meanwhile.
                continue
            if t is not None and t.active():
                await t.started.wait()
                return t.last
            break
        t = self._new_task(spec)
        self._ensure_sampler()
        t.runner = asyncio.create_task(self._run(t, None), name=f"supervise-{spec.alloc_id}")
        await t.started.wait()
        return t.last

    run_task = ensure

    async def adopt(self, spec: TaskSpec) -> TaskEvent | None:
        """Re-attach to the process recorded in pid.json by an earlier agent.

        Only a process whose pid *and* create_time match the record is
        adopted, so a recycled pid is never mistaken for ours. Returns None
        when there is nothing to adopt (the caller may then ensure()).
        """
        t = self._tasks.get(spec.alloc_id)
        if t is not None and t.active():
            return t.last
        alloc_dir = self.alloc_dir(spec.alloc_id)
        record = procinfo.read_pid_record(alloc_dir)
        if record is None:
            return None
        proc = procinfo.matches(record)
        if proc is None:
            procinfo.remove_pid_record(alloc_dir)
            if record.cgroups:
                InstanceCgroup.from_record(record.cgroup_mode or "", record.cgroups).remove()
            return None
        cg = None
        if record.cgroups and record.cgroup_mode == self._layout.mode:
            cg = InstanceCgroup.from_record(record.cgroup_mode, record.cgroups)
        t = self._new_task(spec)
        self._ensure_sampler()
        handle = _AdoptedHandle(proc, record.pgid, cg)
        t.runner = asyncio.create_task(self._run(t, handle), name=f"supervise-{spec.alloc_id}")
        await t.started.wait()
        return t.last

    async def stop(self, alloc_id: str) -> TaskEvent | None:
        """Stop the task's whole process group; it is not restarted afterwards.

        Sends the spec's stop signal to the group (and every other process in
        the instance's cgroup), waits up to stop_timeout_s for every member to
        exit, then SIGKILLs the group and the cgroup. Returns the final event,
        or None for an unknown alloc_id.
        """
        t = self._tasks.get(alloc_id)
        if t is None:
            return None
        if t.stopper is None or t.stopper.done():
            if not t.active():
                return t.last
            t.stopper = asyncio.create_task(self._stop(t), name=f"stop-{alloc_id}")
        # Shielded so that a caller giving up on waiting does not abandon the
        # process group half-killed.
        return await asyncio.shield(t.stopper)

    async def stop_all(self) -> None:
        """Stop every task; on return no process of ours is left running."""
        ids = [a for a, t in self._tasks.items() if t.active() or t.stopper is not None]
        await asyncio.gather(*(self.stop(a) for a in ids))
        await self._stop_sampler()

    async def detach_all(self) -> None:
        """Stop watching without touching the processes (they can be adopted later)."""
        runners = []
        for t in self._tasks.values():
            if t.active() and t.runner is not None:
                t.runner.cancel()
                runners.append(t.runner)
            if t.handle is not None:
                t.handle.close()
        for r in runners:
            with contextlib.suppress(asyncio.CancelledError):
                await r
        await self._stop_sampler()

    def forget(self, alloc_id: str) -> bool:
        """Drop a task that reached a final state from tasks()."""
        t = self._tasks.get(alloc_id)
        if t is None or t.active():
            return False
        del self._tasks[alloc_id]
        return True

    async def pause(self, alloc_id: str) -> TaskEvent | None:
        """Freeze the instance (cgroup freezer, else SIGSTOP to its group).

        Returns the "paused" event (or the current one if already paused),
        None for an unknown alloc_id; raises TaskNotRunning without a live
        instance. Health checks are suspended while paused.
        """
        t = self._tasks.get(alloc_id)
        if t is None:
            return None
        handle = self._live_handle(t)
        if t.paused:
            return t.last
        cg = handle.cg
        if cg is not None and cg.can_freeze():
            how = "cgroup freezer"
            if not cg.freeze_begin():
                raise RuntimeError(f"cannot freeze {alloc_id}")
            deadline = self._monotonic() + _FREEZE_TIMEOUT_S
            while not cg.is_frozen():
                if self._monotonic() > deadline:
                    cg.thaw()
                    raise RuntimeError(f"freezing {alloc_id} did not complete")
                await asyncio.sleep(_FREEZE_POLL_S)
        else:
            how = "SIGSTOP"
            procinfo.signal_group(handle.pgid, signal.SIGSTOP)
        t.paused = True
        return self._emit(t, STATE_PAUSED, pid=handle.pid, message=f"paused ({how})")

    async def resume(self, alloc_id: str) -> TaskEvent | None:
        """Undo pause(); a task that is not paused is left alone."""
        t = self._tasks.get(alloc_id)
        if t is None:
            return None
        handle = self._live_handle(t)
        if not t.paused:
            return t.last
        self._unpause(t, handle)
        return self._emit(t, STATE_RUNNING, pid=handle.pid, message="resumed")

    def signal(self, alloc_id: str, name: str) -> bool | None:
        """Send a signal ("SIGUSR1", "USR1" or "10") to the instance's process group.

        True if delivered, None for an unknown alloc_id; raises ValueError for
        an unknown signal and TaskNotRunning without a live instance.
        """
        sig = parse_signal(name)
        t = self._tasks.get(alloc_id)
        if t is None:
            return None
        handle = self._live_handle(t)
        return procinfo.signal_group(handle.pgid, sig)

    async def restart(self, alloc_id: str) -> TaskEvent | None:
        """Stop the instance (stop signal, timeout, kill) and start a new one at once.

        Counts as a restart but ignores backoff and the restart limit. A task
        waiting out a backoff is started immediately. Returns the new
        instance's "running" event (or the final event if it could not start),
        None for an unknown alloc_id; raises TaskNotRunning for a task in a
        final state or being stopped.
        """
        t = self._tasks.get(alloc_id)
        if t is None:
            return None
        if not t.active() or t.stop_requested.is_set():
            raise TaskNotRunning(f"{alloc_id} is not active")
        fut: asyncio.Future[TaskEvent] = asyncio.get_running_loop().create_future()
        t.restart_waiters.append(fut)
        if t.kill_reason is None:
            t.kill_reason = REASON_STOPPED
        t.poke.set()
        return await fut

    def sweep_cgroups(self) -> int:
        """Remove empty instance cgroups of this supervisor left by earlier runs.

        Instances that ended while no agent watched them (agent killed, then
        the processes died) leave their directories behind. Only empty ones
        of inactive tasks are removed (rmdir refuses populated cgroups).
        Returns how many were removed.
        """
        suffix = f".{self._cg_scope}"
        busy = {self._cg_name(a) for a, t in self._tasks.items() if t.active()}
        removed = 0
        for base in self._layout.bases.values():
            with contextlib.suppress(OSError):
                for entry in base.iterdir():
                    if not entry.name.endswith(suffix) or entry.name in busy:
                        continue
                    with contextlib.suppress(OSError):
                        entry.rmdir()
                        removed += 1
        return removed

    # -------------------------------------------------------------- internals

    def _live_handle(self, t: _Task) -> _Handle:
        handle = t.handle
        if handle is None or handle.done.done() or t.stop_requested.is_set():
            raise TaskNotRunning(f"{t.spec.alloc_id} has no running instance")
        return handle

    def _unpause(self, t: _Task, handle: _Handle) -> None:
        if not t.paused:
            return
        t.paused = False
        if handle.cg is not None and handle.cg.can_freeze():
            handle.cg.thaw()
        else:
            procinfo.signal_group(handle.pgid, signal.SIGCONT)

    def _new_task(self, spec: TaskSpec) -> _Task:
        alloc_dir = self.alloc_dir(spec.alloc_id)
        last = TaskEvent(
            spec.alloc_id,
            STATE_STARTING,
            None,
            0,
            None,
            None,
            self._clock(),
            health=HEALTH_STARTING if spec.health else None,
        )
        t = _Task(spec=spec, alloc_dir=alloc_dir, last=last)
        self._tasks[spec.alloc_id] = t
        return t

    def _emit(
        self,
        t: _Task,
        state: str,
        pid: int | None = None,
        exit_code: int | None = None,
        sig: str | None = None,
        message: str = "",
        reason: str | None = None,
    ) -> TaskEvent:
        ev = TaskEvent(
            alloc_id=t.spec.alloc_id,
            state=state,
            pid=pid,
            restarts=t.restarts,
            exit_code=exit_code,
            signal=sig,
            ts=self._clock(),
            message=message,
            reason=reason,
            health=t.health,
        )
        t.last = ev
        try:
            self._on_event(ev)
        except Exception:
            log.exception("on_event callback failed for %s", ev)
        return ev

    def _wake_restart_waiters(self, t: _Task, ev: TaskEvent) -> None:
        waiters, t.restart_waiters = t.restart_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(ev)

    async def _run(self, t: _Task, handle: _Handle | None) -> None:
        try:
            await self._supervise(t, handle)
        except asyncio.CancelledError:
            # Cancellation means detaching: the process keeps running and its
            # pid.json stays so that it can be adopted. An adopted process's
            # watcher thread must end too, or loop shutdown would wait on it.
            if t.handle is not None:
                t.handle.close()
            raise
        except Exception as exc:
            log.exception("supervising %s failed", t.spec.alloc_id)
            if t.handle is not None and not t.handle.done.done():
                await self._terminate(t, t.handle)
            t.terminal = True
            self._emit(t, STATE_FAILED, message=f"supervisor error: {exc!r}")
        finally:
            self._stop_health(t)
            self._metrics.pop(t.spec.alloc_id, None)
            if t.socket_key is not None:
                self._sockets.release(t.socket_key, t.spec.alloc_id)
                t.socket_key = None
                t.socks = []
            t.started.set()
            self._wake_restart_waiters(t, t.last)

    async def _supervise(self, t: _Task, handle: _Handle | None) -> None:
        spec = t.spec
        while True:
            t.kill_reason = None
            t.poke.clear()
            t.paused = False
            t.oom_flag = False
            if handle is None:
                t.last_exit = (None, None)
                t.last_pid = None
                t.health = HEALTH_STARTING if spec.health else None
                self._emit(t, STATE_STARTING)
                handle = await self._spawn(t)
                if handle is None:
                    return
            t.handle = handle
            t.last_pid = handle.pid
            if t.stop_requested.is_set():
                # stop() arrived while we were spawning and could not see the
                # process yet; the stop itself is reported by stop().
                await self._terminate(t, handle)
                return
            ev = self._emit(
                t, STATE_RUNNING, pid=handle.pid, message="adopted" if handle.adopted else ""
            )
            t.started.set()
            self._wake_restart_waiters(t, ev)
            if spec.health is not None:
                t.health_task = asyncio.create_task(
                    self._health_loop(t, handle), name=f"health-{spec.alloc_id}"
                )
            started = self._monotonic()
            poked = asyncio.ensure_future(t.poke.wait())
            try:
                await asyncio.wait({handle.done, poked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                poked.cancel()
            if not handle.done.done() and not t.stop_requested.is_set():
                # restart() or a failed health check wants this instance gone.
                await self._terminate(t, handle)
            exit_code, sig = await handle.done
            self._stop_health(t)
            uptime = self._monotonic() - started
            t.last_exit = (exit_code, sig)
            if t.stop_requested.is_set():
                return
            oom = t.oom_flag or (handle.cg is not None and handle.cg.oom_kills() > 0)
            await self._reap_group(t, handle)
            t.handle = None
            t.paused = False
            if t.stop_requested.is_set():
                return
            reason = exit_reason(exit_code, sig, oom, t.kill_reason)
            if t.kill_reason == REASON_STOPPED:
                self._emit(
                    t, STATE_EXITED, handle.pid, exit_code, sig, "restart requested", reason
                )
                t.restarts += 1
                handle = None
                continue
            decision = decide(
                spec.restart,
                t.rstate,
                exit_code,
                sig,
                uptime,
                self._monotonic(),
                self._rand(),
                failed=t.kill_reason == REASON_HEALTH,
            )
            t.rstate = decision.state
            message = decision.reason
            if reason == REASON_OOM:
                message = f"out of memory; {message}"
            elif reason == REASON_HEALTH:
                message = f"failed health checks; {message}"
            if decision.action == ACTION_COMPLETE:
                t.terminal = True
                self._emit(t, STATE_EXITED, handle.pid, exit_code, sig, message, reason)
                return
            if decision.action == ACTION_GIVE_UP:
                t.terminal = True
                self._emit(t, STATE_FAILED, handle.pid, exit_code, sig, message, reason)
                return
            self._emit(t, STATE_EXITED, handle.pid, exit_code, sig, message, reason)
            # A stop during the backoff reports no exit status: the one above
            # belongs to the crash, which was already reported.
            t.last_exit = (None, None)
            t.last_pid = None
            t.kill_reason = None
            t.poke.clear()
            if decision.delay_s > 0:
                await self._backoff(t, decision.delay_s)
            if t.stop_requested.is_set():
                return
            t.restarts += 1
            handle = None

    async def _backoff(self, t: _Task, delay_s: float) -> None:
        """Wait out the delay unless a stop or a restart() request comes first."""
        waits = [
            asyncio.ensure_future(t.stop_requested.wait()),
            asyncio.ensure_future(t.poke.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _stop_health(self, t: _Task) -> None:
        if t.health_task is not None:
            t.health_task.cancel()
            t.health_task = None

    async def _health_loop(self, t: _Task, handle: _Handle) -> None:
        check = t.spec.health
        assert check is not None
        env = dict(t.spec.env)
        env.setdefault("PATH", os.environ.get("PATH") or os.defpath)
        state = HealthState()
        started = self._monotonic()
        while True:
            await asyncio.sleep(check.interval_s)
            if t.paused:
                continue
            result = await probe(check, env, t.spec.cwd)
            if handle.done.done() or t.stop_requested.is_set() or t.paused:
                return
            new = health_step(check, state, result.ok, self._monotonic() - started)
            if new.status != state.status:
                t.health = new.status
                self._emit(
                    t,
                    t.last.state,
                    pid=handle.pid,
                    message=f"health {new.status}: {result.detail}",
                )
                if new.status == HEALTH_UNHEALTHY:
                    if t.kill_reason is None:
                        t.kill_reason = REASON_HEALTH
                    t.poke.set()
                    return
            state = new

    def _cg_name(self, alloc_id: str) -> str:
        return f"{alloc_id}.{self._cg_scope}"

    def _failed_start(self, t: _Task, message: str) -> None:
        t.terminal = True
        self._emit(t, STATE_FAILED, message=message, reason=REASON_FAILED_START)

    async def _spawn(self, t: _Task) -> _Handle | None:
        spec = t.spec
        command = shell_command(spec)
        env = dict(spec.env)
        env.setdefault("PATH", os.environ.get("PATH") or os.defpath)
        try:
            ident = resolve_identity(spec.user, spec.group, os.geteuid())
        except ValueError as exc:
            self._failed_start(t, f"cannot start {command[0]!r}: {exc}")
            return None
        if spec.sockets and t.socket_key is None:
            key = spec.socket_key or f"alloc:{spec.alloc_id}"
            try:
                t.socks = self._sockets.acquire(key, spec.alloc_id, spec.sockets)
            except (OSError, ValueError) as exc:
                self._failed_start(t, f"cannot bind sockets: {exc}")
                return None
            t.socket_key = key
        cg: InstanceCgroup | None = None
        if self._layout.mode != MODE_RLIMIT:
            try:
                cg = await asyncio.to_thread(
                    InstanceCgroup.create,
                    self._layout,
                    self._cg_name(spec.alloc_id),
                    spec.resources,
                )
            except OSError as exc:
                self._failed_start(t, f"cannot create cgroup: {exc}")
                return None
        err_r, err_w = os.pipe()
        config: dict[str, Any] = {
            "err_fd": err_w,
            "cgroup_procs": cg.procs_files() if cg is not None else [],
            "rlimits": rlimits_for(spec.resources) if cg is None else [],
            "uid": ident.uid,
            "gid": ident.gid,
            "groups": ident.groups,
            "umask": spec.umask,
            "fds": [s.fileno() for s in t.socks],
            "fd_names": [s.name for s in spec.sockets],
        }
        try:
            try:
                t.alloc_dir.mkdir(parents=True, exist_ok=True)
                with (
                    open(t.alloc_dir / STDOUT_LOG, "ab") as out,
                    open(t.alloc_dir / STDERR_LOG, "ab") as err,
                ):
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-I",
                        "-S",
                        WRAPPER,
                        json.dumps(config),
                        *command,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        env=env,
                        cwd=spec.cwd,
                        start_new_session=True,
                        pass_fds=[err_w, *config["fds"]],
                    )
            finally:
                os.close(err_w)
            # EOF without data: the wrapper exec'd the command (the pipe is
            # close-on-exec), so the pid now runs the task itself.
            failure = await asyncio.to_thread(_read_all, err_r)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            os.close(err_r)
            await self._discard_cgroup(cg)
            self._failed_start(t, f"cannot start {command[0]!r}: {exc}")
            return None
        os.close(err_r)
        if failure:
            await proc.wait()
            await self._discard_cgroup(cg)
            self._failed_start(t, _wrapper_error(failure, command[0]))
            return None
        handle = _ChildHandle(proc, cg)
        ctime = procinfo.create_time(proc.pid)
        if ctime is not None:
            try:
                procinfo.write_pid_record(
                    t.alloc_dir,
                    procinfo.PidRecord(
                        proc.pid,
                        handle.pgid,
                        ctime,
                        list(spec.command),
                        cgroup_mode=cg.mode if cg else None,
                        cgroups=cg.record() if cg else {},
                    ),
                )
            except OSError:
                log.warning("cannot write pid.json for %s", spec.alloc_id, exc_info=True)
        return handle

    async def _discard_cgroup(self, cg: InstanceCgroup | None) -> None:
        if cg is None:
            return
        if _live(cg.pids()):
            await asyncio.to_thread(cg.kill)
        deadline = self._monotonic() + _KILL_GRACE_S
        while not cg.remove():
            if self._monotonic() > deadline:
                self._dead_cgroups.append(cg)
                return
            await asyncio.sleep(_GROUP_POLL_S)

    async def _stop(self, t: _Task) -> TaskEvent:
        t.stop_requested.set()
        handle = t.handle
        if handle is not None:
            await self._terminate(t, handle)
        if t.runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await t.runner
        t.handle = None
        t.paused = False
        if t.terminal:
            # It ended on its own just before the stop got to it.
            return t.last
        exit_code, sig = t.last_exit
        return self._emit(
            t,
            STATE_STOPPED,
            pid=t.last_pid,
            exit_code=exit_code,
            sig=sig,
            message="stopped by request",
            reason=REASON_STOPPED,
        )

    def _alive(self, handle: _Handle) -> bool:
        if procinfo.group_alive(handle.pgid):
            return True
        return handle.cg is not None and bool(_live(handle.cg.pids()))

    def _signal_all(self, handle: _Handle, sig: signal.Signals) -> None:
        """The group, plus cgroup members that left it (setsid and the like)."""
        if self._may_signal(handle):
            procinfo.signal_group(handle.pgid, sig)
        if handle.cg is not None:
            for pid in handle.cg.pids():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)

    async def _terminate(self, t: _Task, handle: _Handle) -> None:
        """Stop signal to the group, grace period, then SIGKILL; waits for all members."""
        spec = t.spec
        sig = parse_signal(spec.stop_signal)
        loop_deadline = self._monotonic() + spec.stop_timeout_s
        self._signal_all(handle, sig)
        # A frozen or stopped process cannot act on the stop signal.
        self._unpause(t, handle)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(handle.done), spec.stop_timeout_s)
        while self._alive(handle) and self._monotonic() < loop_deadline:
            await asyncio.sleep(_GROUP_POLL_S)
        if not handle.done.done() or self._alive(handle):
            if self._may_signal(handle):
                procinfo.signal_group(handle.pgid, signal.SIGKILL)
            if handle.cg is not None:
                await asyncio.to_thread(handle.cg.kill)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(handle.done), _KILL_GRACE_S)
        kill_deadline = self._monotonic() + _KILL_GRACE_S
        while self._alive(handle) and self._monotonic() < kill_deadline:
            await asyncio.sleep(_GROUP_POLL_S)
        if handle.done.done():
            t.last_exit = handle.done.result()
        handle.close()
        procinfo.remove_pid_record(t.alloc_dir)
        await self._discard_cgroup(handle.cg)

    async def _reap_group(self, t: _Task, handle: _Handle) -> None:
        """After the leader exited on its own, kill whatever it left behind.

        Leftovers would otherwise pile up across restarts, holding ports and
        files the next instance needs.
        """
        procinfo.remove_pid_record(t.alloc_dir)
        if self._alive(handle):
            procinfo.signal_group(handle.pgid, signal.SIGKILL)
            if handle.cg is not None:
                await asyncio.to_thread(handle.cg.kill)
            deadline = self._monotonic() + _KILL_GRACE_S
            while self._alive(handle) and self._monotonic() < deadline:
                await asyncio.sleep(_GROUP_POLL_S)
        await self._discard_cgroup(handle.cg)

    def _may_signal(self, handle: _Handle) -> bool:
        """Guard against signalling a recycled pgid.

        Until the leader is reaped its pid (= the pgid) cannot be reused, and
        after that the kernel keeps the group id reserved while any member
        lives; only an empty group is unsafe to signal.
        """
        if not handle.done.done():
            return True
        return procinfo.group_alive(handle.pgid)

    # ------------------------------------------------ sampling and housekeeping

    def _ensure_sampler(self) -> None:
        if self._sampler is None or self._sampler.done():
            self._sampler = asyncio.create_task(self._sample_loop(), name="supervisor-sampler")

    async def _stop_sampler(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    async def _sample_loop(self) -> None:
        while True:
            try:
                await self._sample_once()
            except Exception:
                log.exception("sampling instances failed")
            await asyncio.sleep(self._sample_interval_s)

    async def _sample_once(self) -> None:
        targets: list[tuple[str, int, int, InstanceCgroup | None]] = []
        rotate: list[tuple[Path, Any]] = []
        for alloc_id, t in self._tasks.items():
            if t.active():
                rotate.append((t.alloc_dir, t.spec.logs))
            h = t.handle
            if h is not None and not h.done.done():
                targets.append((alloc_id, h.pid, h.pgid, h.cg))
        dead, self._dead_cgroups = self._dead_cgroups, []
        samples, now = await asyncio.to_thread(_collect, targets, rotate, dead)
        self._dead_cgroups.extend(cg for cg in dead if cg.paths and _exists_any(cg))
        current = {a for a, _, _, _ in targets}
        for alloc_id in list(self._metrics):
            if alloc_id not in current:
                self._metrics.pop(alloc_id, None)
                self._cpu_memo.pop(alloc_id, None)
                self._sample_ts.pop(alloc_id, None)
        for alloc_id, pid, _, cg in targets:
            procs = samples.get(alloc_id, [])
            m = aggregate(
                pid,
                procs,
                self._cpu_memo.get(alloc_id, {}),
                self._sample_ts.get(alloc_id),
                now,
            )
            self._metrics[alloc_id] = m
            self._cpu_memo[alloc_id] = memo(procs)
            self._sample_ts[alloc_id] = now
            t = self._tasks.get(alloc_id)
            if t is None or t.handle is None or cg is not None:
                continue
            if not t.oom_flag and over_memory(m.rss_bytes, t.spec.resources):
                # rlimit mode: no kernel enforcement per instance, so this
                # watchdog is the limit; the kill is reported as an OOM.
                t.oom_flag = True
                log.warning(
                    "%s over its memory limit (%d bytes resident), killing",
                    alloc_id,
                    m.rss_bytes,
                )
                procinfo.signal_group(t.handle.pgid, signal.SIGKILL)


def _exists_any(cg: InstanceCgroup) -> bool:
    return any(p.exists() for p in cg.paths.values())


def _collect(
    targets: list[tuple[str, int, int, InstanceCgroup | None]],
    rotate: list[tuple[Path, Any]],
    dead: list[InstanceCgroup],
) -> tuple[dict[str, list[ProcSample]], float]:
    """One pass over all instances (runs in a thread: it reads /proc and /sys)."""
    for alloc_dir, policy in rotate:
        for name in (STDOUT_LOG, STDERR_LOG):
            try:
                logs.rotate_if_needed(alloc_dir / name, policy)
            except OSError:
                log.warning("cannot rotate %s", alloc_dir / name, exc_info=True)
    for cg in dead:
        cg.remove()
    by_pgid = pids_by_pgid({pgid for _, _, pgid, cg in targets if cg is None})
    out: dict[str, list[ProcSample]] = {}
    for alloc_id, _, pgid, cg in targets:
        pids = cg.pids() if cg is not None else by_pgid.get(pgid, [])
        samples = [s for s in (sample_process(p) for p in pids) if s is not None]
        out[alloc_id] = samples
    return out, time.monotonic()


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _wrapper_error(raw: bytes, program: str) -> str:
    try:
        info = json.loads(raw)
        stage, error = str(info["stage"]), str(info["error"])
    except (ValueError, KeyError, TypeError):
        return f"cannot start {program!r}: {raw[:200]!r}"
    if stage == "exec":
        return error
    return f"cannot start {program!r}: {stage}: {error}"
