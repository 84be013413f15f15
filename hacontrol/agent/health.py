"""Health checks: a pure state machine plus the probes that feed it.

State per process: "starting" until the first success (failures during the
grace period after start do not count), "healthy" after a success, and
"unhealthy" once ``failures`` consecutive checks failed. The supervisor runs
one probe loop per process and acts on the transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from hacontrol.agent.launch import SAFE_ENV
from hacontrol.agent.process import env_file, wrapper_argv
from hacontrol.model.checks import has_control
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


@dataclass(frozen=True)
class Confinement:
    """Where an exec check runs: as the allocation's user and group, in its cgroup, under
    its rlimits and umask (what the exec wrapper applies to the allocation itself)."""

    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    umask: int | None = None
    cgroup_procs: list[str] = field(default_factory=list)
    rlimits: list[tuple[str, int, int]] = field(default_factory=list)

    def wrapper_config(self, err_fd: int) -> dict[str, Any]:
        return {"err_fd": err_fd, "cgroup_procs": self.cgroup_procs, "rlimits": self.rlimits,
                "uid": self.uid, "gid": self.gid, "groups": self.groups, "umask": self.umask,
                "fds": [], "fd_names": []}


async def probe(
    check: HealthCheck, env: dict[str, str] | None = None, cwd: str | None = None,
    confinement: Confinement | None = None,
) -> ProbeResult:
    """Run one check, never taking longer than ``check.timeout_s``.

    Exec checks run inside ``confinement`` when given (the agent's own identity and
    limits otherwise); network checks reach only addresses of this node.
    """
    try:
        if check.type == HealthCheckType.EXEC:
            return await _probe_exec(check, env, cwd, confinement)
        return await asyncio.wait_for(_probe_net(check), check.timeout_s)
    except TimeoutError:
        return ProbeResult(False, f"timed out after {check.timeout_s:g}s")
    except OSError as exc:
        return ProbeResult(False, f"{type(exc).__name__}: {exc}")


def local_addresses() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of this node's interfaces."""
    # Imported here: only address checks need it; nothing else in the agent uses psutil.
    import psutil

    out: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(ValueError):
                    out.add(ipaddress.ip_address(a.address.split("%", 1)[0]))
    return out


# Every network probe asks; a node with many checked allocations would otherwise list its
# interfaces many times a second. An address added or removed counts after this long.
_LOCAL_TTL_S = 5.0
_local_cache: tuple[float, set[ipaddress.IPv4Address | ipaddress.IPv6Address]] | None = None


def _local_addresses_cached() -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    global _local_cache
    now = time.monotonic()
    if _local_cache is None or now - _local_cache[0] > _LOCAL_TTL_S:
        _local_cache = (now, local_addresses())
    return _local_cache[1]


def _mine(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return addr.is_loopback or addr in _local_addresses_cached()


async def own_address(host: str, port: int) -> str | None:
    """An address of this node that `host` names, or None: a check must not become a way
    to reach other machines from the agent's network position."""
    if "%" not in host:  # (scoped IPv6 addresses go through the resolver)
        with contextlib.suppress(ValueError):
            # An address needs no resolver (getaddrinfo is a thread hop per probe).
            literal = ipaddress.ip_address(host)
            return host if _mine(literal) else None
    infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                         type=socket.SOCK_STREAM)
    for *_, sockaddr in infos:
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if _mine(addr):
            return str(sockaddr[0])
    return None


async def _probe_net(check: HealthCheck) -> ProbeResult:
    # A named port was replaced by its number when the allocation's spec was made.
    assert isinstance(check.port, int)
    if check.type == HealthCheckType.HTTP and (has_control(check.path) or " " in check.path):
        return ProbeResult(False, "the check's path holds a space or a control character")
    # Connect to the address that was checked, not to the name again (which could then
    # resolve elsewhere).
    address = await own_address(check.host, check.port)
    if address is None:
        return ProbeResult(False, f"{check.host!r} is not an address of this node")
    reader, writer = await asyncio.open_connection(address, check.port)
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
    check: HealthCheck, env: dict[str, str] | None, cwd: str | None,
    confinement: Confinement | None,
) -> ProbeResult:
    if confinement is None:
        proc = await asyncio.create_subprocess_exec(
            *check.command, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True)
        return await _wait_check(check, proc)
    err_r, err_w = os.pipe()
    # The wrapper runs as root until it drops to the job's identity: the job's environment
    # reaches it on a file descriptor, never as its own (see process.env_file).
    env_fd = env_file(dict(env) if env is not None else dict(os.environ))
    config = {**confinement.wrapper_config(err_w), "env_fd": env_fd}
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *wrapper_argv(config, list(check.command)),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, env=SAFE_ENV, cwd=cwd,
                start_new_session=True, pass_fds=[err_w, env_fd])
        finally:
            os.close(err_w)
            os.close(env_fd)
        result = await _wait_check(check, proc)
        if not result.ok:
            # The wrapper reports why it could not exec (unknown command, cgroup gone...)
            os.set_blocking(err_r, False)
            with contextlib.suppress(OSError):
                why = os.read(err_r, 4096)
                if why:
                    return ProbeResult(False, f"cannot run the check: {why.decode(errors='replace')}")
        return result
    finally:
        os.close(err_r)


async def _wait_check(check: HealthCheck, proc: asyncio.subprocess.Process) -> ProbeResult:
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
