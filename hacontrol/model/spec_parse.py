"""Checking an untrusted job spec (API input, a command in the log) into a `JobSpec`.

Every failure raises `Rejection` naming the field, so bad input gets a 422 before any log
entry is written, and a malformed entry in the log is rejected as a whole by `apply`.
Defaults come from the dataclasses in `spec.py`, never from literals here.
"""

from __future__ import annotations

import re
import signal as _signal
from collections.abc import Callable
from dataclasses import fields
from enum import Enum
from typing import Any

from .checks import (
    argv,
    boolean,
    check_name,
    has_control,
    integer,
    no_unknown,
    number,
    obj,
    one_of,
    port,
)
from .errors import invalid
from .pattern import compile_pattern
from .resources import Resources
from .spec import (
    Constraint,
    DisconnectSpec,
    HealthCheck,
    JobSpec,
    LogPolicy,
    MetricSpec,
    RestartSpec,
    ScalingSpec,
    SocketSpec,
    StopSpec,
    UpdateSpec,
)
from .spec_ports import check_service_ports, parse_ports, parse_services
from .states import (
    ConstraintOperator,
    HealthCheckType,
    JobType,
    MetricSource,
    RestartPolicy,
    Scoring,
)

MAX_COUNT = 10_000
MAX_ARGV = 256
MAX_ARG_LEN = 8192
MAX_ENV = 256
# used with fullmatch (`$` would accept a trailing newline)
USER_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}|[0-9]{1,10}")
SOCKET_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Prometheus' metric names (fullmatch), shorter than it allows.
METRIC_NAME_RE = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]{0,199}")
# A URL path without spaces, control characters, a query or a fragment.
METRICS_PATH_RE = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,255}")
# A port named in `scaling.metric.port` (the job's named ports use the same names).
PORT_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# A metric value (pushed, or a target per allocation): finite and not absurd.
MAX_METRIC_VALUE = 1e15
_SIGNALS = {s.name for s in _signal.Signals}
# `name` and `namespace` may ride along in job files; the URL decides them.
_TOP_LEVEL = {f.name for f in fields(JobSpec)} | {"name", "namespace"}


# Enum values as sets: `Enum.__members__` builds a new mapping at every use. (Only strings
# are looked up: a list would not hash, and a member hashes as its value here.)
_JOB_TYPES = frozenset(t.value for t in JobType)
_SCORINGS = frozenset(t.value for t in Scoring)
_RESTART_POLICIES = frozenset(t.value for t in RestartPolicy)


def parse_count(raw: Any, field: str = "count") -> int:
    return integer(raw, field, minimum=0, maximum=MAX_COUNT)


def parse_job_spec(raw: Any) -> JobSpec:
    if not isinstance(raw, dict):
        raise invalid("spec", "job spec must be a JSON object")
    no_unknown(raw, _TOP_LEVEL, "")
    command = _command(raw.get("command"))
    env = _env(raw.get("env"))
    cwd = raw.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd.startswith("/")):
        raise invalid("cwd", "must be an absolute path")
    count = parse_count(raw.get("count", 1))
    # Sections left out (most specs leave out most) share one checked default: every
    # replica parses every spec it applies, and building the defaults was half of that.
    given = raw.get("resources")
    resources = (_DEFAULT_RESOURCES if _absent(given) or _spelled(given, _RESOURCES_SPELLED)
                 else _resources(given))
    given = raw.get("restart")
    restart = (_DEFAULT_RESTART if _absent(given) or _spelled(given, _RESTART_SPELLED)
               else _restart(given))
    given = raw.get("stop")
    stop = _DEFAULT_STOP if _absent(given) or _spelled(given, _STOP_SPELLED) else _stop(given)

    kind = raw.get("type", JobType.SERVICE)
    if not isinstance(kind, str) or kind not in _JOB_TYPES:
        raise invalid("type", "must be service or batch")
    priority = integer(raw.get("priority", JobSpec.priority), "priority", maximum=100)
    scoring = None
    if "scoring" in raw:
        if not isinstance(raw["scoring"], str) or raw["scoring"] not in _SCORINGS:
            raise invalid("scoring", "must be binpack or spread")
        scoring = Scoring(raw["scoring"])
    sections = {name: parse(raw[name]) for name, parse in _SECTIONS.items()
                if raw.get(name) is not None}
    spec = JobSpec(command=tuple(command), env=tuple(sorted(env.items())), cwd=cwd,
                   count=count, resources=resources, restart=restart, stop=stop,
                   type=JobType(kind), priority=priority, scoring=scoring, **sections)
    if spec.preempt and spec.type != JobType.SERVICE:
        raise invalid("preempt", "only service jobs may preempt")
    if spec.spread is False and spec.scoring == Scoring.SPREAD:
        raise invalid("spread", "spread: false contradicts scoring: spread")
    if spec.shell and len(command) != 1:
        raise invalid("command", "with shell: true, command is one string for /bin/sh -c")
    check_service_ports(spec.ports, spec.services,
                        spec.health.port if spec.health is not None else None)
    _check_metric_port(spec)
    return spec


def _check_metric_port(spec: JobSpec) -> None:
    """A scaling metric's port given by name must be one of the job's named ports."""
    metric = spec.scaling.metric if spec.scaling is not None else None
    if metric is None or not isinstance(metric.port, str):
        return
    # `ports` is the job's named ports where this build has them (service discovery).
    declared = {str(getattr(p, "name", "")) for p in getattr(spec, "ports", None) or ()}
    if metric.port not in declared:
        raise invalid("scaling.metric.port", f"{metric.port!r} is not one of the job's named "
                                             "ports; give a port number or a name from ports")


def _command(command: Any) -> list[str]:
    if not isinstance(command, list) or not command:
        raise invalid("command", "required: a non-empty list of strings (argv)")
    if len(command) > MAX_ARGV:
        raise invalid("command", f"at most {MAX_ARGV} arguments")
    for i, arg in enumerate(command):
        if not isinstance(arg, str) or len(arg) > MAX_ARG_LEN or "\x00" in arg:
            raise invalid(f"command[{i}]", "must be a string without NUL bytes")
    if not command[0]:
        raise invalid("command[0]", "must not be empty")
    return command


def _env(raw: Any) -> dict[str, str]:
    env = obj(raw, "env")
    if len(env) > MAX_ENV:
        raise invalid("env", f"at most {MAX_ENV} variables")
    for k, v in env.items():
        if not isinstance(k, str) or not k or "=" in k or has_control(k):
            raise invalid(f"env.{k}", "invalid variable name")
        if not isinstance(v, str) or "\x00" in v:
            raise invalid(f"env.{k}", "must be a string")
    return env


def _resources(raw: Any) -> Resources:
    res = obj(raw, "resources")
    no_unknown(res, {"cpu", "memory_mb", "pids"}, "resources.")
    pids = res.get("pids")
    return Resources(
        pids=None if pids is None else integer(pids, "resources.pids", minimum=1,
                                               maximum=10**7),
        cpu=number(res.get("cpu", Resources.cpu), "resources.cpu", maximum=1024,
                   allow_zero=False),
        memory_mb=integer(res.get("memory_mb", Resources.memory_mb), "resources.memory_mb",
                          minimum=1, maximum=2**30),
    )


def _restart(raw: Any) -> RestartSpec:
    rs = obj(raw, "restart")
    no_unknown(rs, {"policy", "max_restarts", "window_s", "backoff_s", "backoff_max_s",
                    "min_uptime_s"}, "restart.")
    rd = RestartSpec()
    policy = rs.get("policy", rd.policy)
    if not isinstance(policy, str) or policy not in _RESTART_POLICIES:
        raise invalid("restart.policy", "must be one of " + ", ".join(RestartPolicy))
    restart = RestartSpec(
        policy=RestartPolicy(policy),
        max_restarts=integer(rs.get("max_restarts", rd.max_restarts), "restart.max_restarts",
                             maximum=10**6),
        window_s=number(rs.get("window_s", rd.window_s), "restart.window_s", maximum=86400 * 7,
                        allow_zero=False),
        backoff_s=number(rs.get("backoff_s", rd.backoff_s), "restart.backoff_s", maximum=3600),
        backoff_max_s=number(rs.get("backoff_max_s", rd.backoff_max_s),
                             "restart.backoff_max_s", maximum=86400),
        min_uptime_s=number(rs.get("min_uptime_s", rd.min_uptime_s), "restart.min_uptime_s",
                            maximum=86400),
    )
    if restart.backoff_max_s < restart.backoff_s:
        raise invalid("restart.backoff_max_s", "must be at least restart.backoff_s")
    return restart


def _stop(raw: Any) -> StopSpec:
    st = obj(raw, "stop")
    no_unknown(st, {"signal", "timeout_s"}, "stop.")
    sig = st.get("signal", StopSpec.signal)
    if not isinstance(sig, str) or sig.upper() not in _SIGNALS:
        raise invalid("stop.signal", "must be a signal name such as SIGTERM")
    return StopSpec(signal=sig.upper(),
                    timeout_s=number(st.get("timeout_s", StopSpec.timeout_s), "stop.timeout_s",
                                     maximum=3600))


def _absent(section: Any) -> bool:
    return section is None or (isinstance(section, dict) and not section)


# What `{}` gives for each section, checked by the same code as a given one (so that the
# values, int or float, are exactly what a spelled-out empty section gives). Frozen: shared.
_DEFAULT_RESOURCES = _resources(None)
_DEFAULT_RESTART = _restart(None)
_DEFAULT_STOP = _stop(None)


def _plain(section: dict[str, Any]) -> dict[str, Any]:
    """A section's `to_dict` as it reads back from JSON or msgpack (enums as strings)."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in section.items()}


# The defaults spelled out, as `JobSpec.to_dict` writes them into every job_put command:
# each replica applying the command would otherwise check them field by field again.
_RESOURCES_SPELLED = _plain(_DEFAULT_RESOURCES.to_dict())
_RESTART_SPELLED = _plain(_DEFAULT_RESTART.to_dict())
_STOP_SPELLED = _plain(_DEFAULT_STOP.to_dict())


def _spelled(section: Any, spelled: dict[str, Any]) -> bool:
    """Whether `section` is exactly the spelled-out default, types included (60 for 60.0,
    or True for 1, parse to values of another type: those take the long way, as does a
    section whose keys come in another order)."""
    return (isinstance(section, dict) and section == spelled
            and list(map(type, section.values())) == list(map(type, spelled.values())))


def _health(raw: Any) -> HealthCheck:
    d = obj(raw, "health")
    no_unknown(d, {"type", "port", "host", "path", "expect_status", "command", "interval_s",
                   "timeout_s", "failures", "grace_s"}, "health.")
    kind = d.get("type")
    if kind not in HealthCheckType.__members__.values():
        raise invalid("health.type", "must be one of " + ", ".join(HealthCheckType))
    x = HealthCheck(HealthCheckType(str(kind)))
    checked: dict[str, Any] = {}
    if kind in (HealthCheckType.TCP, HealthCheckType.HTTP):
        if "port" not in d:
            raise invalid("health.port", "required for tcp and http checks")
        checked["port"] = (d["port"] if isinstance(d["port"], str)  # a named port's
                           else port(d["port"], "health.port"))
        host = d.get("host", x.host)
        if not isinstance(host, str) or not host:
            raise invalid("health.host", "must be a host name or address")
        checked["host"] = host
    if kind == HealthCheckType.HTTP:
        path = d.get("path", x.path)
        if (not isinstance(path, str) or not path.startswith("/") or " " in path
                or has_control(path)):
            # it goes into the request line: CR or LF would add headers or requests
            raise invalid("health.path", "must start with / and hold no spaces or control "
                                         "characters")
        checked["path"] = path
        checked["expect_status"] = integer(d.get("expect_status", x.expect_status),
                                           "health.expect_status", minimum=100, maximum=599)
    if kind == HealthCheckType.EXEC:
        checked["command"] = tuple(argv(d.get("command"), "health.command"))
    return HealthCheck(
        x.type, **checked,
        interval_s=number(d.get("interval_s", x.interval_s), "health.interval_s",
                          minimum=0.05, maximum=3600),
        timeout_s=number(d.get("timeout_s", x.timeout_s), "health.timeout_s", minimum=0.01,
                         maximum=3600),
        failures=integer(d.get("failures", x.failures), "health.failures", minimum=1,
                         maximum=1000),
        grace_s=number(d.get("grace_s", x.grace_s), "health.grace_s", maximum=3600))


def _logs(raw: Any) -> LogPolicy:
    d = obj(raw, "logs")
    no_unknown(d, {"max_bytes", "keep"}, "logs.")
    return LogPolicy(integer(d.get("max_bytes", LogPolicy.max_bytes), "logs.max_bytes",
                             minimum=1024, maximum=2**40),
                     integer(d.get("keep", LogPolicy.keep), "logs.keep", maximum=100))


def _sockets(raw: Any) -> tuple[SocketSpec, ...]:
    if not isinstance(raw, list) or len(raw) > 16:
        raise invalid("sockets", "must be a list of at most 16 sockets")
    out: list[SocketSpec] = []
    names: set[str] = set()
    for i, s in enumerate(raw):
        d = obj(s, f"sockets[{i}]")
        no_unknown(d, {"name", "port", "host"}, f"sockets[{i}].")
        name = d.get("name")
        if not isinstance(name, str) or not SOCKET_NAME_RE.fullmatch(name) or name in names:
            raise invalid(f"sockets[{i}].name", "must be a unique name of letters, digits, "
                                                "'_', '-' or '.'")
        names.add(name)
        host = d.get("host", SocketSpec.host)
        if not isinstance(host, str) or not host:
            raise invalid(f"sockets[{i}].host", "must be an address")
        out.append(SocketSpec(name, port(d.get("port"), f"sockets[{i}].port"), host))
    return tuple(out)


def _constraints(raw: Any) -> tuple[Constraint, ...]:
    if not isinstance(raw, list) or len(raw) > 32:
        raise invalid("constraints", "must be a list of at most 32 constraints")
    return tuple(_constraint(c, f"constraints[{i}]") for i, c in enumerate(raw))


def _constraint(raw: Any, at: str) -> Constraint:
    d = obj(raw, at)
    no_unknown(d, {"attribute", "operator", "value"}, f"{at}.")
    op = d.get("operator", Constraint.operator)
    if op not in ConstraintOperator.__members__.values():
        raise invalid(f"{at}.operator", "must be one of " + ", ".join(ConstraintOperator))
    op = ConstraintOperator(op)
    if op == ConstraintOperator.DISTINCT_NODES:
        return Constraint(op)
    attr = d.get("attribute")
    if not isinstance(attr, str) or not attr or len(attr) > 200:
        raise invalid(f"{at}.attribute", "required: e.g. node.name, label.zone or attr.os")
    value = d.get("value")
    if op == ConstraintOperator.IN:
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, str) for v in value)):
            raise invalid(f"{at}.value", "must be a list of strings for 'in'")
        return Constraint(op, attr, tuple(value))
    if not isinstance(value, str):
        raise invalid(f"{at}.value", "must be a string")
    if op == ConstraintOperator.REGEXP:
        try:
            compile_pattern(value)
        except ValueError as exc:
            raise invalid(f"{at}.value", f"bad regular expression: {exc}") from None
    return Constraint(op, attr, value)


def _update(raw: Any) -> UpdateSpec:
    d = obj(raw, "update")
    no_unknown(d, {"max_parallel", "min_healthy_s", "deadline_s", "auto_revert"}, "update.")
    x = UpdateSpec()
    return UpdateSpec(
        integer(d.get("max_parallel", x.max_parallel), "update.max_parallel", minimum=1,
                maximum=MAX_COUNT),
        number(d.get("min_healthy_s", x.min_healthy_s), "update.min_healthy_s",
               maximum=86400),
        number(d.get("deadline_s", x.deadline_s), "update.deadline_s", minimum=1,
               maximum=86400 * 7),
        boolean(d.get("auto_revert", x.auto_revert), "update.auto_revert"))


def _scaling(raw: Any) -> ScalingSpec:
    d = obj(raw, "scaling")
    no_unknown(d, {"min", "max", "cpu_target", "cooldown_s", "metric", "target_per_instance",
                   "scale_down_delay_s", "tolerance"}, "scaling.")
    x = ScalingSpec()
    lo = integer(d.get("min", x.min_count), "scaling.min", maximum=MAX_COUNT)
    hi = integer(d.get("max", lo), "scaling.max", maximum=MAX_COUNT)
    if hi < lo:
        raise invalid("scaling.max", "must be at least scaling.min")
    cooldown = number(d.get("cooldown_s", x.cooldown_s), "scaling.cooldown_s", maximum=86400)
    if d.get("metric") is None:
        for key in ("target_per_instance", "scale_down_delay_s", "tolerance"):
            if d.get(key) is not None:
                raise invalid(f"scaling.{key}", "only with scaling.metric")
        return ScalingSpec(lo, hi, number(d.get("cpu_target", x.cpu_target),
                                          "scaling.cpu_target", minimum=0.01, maximum=10,
                                          allow_zero=False), cooldown)
    if d.get("cpu_target") is not None:
        raise invalid("scaling.cpu_target", "a job scales on CPU or on scaling.metric, "
                                            "not both")
    metric = _metric(d["metric"])
    if metric.source == MetricSource.PROMETHEUS and lo < 1:
        # With no allocation running there is nothing to scrape: it could never scale up.
        raise invalid("scaling.min", "must be at least 1 with a prometheus metric")
    if d.get("target_per_instance") is None:
        raise invalid("scaling.target_per_instance", "required with scaling.metric")
    target = number(d["target_per_instance"], "scaling.target_per_instance",
                    maximum=MAX_METRIC_VALUE, allow_zero=False)
    delay, tol = d.get("scale_down_delay_s"), d.get("tolerance")
    return ScalingSpec(lo, hi, x.cpu_target, cooldown, metric, target,
                       None if delay is None else number(delay, "scaling.scale_down_delay_s",
                                                         maximum=86400),
                       None if tol is None else number(tol, "scaling.tolerance", maximum=0.5))


def _metric(raw: Any) -> MetricSpec:
    d = obj(raw, "scaling.metric")
    no_unknown(d, {"name", "source", "port", "path", "interval_s", "stale_s"},
               "scaling.metric.")
    name = d.get("name")
    if not isinstance(name, str) or not METRIC_NAME_RE.fullmatch(name):
        raise invalid("scaling.metric.name", "required: a metric name (letters, digits, '_' "
                                             "and ':', not starting with a digit, at most "
                                             "200 characters)")
    source = one_of(d.get("source", MetricSource.EXTERNAL), MetricSource,
                    "scaling.metric.source")
    if source == MetricSource.EXTERNAL:
        for key in ("port", "path", "interval_s"):
            if d.get(key) is not None:
                raise invalid(f"scaling.metric.{key}", "only with source prometheus")
        stale = d.get("stale_s")
        return MetricSpec(name, source, stale_s=None if stale is None else number(
            stale, "scaling.metric.stale_s", minimum=1, maximum=86400))
    if d.get("stale_s") is not None:
        raise invalid("scaling.metric.stale_s", "only with source external (a scraped value "
                                                "is as fresh as its last scrape)")
    if d.get("port") is None:
        raise invalid("scaling.metric.port", "required with source prometheus: the port "
                                             "each allocation serves its metrics on")
    # A number, or the name of one of the job's ports (checked against them by
    # `parse_job_spec`; each allocation has its own, which the agent resolves).
    raw_port = d["port"]
    at: int | str = (raw_port if isinstance(raw_port, str) and PORT_NAME_RE.fullmatch(raw_port)
                     else port(raw_port, "scaling.metric.port"))
    path = d.get("path")
    if path is not None and (not isinstance(path, str) or not METRICS_PATH_RE.fullmatch(path)):
        raise invalid("scaling.metric.path", "must be a URL path starting with '/' (at most "
                                             "256 characters, no spaces)")
    interval = d.get("interval_s")
    return MetricSpec(name, source, at, path, None if interval is None else number(
        interval, "scaling.metric.interval_s", minimum=0.1, maximum=3600))


def _depends_on(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > 32:
        raise invalid("depends_on", "must be a list of at most 32 job names")
    return tuple(sorted({check_name(v, f"depends_on[{i}]") for i, v in enumerate(raw)}))


def _disconnect(raw: Any) -> DisconnectSpec:
    d = obj(raw, "disconnect")
    no_unknown(d, {"stop_after_s"}, "disconnect.")
    return DisconnectSpec(number(d.get("stop_after_s"), "disconnect.stop_after_s",
                                 minimum=0.1, maximum=86400 * 7))


def _user(raw: Any, field: str) -> str:
    if not isinstance(raw, str) or not USER_RE.fullmatch(raw):
        raise invalid(field, "must be a user or group name, or a numeric id")
    return raw


def _umask(raw: Any) -> int:
    if isinstance(raw, str):
        try:
            raw = int(raw, 8)
        except ValueError:
            raise invalid("umask", "must be octal, e.g. \"022\"") from None
    return integer(raw, "umask", maximum=0o777)


# The optional sections with a parser, checked in this order (the first bad one is the one
# reported). `type`, `priority` and `scoring` are handled in `parse_job_spec`.
_SECTIONS: dict[str, Callable[[Any], Any]] = {
    "user": lambda v: _user(v, "user"),
    "group": lambda v: _user(v, "group"),
    "umask": _umask,
    "shell": lambda v: boolean(v, "shell"),
    "health": _health,
    "logs": _logs,
    "sockets": _sockets,
    "constraints": _constraints,
    "preempt": lambda v: boolean(v, "preempt"),
    "depends_on": _depends_on,
    "update": _update,
    "scaling": _scaling,
    "disconnect": _disconnect,
    "spread": lambda v: boolean(v, "spread"),
    "ports": parse_ports,
    "services": parse_services,
}
