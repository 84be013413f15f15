"""Health checks of the running process: a probe loop per process.

The loop is a task in the runner's nursery, started when a process runs and
cancelled (and awaited, so its errors surface in the runner) when it ends.

Each transition is also kept in the allocation's directory (`health.json`), so that an
agent restarted around a running process (an upgrade: SIGQUIT, re-adoption) reports the
health it last knew instead of "starting" until the first probe: otherwise every healthy
allocation would leave the service registry for a health interval at each agent restart.
The next probe results judge it as usual from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from hacontrol.agent.health import Confinement, HealthState, health_step, probe
from hacontrol.agent.hooks import HookHost, Outcome
from hacontrol.agent.nursery import cancel_and_wait
from hacontrol.agent.process import Handle, LaunchConfig, child_env, resolve_identity
from hacontrol.model.states import ExitReason, Health, HealthCheckType
from hacontrol.tls.files import private_opener

HEALTH_FILE = "health.json"


def keep_health(alloc_dir: Path, status: Health, pid: int) -> None:
    """Record `status` of process `pid` (write then rename: never half a file)."""
    tmp = alloc_dir / (HEALTH_FILE + ".tmp")
    with open(tmp, "w", opener=private_opener) as f:
        f.write(json.dumps({"status": str(status), "pid": pid}))
    os.replace(tmp, alloc_dir / HEALTH_FILE)


def kept_health(alloc_dir: Path, pid: int) -> Health | None:
    """The status last recorded for process `pid` (None: none, or another process's)."""
    try:
        raw = json.loads((alloc_dir / HEALTH_FILE).read_text())
        return Health(raw["status"]) if raw.get("pid") == pid else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def forget_health(alloc_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (alloc_dir / HEALTH_FILE).unlink()


class HealthHook:
    __slots__ = ("_config", "_host", "_loop", "_monotonic")

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
        if self._host.spec.health is None:
            return
        initial = HealthState()
        if handle.adopted:
            kept = kept_health(self._host.alloc_dir, handle.pid)
            if kept == Health.HEALTHY:
                # Reported with the "launched" state the runner emits next.
                self._host.health = kept
                initial = HealthState(kept)
        else:
            forget_health(self._host.alloc_dir)
        self._loop = self._host.nursery.start(
            self._check_loop(handle, initial), name=f"health-{self._host.spec.alloc_id}"
        )

    async def exited(self, outcome: Outcome) -> None:
        loop, self._loop = self._loop, None
        await cancel_and_wait(loop)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None

    async def _check_loop(self, handle: Handle, state: HealthState) -> None:
        host = self._host
        check = host.spec.health
        assert check is not None
        env = child_env(host.spec)
        confinement = self.confinement(handle) if check.type == HealthCheckType.EXEC else None
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
                # Off the loop: a thousand allocations turning healthy at once are a
                # thousand small file writes.
                await asyncio.to_thread(keep_health, host.alloc_dir, new.status, handle.pid)
                if new.status == Health.UNHEALTHY:
                    host.end_process(ExitReason.HEALTH)
                    return
            state = new
