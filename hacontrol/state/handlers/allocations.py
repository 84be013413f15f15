"""alloc_update, migrate: what nodes report about allocations, and moving them away."""

from __future__ import annotations

from typing import Any

from hacontrol.model.records import Allocation, Job
from hacontrol.model.states import AllocState, DesiredState, JobStatus, JobType

from ..context import Applying, Result
from ..lifecycle import collect_job, reconcile_touched, stop_alloc
from ..validate import AllocUpdate, parse_alloc_updates, parse_migrate


def stop_and_replace(tx: Applying, ids: list[tuple[str, str]]) -> list[str]:
    """Stop the running allocations among `ids` ((id, reason) pairs, unknown or finished
    ones skipped) and reconcile their jobs; returns the ids stopped."""
    stopped = []
    touched: dict[tuple[str, str], Job] = {}
    for alloc_id, why in ids:
        alloc = tx.store.allocs.get(alloc_id)
        if alloc is None or alloc.desired != DesiredState.RUN or alloc.terminal:
            continue
        stop_alloc(tx, alloc, why[:200])
        stopped.append(alloc_id)
        job = tx.store.jobs.get((alloc.namespace, alloc.job))
        if job is not None and job.status == JobStatus.RUNNING:
            touched[job.key] = job
    reconcile_touched(tx, touched)
    return stopped


def migrate(tx: Applying, args: dict[str, Any]) -> Result:
    ids, why = parse_migrate(args)
    moved = stop_and_replace(tx, [(i, str(why)) for i in ids])
    if moved:
        tx.event("allocs_migrated", allocations=moved, reason=why)
    return {"migrated": moved}


def update(tx: Applying, args: dict[str, Any]) -> Result:
    node, updates = parse_alloc_updates(args)
    checked: list[tuple[Allocation, AllocUpdate]] = []
    ignored: list[str] = []
    for u in updates:
        alloc = tx.store.allocs.get(u.id)
        # Reports for allocations this node no longer holds come from a node that was
        # cut off; the leader has already replaced them, so they change nothing.
        if alloc is None or alloc.node != node or alloc.terminal:
            ignored.append(u.id)
            continue
        checked.append((alloc, u))
    jobs: dict[tuple[str, str], Job] = {}
    for alloc, u in checked:
        # A restart is worth an event even when the report shows no other change (an agent
        # reports the latest state only): alert rules count restarts from the events.
        before = (alloc.state, alloc.health, alloc.restarts)
        state = u.state
        job = tx.store.jobs.get((alloc.namespace, alloc.job))
        if (state == AllocState.EXITED and u.exit_code == 0 and job is not None
                and job.spec.type == JobType.BATCH):
            state = AllocState.COMPLETE
        if state == AllocState.RUNNING and alloc.state not in (AllocState.RUNNING,
                                                               AllocState.PAUSED):
            alloc.running_since = tx.ts
        elif state not in (AllocState.RUNNING, AllocState.PAUSED):
            alloc.running_since = None
        tx.store.set_state(alloc, state)
        alloc.health = u.health
        alloc.reason = u.reason
        alloc.pid = u.pid
        alloc.restarts = u.restarts or alloc.restarts
        alloc.exit_code = u.exit_code
        alloc.signal = u.signal
        alloc.message = u.message or ""
        if u.ports is not None:
            alloc.ports = u.ports
        alloc.updated_at = tx.ts
        alloc.modify_index = tx.index
        tx.store.touch_alloc(alloc.id)
        if before != (alloc.state, alloc.health, alloc.restarts):
            tx.event("alloc_" + alloc.state, alloc=alloc.id, namespace=alloc.namespace,
                     job=alloc.job, node=node, pid=alloc.pid, exit_code=alloc.exit_code,
                     signal=alloc.signal, reason=alloc.reason, health=alloc.health,
                     restarts=alloc.restarts)
        if job is not None:
            jobs[job.key] = job
    for job in jobs.values():
        collect_job(tx, job)
    return {"updated": len(checked), "ignored": ignored}
