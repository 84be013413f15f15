"""`job plan`: what submitting a job spec would do, without doing it (a scheduler dry run).

The spec is applied with the real `job_put` handler to a fork of the store (`Store.fork`:
the job, its allocations and the indexes they are in are copied, the rest is shared and
never changed), a rollout the submission would start is played to its end there, and the
leader's own placement (`decide.placement_inputs_of`, `placement.plan_placements`) plans the
result. So the plan follows the same rules as the real thing, and the real state is never
touched: `survey` runs under the apply lock and only copies; `finish` plans without it.

Placements are planned against the cluster as it will be once the allocations the
submission stops or replaces have stopped (as Nomad's plan does); a rolling update also
needs `update.max_parallel` allocations' room while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hacontrol.model.records import Allocation, Job
from hacontrol.model.resources import Quota, Usage
from hacontrol.model.spec import JobSpec
from hacontrol.model.states import AllocState, DesiredState, JobStatus
from hacontrol.state.context import Applying
from hacontrol.state.events import EventLog
from hacontrol.state.handlers import jobs as job_handlers
from hacontrol.state.lifecycle import reconcile
from hacontrol.state.machine import StateMachine
from hacontrol.state.quota import check_fits

from .decide import placement_inputs_of
from .placement import Demand, NodeRoom, plan_placements

ACTIONS = ("create", "replace", "stop", "ignore", "pending")
_MISSING = object()


@dataclass(frozen=True)
class Entry:
    """One allocation of the plan, before placement: `new` is the id it has in the fork."""

    action: str
    allocation: str | None  # an existing allocation (stopped, replaced, left alone)
    node: str | None
    reason: str
    new: str | None = None  # the new allocation to place (create, replace)


@dataclass
class PlanSurvey:
    """What `survey` read under the lock; `finish` turns it into the answer."""

    job_modify_index: int
    diff: list[dict[str, Any]]
    quota: dict[str, Any]
    entries: list[Entry]
    version: int
    changed: bool
    index: int
    demands: list[Demand] = field(default_factory=list)
    rooms: list[NodeRoom] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)


def spec_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-by-field differences of two spec encodings: dicts are walked (`env.FOO`,
    `resources.cpu`), anything else (lists included) is one value. `type` says added,
    deleted or edited; `old`/`new` is None on the side that lacks the field."""
    out: list[dict[str, Any]] = []

    def walk(a: Any, b: Any, at: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in [*b, *(k for k in a if k not in b)]:
                walk(a.get(k, _MISSING), b.get(k, _MISSING), f"{at}.{k}" if at else str(k))
            return
        if a is _MISSING and isinstance(b, dict):
            for k, v in b.items():
                walk(_MISSING, v, f"{at}.{k}")
            return
        if b is _MISSING and isinstance(a, dict):
            for k, v in a.items():
                walk(v, _MISSING, f"{at}.{k}")
            return
        if a == b:
            return
        kind = "added" if a is _MISSING else "deleted" if b is _MISSING else "edited"
        out.append({"field": at, "type": kind, "old": None if a is _MISSING else a,
                    "new": None if b is _MISSING else b})

    walk(old if old is not None else {}, new, "")
    return out


def _live(a: Allocation) -> bool:
    return a.desired == DesiredState.RUN and not a.terminal


def survey(m: StateMachine, ns: str, name: str, spec: JobSpec, now_wall: float) -> PlanSurvey:
    """Everything the plan needs from the state (call with the state held still). Raises
    `Rejection` where submitting would be refused for another reason than the quota."""
    key = (ns, name)
    job = m.jobs.get(key)
    current = job if job is not None and job.status == JobStatus.RUNNING else None
    diff = spec_diff(current.spec.to_dict() if current is not None else None, spec.to_dict())
    before = {a.id: a for a in m.job_allocs(job)} if job is not None else {}

    store = m.store.fork(key)
    old_usage = job.quota_usage() if job is not None else Usage()
    refused = check_fits(store.namespaces.get(ns, Quota()),
                         store.namespace_usage(ns) - old_usage + spec.usage())
    quota = {"ok": refused is None, "reason": None if refused is None else refused.message}
    if refused is not None and ns in store.namespaces:
        # Plan the rest as if it fitted: the verdict above says it would be refused.
        store.namespaces[ns] = Quota()
    tx = Applying(store, EventLog(), store.index + 1, now_wall)
    result = job_handlers.put(tx, {"namespace": ns, "name": name, "spec": spec.to_dict()})
    forked = store.jobs[key]
    rolling = forked.rollout is not None
    if rolling:
        # Play the rollout to its end: every old allocation replaced by a new one.
        forked.rollout = None
        reconcile(tx, forked)
    for a in store.job_allocs(forked):
        if a.desired == DesiredState.STOP and not a.terminal and a.node is not None:
            a.state = AllocState.STOPPED  # its room is free once it has stopped

    demands: list[Demand] = []
    rooms: list[NodeRoom] = []
    blocked: dict[str, str] = {}
    if (ns, name) in store.pending:
        # The leader's own inputs, other jobs' pending work included (it competes for
        # room by priority): a walk over every allocation, as one placement round costs.
        machine = StateMachine()
        machine.store = store
        demands, rooms, blocked = placement_inputs_of(machine, now_wall)
    entries = _entries(before, store.job_allocs(forked), forked, job, rolling)
    return PlanSurvey(job.modify_index if job is not None else 0, diff, quota, entries,
                      forked.version, bool(result.get("changed")), m.index,
                      demands, rooms, blocked)


def _entries(before: dict[str, Allocation], after: list[Allocation], job: Job,
             was: Job | None, rolling: bool) -> list[Entry]:
    now = {a.id: a for a in after}
    created = sorted(i for i in now if i not in before)
    replaced: list[Allocation] = []
    out: list[Entry] = []
    for a in before.values():
        if not _live(a):
            continue
        b = now.get(a.id)
        if b is not None and _live(b):
            reason = "unchanged" if a.node is not None else "unchanged, not yet placed"
            out.append(Entry("ignore", a.id, a.node, reason, None if a.node else a.id))
        elif a.version != job.version and len(replaced) < len(created):
            replaced.append(a)
        else:
            out.append(Entry("stop", a.id, a.node, b.message if b is not None else "stopped"))
    if was is None:
        why = "new job"
    elif replaced or was.version != job.version:
        how = (f"rolling update, {job.spec.update_policy.max_parallel} at a time" if rolling
               else "stopped first")
        why = f"spec changed: version {was.version} -> {job.version} ({how})"
    else:
        why = f"count {was.spec.count if was.status == JobStatus.RUNNING else 0} -> " \
              f"{job.spec.count}"
    for i, new in enumerate(created):
        old = replaced[i] if i < len(replaced) else None
        if old is None:
            out.append(Entry("create", None, None, why, new))
        else:
            out.append(Entry("replace", old.id, old.node, why, new))
    return out


def finish(s: PlanSurvey) -> dict[str, Any]:
    """The plan's answer (see docs/api.md, `POST /v1/jobs/{ns}/{name}/plan`)."""
    plan = plan_placements(s.demands, s.rooms) if s.demands else None
    placed = dict(plan.placements) if plan is not None else {}
    unplaced = {**(plan.unplaced if plan is not None else {}), **s.blocked}
    placements: list[dict[str, Any]] = []
    for e in s.entries:
        action, node, reason = e.action, e.node, e.reason
        if e.new is not None:
            if e.new in placed:
                node = placed[e.new]
                if action == "ignore":
                    reason = f"not yet placed; would be placed on {node}"
            else:
                why = unplaced.get(e.new, "not planned in this round; placed in a later one")
                reason = why if action != "replace" else f"{reason}; its replacement: {why}"
                action, node = "pending", None
        placements.append({"action": action, "allocation": e.allocation, "node": node,
                           "reason": reason})
    changes = dict.fromkeys(ACTIONS, 0)
    for p in placements:
        changes[p["action"]] += 1
    return {"job_modify_index": s.job_modify_index, "diff": s.diff, "changes": changes,
            "placements": placements, "quota": s.quota, "version": s.version,
            "changed": s.changed, "index": s.index}
