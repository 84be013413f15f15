"""Local process supervisor of the node agent.

Starts, watches, restarts and stops the OS processes of allocations and
reports every state change through a callback. Restart decisions live in
:mod:`hacontrol.agent.backoff`; this module only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil

from hacontrol.agent import procinfo
from hacontrol.agent.backoff import (
    ACTION_COMPLETE,
    ACTION_GIVE_UP,
    RestartState,
    decide,
)
from hacontrol.agent.spec import (
    STATE_EXITED,
    STATE_FAILED,
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

ExitStatus = tuple[int | None, str | None]


class _Handle(Protocol):
    """A running process group being watched."""

    pid: int
    pgid: int
    done: asyncio.Future[ExitStatus]
    adopted: bool

    def close(self) -> None: ...


class _ChildHandle:
    """A process we spawned; its exit arrives via the asyncio child watcher."""

    adopted = False

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        # start_new_session makes the child the leader of its own group.
        self.pgid = proc.pid
        self.done: asyncio.Future[ExitStatus] = asyncio.ensure_future(self._wait())

    async def _wait(self) -> ExitStatus:
        return procinfo.decode_returncode(await self.proc.wait())

    def close(self) -> None:
        pass


class _AdoptedHandle:
    """A process left behind by an earlier agent; not our child, so no waitpid."""

    adopted = True

    def __init__(self, proc: psutil.Process, pgid: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = pgid
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

    def active(self) -> bool:
        return self.runner is not None and not self.runner.done()


class Supervisor:
    """Runs allocations as local process groups and reports their states.

    All methods must be called from the event loop the supervisor runs in.
    ``on_event`` is called synchronously from that loop for every transition;
    exceptions it raises are logged and otherwise ignored.
    """

    def __init__(
        self,
        data_dir: Path,
        on_event: Callable[[TaskEvent], None],
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._on_event = on_event
        self._clock = clock
        self._rand = rand
        self._monotonic = monotonic
        self._tasks: dict[str, _Task] = {}

    # ---------------------------------------------------------------- queries

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
            return None
        t = self._new_task(spec)
        handle = _AdoptedHandle(proc, record.pgid)
        t.runner = asyncio.create_task(self._run(t, handle), name=f"supervise-{spec.alloc_id}")
        await t.started.wait()
        return t.last

    async def stop(self, alloc_id: str) -> TaskEvent | None:
        """Stop the task's whole process group; it is not restarted afterwards.

        Sends the spec's stop signal to the group, waits up to stop_timeout_s
        for every member to exit, then SIGKILLs the group. Returns the final
        event, or None for an unknown alloc_id.
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

    def forget(self, alloc_id: str) -> bool:
        """Drop a task that reached a final state from tasks()."""
        t = self._tasks.get(alloc_id)
        if t is None or t.active():
            return False
        del self._tasks[alloc_id]
        return True

    # -------------------------------------------------------------- internals

    def _new_task(self, spec: TaskSpec) -> _Task:
        alloc_dir = self.alloc_dir(spec.alloc_id)
        last = TaskEvent(spec.alloc_id, STATE_STARTING, None, 0, None, None, self._clock())
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
        )
        t.last = ev
        try:
            self._on_event(ev)
        except Exception:
            log.exception("on_event callback failed for %s", ev)
        return ev

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
            t.started.set()

    async def _supervise(self, t: _Task, handle: _Handle | None) -> None:
        spec = t.spec
        while True:
            if handle is None:
                t.last_exit = (None, None)
                t.last_pid = None
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
            self._emit(
                t, STATE_RUNNING, pid=handle.pid, message="adopted" if handle.adopted else ""
            )
            t.started.set()
            started = self._monotonic()
            exit_code, sig = await handle.done
            uptime = self._monotonic() - started
            t.last_exit = (exit_code, sig)
            if t.stop_requested.is_set():
                return
            await self._reap_group(t, handle)
            t.handle = None
            if t.stop_requested.is_set():
                return
            decision = decide(
                spec.restart, t.rstate, exit_code, sig, uptime, self._monotonic(), self._rand()
            )
            t.rstate = decision.state
            if decision.action == ACTION_COMPLETE:
                t.terminal = True
                self._emit(t, STATE_EXITED, handle.pid, exit_code, sig, decision.reason)
                return
            if decision.action == ACTION_GIVE_UP:
                t.terminal = True
                self._emit(t, STATE_FAILED, handle.pid, exit_code, sig, decision.reason)
                return
            self._emit(t, STATE_EXITED, handle.pid, exit_code, sig, decision.reason)
            # A stop during the backoff reports no exit status: the one above
            # belongs to the crash, which was already reported.
            t.last_exit = (None, None)
            t.last_pid = None
            if decision.delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(t.stop_requested.wait(), decision.delay_s)
            if t.stop_requested.is_set():
                return
            t.restarts += 1
            handle = None

    async def _spawn(self, t: _Task) -> _Handle | None:
        spec = t.spec
        env = dict(spec.env)
        env.setdefault("PATH", os.environ.get("PATH") or os.defpath)
        try:
            t.alloc_dir.mkdir(parents=True, exist_ok=True)
            with (
                open(t.alloc_dir / STDOUT_LOG, "ab") as out,
                open(t.alloc_dir / STDERR_LOG, "ab") as err,
            ):
                proc = await asyncio.create_subprocess_exec(
                    *spec.command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                    cwd=spec.cwd,
                    start_new_session=True,
                )
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            t.terminal = True
            self._emit(t, STATE_FAILED, message=f"cannot start {spec.command[0]!r}: {exc}")
            return None
        handle = _ChildHandle(proc)
        ctime = procinfo.create_time(proc.pid)
        if ctime is not None:
            try:
                procinfo.write_pid_record(
                    t.alloc_dir,
                    procinfo.PidRecord(proc.pid, handle.pgid, ctime, list(spec.command)),
                )
            except OSError:
                log.warning("cannot write pid.json for %s", spec.alloc_id, exc_info=True)
        return handle

    async def _stop(self, t: _Task) -> TaskEvent:
        t.stop_requested.set()
        handle = t.handle
        if handle is not None:
            await self._terminate(t, handle)
        if t.runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await t.runner
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
        )

    async def _terminate(self, t: _Task, handle: _Handle) -> None:
        """Stop signal to the group, grace period, then SIGKILL; waits for all members."""
        spec = t.spec
        sig = parse_signal(spec.stop_signal)
        loop_deadline = self._monotonic() + spec.stop_timeout_s
        if self._may_signal(handle):
            procinfo.signal_group(handle.pgid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(handle.done), spec.stop_timeout_s)
        while procinfo.group_alive(handle.pgid) and self._monotonic() < loop_deadline:
            await asyncio.sleep(_GROUP_POLL_S)
        if not handle.done.done() or procinfo.group_alive(handle.pgid):
            if self._may_signal(handle):
                procinfo.signal_group(handle.pgid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(handle.done), _KILL_GRACE_S)
        kill_deadline = self._monotonic() + _KILL_GRACE_S
        while procinfo.group_alive(handle.pgid) and self._monotonic() < kill_deadline:
            await asyncio.sleep(_GROUP_POLL_S)
        if handle.done.done():
            t.last_exit = handle.done.result()
        handle.close()
        procinfo.remove_pid_record(t.alloc_dir)

    async def _reap_group(self, t: _Task, handle: _Handle) -> None:
        """After the leader exited on its own, kill whatever it left in its group.

        Leftovers would otherwise pile up across restarts, holding ports and
        files the next instance needs.
        """
        procinfo.remove_pid_record(t.alloc_dir)
        if not procinfo.group_alive(handle.pgid):
            return
        procinfo.signal_group(handle.pgid, signal.SIGKILL)
        deadline = self._monotonic() + _KILL_GRACE_S
        while procinfo.group_alive(handle.pgid) and self._monotonic() < deadline:
            await asyncio.sleep(_GROUP_POLL_S)

    def _may_signal(self, handle: _Handle) -> bool:
        """Guard against signalling a recycled pgid.

        Until the leader is reaped its pid (= the pgid) cannot be reused, and
        after that the kernel keeps the group id reserved while any member
        lives; only an empty group is unsafe to signal.
        """
        if not handle.done.done():
            return True
        return procinfo.group_alive(handle.pgid)
