"""The messages between controllers and agents (`POST /v1/agent/sync`), as dataclasses.

`to_dict()` gives exactly the JSON on the wire. `from_dict()` checks untrusted input (each
side reads what the other sent over the network) and raises `Rejection` naming the field,
e.g. `allocations[2].spec.health.port`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .checks import (
    check_alloc_id,
    check_name,
    integer,
    number,
    obj,
    one_of,
    optional_integer,
    optional_string,
    str_map,
    string,
)
from .errors import Rejection, invalid
from .spec import JobSpec
from .spec_parse import parse_job_spec
from .states import REPORTED_STATES, AllocState, DesiredState, Health

T = TypeVar("T")


def _within(prefix: str, parse: Callable[[], T]) -> T:
    """Run `parse`, naming fields it rejects relative to `prefix`."""
    try:
        return parse()
    except Rejection as rej:
        where = f"{prefix}.{rej.field}" if rej.field else prefix
        raise Rejection(rej.code, rej.message, where) from None


def _list(raw: Any, field: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid(field, "must be a list")
    return raw


@dataclass(frozen=True)
class Assignment:
    """One allocation an agent must run (desired `run`) or stop (desired `stop`)."""

    id: str
    namespace: str
    job: str
    version: int
    desired: DesiredState
    state: AllocState
    spec: JobSpec | None  # None when the job is gone

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "namespace": self.namespace, "job": self.job,
                "version": self.version, "desired": self.desired, "state": self.state,
                "spec": None if self.spec is None else self.spec.to_dict()}

    @classmethod
    def from_dict(cls, raw: Any, at: str = "allocation") -> Assignment:
        d = obj(raw, at)
        # The agent names a directory after it: it must not escape the data dir.
        alloc_id = check_alloc_id(d.get("id"), f"{at}.id")
        spec = d.get("spec")
        return cls(alloc_id, check_name(d.get("namespace"), f"{at}.namespace"),
                   check_name(d.get("job"), f"{at}.job"),
                   integer(d.get("version"), f"{at}.version", minimum=1),
                   one_of(d.get("desired"), DesiredState, f"{at}.desired"),
                   one_of(d.get("state"), AllocState, f"{at}.state"),
                   None if spec is None else _within(f"{at}.spec",
                                                     lambda: parse_job_spec(spec)))


@dataclass(frozen=True)
class AllocReport:
    """An agent's latest news about one allocation."""

    id: str
    state: AllocState
    pid: int | None = None
    restarts: int | None = None
    exit_code: int | None = None
    signal: str | None = None
    message: str | None = None
    ts: float | None = None
    health: Health | None = None
    reason: str | None = None  # an ExitReason, as a string (newer agents may add reasons)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "pid": self.pid, "restarts": self.restarts,
                "exit_code": self.exit_code, "signal": self.signal, "message": self.message,
                "ts": self.ts, "health": self.health, "reason": self.reason}

    @classmethod
    def from_dict(cls, raw: Any, at: str = "report") -> AllocReport:
        d = obj(raw, at)
        state = d.get("state")
        if not isinstance(state, str) or state not in REPORTED_STATES:
            raise invalid(f"{at}.state", "not a reportable state")
        health = d.get("health")
        ts = d.get("ts")
        return cls(
            string(d.get("id"), f"{at}.id", max_len=200), AllocState(state),
            optional_integer(d.get("pid"), f"{at}.pid", maximum=2**62),
            optional_integer(d.get("restarts"), f"{at}.restarts", maximum=2**62),
            optional_integer(d.get("exit_code"), f"{at}.exit_code", minimum=-(2**31)),
            optional_string(d.get("signal"), f"{at}.signal"),
            optional_string(d.get("message"), f"{at}.message"),
            None if ts is None else number(ts, f"{at}.ts", maximum=1e12),
            None if health is None else one_of(health, Health, f"{at}.health"),
            optional_string(d.get("reason"), f"{at}.reason"))


@dataclass(frozen=True)
class NodeInfo:
    """How an agent describes its node (registered or refreshed on every sync)."""

    name: str
    cpu: float
    memory_mb: int
    address: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cpu": self.cpu, "memory_mb": self.memory_mb,
                "address": self.address, "labels": dict(self.labels),
                "attributes": dict(self.attributes)}

    @classmethod
    def from_dict(cls, raw: Any, at: str = "node") -> NodeInfo:
        d = obj(raw, at)
        return cls(check_name(d.get("name"), f"{at}.name"),
                   number(d.get("cpu"), f"{at}.cpu", maximum=100_000, allow_zero=False),
                   integer(d.get("memory_mb"), f"{at}.memory_mb", minimum=1, maximum=2**40),
                   string(d.get("address", ""), f"{at}.address", max_len=500),
                   str_map(d.get("labels"), f"{at}.labels"),
                   str_map(d.get("attributes"), f"{at}.attributes"))


@dataclass(frozen=True)
class SyncRequest:
    """What an agent sends: heartbeat, reports, and how long it is willing to wait."""

    node: NodeInfo
    reports: list[AllocReport]
    index: int  # the last log index it was answered at
    wait_s: float  # long poll when it has nothing to report
    fingerprint: str | None  # of the last answer: the leader answers early when it changes
    term: int  # the highest leader term it has obeyed
    agent: dict[str, Any] | None = None  # pid and isolation mode, for operators
    metrics: dict[str, dict[str, Any]] | None = None  # allocation id -> sampled metrics

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"node": self.node.to_dict(),
                             "reports": [r.to_dict() for r in self.reports],
                             "index": self.index, "wait_s": self.wait_s,
                             "fingerprint": self.fingerprint, "term": self.term}
        if self.agent is not None:
            d["agent"] = self.agent
        if self.metrics is not None:
            d["metrics"] = self.metrics
        return d

    @classmethod
    def from_dict(cls, raw: Any) -> SyncRequest:
        d = obj(raw, "body")
        metrics = d.get("metrics")
        if metrics is not None:
            metrics = {k: v for k, v in obj(metrics, "metrics").items()
                       if isinstance(k, str) and isinstance(v, dict)}
        agent = d.get("agent")
        return cls(
            NodeInfo.from_dict(d.get("node")),
            [AllocReport.from_dict(r, f"reports[{i}]")
             for i, r in enumerate(_list(d.get("reports"), "reports"))],
            integer(d.get("index") or 0, "index", maximum=2**62),
            number(d.get("wait_s") or 0.0, "wait_s", maximum=3600),
            optional_string(d.get("fingerprint"), "fingerprint", max_len=200),
            integer(d.get("term") or 0, "term", maximum=2**62),
            agent if isinstance(agent, dict) else None, metrics)


@dataclass(frozen=True)
class SyncAnswer:
    """The leader's answer: its term and everything the node must run or stop now."""

    term: int
    leader: str
    index: int
    fingerprint: str
    acked: int  # how many of the request's reports were written to the log
    allocations: list[Assignment]

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "leader": self.leader, "index": self.index,
                "fingerprint": self.fingerprint, "acked": self.acked,
                "allocations": [a.to_dict() for a in self.allocations]}

    @classmethod
    def from_dict(cls, raw: Any) -> SyncAnswer:
        d = obj(raw, "answer")
        return cls(integer(d.get("term"), "term", maximum=2**62),
                   string(d.get("leader"), "leader", max_len=500),
                   integer(d.get("index"), "index", maximum=2**62),
                   string(d.get("fingerprint"), "fingerprint", max_len=200),
                   integer(d.get("acked", 0), "acked", maximum=2**62),
                   [Assignment.from_dict(a, f"allocations[{i}]")
                    for i, a in enumerate(_list(d.get("allocations"), "allocations"))])
