"""The leader's assignments, checked into the shared model, and the spec the agent runs
for each (:func:`allocation_spec`)."""

from __future__ import annotations

import grp
import logging
import pwd
from typing import Any

from hacontrol.model.errors import Rejection
from hacontrol.model.messages import Assignment
from hacontrol.model.spec import LogPolicy

from .spec import AllocationSpec

log = logging.getLogger(__name__)


def allocation_spec(assignment: Assignment, node: str,
                    default_user: str | None = None) -> AllocationSpec:
    """What to run for an assignment from the leader, plus the agent's own env vars.

    A spec that names no user runs as `default_user` (None: as the agent itself).

    ValueError if the spec is missing or the supervisor cannot run it.
    """
    spec = assignment.spec
    if spec is None:
        raise ValueError("the assignment has no spec")
    # The controllers require run-as-root for "root" and every spelling of id 0; a name
    # that only this node's passwd maps to id 0 is for this agent to refuse.
    if spec.user is not None and spec.user != "root" and _id_of(spec.user, user=True) == 0:
        raise ValueError(f"user {spec.user!r} is root on this node; ask for user: root")
    if spec.group is not None and spec.group != "root" and _id_of(spec.group, user=False) == 0:
        raise ValueError(f"group {spec.group!r} is root on this node; ask for group: root")
    env = dict(spec.env)
    env.update(
        {
            "HACONTROL_ALLOC_ID": assignment.id,
            "HACONTROL_JOB": assignment.job,
            "HACONTROL_NAMESPACE": assignment.namespace,
            "HACONTROL_NODE": node,
        }
    )
    return AllocationSpec(
        alloc_id=assignment.id,
        command=list(spec.command),
        env=env,
        cwd=spec.cwd,
        restart=spec.restart,
        stop=spec.stop,
        user=spec.user if spec.user is not None else default_user,
        group=spec.group,
        umask=spec.umask,
        shell=bool(spec.shell),
        resources=spec.resources,
        health=spec.health,
        logs=spec.logs or LogPolicy(),
        sockets=list(spec.sockets or ()),
        socket_key=f"{assignment.namespace}/{assignment.job}/v{assignment.version}",
    )


class AssignmentDecoder:
    """Checks the leader's assignments into typed ones, remembering the last answer.

    Every sync answer repeats all of the node's assignments, and checking a spec costs
    about 0.2 ms while comparing it with the one checked last time costs about 1 us, so
    only new or changed assignments are checked again.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[Any, Assignment | str]] = {}

    def decode(self, raw: list[Any]) -> tuple[dict[str, Assignment], dict[str, str]]:
        """The assignments by id, and the rejected ones apart (id -> why).

        One bad assignment must not keep the node from acting on the others.
        """
        decoded: dict[str, Assignment] = {}
        rejected: dict[str, str] = {}
        seen: dict[str, tuple[Any, Assignment | str]] = {}
        for i, item in enumerate(raw):
            alloc_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(alloc_id, str) or not alloc_id:
                log.warning("ignoring an assignment without an id: %.200r", item)
                continue
            cached = self._last.get(alloc_id)
            if cached is not None and cached[0] == item:
                result = cached[1]
            else:
                try:
                    result = Assignment.from_dict(item, f"allocations[{i}]")
                except Rejection as exc:
                    result = str(exc)
            seen[alloc_id] = (item, result)
            if isinstance(result, str):
                rejected[alloc_id] = result
            else:
                decoded[alloc_id] = result
        self._last = seen
        return decoded, rejected


def _id_of(name: str, *, user: bool) -> int | None:
    """The uid (or gid) `name` resolves to here, as the launcher would; None if unknown."""
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if user else grp.getgrnam(name).gr_gid
    except KeyError:
        return None
