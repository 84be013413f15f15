"""The replicated rows: jobs (with their deployment and version history), allocations and
nodes.

The dict encodings (`to_dict`/`from_dict`) are the msgpack schema of snapshots; their keys
and key order are part of the state digest, so they must not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .resources import Resources, Usage
from .spec import JobSpec
from .states import (
    TERMINAL_STATES,
    AllocState,
    DeploymentStatus,
    DesiredState,
    ExitReason,
    Health,
    JobStatus,
    NodeStatus,
)


@dataclass
class Deployment:
    """The rollout of a job's current version while allocations of an older one still run."""

    version: int
    status: DeploymentStatus
    started_at: float
    deadline: float
    from_version: int
    reverted_from: int | None = None  # set when this rollout reverts a failed version

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "status": self.status, "started_at": self.started_at,
                "deadline": self.deadline, "from_version": self.from_version,
                "reverted_from": self.reverted_from}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Deployment:
        return cls(d["version"], DeploymentStatus(d["status"]), d["started_at"], d["deadline"],
                   d["from_version"], d.get("reverted_from"))


@dataclass
class JobVersion:
    """One entry of a job's recent version history."""

    version: int
    spec: JobSpec
    submitted_at: float
    stable: bool  # its rollout completed (or it never needed one)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "spec": self.spec.to_dict(),
                "submitted_at": self.submitted_at, "stable": self.stable}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobVersion:
        return cls(d["version"], JobSpec.from_dict(d["spec"]), d["submitted_at"],
                   bool(d["stable"]))


@dataclass
class Job:
    namespace: str
    name: str
    spec: JobSpec
    version: int
    status: JobStatus
    created_at: float
    updated_at: float
    modify_index: int
    rollout: Deployment | None = None
    history: list[JobVersion] = field(default_factory=list)  # newest last

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def quota_usage(self) -> Usage:
        # A stopping job has given its share back: its processes are on their way out.
        return Usage() if self.status == JobStatus.STOPPING else self.spec.usage()

    @property
    def deployment(self) -> dict[str, Any] | None:
        """Transitional: the rollout in its dict encoding; use `rollout`."""
        return None if self.rollout is None else self.rollout.to_dict()

    @property
    def versions(self) -> list[dict[str, Any]]:
        """Transitional: the history in its dict encoding; use `history`."""
        return [v.to_dict() for v in self.history]

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "spec": self.spec.to_dict(),
                "version": self.version, "status": self.status, "created_at": self.created_at,
                "updated_at": self.updated_at, "modify_index": self.modify_index,
                "deployment": self.deployment, "versions": self.versions}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        dep = d.get("deployment")
        versions = d.get("versions") or []
        history = [JobVersion.from_dict(v) for v in versions]
        # The current spec is most often the newest version's, encoded twice: decode it
        # once (specs are frozen, so one object may serve both, as it does when a job_put
        # makes them). Half of a restore's (and a snapshot install's) time went to specs.
        spec = (history[-1].spec if history and versions[-1]["spec"] == d["spec"]
                else JobSpec.from_dict(d["spec"]))
        return cls(d["namespace"], d["name"], spec, d["version"], JobStatus(d["status"]),
                   d["created_at"], d["updated_at"], d["modify_index"],
                   None if dep is None else Deployment.from_dict(dep), history)


@dataclass
class Allocation:
    """One placed copy of a job: one process tree on one node."""

    id: str
    namespace: str
    job: str
    version: int
    resources: Resources
    desired: DesiredState = DesiredState.RUN
    state: AllocState = AllocState.PENDING
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
    health: Health | None = None  # None: no health check
    reason: ExitReason | str | None = None  # why it last ended (agents may send new reasons)
    running_since: float | None = None
    # Named ports: the static ones from creation, then every one as its node reports it
    # (the agent picks the dynamic ones). None (and absent from the encoding, so states
    # without ports digest as before) when the job has none.
    ports: dict[str, int] | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def holds_resources(self) -> bool:
        """Whether it still occupies capacity on its node."""
        return self.node is not None and not self.terminal

    def to_dict(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in _ALLOC_FIELDS}
        d["resources"] = self.resources.to_dict()
        if self.ports is not None:
            d["ports"] = self.ports
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Allocation:
        kw: dict[str, Any] = {f: d.get(f) for f in _ALLOC_FIELDS}
        kw["desired"] = DesiredState(d["desired"])
        kw["state"] = AllocState(d["state"])
        if kw["health"] is not None:
            kw["health"] = Health(d["health"])
        ports = d.get("ports")
        if ports is not None:
            kw["ports"] = {str(k): int(v) for k, v in ports.items()}
        return cls(resources=Resources.from_dict(d["resources"]), **kw)


# The snapshot encoding of an allocation, in key order (`resources` last).
_ALLOC_FIELDS = ("id", "namespace", "job", "version", "desired", "state", "node", "pid",
                 "restarts", "exit_code", "signal", "message", "created_at", "updated_at",
                 "placed_at", "modify_index", "health", "reason", "running_since")


@dataclass
class Node:
    name: str
    capacity: Resources
    address: str
    status: NodeStatus = NodeStatus.READY
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
        return self.status == NodeStatus.READY and not self.drain

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "capacity": self.capacity.to_dict(),
                "address": self.address, "status": self.status,
                "registered_at": self.registered_at, "updated_at": self.updated_at,
                "modify_index": self.modify_index, "labels": self.labels,
                "attributes": self.attributes, "drain": self.drain,
                "drain_deadline": self.drain_deadline}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(d["name"], Resources.from_dict(d["capacity"]), d["address"],
                   NodeStatus(d["status"]), d["registered_at"], d["updated_at"],
                   d["modify_index"], dict(d.get("labels") or {}),
                   dict(d.get("attributes") or {}), bool(d.get("drain")),
                   d.get("drain_deadline"))
