"""The leader's assignments, checked into the shared model, and the spec the agent runs
for each (:func:`allocation_spec`)."""

from __future__ import annotations

import grp
import logging
import pwd
import sys
from dataclasses import replace
from typing import Any

from hacontrol.model.errors import Rejection
from hacontrol.model.messages import Assignment
from hacontrol.model.spec import JobSpec, LogPolicy
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.model.spec_ports import port_env

from .spec import AllocationSpec

log = logging.getLogger(__name__)


def allocation_spec(assignment: Assignment, node: str,
                    default_user: str | None = None,
                    ports: dict[str, int] | None = None) -> AllocationSpec:
    """What to run for an assignment from the leader, plus the agent's own env vars.

    A spec that names no user runs as `default_user` (None: as the agent itself); `ports`
    are its named ports (`HACONTROL_PORT_<NAME>`).

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
    env.update({port_env(name): str(port) for name, port in (ports or {}).items()})
    health = spec.health
    if health is not None and isinstance(health.port, str):
        if health.port not in (ports or {}):
            raise ValueError(f"health.port names port {health.port!r}, which has no port")
        health = replace(health, port=(ports or {})[health.port])
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
        health=health,
        logs=spec.logs or LogPolicy(),
        sockets=list(spec.sockets or ()),
        socket_key=f"{assignment.namespace}/{assignment.job}/v{assignment.version}",
    )


# Checked spec objects kept between answers: a delta answer has one per job.
SPECS_KEPT = 256


class AssignmentDecoder:
    """Checks the leader's assignments into typed ones, remembering the last answer.

    Every sync answer repeats all of the node's assignments, and checking a spec costs
    about 0.2 ms while comparing it with the one checked last time costs about 1 us, so
    only new or changed assignments are checked again. An assignment that changed (its
    state, say: every report of a burst of starts changes one) shares its job's spec
    object with the others of its job (`HeldAssignments`): that spec is checked once per
    object, not once per assignment.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[Any, Assignment | str]] = {}
        # id(raw spec) -> (that raw spec, kept alive so the id stays its own; what
        # checking it gave)
        self._specs: dict[int, tuple[Any, JobSpec | Rejection]] = {}

    def decode(self, raw: list[Any]) -> tuple[dict[str, Assignment], dict[str, str]]:
        """The assignments by id, and the rejected ones apart (id -> why).

        One bad assignment must not keep the node from acting on the others.
        """
        decoded: dict[str, Assignment] = {}
        rejected: dict[str, str] = {}
        seen: dict[str, tuple[Any, Assignment | str]] = {}
        if len(self._specs) > SPECS_KEPT:
            self._specs.clear()  # a full answer's (one spec object per assignment)

        def parse_spec(raw_spec: Any) -> JobSpec:
            hit = self._specs.get(id(raw_spec))
            if hit is None or hit[0] is not raw_spec:
                try:
                    hit = (raw_spec, parse_job_spec(raw_spec))
                except Rejection as rej:
                    hit = (raw_spec, rej)
                self._specs[id(raw_spec)] = hit
            if isinstance(hit[1], Rejection):
                # A new one each time: raising one instance again would lengthen its
                # traceback with every assignment of the job.
                raise Rejection(hit[1].code, hit[1].message, hit[1].field)
            return hit[1]

        for i, item in enumerate(raw):
            alloc_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(alloc_id, str) or not alloc_id:
                log.warning("ignoring an assignment without an id: %.200r", item)
                continue
            cached = self._last.get(alloc_id)
            if cached is not None and (cached[0] is item or cached[0] == item):
                result = cached[1]
            else:
                try:
                    result = Assignment.from_dict(item, f"allocations[{i}]",
                                                  parse_spec=parse_spec)
                except Rejection as exc:
                    result = str(exc)
            seen[alloc_id] = (item, result)
            if isinstance(result, str):
                rejected[alloc_id] = result
            else:
                decoded[alloc_id] = result
        self._last = seen
        return decoded, rejected


# Fields whose values many held assignments share (their job's, their states).
_REPEATED = ("namespace", "job", "desired", "state")


class HeldAssignments:
    """The agent's copy of its node's assignments, kept up to date by delta answers.

    A delta-speaking agent tells the leader the index it last applied and the job specs it
    holds; the leader answers with what changed since (assignments without their specs,
    removed ids, the specs the agent lacks), or with everything (`since` 0). `apply` turns
    either into the complete list of raw assignments, each with its job's spec, as a full
    answer would carry them (the same spec object for every assignment of a job, so the
    decoder's comparison with its last answer stays cheap).

    An answer that does not fit (a delta from another base, an assignment whose job spec
    is unknown) is not applied: `apply` returns None and the next request asks for a full
    answer.
    """

    def __init__(self) -> None:
        self.since = 0
        self.full = False
        # id -> the raw assignment with its job's spec, as last handed out: the same object
        # while neither changes, so that the decoder knows it unchanged by identity instead
        # of comparing a thousand dicts per answer. One dict per assignment: the answer's
        # own, given its spec in place (a copy without the spec and a merged copy beside
        # were 0.7 KB per allocation an agent held for as long as it ran).
        self._items: dict[str, dict[str, Any]] = {}
        self._specs: dict[str, tuple[int, Any]] = {}  # job key -> (modify index, raw spec)
        self._last: list[Any] | None = None  # what the last change produced
        self.changes = 0  # how many answers changed the held list (the agent reconciles)

    def request(self) -> dict[str, Any]:
        """The `delta` field of the next sync request."""
        return {"since": 0 if self.full else self.since,
                "jobs": {k: i for k, (i, _) in self._specs.items()}, "full": self.full}

    def reset(self) -> None:
        """Forget everything (the answer came without a delta: an older leader)."""
        self.since, self.full = 0, False
        self._items.clear()
        self._specs.clear()
        self._last = None

    def apply(self, index: int, allocations: list[Any], delta: Any) -> list[Any] | None:
        """The node's complete raw assignments after this answer, or None (see above).
        Takes the answer's assignment dicts over: each is given its spec in place."""
        since = delta.get("since") if isinstance(delta, dict) else None
        if not isinstance(since, int) or (since and since != self.since):
            self._refuse(f"a delta from index {since!r}, holding {self.since}")
            return None
        if (since and self._last is not None and not allocations and not delta.get("jobs")
                and not delta.get("removed")):
            # Nothing changed (most answers while the node reports a burst of starts):
            # the held list stands, with no rebuild of a thousand entries.
            self.since = index
            return self._last
        items = {} if since == 0 else dict(self._items)
        specs = dict(self._specs)
        jobs, removed = delta.get("jobs") or {}, delta.get("removed") or []
        if not isinstance(jobs, dict) or not isinstance(removed, list):
            self._refuse("a malformed delta")
            return None
        for key, at in jobs.items():
            if not isinstance(at, dict) or not isinstance(at.get("index"), int):
                self._refuse(f"a bad spec entry for job {key!r}")
                return None
            specs[str(key)] = (at["index"], at.get("spec"))
        for alloc_id in removed:
            if isinstance(alloc_id, str):
                items.pop(alloc_id, None)
        arrived: list[tuple[dict[str, Any], str]] = []
        for item in allocations:
            alloc_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(alloc_id, str) or not alloc_id:
                log.warning("ignoring an assignment without an id: %.200r", item)
                continue
            key = self._key(item)
            if key not in specs:
                self._refuse(f"no spec for the job of {alloc_id}")
                return None
            arrived.append((item, key))
        # Refused or not, nothing held was touched above; from here on the answer applies.
        for item, key in arrived:
            item["spec"] = specs[key][1]  # (any spec of its own it carried is not the job's)
            for field in _REPEATED:  # one string for all, not one per assignment held
                if type(value := item.get(field)) is str:
                    item[field] = sys.intern(value)
            items[item["id"]] = item
        used: set[str] = set()
        for alloc_id, held in items.items():
            key = self._key(held)
            used.add(key)
            spec = specs[key][1]
            if held["spec"] is not spec:  # its job's spec changed: a new object, so
                items[alloc_id] = {**held, "spec": spec}  # the decoder looks again
        self._items = items
        self._specs = {k: v for k, v in specs.items() if k in used}
        self.since, self.full = index, False
        self._last = list(items.values())
        self.changes += 1
        return self._last

    @staticmethod
    def _key(raw: dict[str, Any]) -> str:
        return f"{raw.get('namespace')}/{raw.get('job')}"

    def _refuse(self, why: str) -> None:
        log.warning("sync answer not applied (%s): asking for a full one", why)
        self.full = True


def _id_of(name: str, *, user: bool) -> int | None:
    """The uid (or gid) `name` resolves to here, as the launcher would; None if unknown."""
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if user else grp.getgrnam(name).gr_gid
    except KeyError:
        return None
