"""Schemas for everything that enters the state machine from outside.

The same functions check API input (so bad input gets a 422 naming the field before any log
entry is written) and command arguments inside `apply` (so a malformed entry, however it got
into the log, is rejected as a whole and never half applied).
"""

from __future__ import annotations

import math
import re
import signal as _signal
from typing import Any

from .errors import invalid
from .model import RESTART_POLICIES, JobSpec, Quota, Resources, RestartSpec, StopSpec

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$")
MAX_COUNT = 10_000
MAX_ARGV = 256
MAX_ARG_LEN = 8192
MAX_ENV = 256
_SIGNALS = {s.name for s in _signal.Signals}


def check_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise invalid(field, "must be 1-64 characters of a-z, 0-9, '-', '_' or '.', "
                             "starting and ending with a letter or digit")
    return value


def _obj(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(field, "must be an object")
    return value


def _unknown(d: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for k in d:
        if k not in allowed:
            raise invalid(f"{prefix}{k}", "unknown field")


def _number(value: Any, field: str, *, minimum: float = 0.0, maximum: float = 1e9,
            allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise invalid(field, "must be a number")
    if value < minimum or value > maximum or (not allow_zero and value == 0):
        raise invalid(field, f"must be between {minimum} and {maximum}"
                             + ("" if allow_zero else " and not zero"))
    return float(value)


def _integer(value: Any, field: str, *, minimum: int = 0, maximum: int = 2**31) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if value < minimum or value > maximum:
        raise invalid(field, f"must be between {minimum} and {maximum}")
    return value


def parse_quota(raw: Any, field: str = "quota") -> Quota:
    d = _obj(raw, field)
    _unknown(d, {"cpu", "memory_mb", "processes"}, f"{field}.")
    cpu = d.get("cpu")
    mem = d.get("memory_mb")
    procs = d.get("processes")
    return Quota(
        cpu=None if cpu is None else _number(cpu, f"{field}.cpu", maximum=1e6),
        memory_mb=None if mem is None else _integer(mem, f"{field}.memory_mb", maximum=2**40),
        processes=None if procs is None else _integer(procs, f"{field}.processes",
                                                      maximum=10**7),
    )


def parse_count(raw: Any, field: str = "count") -> int:
    return _integer(raw, field, minimum=0, maximum=MAX_COUNT)


def parse_job_spec(raw: Any) -> JobSpec:
    if not isinstance(raw, dict):
        raise invalid("spec", "job spec must be a JSON object")
    # `name` and `namespace` may ride along in job files; the URL decides them.
    _unknown(raw, {"command", "env", "cwd", "count", "resources", "restart", "stop",
                   "name", "namespace", *OPTIONAL_SECTIONS}, "")

    command = raw.get("command")
    if not isinstance(command, list) or not command:
        raise invalid("command", "required: a non-empty list of strings (argv)")
    if len(command) > MAX_ARGV:
        raise invalid("command", f"at most {MAX_ARGV} arguments")
    for i, arg in enumerate(command):
        if not isinstance(arg, str) or len(arg) > MAX_ARG_LEN or "\x00" in arg:
            raise invalid(f"command[{i}]", "must be a string without NUL bytes")
    if not command[0]:
        raise invalid("command[0]", "must not be empty")

    env = _obj(raw.get("env"), "env")
    if len(env) > MAX_ENV:
        raise invalid("env", f"at most {MAX_ENV} variables")
    for k, v in env.items():
        if not k or "=" in k or "\x00" in k:
            raise invalid(f"env.{k}", "invalid variable name")
        if not isinstance(v, str) or "\x00" in v:
            raise invalid(f"env.{k}", "must be a string")

    cwd = raw.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd.startswith("/")):
        raise invalid("cwd", "must be an absolute path")

    count = parse_count(raw.get("count", 1))

    res = _obj(raw.get("resources"), "resources")
    _unknown(res, {"cpu", "memory_mb", "pids"}, "resources.")
    defaults = Resources()
    pids = res.get("pids")
    resources = Resources(
        pids=None if pids is None else _integer(pids, "resources.pids", minimum=1,
                                                maximum=10**7),
        cpu=_number(res.get("cpu", defaults.cpu), "resources.cpu", maximum=1024,
                    allow_zero=False),
        memory_mb=_integer(res.get("memory_mb", defaults.memory_mb), "resources.memory_mb",
                           minimum=1, maximum=2**30),
    )

    rs = _obj(raw.get("restart"), "restart")
    _unknown(rs, {"policy", "max_restarts", "window_s", "backoff_s", "backoff_max_s",
                  "min_uptime_s"}, "restart.")
    rd = RestartSpec()
    policy = rs.get("policy", rd.policy)
    if policy not in RESTART_POLICIES:
        raise invalid("restart.policy", "must be one of " + ", ".join(RESTART_POLICIES))
    restart = RestartSpec(
        policy=policy,
        max_restarts=_integer(rs.get("max_restarts", rd.max_restarts), "restart.max_restarts",
                              maximum=10**6),
        window_s=_number(rs.get("window_s", rd.window_s), "restart.window_s", maximum=86400 * 7,
                         allow_zero=False),
        backoff_s=_number(rs.get("backoff_s", rd.backoff_s), "restart.backoff_s", maximum=3600),
        backoff_max_s=_number(rs.get("backoff_max_s", rd.backoff_max_s),
                              "restart.backoff_max_s", maximum=86400),
        min_uptime_s=_number(rs.get("min_uptime_s", rd.min_uptime_s), "restart.min_uptime_s",
                             maximum=86400),
    )
    if restart.backoff_max_s < restart.backoff_s:
        raise invalid("restart.backoff_max_s", "must be at least restart.backoff_s")

    st = _obj(raw.get("stop"), "stop")
    _unknown(st, {"signal", "timeout_s"}, "stop.")
    sd = StopSpec()
    sig = st.get("signal", sd.signal)
    if not isinstance(sig, str) or sig.upper() not in _SIGNALS:
        raise invalid("stop.signal", "must be a signal name such as SIGTERM")
    stop = StopSpec(signal=sig.upper(),
                    timeout_s=_number(st.get("timeout_s", sd.timeout_s), "stop.timeout_s",
                                      maximum=3600))

    options = parse_options(raw)
    if options.get("shell") and len(command) != 1:
        raise invalid("command", "with shell: true, command is one string for /bin/sh -c")
    return JobSpec(command=tuple(command), env=tuple(sorted(env.items())), cwd=cwd, count=count,
                   resources=resources, restart=restart, stop=stop, options=options)


# ------------------------------------------------------------ optional sections

USER_RE = re.compile(r"^([a-z_][a-z0-9_.-]{0,31}|[0-9]{1,10})$")
SOCKET_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CONSTRAINT_OPS = ("=", "!=", "in", "regexp", "distinct_nodes")
HEALTH_TYPES = ("tcp", "http", "exec")


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value


def _port(value: Any, field: str) -> int:
    return _integer(value, field, minimum=1, maximum=65535)


def _argv(value: Any, field: str) -> list[str]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(a, str) and "\x00" not in a for a in value)):
        raise invalid(field, "must be a non-empty list of strings")
    return list(value)


def _health(raw: Any) -> dict[str, Any]:
    d = _obj(raw, "health")
    _unknown(d, {"type", "port", "host", "path", "expect_status", "command", "interval_s",
                 "timeout_s", "failures", "grace_s"}, "health.")
    kind = d.get("type")
    if kind not in HEALTH_TYPES:
        raise invalid("health.type", "must be one of " + ", ".join(HEALTH_TYPES))
    out: dict[str, Any] = {"type": kind}
    if kind in ("tcp", "http"):
        if "port" not in d:
            raise invalid("health.port", "required for tcp and http checks")
        out["port"] = _port(d["port"], "health.port")
        host = d.get("host", "127.0.0.1")
        if not isinstance(host, str) or not host:
            raise invalid("health.host", "must be a host name or address")
        out["host"] = host
    if kind == "http":
        path = d.get("path", "/")
        if not isinstance(path, str) or not path.startswith("/"):
            raise invalid("health.path", "must start with /")
        out["path"] = path
        out["expect_status"] = _integer(d.get("expect_status", 200), "health.expect_status",
                                        minimum=100, maximum=599)
    if kind == "exec":
        out["command"] = _argv(d.get("command"), "health.command")
    out["interval_s"] = _number(d.get("interval_s", 5.0), "health.interval_s", minimum=0.05,
                                maximum=3600)
    out["timeout_s"] = _number(d.get("timeout_s", 2.0), "health.timeout_s", minimum=0.01,
                               maximum=3600)
    out["failures"] = _integer(d.get("failures", 3), "health.failures", minimum=1,
                               maximum=1000)
    out["grace_s"] = _number(d.get("grace_s", 5.0), "health.grace_s", maximum=3600)
    return out


def _logs(raw: Any) -> dict[str, Any]:
    d = _obj(raw, "logs")
    _unknown(d, {"max_bytes", "keep"}, "logs.")
    return {"max_bytes": _integer(d.get("max_bytes", 10 * 1024 * 1024), "logs.max_bytes",
                                  minimum=1024, maximum=2**40),
            "keep": _integer(d.get("keep", 3), "logs.keep", maximum=100)}


def _sockets(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > 16:
        raise invalid("sockets", "must be a list of at most 16 sockets")
    out, names = [], set()
    for i, s in enumerate(raw):
        d = _obj(s, f"sockets[{i}]")
        _unknown(d, {"name", "port", "host"}, f"sockets[{i}].")
        name = d.get("name")
        if not isinstance(name, str) or not SOCKET_NAME_RE.match(name) or name in names:
            raise invalid(f"sockets[{i}].name", "must be a unique name of letters, digits, "
                                                "'_', '-' or '.'")
        names.add(name)
        host = d.get("host", "0.0.0.0")
        if not isinstance(host, str) or not host:
            raise invalid(f"sockets[{i}].host", "must be an address")
        out.append({"name": name, "port": _port(d.get("port"), f"sockets[{i}].port"),
                    "host": host})
    return out


def _constraints(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > 32:
        raise invalid("constraints", "must be a list of at most 32 constraints")
    out = []
    for i, c in enumerate(raw):
        d = _obj(c, f"constraints[{i}]")
        _unknown(d, {"attribute", "operator", "value"}, f"constraints[{i}].")
        op = d.get("operator", "=")
        if op not in CONSTRAINT_OPS:
            raise invalid(f"constraints[{i}].operator", "must be one of "
                          + ", ".join(CONSTRAINT_OPS))
        if op == "distinct_nodes":
            out.append({"operator": op})
            continue
        attr = d.get("attribute")
        if not isinstance(attr, str) or not attr or len(attr) > 200:
            raise invalid(f"constraints[{i}].attribute",
                          "required: e.g. node.name, label.zone or attr.os")
        value = d.get("value")
        if op == "in":
            if (not isinstance(value, list) or not value
                    or not all(isinstance(v, str) for v in value)):
                raise invalid(f"constraints[{i}].value", "must be a list of strings for 'in'")
        elif not isinstance(value, str):
            raise invalid(f"constraints[{i}].value", "must be a string")
        if op == "regexp":
            try:
                re.compile(value)
            except re.error as exc:
                raise invalid(f"constraints[{i}].value", f"bad regular expression: {exc}") \
                    from None
        out.append({"attribute": attr, "operator": op, "value": value})
    return out


def _update(raw: Any) -> dict[str, Any]:
    d = _obj(raw, "update")
    _unknown(d, {"max_parallel", "min_healthy_s", "deadline_s", "auto_revert"}, "update.")
    return {"max_parallel": _integer(d.get("max_parallel", 1), "update.max_parallel",
                                     minimum=1, maximum=MAX_COUNT),
            "min_healthy_s": _number(d.get("min_healthy_s", 0.0), "update.min_healthy_s",
                                     maximum=86400),
            "deadline_s": _number(d.get("deadline_s", 300.0), "update.deadline_s",
                                  minimum=1, maximum=86400 * 7),
            "auto_revert": _bool(d.get("auto_revert", False), "update.auto_revert")}


def _scaling(raw: Any) -> dict[str, Any]:
    d = _obj(raw, "scaling")
    _unknown(d, {"min", "max", "cpu_target", "cooldown_s"}, "scaling.")
    lo = _integer(d.get("min", 1), "scaling.min", maximum=MAX_COUNT)
    hi = _integer(d.get("max", lo), "scaling.max", maximum=MAX_COUNT)
    if hi < lo:
        raise invalid("scaling.max", "must be at least scaling.min")
    return {"min": lo, "max": hi,
            "cpu_target": _number(d.get("cpu_target", 0.7), "scaling.cpu_target",
                                  minimum=0.01, maximum=10, allow_zero=False),
            "cooldown_s": _number(d.get("cooldown_s", 30.0), "scaling.cooldown_s",
                                  maximum=86400)}


def _depends_on(raw: Any) -> list[str]:
    if not isinstance(raw, list) or len(raw) > 32:
        raise invalid("depends_on", "must be a list of at most 32 job names")
    return sorted({check_name(v, f"depends_on[{i}]") for i, v in enumerate(raw)})


def _disconnect(raw: Any) -> dict[str, Any]:
    d = _obj(raw, "disconnect")
    _unknown(d, {"stop_after_s"}, "disconnect.")
    return {"stop_after_s": _number(d.get("stop_after_s"), "disconnect.stop_after_s",
                                    minimum=0.1, maximum=86400 * 7)}


def _user(raw: Any, field: str) -> str:
    if not isinstance(raw, str) or not USER_RE.match(raw):
        raise invalid(field, "must be a user or group name, or a numeric id")
    return raw


def _umask(raw: Any) -> int:
    if isinstance(raw, str):
        try:
            raw = int(raw, 8)
        except ValueError:
            raise invalid("umask", "must be octal, e.g. \"022\"") from None
    return _integer(raw, "umask", maximum=0o777)


OPTIONAL_SECTIONS: dict[str, Any] = {
    "user": lambda v: _user(v, "user"),
    "group": lambda v: _user(v, "group"),
    "umask": _umask,
    "shell": lambda v: _bool(v, "shell"),
    "health": _health,
    "logs": _logs,
    "sockets": _sockets,
    "type": None,  # handled below: always present
    "priority": None,
    "constraints": _constraints,
    "scoring": None,
    "preempt": lambda v: _bool(v, "preempt"),
    "depends_on": _depends_on,
    "update": _update,
    "scaling": _scaling,
    "disconnect": _disconnect,
}


def parse_options(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = raw.get("type", "service")
    if kind not in ("service", "batch"):
        raise invalid("type", "must be service or batch")
    out["type"] = kind
    out["priority"] = _integer(raw.get("priority", 50), "priority", maximum=100)
    if "scoring" in raw:
        if raw["scoring"] not in ("binpack", "spread"):
            raise invalid("scoring", "must be binpack or spread")
        out["scoring"] = raw["scoring"]
    for name, parse in OPTIONAL_SECTIONS.items():
        if parse is not None and name in raw and raw[name] is not None:
            out[name] = parse(raw[name])
    if out.get("preempt") and kind != "service":
        raise invalid("preempt", "only service jobs may preempt")
    return out

