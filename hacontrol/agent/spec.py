"""The agent's runtime types: what it runs (:class:`AllocationSpec`) and what it reports
(:class:`AllocationEvent`).

The sections of a spec (restart, stop, resources, health, logs, sockets) are the shared
model's (:mod:`hacontrol.model.spec`) with its one set of defaults; the agent only adds what
it needs at run time (the allocation id, its own environment variables, the key under which
allocations share listening sockets).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from hacontrol.model.checks import ALLOC_ID_RE
from hacontrol.model.resources import Resources
from hacontrol.model.spec import HealthCheck, LogPolicy, RestartSpec, SocketSpec, StopSpec
from hacontrol.model.states import AllocState, ExitReason, Health


def parse_signal(name: str) -> signal.Signals:
    """Accept "SIGTERM", "TERM" or "15"."""
    text = name.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text))
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise ValueError(f"unknown signal {name!r}") from None


@dataclass(frozen=True)
class AllocationSpec:
    """One allocation as the supervisor runs it.

    Built from a checked assignment (``hacontrol.agent.main.allocation_spec``); the checks
    here only guard what the supervisor itself relies on.
    """

    alloc_id: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    restart: RestartSpec = field(default_factory=RestartSpec)
    stop: StopSpec = field(default_factory=StopSpec)
    # user/group apply only when the agent runs as root.
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    # Run command[0] through /bin/sh -c (command[1:] become $0, $1, ...), only when asked.
    shell: bool = False
    # None: no limits at all (allocations from the controllers always carry some).
    resources: Resources | None = None
    health: HealthCheck | None = None
    logs: LogPolicy = field(default_factory=LogPolicy)
    sockets: list[SocketSpec] = field(default_factory=list)
    # Allocations with the same key on this node share one set of listening
    # sockets; None means the sockets belong to this allocation alone.
    socket_key: str | None = None

    def __post_init__(self) -> None:
        if not ALLOC_ID_RE.fullmatch(self.alloc_id):
            # The id names a directory under data_dir; it must not escape it.
            raise ValueError(f"invalid alloc_id {self.alloc_id!r}")
        if not self.command:
            raise ValueError("command must not be empty")
        if self.stop.timeout_s < 0:
            raise ValueError("stop timeout_s must be >= 0")
        parse_signal(self.stop.signal)
        if self.umask is not None and not 0 <= self.umask <= 0o777:
            raise ValueError("umask must be within 0..0o777")
        names = [s.name for s in self.sockets]
        if len(set(names)) != len(names):
            raise ValueError("socket names must be unique")


@dataclass(frozen=True)
class AllocationEvent:
    alloc_id: str
    state: AllocState
    pid: int | None
    restarts: int
    exit_code: int | None
    signal: str | None
    ts: float
    message: str = ""
    # Why the process ended, when it did.
    reason: ExitReason | None = None
    # None when the allocation has no health check.
    health: Health | None = None
