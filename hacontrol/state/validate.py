"""Schemas for everything that enters the state machine from outside.

The same functions check API input (so bad input gets a 422 naming the field before any log
entry is written) and command arguments inside `apply` (so a malformed entry, however it got
into the log, is rejected as a whole and never half applied). Handlers call these and
nothing else to check their arguments. The job spec's own checks live with the spec, in
`hacontrol.model.spec_parse`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hacontrol.model.checks import (
    NAME_RE,
    check_name,
    integer,
    number,
    obj,
    str_map,
)
from hacontrol.model.errors import invalid
from hacontrol.model.resources import Quota, Resources
from hacontrol.model.spec_parse import MAX_COUNT, parse_count, parse_job_spec
from hacontrol.model.spec_ports import parse_reported_ports
from hacontrol.model.states import REPORTED_STATES, AllocState, Health, NodeStatus

__all__ = [
    "MAX_COUNT", "NAME_RE", "AllocUpdate", "DeployStep", "NodeRegistration", "check_name",
    "parse_check_index",
    "node_name", "parse_alloc_updates", "parse_count", "parse_deploy_step", "parse_drain",
    "parse_evictions", "parse_job_key", "parse_job_spec", "parse_migrate",
    "parse_node_registration", "parse_node_status", "parse_placements", "parse_quota",
    "parse_reported_ports",
]

MAX_LABELS = 64
MAX_REASON = 200  # longer stop reasons are cut, not refused


def parse_quota(raw: Any, field: str = "quota") -> Quota:
    d = obj(raw, field)
    for k in d:
        if k not in ("cpu", "memory_mb", "processes"):
            raise invalid(f"{field}.{k}", "unknown field")
    cpu = d.get("cpu")
    mem = d.get("memory_mb")
    procs = d.get("processes")
    return Quota(
        cpu=None if cpu is None else number(cpu, f"{field}.cpu", maximum=1e6),
        memory_mb=None if mem is None else integer(mem, f"{field}.memory_mb", maximum=2**40),
        processes=None if procs is None else integer(procs, f"{field}.processes",
                                                     maximum=10**7),
    )


def parse_check_index(raw: Any) -> int:
    """A job's expected modify index (`job run --check-index`); 0: it must not exist."""
    return integer(raw, "check_index", minimum=0, maximum=2**63 - 1)


def parse_job_key(args: dict[str, Any]) -> tuple[str, str]:
    return (check_name(args.get("namespace"), "namespace"), check_name(args.get("name"),
                                                                       "name"))


@dataclass(frozen=True)
class NodeRegistration:
    name: str
    capacity: Resources
    address: str
    labels: dict[str, str]
    attributes: dict[str, str]


def parse_node_registration(a: dict[str, Any]) -> NodeRegistration:
    name = check_name(a.get("name"), "name")
    cpu = a.get("cpu")
    mem = a.get("memory_mb")
    address = a.get("address", "")
    if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not 0 < cpu <= 100_000:
        raise invalid("cpu", "must be a positive number")
    if isinstance(mem, bool) or not isinstance(mem, int) or not 0 < mem <= 2**40:
        raise invalid("memory_mb", "must be a positive integer")
    if not isinstance(address, str) or len(address) > 500:
        raise invalid("address", "must be a string")
    return NodeRegistration(name, Resources(float(cpu), mem), address,
                            str_map(a.get("labels"), "labels", max_items=MAX_LABELS),
                            str_map(a.get("attributes"), "attributes", max_items=MAX_LABELS))


def node_name(a: dict[str, Any]) -> str | None:
    """The node a command names, or None when it names none (the caller answers not found:
    a node is looked up, never created, by these commands)."""
    name = a.get("name")
    return name if isinstance(name, str) else None


def parse_node_status(a: dict[str, Any]) -> NodeStatus:
    status = a.get("status")
    if status not in NodeStatus.__members__.values():
        raise invalid("status", "must be ready or down")
    return NodeStatus(str(status))


def parse_drain(a: dict[str, Any]) -> tuple[bool, float]:
    """(enable, deadline in seconds)."""
    enable = a.get("enable")
    if not isinstance(enable, bool):
        raise invalid("enable", "must be true or false")
    deadline = a.get("deadline_s", 60.0)
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) \
            or not 0 <= deadline <= 86400 * 7:
        raise invalid("deadline_s", "must be a number of seconds")
    return enable, deadline


def parse_migrate(a: dict[str, Any]) -> tuple[list[str], str]:
    """(allocation ids, reason as given and as stored)."""
    ids = a.get("allocations")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise invalid("allocations", "must be a list of allocation ids")
    return ids, a.get("reason", "migrated")


@dataclass(frozen=True)
class DeployStep:
    version: Any  # compared with the running deployment's; any mismatch is a conflict
    start: int
    stop: list[str]
    status: str | None
    message: Any


def parse_deploy_step(a: dict[str, Any]) -> DeployStep:
    start = a.get("start", 0)
    stop = a.get("stop", [])
    status = a.get("status")
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 10_000:
        raise invalid("start", "must be a small non-negative integer")
    if not isinstance(stop, list) or not all(isinstance(i, str) for i in stop):
        raise invalid("stop", "must be a list of allocation ids")
    if status not in (None, "successful", "failed"):
        raise invalid("status", "must be successful or failed")
    return DeployStep(a.get("version"), start, stop, status, a.get("message"))


def parse_placements(a: dict[str, Any]) -> list[tuple[str, str]]:
    placements = a.get("placements")
    if not isinstance(placements, list):
        raise invalid("placements", "must be a list")
    parsed: list[tuple[str, str]] = []
    for i, p in enumerate(placements):
        if (not isinstance(p, list) or len(p) != 2
                or not all(isinstance(x, str) for x in p)):
            raise invalid(f"placements[{i}]", "must be [allocation id, node name]")
        parsed.append((p[0], p[1]))
    return parsed


def parse_evictions(a: dict[str, Any]) -> list[tuple[str, str]]:
    evictions = a.get("evictions") or []
    if not isinstance(evictions, list):
        raise invalid("evictions", "must be a list")
    parsed: list[tuple[str, str]] = []
    for i, e in enumerate(evictions):
        if (not isinstance(e, list) or len(e) != 2
                or not all(isinstance(x, str) for x in e)):
            raise invalid(f"evictions[{i}]", "must be [allocation id, reason]")
        parsed.append((e[0], e[1]))
    return parsed


@dataclass(frozen=True)
class AllocUpdate:
    """One checked report from a node about one allocation."""

    id: str
    state: AllocState
    pid: int | None
    restarts: int | None
    exit_code: int | None
    signal: str | None
    message: str | None
    health: Health | None
    reason: str | None
    ports: dict[str, int] | None = None


def parse_alloc_updates(a: dict[str, Any]) -> tuple[str, list[AllocUpdate]]:
    """(node name, its reports)."""
    node = a.get("node")
    updates = a.get("updates")
    if not isinstance(node, str) or not isinstance(updates, list):
        raise invalid("updates", "must be a node name and a list of updates")
    out = []
    for i, u in enumerate(updates):
        if not isinstance(u, dict) or not isinstance(u.get("id"), str):
            raise invalid(f"updates[{i}].id", "must be a string")
        state = u.get("state")
        if not isinstance(state, str) or state not in REPORTED_STATES:
            raise invalid(f"updates[{i}].state", "not a reportable state")
        for f in ("pid", "restarts", "exit_code"):
            v = u.get(f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise invalid(f"updates[{i}].{f}", "must be an integer")
        health = u.get("health")
        if health is not None and (not isinstance(health, str)
                                   or health not in Health.__members__.values()):
            raise invalid(f"updates[{i}].health", "must be healthy, unhealthy or starting")
        for f in ("signal", "message", "reason"):
            v = u.get(f)
            if v is not None and (not isinstance(v, str) or len(v) > 2000):
                raise invalid(f"updates[{i}].{f}", "must be a short string")
        out.append(AllocUpdate(u["id"], AllocState(state), u.get("pid"), u.get("restarts"),
                               u.get("exit_code"), u.get("signal"), u.get("message"),
                               None if health is None else Health(health), u.get("reason"),
                               parse_reported_ports(u.get("ports"), f"updates[{i}].ports")))
    return node, out
