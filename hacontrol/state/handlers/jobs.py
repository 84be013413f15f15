"""job_put, job_revert, job_scale, job_delete: a job's spec, versions and count."""

from __future__ import annotations

from typing import Any

from hacontrol.model.errors import conflict, invalid, not_found
from hacontrol.model.records import Deployment, Job, JobVersion
from hacontrol.model.resources import Usage
from hacontrol.model.spec import JobSpec
from hacontrol.model.states import AllocState, DeploymentStatus, DesiredState, JobStatus, JobType

from .. import views
from ..context import Applying, Result
from ..lifecycle import collect_job, reconcile, stop_alloc
from ..validate import parse_check_index, parse_count, parse_job_key, parse_job_spec

VERSIONS_KEPT = 10


def put(tx: Applying, args: dict[str, Any]) -> Result:
    ns, name = parse_job_key(args)
    if ns not in tx.store.namespaces:
        raise not_found(f"namespace {ns!r}", "namespace")
    spec = parse_job_spec(args.get("spec"))
    check = args.get("check_index")
    if check is not None:
        check_modify_index(tx, ns, name, parse_check_index(check))
    return register(tx, ns, name, spec, reverted_from=None)


def check_modify_index(tx: Applying, ns: str, name: str, want: int) -> None:
    """Refuse unless the job's modify index is still `want` (0: the job must not exist),
    as Nomad's `job run -check-index`: checked here, when the command is applied, so no
    change can slip in between the check and the write."""
    job = tx.store.jobs.get((ns, name))
    have = job.modify_index if job is not None else 0
    if have == want:
        return
    if want == 0:
        raise conflict(f"job {ns}/{name} already exists (modify index {have}); "
                       f"check index 0 requires a new job", "check_index")
    if job is None:
        raise conflict(f"job {ns}/{name} does not exist any more (check index {want})",
                       "check_index")
    raise conflict(f"job {ns}/{name} changed since the plan: its modify index is {have}, "
                   f"not {want}", "check_index")


def revert(tx: Applying, args: dict[str, Any]) -> Result:
    ns, name = parse_job_key(args)
    job = tx.store.jobs.get((ns, name))
    if job is None:
        raise not_found(f"job {ns}/{name}", "name")
    version = args.get("version")
    target = next((v for v in job.history if v.version == version), None)
    if target is None:
        raise not_found(f"version {version!r} of job {ns}/{name}", "version")
    return register(tx, ns, name, target.spec.with_count(job.spec.count),
                    reverted_from=job.version)


def register(tx: Applying, ns: str, name: str, spec: JobSpec,
             reverted_from: int | None) -> Result:
    s = tx.store
    job = s.jobs.get((ns, name))
    same = job is not None and job.spec == spec
    if job is not None and job.status == JobStatus.RUNNING and same:
        return {"job": views.job_view(s, job), "changed": False}
    check_cycle(tx, ns, name, spec.depends_on or ())
    old_usage = job.quota_usage() if job is not None else Usage()
    tx.check_quota(ns, s.namespace_usage(ns) - old_usage + spec.usage())
    new_version = True
    if job is None:
        job = Job(ns, name, spec, 1, JobStatus.RUNNING, tx.ts, tx.ts, tx.index)
        s.jobs[job.key] = job
        s.account(ns, old_usage, job.quota_usage())
    else:
        was = job.quota_usage()
        # Equal specs are the same template; only a count change needs the (slower,
        # copying) template comparison.
        new_version = job.status == JobStatus.STOPPING or not (
            same or (job.spec.count != spec.count and job.spec.same_template(spec)))
        rolling = (new_version and job.status == JobStatus.RUNNING
                   and spec.type == JobType.SERVICE
                   and any(a.desired == DesiredState.RUN
                           and a.state in (AllocState.RUNNING, AllocState.PAUSED)
                           for a in s.job_allocs(job)))
        job.spec = spec
        job.status = JobStatus.RUNNING
        job.updated_at = tx.ts
        job.modify_index = tx.index
        if new_version:
            job.version += 1
            job.rollout = None
            if rolling:
                job.rollout = Deployment(
                    job.version, DeploymentStatus.RUNNING, tx.ts,
                    tx.ts + spec.update_policy.deadline_s, job.version - 1, reverted_from)
        s.account(ns, was, job.quota_usage())
    if new_version:
        job.history.append(JobVersion(job.version, spec, tx.ts, job.rollout is None))
        del job.history[:-VERSIONS_KEPT]
    s.touch_job(job.key)  # its services may have changed
    tx.event("job_registered" if job.version == 1 and new_version else "job_updated",
             namespace=ns, job=name, version=job.version, count=spec.count,
             rolling=job.rollout is not None, reverted_from=reverted_from)
    reconcile(tx, job)
    return {"job": views.job_view(s, job), "changed": True}


def check_cycle(tx: Applying, ns: str, name: str, deps: tuple[str, ...]) -> None:
    # Depth-first walk from the new job's dependencies, looking each one up by key:
    # reaching the new job again is a cycle. (Building the namespace's whole graph first
    # made every job_put cost O(jobs): 10,000 jobs took 128 s to create, most of it here.)
    stack, seen = list(deps), set()
    while stack:
        cur = stack.pop()
        if cur == name:
            raise invalid("depends_on", f"dependency cycle through job {name!r}")
        if cur in seen:
            continue
        seen.add(cur)
        dep = tx.store.jobs.get((ns, cur))
        if dep is not None:
            stack.extend(dep.spec.depends_on or ())


def scale(tx: Applying, args: dict[str, Any]) -> Result:
    s = tx.store
    ns, name = parse_job_key(args)
    job = s.jobs.get((ns, name))
    if job is None or job.status != JobStatus.RUNNING:
        raise not_found(f"job {ns}/{name}", "name")
    count = parse_count(args.get("count"))
    if count == job.spec.count:
        return {"job": views.job_view(s, job), "changed": False}
    new_spec = job.spec.with_count(count)
    tx.check_quota(ns, s.namespace_usage(ns) - job.quota_usage() + new_spec.usage())
    s.account(ns, job.quota_usage(), new_spec.usage())
    job.spec = new_spec
    job.updated_at = tx.ts
    job.modify_index = tx.index
    tx.event("job_scaled", namespace=ns, job=name, count=count,
             source=args.get("source", "api"), reason=args.get("reason"))
    reconcile(tx, job)
    return {"job": views.job_view(s, job), "changed": True}


def delete(tx: Applying, args: dict[str, Any]) -> Result:
    s = tx.store
    ns, name = parse_job_key(args)
    job = s.jobs.get((ns, name))
    if job is None:
        raise not_found(f"job {ns}/{name}", "name")
    s.account(ns, job.quota_usage(), Usage())
    job.status = JobStatus.STOPPING
    job.updated_at = tx.ts
    job.modify_index = tx.index
    job.rollout = None
    s.touch_job(job.key)  # a stopping job declares no service
    for alloc in s.job_allocs(job):
        stop_alloc(tx, alloc, "job stopped")
    tx.event("job_stopped", namespace=ns, job=name)
    view = views.job_view(s, job)
    collect_job(tx, job)
    return {"job": view}
