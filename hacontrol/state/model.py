"""The replicated data model: namespaces, jobs, allocations and nodes.

Everything here is plain data. Conversions to and from dicts are explicit (no reflection on
arbitrary objects) because these dicts are the msgpack schema of snapshots and API answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# Allocation states as observed on the node.
PENDING = "pending"  # not yet placed on a node
STARTING = "starting"
RUNNING = "running"
EXITED = "exited"  # ended; may be restarted by the agent or be complete
FAILED = "failed"  # the restart policy gave up, or it could not start
LOST = "lost"  # its node went down
STOPPED = "stopped"  # stopped on request
PAUSED = "paused"  # frozen on request; still holds its resources
COMPLETE = "complete"  # a batch instance that exited successfully

ALLOC_STATES = (PENDING, STARTING, RUNNING, PAUSED, EXITED, FAILED, LOST, STOPPED, COMPLETE)
# States after which the allocation holds no resources and will never run again.
TERMINAL_STATES = frozenset({FAILED, LOST, STOPPED, COMPLETE})

DESIRED_RUN = "run"
DESIRED_STOP = "stop"

NODE_READY = "ready"
NODE_DOWN = "down"

JOB_RUNNING = "running"
JOB_STOPPING = "stopping"

RESTART_POLICIES = ("always", "on-failure", "never")


@dataclass(frozen=True)
class Quota:
    """Upper bounds for a namespace; None means unlimited."""

    cpu: float | None = None
    memory_mb: int | None = None
    processes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb, "processes": self.processes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Quota:
        return cls(d.get("cpu"), d.get("memory_mb"), d.get("processes"))


@dataclass(frozen=True)
class Usage:
    cpu: float = 0.0
    memory_mb: int = 0
    processes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": round(self.cpu, 6), "memory_mb": self.memory_mb, "processes": self.processes}

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.cpu + other.cpu, self.memory_mb + other.memory_mb,
                     self.processes + other.processes)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.cpu - other.cpu, self.memory_mb - other.memory_mb,
                     self.processes - other.processes)


@dataclass(frozen=True)
class Resources:
    cpu: float = 0.1
    memory_mb: int = 64
    pids: int | None = None  # enforced by the agent, not used for placement

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"cpu": self.cpu, "memory_mb": self.memory_mb}
        if self.pids is not None:
            d["pids"] = self.pids
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Resources:
        return cls(float(d["cpu"]), int(d["memory_mb"]), d.get("pids"))


@dataclass(frozen=True)
class RestartSpec:
    policy: str = "on-failure"
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.1
    backoff_max_s: float = 10.0
    min_uptime_s: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "max_restarts": self.max_restarts,
                "window_s": self.window_s, "backoff_s": self.backoff_s,
                "backoff_max_s": self.backoff_max_s, "min_uptime_s": self.min_uptime_s}


@dataclass(frozen=True)
class StopSpec:
    signal: str = "SIGTERM"
    timeout_s: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "timeout_s": self.timeout_s}


@dataclass(frozen=True)
class JobSpec:
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    count: int = 1
    resources: Resources = field(default_factory=Resources)
    restart: RestartSpec = field(default_factory=RestartSpec)
    stop: StopSpec = field(default_factory=StopSpec)
    # Validated optional sections (see validate.OPTIONAL_SECTIONS), defaults filled in, so
    # that equal specs compare equal: process settings for the agent (user, group, umask,
    # shell, health, logs, sockets) and scheduling settings (type, priority, constraints,
    # scoring, preempt, depends_on, update, scaling, disconnect).
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"command": list(self.command), "env": dict(self.env), "cwd": self.cwd,
                "count": self.count, "resources": self.resources.to_dict(),
                "restart": self.restart.to_dict(), "stop": self.stop.to_dict(),
                **self.options}

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    @property
    def type(self) -> str:
        return str(self.options.get("type", "service"))

    @property
    def priority(self) -> int:
        return int(self.options.get("priority", 50))

    def same_template(self, other: JobSpec) -> bool:
        """True when the two specs differ at most in `count` (no new version needed)."""
        return replace(self, count=other.count) == other

    def usage(self) -> Usage:
        return Usage(self.resources.cpu * self.count, self.resources.memory_mb * self.count,
                     self.count)


@dataclass
class Job:
    namespace: str
    name: str
    spec: JobSpec
    version: int
    status: str
    created_at: float
    updated_at: float
    modify_index: int
    # The rollout of `version` while older instances still run: version, status
    # (running|successful|failed), started_at, deadline, from_version.
    deployment: dict[str, Any] | None = None
    # Recent versions: {"version", "spec", "submitted_at", "stable"}; newest last.
    versions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def quota_usage(self) -> Usage:
        # A stopping job has given its share back: its processes are on their way out.
        return Usage() if self.status == JOB_STOPPING else self.spec.usage()


@dataclass
class Allocation:
    id: str
    namespace: str
    job: str
    version: int
    resources: Resources
    desired: str = DESIRED_RUN
    state: str = PENDING
    node: str | None = None
    pid: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    signal: str | None = None
    message: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    placed_at: float | None = None
    modify_index: int = 0
    health: str | None = None  # healthy | unhealthy | starting | None (no check)
    reason: str | None = None  # why it last exited: exit, signal, oom, stopped, health, ...
    running_since: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def holds_resources(self) -> bool:
        """Whether it still occupies capacity on its node."""
        return self.node is not None and not self.terminal


@dataclass
class Node:
    name: str
    capacity: Resources
    address: str
    status: str = NODE_READY
    registered_at: float = 0.0
    updated_at: float = 0.0
    modify_index: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    drain: bool = False
    drain_deadline: float | None = None

    @property
    def eligible(self) -> bool:
        """Whether new work may be placed here."""
        return self.status == NODE_READY and not self.drain
