"""The answers the API serves, built from the store. Reads only; each costs what its answer
holds (a job's allocations, a node's allocations), never a walk over the whole table."""

from __future__ import annotations

from typing import Any

from hacontrol.model.messages import Assignment, DeltaAnswer, DeltaRequest, JobAt, job_key
from hacontrol.model.records import Allocation, Job, Node
from hacontrol.model.states import TERMINAL_STATES, AllocState, JobStatus, JobType

from .quota import headroom
from .store import Store

View = dict[str, Any]
_COUNTED = ("pending", "starting", "running", "paused", "exited", "failed", "lost", "stopped",
            "complete")


def namespace_view(store: Store, ns: str) -> View:
    quota = store.namespaces[ns]
    usage = store.namespace_usage(ns)
    return {"name": ns, "quota": quota.to_dict(), "usage": usage.to_dict(),
            "headroom": headroom(quota, usage)}


def node_view(store: Store, node: Node) -> View:
    cpu, mem = store.node_free(node)
    return {"name": node.name, "status": node.status, "address": node.address,
            "labels": node.labels, "attributes": node.attributes, "drain": node.drain,
            "drain_deadline": node.drain_deadline, "eligible": node.eligible,
            "capacity": node.capacity.to_dict(),
            "free": {"cpu": round(cpu, 6), "memory_mb": mem},
            "allocations": store.node_holding(node.name),
            "registered_at": node.registered_at, "updated_at": node.updated_at}


def job_counts(store: Store, job: Job) -> dict[str, int]:
    counts = {"desired": job.spec.count if job.status == JobStatus.RUNNING else 0}
    counts.update(dict.fromkeys(_COUNTED, 0))
    for (version, state), n in store.job_states_of(job).items():
        if version == job.version or state in (AllocState.RUNNING, AllocState.STARTING):
            counts[state] = counts.get(state, 0) + n
    return counts


def job_status(store: Store, job: Job) -> str:
    """The stored status, or `complete` for a batch job whose allocations all completed."""
    if job.status == JobStatus.RUNNING and job.spec.type == JobType.BATCH \
            and job.spec.count > 0:
        done = store.job_states_of(job).get((job.version, AllocState.COMPLETE), 0)
        if done >= job.spec.count:
            return JobStatus.COMPLETE
    return job.status


def observed_status(store: Store, job: Job) -> str:
    """`job_status`, or `failed` for a running job none of whose current allocations can
    still run or have completed, at least one of them failed (what its restart policy gave
    up on): its processes are gone, and `running` would hide it.

    Only reads answer with it: command results keep `job_status`, since they are kept in
    the idempotency table, which is part of the snapshot and its digest."""
    status = job_status(store, job)
    if status != JobStatus.RUNNING or job.spec.count == 0:
        return status
    failed = False
    for version, state in store.job_states_of(job):
        if version != job.version:
            continue
        if state not in TERMINAL_STATES or state == AllocState.COMPLETE:
            return status
        failed = failed or state == AllocState.FAILED
    return JobStatus.FAILED if failed else status


def read_view(store: Store, job: Job) -> View:
    """The job as reads show it: `job_view` with `observed_status`, and its counts with
    `queued`, the allocations that wait for a node (pending ones that have one are on their
    way to start). Command results keep `job_view` as it is, for the same reason as
    `observed_status`."""
    view = job_view(store, job)
    view["status"] = observed_status(store, job)
    view["counts"]["queued"] = len(store.pending.get(job.key, ()))
    return view


def job_view(store: Store, job: Job) -> View:
    return {"namespace": job.namespace, "name": job.name, **job.spec.to_dict(),
            "version": job.version, "status": job_status(store, job),
            "created_at": job.created_at, "updated_at": job.updated_at,
            "modify_index": job.modify_index, "deployment": job.deployment,
            "counts": job_counts(store, job)}


def alloc_view(a: Allocation) -> View:
    view = _alloc_view(a)
    if a.ports is not None:  # only then: other answers stay byte for byte as they were
        view["ports"] = a.ports
    return view


def _alloc_view(a: Allocation) -> View:
    return {"id": a.id, "namespace": a.namespace, "job": a.job, "version": a.version,
            "node": a.node, "desired": a.desired, "state": a.state, "pid": a.pid,
            "restarts": a.restarts, "exit_code": a.exit_code, "signal": a.signal,
            "message": a.message, "resources": a.resources.to_dict(),
            "created_at": a.created_at, "updated_at": a.updated_at,
            "placed_at": a.placed_at, "modify_index": a.modify_index, "health": a.health,
            "reason": a.reason, "running_since": a.running_since}


def assignments(store: Store, node_name: str) -> list[Assignment]:
    """What an agent must run (and stop) now: its non-terminal allocations with specs."""
    out = []
    for a in store.node_allocs(node_name):
        if a.terminal:
            continue
        job = store.jobs.get((a.namespace, a.job))
        out.append(Assignment(a.id, a.namespace, a.job, a.version, a.desired, a.state,
                              None if job is None else job.spec))
    return out


def sync_changes(store: Store, node_name: str, held: DeltaRequest
                 ) -> tuple[list[Assignment], DeltaAnswer]:
    """What an agent holding `held` lacks: the assignments changed after `held.since` (all
    of them when a delta cannot be given), the ids it must drop, and the job specs it has
    not got at their current modify index. Costs O(allocations on the node)."""
    since = held.since
    removed = None
    if 0 < since <= store.index and not held.full:
        removed = store.removed_since(node_name, since)
    full = removed is None
    if removed is None:
        since, removed = 0, []
    out: list[Assignment] = []
    jobs: dict[str, JobAt] = {}
    for a in store.node_allocs(node_name):
        if a.terminal:
            if not full and a.modify_index > since:
                removed.append(a.id)
            continue
        job = store.jobs.get((a.namespace, a.job))
        if full or a.modify_index > since:
            out.append(Assignment(a.id, a.namespace, a.job, a.version, a.desired, a.state,
                                  None if job is None else job.spec))
        key = job_key(a.namespace, a.job)
        at = 0 if job is None else job.modify_index
        if held.jobs.get(key) != at and key not in jobs:
            jobs[key] = JobAt(at, None if job is None else job.spec)
    return out, DeltaAnswer(since, removed, jobs)


def versions_view(job: Job) -> list[View]:
    """The job's version history, newest first."""
    return [v.to_dict() for v in reversed(job.history)]
