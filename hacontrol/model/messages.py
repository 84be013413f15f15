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
from .protocol import OLDEST as OLDEST_PROTOCOL
from .protocol import read_version
from .spec import JobSpec
from .spec_parse import parse_job_spec
from .spec_ports import parse_reported_ports
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

    def to_dict(self, with_spec: bool = True) -> dict[str, Any]:
        """`with_spec` False leaves the spec out (a delta answer sends it once per job, in
        `delta.jobs`)."""
        d = {"id": self.id, "namespace": self.namespace, "job": self.job,
             "version": self.version, "desired": self.desired, "state": self.state}
        if with_spec:
            d["spec"] = None if self.spec is None else self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, raw: Any, at: str = "allocation",
                  specs: dict[str, JobSpec | None] | None = None,
                  parse_spec: Callable[[Any], JobSpec] = parse_job_spec) -> Assignment:
        """`specs` (job key -> spec, see `job_key`) supplies the spec of an assignment that
        carries none (a delta answer's); `parse_spec` checks one that does (the agent's
        parses each spec object once, see `agent.assignments.AssignmentDecoder`)."""
        d = obj(raw, at)
        # The agent names a directory after it: it must not escape the data dir.
        alloc_id = check_alloc_id(d.get("id"), f"{at}.id")
        ns = check_name(d.get("namespace"), f"{at}.namespace")
        job = check_name(d.get("job"), f"{at}.job")
        spec: JobSpec | None
        if "spec" not in d and specs is not None:
            key = job_key(ns, job)
            if key not in specs:
                raise invalid(f"{at}.spec", f"no spec for job {key}")
            spec = specs[key]
        else:
            raw_spec = d.get("spec")
            spec = None if raw_spec is None else _within(f"{at}.spec",
                                                         lambda: parse_spec(raw_spec))
        return cls(alloc_id, ns, job,
                   integer(d.get("version"), f"{at}.version", minimum=1),
                   one_of(d.get("desired"), DesiredState, f"{at}.desired"),
                   one_of(d.get("state"), AllocState, f"{at}.state"), spec)


def job_key(namespace: str, job: str) -> str:
    """How a delta names a job: `namespace/name` (neither may contain a slash)."""
    return f"{namespace}/{job}"


MAX_BUSY_KEYS = 16
# The key, in an allocation's metrics in a sync, of the value its agent scraped for the
# job's prometheus scaling metric (a number, or null when the last scrape failed). A flat
# number, so that leaders that do not know it keep it as one more metric.
SCALING_METRIC_KEY = "scaling_metric"


@dataclass(frozen=True)
class DeltaRequest:
    """What an agent that speaks the delta protocol already holds.

    `since`: the index of the last answer it applied (0: it holds nothing); `jobs`: the
    specs it holds, as job key -> the job's modify index they were sent at; `full`: it asks
    for a full answer (it found its copy inconsistent).
    """

    since: int = 0
    jobs: dict[str, int] = field(default_factory=dict)
    full: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "jobs": dict(self.jobs), "full": self.full}

    @classmethod
    def from_dict(cls, raw: Any, at: str = "delta") -> DeltaRequest:
        d = obj(raw, at)
        jobs = obj(d.get("jobs"), f"{at}.jobs")
        if len(jobs) > 100_000:
            raise invalid(f"{at}.jobs", "too many jobs")
        return cls(integer(d.get("since") or 0, f"{at}.since", maximum=2**62),
                   {str(k): integer(v, f"{at}.jobs.{k}", maximum=2**62)
                    for k, v in jobs.items()},
                   d.get("full") is True)


@dataclass(frozen=True)
class DeltaAnswer:
    """The delta part of a sync answer to an agent that sent a `DeltaRequest`.

    `since` 0: the answer's `allocations` are all the node's assignments (a full answer);
    otherwise they are those changed after index `since`, and `removed` lists the ids the
    node no longer holds. `jobs` gives the specs the agent lacks (key -> (modify index,
    spec; None when the job is gone)); assignments in the answer carry no spec of their own.
    """

    since: int
    removed: list[str]
    jobs: dict[str, JobAt]

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "removed": list(self.removed),
                "jobs": {k: j.to_dict() for k, j in self.jobs.items()}}


@dataclass(frozen=True)
class JobAt:
    """A job's spec as of the job's modify index `index` (None: the job is gone)."""

    index: int
    spec: JobSpec | None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "spec": None if self.spec is None else self.spec.to_dict()}


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
    ports: dict[str, int] | None = None  # the named ports it uses (absent: none)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id, "state": self.state, "pid": self.pid, "restarts": self.restarts,
            "exit_code": self.exit_code, "signal": self.signal, "message": self.message,
            "ts": self.ts, "health": self.health, "reason": self.reason}
        if self.ports is not None:
            d["ports"] = self.ports
        return d

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
            optional_string(d.get("reason"), f"{at}.reason"),
            parse_reported_ports(d.get("ports"), f"{at}.ports"))


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


MAX_RESTART_NOTICE_S = 300.0


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
    delta: DeltaRequest | None = None  # None: an agent that wants full answers
    # "busy, alive": counts of work in progress (e.g. starting, stopping), shown to operators
    busy: dict[str, int] | None = None
    protocol: int = OLDEST_PROTOCOL  # the agent's (model/protocol.py); absent: 1
    # Since protocol 2: the agent is exiting to restart (a rolling upgrade) and asks to count
    # as alive for this long, so that its allocations are not replaced meanwhile.
    restarting_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"node": self.node.to_dict(),
                             "reports": [r.to_dict() for r in self.reports],
                             "index": self.index, "wait_s": self.wait_s,
                             "fingerprint": self.fingerprint, "term": self.term}
        if self.agent is not None:
            d["agent"] = self.agent
        if self.metrics is not None:
            d["metrics"] = self.metrics
        if self.delta is not None:
            d["delta"] = self.delta.to_dict()
        if self.busy is not None:
            d["busy"] = dict(self.busy)
        if self.protocol > OLDEST_PROTOCOL:
            d["protocol"] = self.protocol
        if self.restarting_s is not None:
            d["restarting_s"] = self.restarting_s
        return d

    @classmethod
    def from_dict(cls, raw: Any) -> SyncRequest:
        d = obj(raw, "body")
        metrics = d.get("metrics")
        if metrics is not None:
            metrics = {k: v for k, v in obj(metrics, "metrics").items()
                       if isinstance(k, str) and isinstance(v, dict)}
        agent = d.get("agent")
        delta = d.get("delta")
        busy = d.get("busy")
        if busy is not None:
            busy = obj(busy, "busy")
            if len(busy) > MAX_BUSY_KEYS:
                raise invalid("busy", f"at most {MAX_BUSY_KEYS} counts")
            busy = {check_name(k, "busy"): integer(v, f"busy.{k}", maximum=2**40)
                    for k, v in busy.items()}
        return cls(
            NodeInfo.from_dict(d.get("node")),
            [AllocReport.from_dict(r, f"reports[{i}]")
             for i, r in enumerate(_list(d.get("reports"), "reports"))],
            integer(d.get("index") or 0, "index", maximum=2**62),
            number(d.get("wait_s") or 0.0, "wait_s", maximum=3600),
            optional_string(d.get("fingerprint"), "fingerprint", max_len=200),
            integer(d.get("term") or 0, "term", maximum=2**62),
            agent if isinstance(agent, dict) else None, metrics,
            None if delta is None else DeltaRequest.from_dict(delta), busy,
            read_version(d.get("protocol")),
            None if d.get("restarting_s") is None
            else number(d.get("restarting_s"), "restarting_s", maximum=MAX_RESTART_NOTICE_S))


@dataclass(frozen=True)
class SyncAnswer:
    """The leader's answer: its term and everything the node must run or stop now."""

    term: int
    leader: str
    index: int
    fingerprint: str
    acked: int  # how many of the request's reports were written to the log
    allocations: list[Assignment]
    # How long the agent's next sync may wait for orders when it has nothing to report
    # (`scheduler.liveness.poll_seconds`); absent from a leader of an earlier release.
    poll_s: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"term": self.term, "leader": self.leader, "index": self.index,
                "fingerprint": self.fingerprint, "acked": self.acked,
                "allocations": [a.to_dict() for a in self.allocations],
                "poll_s": self.poll_s}

    @classmethod
    def from_dict(cls, raw: Any) -> SyncAnswer:
        d = obj(raw, "answer")
        return cls(integer(d.get("term"), "term", maximum=2**62),
                   string(d.get("leader"), "leader", max_len=500),
                   integer(d.get("index"), "index", maximum=2**62),
                   string(d.get("fingerprint"), "fingerprint", max_len=200),
                   integer(d.get("acked", 0), "acked", maximum=2**62),
                   [Assignment.from_dict(a, f"allocations[{i}]")
                    for i, a in enumerate(_list(d.get("allocations"), "allocations"))],
                   number(d.get("poll_s", 1.0), "poll_s", minimum=0.001, maximum=3600))
