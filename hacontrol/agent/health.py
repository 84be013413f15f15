"""Health checks: a pure state machine plus the probes that feed it.

State per process: "starting" until the first success (failures during the
grace period after start do not count), "healthy" after a success, and
"unhealthy" once ``failures`` consecutive checks failed. The supervisor runs
one probe loop per process and acts on the transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

from hacontrol.model.spec import HealthCheck
from hacontrol.model.states import Health, HealthCheckType

_MAX_STATUS_LINE = 8192


@dataclass(frozen=True)
class HealthState:
    status: Health = Health.STARTING
    consecutive_failures: int = 0


def health_step(
    check: HealthCheck, state: HealthState, ok: bool, since_start_s: float
) -> HealthState:
    """The state after one probe result; ``since_start_s`` is the process's age."""
    if ok:
        return HealthState(Health.HEALTHY, 0)
    if since_start_s < check.grace_s:
        # The process is still coming up: a failure says nothing yet.
        return state
    failures = state.consecutive_failures + 1
    if failures >= check.failures:
        return HealthState(Health.UNHEALTHY, failures)
    return HealthState(state.status, failures)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


async def probe(
    check: HealthCheck, env: dict[str, str] | None = None, cwd: str | None = None
) -> ProbeResult:
    """Run one check, never taking longer than ``check.timeout_s``."""
    try:
        if check.type == HealthCheckType.EXEC:
            return await _probe_exec(check, env, cwd)
        return await asyncio.wait_for(_probe_net(check), check.timeout_s)
    except TimeoutError:
        return ProbeResult(False, f"timed out after {check.timeout_s:g}s")
    except OSError as exc:
        return ProbeResult(False, f"{type(exc).__name__}: {exc}")


async def _probe_net(check: HealthCheck) -> ProbeResult:
    assert check.port is not None
    reader, writer = await asyncio.open_connection(check.host, check.port)
    try:
        if check.type == HealthCheckType.TCP:
            return ProbeResult(True, "connected")
        assert check.type == HealthCheckType.HTTP
        host = check.host if ":" not in check.host else f"[{check.host}]"
        writer.write(
            f"GET {check.path} HTTP/1.0\r\nHost: {host}:{check.port}\r\n"
            "User-Agent: hacontrol-health\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        line = await reader.readline()
        if len(line) > _MAX_STATUS_LINE:
            return ProbeResult(False, "status line too long")
        parts = line.decode("latin-1").split()
        if len(parts) < 2 or not parts[1].isdigit():
            return ProbeResult(False, f"bad status line {line[:80]!r}")
        status = int(parts[1])
        if status != check.expect_status:
            return ProbeResult(False, f"status {status}, expected {check.expect_status}")
        return ProbeResult(True, f"status {status}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _probe_exec(
    check: HealthCheck, env: dict[str, str] | None, cwd: str | None
) -> ProbeResult:
    proc = await asyncio.create_subprocess_exec(
        *check.command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        code = await asyncio.wait_for(proc.wait(), check.timeout_s)
    except TimeoutError:
        _kill_check(proc.pid)
        await proc.wait()
        return ProbeResult(False, f"timed out after {check.timeout_s:g}s")
    except asyncio.CancelledError:
        # The process ended while its check ran; the check must not outlive it.
        _kill_check(proc.pid)
        raise
    return ProbeResult(code == 0, f"exit code {code}")


def _kill_check(pgid: int) -> None:
    # The check runs in its own group so that a hung check script and
    # whatever it started go away together.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
