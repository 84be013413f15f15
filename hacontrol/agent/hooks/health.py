"""Health checks of the running process: a probe loop per process.

The loop is a task in the runner's nursery, started when a process runs and
cancelled (and awaited, so its errors surface in the runner) when it ends.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from hacontrol.agent.health import Confinement, HealthState, health_step, probe
from hacontrol.agent.hooks import HookHost, Outcome
from hacontrol.agent.nursery import cancel_and_wait
from hacontrol.agent.process import Handle, LaunchConfig, child_env, resolve_identity
from hacontrol.model.states import ExitReason, Health, HealthCheckType


class HealthHook:
    def __init__(self, host: HookHost, monotonic: Callable[[], float]) -> None:
        self._host = host
        self._monotonic = monotonic
        self._loop: asyncio.Task[None] | None = None
        self._config: LaunchConfig | None = None

    async def prestart(self, config: LaunchConfig) -> None:
        # The other hooks fill it in (cgroup, rlimits); read when the process runs.
        self._config = config

    def confinement(self, handle: Handle) -> Confinement:
        """The allocation's own identity, cgroup and limits, for its exec checks."""
        spec = self._host.spec
        ident = resolve_identity(spec.user, spec.group, os.geteuid())
        return Confinement(
            ident.uid, ident.gid, ident.groups, spec.umask,
            handle.cg.procs_files() if handle.cg is not None else [],
            list(self._config.rlimits) if self._config is not None else [])

    def poststart(self, handle: Handle) -> None:
        if self._host.spec.health is not None:
            self._loop = self._host.nursery.start(
                self._check_loop(handle), name=f"health-{self._host.spec.alloc_id}"
            )

    async def exited(self, outcome: Outcome) -> None:
        loop, self._loop = self._loop, None
        await cancel_and_wait(loop)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None

    async def _check_loop(self, handle: Handle) -> None:
        host = self._host
        check = host.spec.health
        assert check is not None
        env = child_env(host.spec)
        confinement = self.confinement(handle) if check.type == HealthCheckType.EXEC else None
        state = HealthState()
        started = self._monotonic()
        while True:
            await asyncio.sleep(check.interval_s)
            if host.paused:
                continue
            result = await probe(check, env, host.spec.cwd, confinement)
            if handle.done.done() or host.stopping or host.paused:
                return
            new = health_step(check, state, result.ok, self._monotonic() - started)
            if new.status != state.status:
                host.report_health(new.status, f"health {new.status}: {result.detail}", handle.pid)
                if new.status == Health.UNHEALTHY:
                    host.end_process(ExitReason.HEALTH)
                    return
            state = new
