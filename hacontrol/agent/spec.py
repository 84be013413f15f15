"""Data types shared by the node agent's local supervisor and its callers."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

POLICY_ALWAYS = "always"
POLICY_ON_FAILURE = "on-failure"
POLICY_NEVER = "never"
POLICIES = frozenset({POLICY_ALWAYS, POLICY_ON_FAILURE, POLICY_NEVER})

STATE_STARTING = "starting"
STATE_RUNNING = "running"
# The process ended; a restart may be pending, or the task completed for good.
STATE_EXITED = "exited"
# The restart policy gave up, or the process could not be started at all.
STATE_FAILED = "failed"
# Ended because someone asked for it; never restarted afterwards.
STATE_STOPPED = "stopped"
# Frozen (cgroup freezer) or SIGSTOPped by request; resumed by resume().
STATE_PAUSED = "paused"
STATES = frozenset(
    {STATE_STARTING, STATE_RUNNING, STATE_EXITED, STATE_FAILED, STATE_STOPPED, STATE_PAUSED}
)

# Why an instance ended (AllocationEvent.reason).
REASON_EXIT = "exit"
REASON_SIGNAL = "signal"
REASON_OOM = "oom"
REASON_STOPPED = "stopped"
REASON_HEALTH = "health"
REASON_FAILED_START = "failed-start"
REASONS = frozenset(
    {REASON_EXIT, REASON_SIGNAL, REASON_OOM, REASON_STOPPED, REASON_HEALTH, REASON_FAILED_START}
)

HEALTH_STARTING = "starting"
HEALTH_HEALTHY = "healthy"
HEALTH_UNHEALTHY = "unhealthy"

CHECK_TCP = "tcp"
CHECK_HTTP = "http"
CHECK_EXEC = "exec"
CHECK_TYPES = frozenset({CHECK_TCP, CHECK_HTTP, CHECK_EXEC})


@dataclass(frozen=True)
class RestartPolicy:
    policy: str = POLICY_ON_FAILURE
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.1
    backoff_max_s: float = 10.0
    min_uptime_s: float = 5.0

    def __post_init__(self) -> None:
        # Reject bad policies at construction so the supervisor never has to
        # guess what an unknown policy name or negative delay was meant to be.
        if self.policy not in POLICIES:
            raise ValueError(f"unknown restart policy {self.policy!r}")
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        for name in ("window_s", "backoff_s", "backoff_max_s", "min_uptime_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True)
class Resources:
    """Per-instance limits; None means unlimited."""

    cpu: float | None = None  # cores, e.g. 0.5
    memory_mb: int | None = None
    pids: int | None = None

    def __post_init__(self) -> None:
        if self.cpu is not None and self.cpu <= 0:
            raise ValueError("cpu must be > 0")
        if self.memory_mb is not None and self.memory_mb <= 0:
            raise ValueError("memory_mb must be > 0")
        if self.pids is not None and self.pids <= 0:
            raise ValueError("pids must be > 0")


@dataclass(frozen=True)
class HealthCheck:
    type: str  # tcp | http | exec
    port: int | None = None
    host: str = "127.0.0.1"
    path: str = "/"
    expect_status: int = 200
    command: list[str] = field(default_factory=list)
    interval_s: float = 10.0
    timeout_s: float = 2.0
    failures: int = 3
    grace_s: float = 0.0

    def __post_init__(self) -> None:
        if self.type not in CHECK_TYPES:
            raise ValueError(f"unknown health check type {self.type!r}")
        if self.type in (CHECK_TCP, CHECK_HTTP) and not self.port:
            raise ValueError(f"{self.type} health check needs a port")
        if self.type == CHECK_EXEC and not self.command:
            raise ValueError("exec health check needs a command")
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be > 0")
        if self.failures < 1:
            raise ValueError("failures must be >= 1")
        if self.grace_s < 0:
            raise ValueError("grace_s must be >= 0")


@dataclass(frozen=True)
class LogPolicy:
    max_bytes: int = 10 * 1024 * 1024
    keep: int = 3  # rotated files kept besides the live one

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        if self.keep < 0:
            raise ValueError("keep must be >= 0")


@dataclass(frozen=True)
class SocketSpec:
    """A listening TCP socket bound by the agent and inherited by instances."""

    name: str
    port: int
    host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        # LISTEN_FDNAMES is colon separated.
        if not self.name or ":" in self.name:
            raise ValueError(f"invalid socket name {self.name!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"invalid port {self.port}")


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
    alloc_id: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_signal: str = "SIGTERM"
    stop_timeout_s: float = 5.0
    # user/group apply only when the agent runs as root.
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    # Run command[0] through /bin/sh -c (command[1:] become $0, $1, ...), only when asked.
    shell: bool = False
    resources: Resources = field(default_factory=Resources)
    health: HealthCheck | None = None
    logs: LogPolicy = field(default_factory=LogPolicy)
    sockets: list[SocketSpec] = field(default_factory=list)
    # Instances with the same key on this node share one set of listening
    # sockets; None means the sockets belong to this allocation alone.
    socket_key: str | None = None

    def __post_init__(self) -> None:
        if not self.alloc_id or "/" in self.alloc_id or self.alloc_id in (".", ".."):
            # The id names a directory under data_dir; it must not escape it.
            raise ValueError(f"invalid alloc_id {self.alloc_id!r}")
        if not self.command:
            raise ValueError("command must not be empty")
        if self.stop_timeout_s < 0:
            raise ValueError("stop_timeout_s must be >= 0")
        parse_signal(self.stop_signal)
        if self.umask is not None and not 0 <= self.umask <= 0o777:
            raise ValueError("umask must be within 0..0o777")
        names = [s.name for s in self.sockets]
        if len(set(names)) != len(names):
            raise ValueError("socket names must be unique")


@dataclass(frozen=True)
class AllocationEvent:
    alloc_id: str
    state: str
    pid: int | None
    restarts: int
    exit_code: int | None
    signal: str | None
    ts: float
    message: str = ""
    # Why the instance ended (exit | signal | oom | stopped | health | failed-start).
    reason: str | None = None
    # healthy | unhealthy | starting, or None when the task has no health check.
    health: str | None = None
