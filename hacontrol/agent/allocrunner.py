"""One runner per allocation: start, watch, restart and stop its process.

The runner owns the allocation's life: it launches the process, waits for it
to exit or for a request (stop, restart, failed health checks), asks
:mod:`hacontrol.agent.backoff` what to do next and reports every change as an
:class:`AllocationEvent`. Which state may follow which is the table in
:mod:`hacontrol.agent.transitions`; everything else the runner composes
(sockets, cgroup and OOM, pid record, health checks, logs, metrics) is a hook
in :mod:`hacontrol.agent.hooks`. Helpers the runner starts (process watchers,
the health loop) live in its nursery and end with it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

from hacontrol.agent import procinfo
from hacontrol.agent.backoff import ACTION_COMPLETE, ACTION_GIVE_UP, RestartState, decide
from hacontrol.agent.hooks import Hook, Outcome
from hacontrol.agent.hooks.cgroup import KILL_GRACE_S, POLL_S
from hacontrol.agent.nursery import Nursery
from hacontrol.agent.process import (
    ExitStatus,
    Handle,
    LaunchConfig,
    LaunchFailed,
    alive,
    may_signal,
    signal_all,
    spawn,
)
from hacontrol.agent.spec import AllocationEvent, AllocationSpec, parse_signal
from hacontrol.agent.transitions import InvalidTransition, Trigger, exit_reason, transition
from hacontrol.agent.wakeup import Flag, first_of
from hacontrol.model.states import AllocState, ExitReason, Health

log = logging.getLogger(__name__)

# Freezing takes microseconds to milliseconds; a freezer that has not settled
# by then is stuck (e.g. a process in uninterruptible sleep).
FREEZE_TIMEOUT_S = 2.0
FREEZE_POLL_S = 0.005
# How long a restart's events wait for its new process (see AllocationRunner._hold): as
# long as the agent's sync waits for a start to report "running" (agent.main.SETTLE_S).
RESTART_HOLD_S = 0.05
# What ends the hold: the restart has an outcome.
_HOLD_UNTIL = frozenset(Trigger) - {Trigger.EXITED, Trigger.LAUNCH}


class AllocationNotRunning(RuntimeError):
    """The operation needs a live process and the allocation has none right now."""


class AllocationRunner:
    """Runs one allocation. All methods must be called from the runner's event loop.

    ``on_event`` is called synchronously for every transition; exceptions it
    raises are logged and otherwise ignored. ``hooks`` must be set before
    :meth:`run` starts.
    """

    def __init__(
        self,
        spec: AllocationSpec,
        alloc_dir: Path,
        on_event: Callable[[AllocationEvent], None],
        clock: Callable[[], float],
        rand: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.spec = spec
        self.alloc_dir = alloc_dir
        self.nursery = Nursery(f"allocation {spec.alloc_id}")
        self.hooks: list[Hook] = []
        self.supervising: asyncio.Task[None] | None = None
        self._on_event = on_event
        self._clock = clock
        self._rand = rand
        self._monotonic = monotonic
        self.health: Health | None = Health.STARTING if spec.health else None
        self.last = AllocationEvent(
            spec.alloc_id, AllocState.STARTING, None, 0, None, None, clock(), health=self.health
        )
        self.restarts = 0
        self.handle: Handle | None = None
        # Resolved once the first start attempt has an outcome (running or failed).
        self.started = Flag()
        # The runner reached a final state by itself (completed / gave up / could not start).
        self.terminal = False
        self._rstate = RestartState()
        self._stop_requested = Flag()
        # Set by restart(), stop() or the health hook to end the current process
        # (or cut a backoff short); a restart or health kill says why in _kill_reason.
        self._poke = Flag()
        self._kill_reason: ExitReason | None = None
        self._paused = False
        self._last_exit: ExitStatus = (None, None)
        self._last_pid: int | None = None
        self._restart_waiters: list[asyncio.Future[AllocationEvent]] = []
        # Events of a restart under way, for on_event once it has an outcome (_hold).
        self._held: list[AllocationEvent] | None = None
        self._held_timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- queries

    def active(self) -> bool:
        """Running or waiting to be restarted (not in a final state)."""
        return self.supervising is not None and not self.supervising.done()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    # ---------------------------------------------------------------- control

    def request_stop(self) -> None:
        """Ask the runner to end the process and finish with "stopped"."""
        self._stop_requested.set()
        self._poke.set()

    async def pause(self) -> AllocationEvent:
        """Freeze the process (cgroup freezer, else SIGSTOP to its group)."""
        handle = self._live_handle()
        if self._paused:
            return self.last
        cg = handle.cg
        if cg is not None and cg.can_freeze():
            how = "cgroup freezer"
            if not cg.freeze_begin():
                raise RuntimeError(f"cannot freeze {self.spec.alloc_id}")
            deadline = self._monotonic() + FREEZE_TIMEOUT_S
            while not cg.is_frozen():
                if self._monotonic() > deadline:
                    cg.thaw()
                    raise RuntimeError(f"freezing {self.spec.alloc_id} did not complete")
                await asyncio.sleep(FREEZE_POLL_S)
        else:
            how = "SIGSTOP"
            procinfo.signal_group(handle.pgid, signal.SIGSTOP)
        self._paused = True
        return self._emit(Trigger.PAUSE, pid=handle.pid, message=f"paused ({how})")

    def resume(self) -> AllocationEvent:
        handle = self._live_handle()
        if not self._paused:
            return self.last
        self._unpause(handle)
        return self._emit(Trigger.RESUME, pid=handle.pid, message="resumed")

    def signal(self, sig: signal.Signals) -> bool:
        return procinfo.signal_group(self._live_handle().pgid, sig)

    async def restart(self) -> AllocationEvent:
        """End the process and start a new one at once; see Supervisor.restart."""
        if not self.active() or self.stopping:
            raise AllocationNotRunning(f"{self.spec.alloc_id} is not active")
        fut: asyncio.Future[AllocationEvent] = asyncio.get_running_loop().create_future()
        self._restart_waiters.append(fut)
        self.end_process(ExitReason.STOPPED)
        return await fut

    # ---------------------------------------------------------- for the hooks

    def report_health(self, status: Health, message: str, pid: int) -> None:
        self.health = status
        self._emit(Trigger.HEALTH, pid=pid, message=message)

    def end_process(self, reason: ExitReason) -> None:
        if self._kill_reason is None:
            self._kill_reason = reason
        self._poke.set()

    # ---------------------------------------------------------------- the run

    async def run(self, handle: Handle | None) -> None:
        """Supervise until a final state; ``handle``: an adopted process, else None."""
        try:
            await self._supervise(handle)
        except asyncio.CancelledError:
            # Cancellation means detaching: the process keeps running and its
            # pid.json stays so that it can be adopted. An adopted process's
            # watcher thread must end too, or loop shutdown would wait on it.
            if self.handle is not None:
                self.handle.close()
            raise
        except Exception as exc:
            log.exception("supervising %s failed", self.spec.alloc_id)
            handle = self.handle
            if handle is not None:
                try:
                    if not handle.done.done():
                        await self._terminate(handle)
                    await self._finish(handle)
                except Exception:
                    log.exception("cleaning up after %s failed", self.spec.alloc_id)
            self.terminal = True
            try:
                self._emit(Trigger.CRASHED, message=f"supervisor error: {exc!r}")
            except InvalidTransition:
                log.error("%s already in a final state %r", self.spec.alloc_id, self.last.state)
        finally:
            for hook in self.hooks:
                try:
                    hook.stop()
                except Exception:
                    log.exception("stopping %r of %s failed", hook, self.spec.alloc_id)
            await self.nursery.aclose()
            self._release()
            self.started.set()
            self._wake_restart_waiters(self.last)

    async def _supervise(self, handle: Handle | None) -> None:
        spec = self.spec
        while True:
            self._kill_reason = None
            if not self._stop_requested.is_set():
                self._poke.clear()
            self._paused = False
            if handle is None:
                self._last_exit = (None, None)
                self._last_pid = None
                self.health = Health.STARTING if spec.health else None
                self._emit(Trigger.LAUNCH)
                handle = await self._launch()
                if handle is None:
                    return
            self.handle = handle
            self._last_pid = handle.pid
            for hook in self.hooks:
                hook.poststart(handle)
            if self._stop_requested.is_set():
                # stop() arrived while we were spawning.
                await self._terminate(handle)
                await self._finish(handle)
                self._emit_stopped()
                return
            ev = self._emit(
                Trigger.LAUNCHED, pid=handle.pid, message="adopted" if handle.adopted else ""
            )
            self.started.set()
            self._wake_restart_waiters(ev)
            started = self._monotonic()
            await first_of(handle.done, self._poke.future())
            if not handle.done.done():
                # stop(), restart() or a failed health check wants this process gone.
                await self._terminate(handle)
            if handle.done.done() or not self._stop_requested.is_set():
                self._last_exit = await handle.done
            exit_code, sig = self._last_exit
            uptime = self._monotonic() - started
            outcome = await self._finish(handle)
            if self._stop_requested.is_set():
                self._emit_stopped()
                return
            # Read through a call: set by restart() or a hook while we awaited.
            requested = self._requested()
            reason = exit_reason(exit_code, sig, outcome.oom, requested)
            if requested == ExitReason.STOPPED:
                self._hold()
                self._emit(Trigger.EXITED, handle.pid, exit_code, sig, "restart requested", reason)
                self.restarts += 1
                handle = None
                continue
            decision = decide(
                spec.restart,
                self._rstate,
                exit_code,
                sig,
                uptime,
                self._monotonic(),
                self._rand(),
                failed=requested == ExitReason.HEALTH,
            )
            self._rstate = decision.state
            message = decision.reason
            if reason == ExitReason.OOM:
                message = f"out of memory; {message}"
            elif reason == ExitReason.HEALTH:
                message = f"failed health checks; {message}"
            if decision.action in (ACTION_COMPLETE, ACTION_GIVE_UP):
                self.terminal = True
                trigger = Trigger.EXITED if decision.action == ACTION_COMPLETE else Trigger.GAVE_UP
                self._emit(trigger, handle.pid, exit_code, sig, message, reason)
                return
            if decision.delay_s <= 0:
                self._hold()
            self._emit(Trigger.EXITED, handle.pid, exit_code, sig, message, reason)
            # A stop during the backoff reports no exit status: the one above
            # belongs to the crash, which was already reported.
            self._last_exit = (None, None)
            self._last_pid = None
            self._kill_reason = None
            if not self._stop_requested.is_set():
                self._poke.clear()
            if decision.delay_s > 0:
                await self._backoff(decision.delay_s)
            if self._stop_requested.is_set():
                self._emit_stopped()
                return
            self.restarts += 1
            handle = None

    async def _launch(self) -> Handle | None:
        config = LaunchConfig()
        try:
            for hook in self.hooks:
                await hook.prestart(config)
            return await spawn(self.spec, self.alloc_dir, config)
        except LaunchFailed as exc:
            outcome = Outcome(None)
            for hook in self.hooks:
                await hook.exited(outcome)
            self.terminal = True
            self._emit(Trigger.LAUNCH_FAILED, message=str(exc), reason=ExitReason.FAILED_START)
            return None

    async def _backoff(self, delay_s: float) -> None:
        """Wait out the delay unless a stop or a restart() request comes first."""
        await first_of(self._poke.future(), timeout=delay_s)

    async def _finish(self, handle: Handle) -> Outcome:
        """After the leader exited: kill what it left behind, then the exited hooks.

        Leftovers would otherwise pile up across restarts, holding ports and
        files the next process needs.
        """
        emptied = not alive(handle)
        if not emptied:
            procinfo.signal_group(handle.pgid, signal.SIGKILL)
            if handle.cg is not None:
                await asyncio.to_thread(handle.cg.kill)
            deadline = self._monotonic() + KILL_GRACE_S
            while alive(handle) and self._monotonic() < deadline:
                await asyncio.sleep(POLL_S)
        outcome = Outcome(handle, emptied=emptied)
        for hook in self.hooks:
            await hook.exited(outcome)
        self.handle = None
        self._paused = False
        return outcome

    async def _terminate(self, handle: Handle) -> None:
        """Stop signal to the group, grace period, then SIGKILL; waits for all members."""
        spec = self.spec
        sig = parse_signal(spec.stop.signal)
        loop_deadline = self._monotonic() + spec.stop.timeout_s
        signal_all(handle, sig)
        # A frozen or stopped process cannot act on the stop signal.
        self._unpause(handle)
        await first_of(handle.done, timeout=spec.stop.timeout_s)
        while alive(handle) and self._monotonic() < loop_deadline:
            await asyncio.sleep(POLL_S)
        if not handle.done.done() or alive(handle):
            if may_signal(handle):
                procinfo.signal_group(handle.pgid, signal.SIGKILL)
            if handle.cg is not None:
                await asyncio.to_thread(handle.cg.kill)
        await first_of(handle.done, timeout=KILL_GRACE_S)
        kill_deadline = self._monotonic() + KILL_GRACE_S
        while alive(handle) and self._monotonic() < kill_deadline:
            await asyncio.sleep(POLL_S)
        if handle.done.done():
            self._last_exit = handle.done.result()
        handle.close()

    # -------------------------------------------------------------- internals

    def _requested(self) -> ExitReason | None:
        return self._kill_reason

    def _live_handle(self) -> Handle:
        handle = self.handle
        if handle is None or handle.done.done() or self._stop_requested.is_set():
            raise AllocationNotRunning(f"{self.spec.alloc_id} has no running process")
        return handle

    def _unpause(self, handle: Handle) -> None:
        if not self._paused:
            return
        self._paused = False
        if handle.cg is not None and handle.cg.can_freeze():
            handle.cg.thaw()
        else:
            procinfo.signal_group(handle.pgid, signal.SIGCONT)

    def _emit_stopped(self) -> None:
        exit_code, sig = self._last_exit
        self._emit(
            Trigger.STOPPED,
            pid=self._last_pid,
            exit_code=exit_code,
            sig=sig,
            message="stopped by request",
            reason=ExitReason.STOPPED,
        )

    def _emit(
        self,
        trigger: Trigger,
        pid: int | None = None,
        exit_code: int | None = None,
        sig: str | None = None,
        message: str = "",
        reason: ExitReason | None = None,
    ) -> AllocationEvent:
        ev = AllocationEvent(
            alloc_id=self.spec.alloc_id,
            state=transition(self.last.state, trigger),
            pid=pid,
            restarts=self.restarts,
            exit_code=exit_code,
            signal=sig,
            ts=self._clock(),
            message=message,
            reason=reason,
            health=self.health,
        )
        self.last = ev
        if self._held is not None:
            self._held.append(ev)
            if trigger in _HOLD_UNTIL:
                self._release()
            return ev
        self._deliver(ev)
        return ev

    def _deliver(self, ev: AllocationEvent) -> None:
        try:
            self._on_event(ev)
        except Exception:
            log.exception("on_event callback failed for %s", ev)

    def _hold(self) -> None:
        """Keep the events of a restart without backoff (its exit, the new start) from
        on_event until the new process runs, the start fails or the runner ends, at most
        RESTART_HOLD_S; then they go in order, as emitted. The agent answers an event at
        once (it cuts its long poll short and syncs), in this interpreter: while the start
        thread spawns, that work held the GIL the spawn waited for. `last` is current
        all along."""
        if self._held is None:
            self._held = []
            self._held_timer = asyncio.get_running_loop().call_later(
                RESTART_HOLD_S, self._release)

    def _release(self) -> None:
        held, self._held = self._held, None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        for ev in held or ():
            self._deliver(ev)

    def _wake_restart_waiters(self, ev: AllocationEvent) -> None:
        waiters, self._restart_waiters = self._restart_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(ev)
