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
                   "name", "namespace"}, "")

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
    _unknown(res, {"cpu", "memory_mb"}, "resources.")
    defaults = Resources()
    resources = Resources(
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

    return JobSpec(command=tuple(command), env=tuple(sorted(env.items())), cwd=cwd, count=count,
                   resources=resources, restart=restart, stop=stop)


def spec_from_stored(d: dict[str, Any]) -> JobSpec:
    """Rebuild a spec from a snapshot; it was validated when it entered the log."""
    return parse_job_spec(d)
