"""Transitions shared by several handlers: creating and stopping allocations, bringing a
job to its count, and forgetting what no longer matters."""

from __future__ import annotations

from hacontrol.model.records import Allocation, Job
from hacontrol.model.states import AllocState, DeploymentStatus, DesiredState, JobStatus

from .context import Applying

TERMINAL_ALLOCS_KEPT_PER_JOB = 20
_ACTIVE = (AllocState.RUNNING, AllocState.PAUSED, AllocState.STARTING)


def new_alloc(tx: Applying, job: Job) -> Allocation:
    s = tx.store
    s.alloc_seq += 1
    alloc = Allocation(id=f"{job.name}-{s.alloc_seq:06d}", namespace=job.namespace,
                       job=job.name, version=job.version, resources=job.spec.resources,
                       created_at=tx.ts, updated_at=tx.ts, modify_index=tx.index,
                       # Held from the start, so placement keeps two static users of a
                       # port off one node before either has reported.
                       ports=job.spec.static_ports() or None)
    s.add_alloc(alloc)
    return alloc


def stop_alloc(tx: Applying, alloc: Allocation, why: str) -> None:
    if alloc.desired == DesiredState.STOP and alloc.terminal:
        return
    alloc.desired = DesiredState.STOP
    tx.store.touch_alloc(alloc.id)  # a stopping one serves no service
    alloc.message = why
    alloc.updated_at = tx.ts
    alloc.modify_index = tx.index
    tx.store.unpend(alloc)
    if alloc.node is None and not alloc.terminal:
        # Never placed: nothing runs anywhere, so it is stopped at once.
        tx.store.set_state(alloc, AllocState.STOPPED)


def reconcile(tx: Applying, job: Job) -> None:
    """Bring the job's live allocations to `count` of its current version."""
    live: list[Allocation] = []
    old: list[Allocation] = []
    done = 0
    rolling = job.rollout is not None and job.rollout.status == DeploymentStatus.RUNNING
    for alloc in tx.store.job_allocs(job):
        if alloc.state == AllocState.COMPLETE and alloc.version == job.version:
            done += 1  # a finished batch allocation still counts towards `count`
            continue
        if alloc.desired != DesiredState.RUN or alloc.terminal:
            continue
        if alloc.version != job.version:
            if rolling and alloc.state in _ACTIVE:
                old.append(alloc)  # the rollout replaces these step by step
            else:
                stop_alloc(tx, alloc, f"replaced by version {job.version}")
        else:
            live.append(alloc)
    want = max(0, job.spec.count - done)
    if rolling and old:
        # New allocations come from deployment steps; only trim what exceeds the count.
        excess = len(live) + len(old) - want
        if excess > 0:
            for alloc in sorted(old, key=lambda a: a.id)[:excess]:
                stop_alloc(tx, alloc, "scaled down")
        if len(live) > want:
            for alloc in sorted(live, key=lambda a: a.id, reverse=True)[:len(live) - want]:
                stop_alloc(tx, alloc, "scaled down")
        trim_history(tx, job)
        return
    if len(live) > want:
        # Give up unplaced ones first, then the newest.
        live.sort(key=lambda a: (a.node is not None, a.created_at, a.id))
        for alloc in live[: len(live) - want]:
            stop_alloc(tx, alloc, "scaled down")
    for _ in range(want - len(live)):
        new_alloc(tx, job)
    trim_history(tx, job)


def collect_job(tx: Applying, job: Job) -> None:
    """Remove a stopping job once none of its processes can still be running."""
    if job.status != JobStatus.STOPPING:
        trim_history(tx, job)
        return
    allocs = tx.store.job_allocs(job)
    if all(a.terminal for a in allocs):
        for a in allocs:
            tx.store.forget_alloc(a)
        del tx.store.jobs[job.key]


def trim_history(tx: Applying, job: Job) -> None:
    """Forget the job's oldest finished allocations beyond the last few (from the index
    of its terminal ones: this runs after every report)."""
    done = tx.store.job_done(job.key)
    excess = len(done) - TERMINAL_ALLOCS_KEPT_PER_JOB
    if excess > 0:
        done.sort(key=lambda a: (a.updated_at, a.id))
        for a in done[:excess]:
            tx.store.forget_alloc(a)


def reconcile_touched(tx: Applying, jobs: dict[tuple[str, str], Job]) -> None:
    """Reconcile the running jobs among `jobs` (in the order they were touched)."""
    for job in jobs.values():
        if job.status == JobStatus.RUNNING:
            reconcile(tx, job)
