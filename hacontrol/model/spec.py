"""The job spec: one frozen dataclass per section, with the one set of defaults.

`to_dict()` is the encoding stored in the log, in snapshots and in version history, and
served by the API: its keys and their order are part of the state digest, so they must not
change. Optional sections that were not given are None here and absent from the dict (an
empty list given explicitly stays an empty list). `from_dict()` rebuilds a spec from trusted,
already checked data (a snapshot); `hacontrol.model.spec_parse.parse_job_spec` checks
untrusted input and fills in the defaults declared here.

Defaults that used to differ between the controller and the agent follow the controller,
which fills them in before an agent ever sees a spec: a health check runs every 5 s
(`interval_s`) after a 5 s grace period (`grace_s`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .resources import Resources, Usage
from .states import (
    ConstraintOperator,
    HealthCheckType,
    JobType,
    MetricSource,
    RestartPolicy,
    Scoring,
)


@dataclass(frozen=True)
class RestartSpec:
    policy: RestartPolicy = RestartPolicy.ON_FAILURE
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.1
    backoff_max_s: float = 10.0
    min_uptime_s: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "max_restarts": self.max_restarts,
                "window_s": self.window_s, "backoff_s": self.backoff_s,
                "backoff_max_s": self.backoff_max_s, "min_uptime_s": self.min_uptime_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RestartSpec:
        x = cls()
        return cls(RestartPolicy(d.get("policy", x.policy)),
                   int(d.get("max_restarts", x.max_restarts)),
                   float(d.get("window_s", x.window_s)), float(d.get("backoff_s", x.backoff_s)),
                   float(d.get("backoff_max_s", x.backoff_max_s)),
                   float(d.get("min_uptime_s", x.min_uptime_s)))


@dataclass(frozen=True)
class StopSpec:
    signal: str = "SIGTERM"
    timeout_s: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "timeout_s": self.timeout_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StopSpec:
        return cls(str(d.get("signal", "SIGTERM")), float(d.get("timeout_s", 5.0)))


@dataclass(frozen=True)
class HealthCheck:
    """A probe of a running allocation. `port` and `host` apply to tcp and http checks,
    `path` and `expect_status` to http, `command` to exec."""

    type: HealthCheckType
    # A port number, or the name of one of the job's ports (the agent puts in the number
    # it picked: a check can then follow a dynamic port).
    port: int | str | None = None
    host: str = "127.0.0.1"
    path: str = "/"
    expect_status: int = 200
    command: tuple[str, ...] = ()
    interval_s: float = 5.0
    timeout_s: float = 2.0
    failures: int = 3  # consecutive failures before the allocation is unhealthy
    grace_s: float = 5.0  # failures right after a start do not count

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type}
        if self.type in (HealthCheckType.TCP, HealthCheckType.HTTP):
            d["port"] = self.port
            d["host"] = self.host
        if self.type == HealthCheckType.HTTP:
            d["path"] = self.path
            d["expect_status"] = self.expect_status
        if self.type == HealthCheckType.EXEC:
            d["command"] = list(self.command)
        d.update(interval_s=self.interval_s, timeout_s=self.timeout_s, failures=self.failures,
                 grace_s=self.grace_s)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HealthCheck:
        x = cls(HealthCheckType.TCP)
        port = d.get("port")
        return cls(HealthCheckType(d["type"]),
                   None if port is None else port if isinstance(port, str) else int(port),
                   str(d.get("host", x.host)), str(d.get("path", x.path)),
                   int(d.get("expect_status", x.expect_status)),
                   tuple(d.get("command") or ()), float(d.get("interval_s", x.interval_s)),
                   float(d.get("timeout_s", x.timeout_s)), int(d.get("failures", x.failures)),
                   float(d.get("grace_s", x.grace_s)))


@dataclass(frozen=True)
class LogPolicy:
    max_bytes: int = 10 * 1024 * 1024  # rotate the live file past this size
    keep: int = 3  # rotated files kept besides the live one

    def to_dict(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes, "keep": self.keep}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogPolicy:
        return cls(int(d.get("max_bytes", cls.max_bytes)), int(d.get("keep", cls.keep)))


@dataclass(frozen=True)
class SocketSpec:
    """A listening TCP socket bound by the agent and inherited by the allocation."""

    name: str
    port: int
    host: str = "0.0.0.0"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "host": self.host}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SocketSpec:
        return cls(str(d["name"]), int(d["port"]), str(d.get("host", "0.0.0.0")))


@dataclass(frozen=True)
class PortSpec:
    """A named port: `static` asks for that port; without it the agent picks a free one.
    Either way the allocation finds it in `HACONTROL_PORT_<NAME>` (the name upper-cased)."""

    name: str
    static: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name} if self.static is None else {"name": self.name,
                                                                  "static": self.static}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PortSpec:
        static = d.get("static")
        return cls(str(d["name"]), None if static is None else int(static))


@dataclass(frozen=True)
class ServiceSpec:
    """A service offered on one of the job's named ports; its endpoints are the live,
    healthy allocations (healthy by the job's health check, or running without one)."""

    name: str
    port: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceSpec:
        return cls(str(d["name"]), str(d["port"]))


@dataclass(frozen=True)
class Constraint:
    """A placement rule. `value` is a tuple for `in`; `distinct_nodes` has neither
    attribute nor value."""

    operator: ConstraintOperator = ConstraintOperator.EQ
    attribute: str | None = None
    value: str | tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.operator == ConstraintOperator.DISTINCT_NODES:
            return {"operator": self.operator}
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"attribute": self.attribute, "operator": self.operator, "value": value}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Constraint:
        value = d.get("value")
        return cls(ConstraintOperator(d.get("operator", "=")), d.get("attribute"),
                   tuple(value) if isinstance(value, list | tuple) else value)


@dataclass(frozen=True)
class UpdateSpec:
    """How a new version replaces the old one (a rolling update)."""

    max_parallel: int = 1
    min_healthy_s: float = 0.0
    deadline_s: float = 300.0
    auto_revert: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"max_parallel": self.max_parallel, "min_healthy_s": self.min_healthy_s,
                "deadline_s": self.deadline_s, "auto_revert": self.auto_revert}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UpdateSpec:
        x = cls()
        return cls(int(d.get("max_parallel", x.max_parallel)),
                   float(d.get("min_healthy_s", x.min_healthy_s)),
                   float(d.get("deadline_s", x.deadline_s)),
                   bool(d.get("auto_revert", x.auto_revert)))


@dataclass(frozen=True)
class MetricSpec:
    """The metric a job scales on. `port`, `path` and `interval_s` are for the prometheus
    source only (None otherwise); `stale_s` for the external source only."""

    name: str
    source: MetricSource = MetricSource.EXTERNAL
    # The port each allocation serves its metrics on (127.0.0.1): a number; a str names one
    # of the job's named ports, which the agent resolves per allocation (the parser accepts
    # numbers only until jobs declare named ports).
    port: int | str | None = None
    path: str | None = None  # None: DEFAULT_METRICS_PATH
    interval_s: float | None = None  # between scrapes; None: DEFAULT_SCRAPE_INTERVAL_S
    stale_s: float | None = None  # a pushed value older is ignored; None: DEFAULT_STALE_S

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "source": self.source}
        for key in ("port", "path", "interval_s", "stale_s"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricSpec:
        def opt(key: str, conv: Any) -> Any:
            v = d.get(key)
            return None if v is None else conv(v)
        port = d.get("port")
        return cls(str(d["name"]), MetricSource(d.get("source", MetricSource.EXTERNAL)),
                   port if isinstance(port, str) or port is None else int(port),
                   opt("path", str), opt("interval_s", float), opt("stale_s", float))

    @property
    def scrape_path(self) -> str:
        return self.path or DEFAULT_METRICS_PATH

    @property
    def scrape_interval_s(self) -> float:
        return self.interval_s or DEFAULT_SCRAPE_INTERVAL_S

    @property
    def stale_after_s(self) -> float:
        return self.stale_s or DEFAULT_STALE_S


DEFAULT_METRICS_PATH = "/metrics"
DEFAULT_SCRAPE_INTERVAL_S = 5.0
# A pushed value counts for this long: a pusher is expected to push again well within it
# (every few seconds); a new leader has none until the next push.
DEFAULT_STALE_S = 60.0
DEFAULT_TOLERANCE = 0.1


@dataclass(frozen=True)
class ScalingSpec:
    """Autoscaling bounds; encoded with the keys `min` and `max`.

    Without `metric` the job scales on the CPU its allocations use (`cpu_target`); with it,
    on the metric's total over the job divided by `target_per_instance`
    (`scheduler/autoscale.py`), and `cpu_target` is neither used nor encoded. The metric
    fields are None for CPU scaling and absent from the encoding, which is thus what it
    was before they existed.
    """

    min_count: int = 1
    max_count: int = 1  # the parser defaults it to min_count
    cpu_target: float = 0.7
    cooldown_s: float = 30.0
    metric: MetricSpec | None = None
    target_per_instance: float | None = None  # set exactly when `metric` is
    # How long the metric must ask for fewer allocations before they are stopped; None:
    # twice `cooldown_s`. Scaling up waits for the cooldown only.
    scale_down_delay_s: float | None = None
    tolerance: float | None = None  # the dead band around the target; None: 0.1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"min": self.min_count, "max": self.max_count}
        if self.metric is None:
            d["cpu_target"] = self.cpu_target
        d["cooldown_s"] = self.cooldown_s
        if self.metric is not None:
            d["metric"] = self.metric.to_dict()
            d["target_per_instance"] = self.target_per_instance
            for key in ("scale_down_delay_s", "tolerance"):
                value = getattr(self, key)
                if value is not None:
                    d[key] = value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScalingSpec:
        x = cls()
        lo = int(d.get("min", x.min_count))
        metric = d.get("metric")
        target, delay, tol = (d.get(k) for k in ("target_per_instance", "scale_down_delay_s",
                                                 "tolerance"))
        return cls(lo, int(d.get("max", lo)), float(d.get("cpu_target", x.cpu_target)),
                   float(d.get("cooldown_s", x.cooldown_s)),
                   None if metric is None else MetricSpec.from_dict(metric),
                   None if target is None else float(target),
                   None if delay is None else float(delay),
                   None if tol is None else float(tol))

    @property
    def down_delay_s(self) -> float:
        return self.cooldown_s * 2 if self.scale_down_delay_s is None \
            else self.scale_down_delay_s

    @property
    def band(self) -> float:
        return DEFAULT_TOLERANCE if self.tolerance is None else self.tolerance


@dataclass(frozen=True)
class DisconnectSpec:
    stop_after_s: float  # stop the allocation after this long without a leader

    def to_dict(self) -> dict[str, Any]:
        return {"stop_after_s": self.stop_after_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DisconnectSpec:
        return cls(float(d["stop_after_s"]))


@dataclass(frozen=True)
class JobSpec:
    """A whole job spec. Equal specs compare equal (defaults are filled in by the parser)."""

    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # sorted by name
    cwd: str | None = None
    count: int = 1
    resources: Resources = field(default_factory=Resources)
    restart: RestartSpec = field(default_factory=RestartSpec)
    stop: StopSpec = field(default_factory=StopSpec)
    type: JobType = JobType.SERVICE
    priority: int = 50
    # The sections below are None when not given (and then absent from `to_dict()`).
    scoring: Scoring | None = None  # the scheduler's default is binpack
    # Process settings for the agent; user/group apply only when the agent runs as root.
    user: str | None = None
    group: str | None = None
    umask: int | None = None
    shell: bool | None = None  # run command[0] through /bin/sh -c
    health: HealthCheck | None = None
    logs: LogPolicy | None = None  # None: LogPolicy()
    sockets: tuple[SocketSpec, ...] | None = None
    # Scheduling settings.
    constraints: tuple[Constraint, ...] | None = None
    preempt: bool | None = None
    depends_on: tuple[str, ...] | None = None  # sorted, unique
    update: UpdateSpec | None = None  # None: UpdateSpec()
    scaling: ScalingSpec | None = None  # None: no autoscaling
    disconnect: DisconnectSpec | None = None
    # False: binpack a job's allocations like any other work (no job anti-affinity);
    # None or True: spread them across nodes (the default).
    spread: bool | None = None
    # Named ports and the services offered on them (service discovery).
    ports: tuple[PortSpec, ...] | None = None
    services: tuple[ServiceSpec, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "command": list(self.command), "env": dict(self.env), "cwd": self.cwd,
            "count": self.count, "resources": self.resources.to_dict(),
            "restart": self.restart.to_dict(), "stop": self.stop.to_dict(),
            "type": self.type, "priority": self.priority}
        for name in OPTIONAL_SECTIONS:
            value = _encode(getattr(self, name))
            if value is not None:
                d[name] = value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        """From trusted, already checked data (a snapshot, the version history)."""

        def opt(name: str) -> Any:
            return d.get(name)

        def many(name: str, build: Any) -> Any:
            v = d.get(name)
            return None if v is None else tuple(build(x) for x in v)

        def one(name: str, build: Any) -> Any:
            v = d.get(name)
            return None if v is None else build(v)

        umask = opt("umask")
        shell, preempt, spread = opt("shell"), opt("preempt"), opt("spread")
        return cls(
            command=tuple(d["command"]), env=tuple(sorted((d.get("env") or {}).items())),
            cwd=d.get("cwd"), count=int(d.get("count", 1)),
            resources=Resources.from_dict(d.get("resources") or Resources().to_dict()),
            restart=RestartSpec.from_dict(d.get("restart") or {}),
            stop=StopSpec.from_dict(d.get("stop") or {}),
            type=JobType(d.get("type", JobType.SERVICE)), priority=int(d.get("priority", 50)),
            scoring=one("scoring", Scoring), user=opt("user"), group=opt("group"),
            umask=None if umask is None else int(umask),
            shell=None if shell is None else bool(shell),
            health=one("health", HealthCheck.from_dict), logs=one("logs", LogPolicy.from_dict),
            sockets=many("sockets", SocketSpec.from_dict),
            constraints=many("constraints", Constraint.from_dict),
            preempt=None if preempt is None else bool(preempt),
            depends_on=many("depends_on", str), update=one("update", UpdateSpec.from_dict),
            scaling=one("scaling", ScalingSpec.from_dict),
            disconnect=one("disconnect", DisconnectSpec.from_dict),
            spread=None if spread is None else bool(spread),
            ports=many("ports", PortSpec.from_dict),
            services=many("services", ServiceSpec.from_dict))

    def same_template(self, other: JobSpec) -> bool:
        """True when the two specs differ at most in `count` (no new version needed)."""
        return replace(self, count=other.count) == other

    def with_count(self, count: int) -> JobSpec:
        return replace(self, count=count)

    def usage(self) -> Usage:
        return Usage(self.resources.cpu * self.count, self.resources.memory_mb * self.count,
                     self.count)

    def static_ports(self) -> dict[str, int]:
        """The fixed ports this spec asks for, by name."""
        return {p.name: p.static for p in self.ports or () if p.static is not None}

    @property
    def update_policy(self) -> UpdateSpec:
        """The rolling update settings, defaults when the spec gave none."""
        return self.update or UpdateSpec()


# The optional sections in their encoding order (the order of `to_dict()` keys after
# `priority`): part of the state digest, never reorder.
OPTIONAL_SECTIONS = ("scoring", "user", "group", "umask", "shell", "health", "logs", "sockets",
                     "constraints", "preempt", "depends_on", "update", "scaling", "disconnect",
                     "spread", "ports", "services")


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value.to_dict()
