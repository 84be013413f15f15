"""deploy_step: one step of a rolling update, decided by the leader."""

from __future__ import annotations

from typing import Any

from hacontrol.model.errors import conflict
from hacontrol.model.states import DeploymentStatus, DesiredState

from .. import views
from ..context import Applying, Result
from ..lifecycle import new_alloc, stop_alloc
from ..validate import parse_deploy_step, parse_job_key


def step(tx: Applying, args: dict[str, Any]) -> Result:
    s = tx.store
    ns, name = parse_job_key(args)
    job = s.jobs.get((ns, name))
    dep = job.rollout if job is not None else None
    if job is None or dep is None or dep.version != args.get("version") \
            or dep.status != DeploymentStatus.RUNNING:
        raise conflict("no such running deployment", "version")
    st = parse_deploy_step(args)
    new_live = [a for a in s.job_allocs(job) if a.version == job.version
                and a.desired == DesiredState.RUN and not a.terminal]
    for _ in range(max(0, min(st.start, job.spec.count - len(new_live)))):
        new_alloc(tx, job)
    for alloc_id in st.stop:
        alloc = s.allocs.get(alloc_id)
        if alloc is not None and alloc.job == name and alloc.namespace == ns \
                and alloc.version != job.version:
            stop_alloc(tx, alloc, f"replaced by version {job.version}")
    if st.status is not None:
        dep.status = DeploymentStatus(st.status)
        if dep.status == DeploymentStatus.SUCCESSFUL:
            for v in job.history:
                if v.version == job.version:
                    v.stable = True
            job.rollout = None
        tx.event("deployment", namespace=ns, job=name, version=job.version,
                 status=st.status, message=st.message)
    return {"job": views.job_view(s, job)}
