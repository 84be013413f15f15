"""The core resources: status and health, namespaces, jobs, allocations and nodes.

Handlers only translate between HTTP and the replica; every decision lives in the state
machine or the scheduler. Failures are raised, and answered by `errors.error_middleware`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from hacontrol.acl.authorize import Action
from hacontrol.model.checks import check_name
from hacontrol.model.errors import invalid, not_found
from hacontrol.model.records import Allocation
from hacontrol.model.spec_parse import parse_count, parse_job_spec
from hacontrol.scheduler import dryrun
from hacontrol.scheduler.leader_state import LeaderState
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.state.validate import parse_check_index, parse_quota

from .auth import visible
from .forward import from_leader
from .openapi import READ_ERRORS, STALE, WRITE_ERRORS, Operation, Param, documented
from .request import (
    ACL_CONFIGURED,
    cluster_of,
    idem_key,
    is_stale,
    json_body,
    leader_of,
    ok,
    only_fields,
    store_of,
)
from .schemas import (
    ALLOCATION,
    JOB,
    METRIC_HISTORY,
    NAME,
    NAMESPACE,
    NODE,
    PLAN,
    QUOTA_BODY,
    READY,
    STATUS,
    listing,
    spec_schema,
    written,
)
from .view_cache import cached

# ------------------------------------------------------------------ status

# Open, like the probes and Nomad's /v1/status/*: it tells who the members and the leader
# are (clients and agents find the cluster with it) and why a replica serves nothing (a
# damaged journal leaves it without the ACL tables a token would be checked against).
@documented(Operation("This replica's Raft status and the cluster's members", "status",
                      ok=STATUS, public=True, errors=()))
async def get_status(request: web.Request) -> web.Response:
    return ok(cluster_of(request).status())


# No route sends CORS headers: no other origin's page may read this API with a user's
# browser, not even the health answers (which would tell a page what runs on the network).


@documented(Operation("Liveness: the process answers", "status", public=True, errors=(),
                      ok={"type": "object", "properties": {"status": {"const": "ok"}}}))
async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@documented(Operation("Readiness: a leader is known and this replica has applied what is "
                      "committed", "status", ok=READY, public=True, errors=(),
                      responses={503: READY}))
async def get_ready(request: web.Request) -> web.Response:
    st = cluster_of(request).status()
    # A replica given a token to bootstrap with is ready once that token works.
    acl_ready = (not request.app[ACL_CONFIGURED]
                 or store_of(request).read_local(lambda m: m.acl_bootstrapped))
    ready = (st["leader"] is not None and st["healthy"]
             and st["applied_index"] >= st["commit_index"] and acl_ready
             and st.get("member", True))
    return web.json_response(
        {"ready": ready, "id": st["id"], "role": st["role"], "leader": st["leader"],
         "term": st["term"], "applied_index": st["applied_index"],
         "commit_index": st["commit_index"]},
        status=200 if ready else 503)


# -------------------------------------------------------------- namespaces

@documented(Operation("List namespaces", "namespaces", ok=listing("namespaces", NAMESPACE),
                      params=(STALE,), errors=(401, 403, 503)))
async def list_namespaces(request: web.Request) -> web.Response:
    shown = visible(request, Action.LIST_JOBS)

    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [m.namespace_view(n) for n in sorted(m.namespaces) if shown(m, n)]
    return ok({"namespaces": await store_of(request).read(view, is_stale(request))})


@documented(Operation("Read a namespace, its quota and usage", "namespaces", params=(STALE,),
                      ok={**NAMESPACE, "properties": {**NAMESPACE["properties"],
                                                       "namespace": NAMESPACE}}))
async def get_namespace(request: web.Request) -> web.Response:
    ns = check_name(request.match_info["ns"], "namespace")

    def view(m: StateMachine) -> dict[str, Any] | None:
        return m.namespace_view(ns) if ns in m.namespaces else None
    out = await store_of(request).read(view, is_stale(request))
    if out is None:
        raise not_found(f"namespace {ns!r}", "namespace")
    return ok({"namespace": out, **out})


@documented(Operation("Create a namespace or set its quota", "namespaces",
                      ok=written("namespace", NAMESPACE), body=QUOTA_BODY, write=True,
                      errors=WRITE_ERRORS))
async def put_namespace(request: web.Request) -> web.Response:
    ns = check_name(request.match_info["ns"], "namespace")
    body = await json_body(request)
    only_fields(body, ("quota",))
    quota = parse_quota(body.get("quota"))
    res = await store_of(request).write(C.NS_PUT, {"name": ns, "quota": quota.to_dict()},
                                        idem_key(request))
    return ok({"namespace": res["namespace"], **res["namespace"], "index": res["index"]})


# -------------------------------------------------------------------- jobs

CHECK_INDEX = Param("check_index", {"type": "integer", "minimum": 0},
                    "refuse (409, field check_index) unless the job's modify index is still "
                    "this one, as returned by its plan; 0: the job must not exist yet")


def _job_path(request: web.Request) -> tuple[str, str]:
    return (check_name(request.match_info["ns"], "namespace"),
            check_name(request.match_info["name"], "name"))


@documented(Operation("Submit a job (a new version when its spec changed)", "jobs",
                      ok=written("job", JOB), body=spec_schema(), write=True,
                      errors=WRITE_ERRORS, params=(CHECK_INDEX,)))
async def put_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    body = await json_body(request)
    spec = parse_job_spec(body)  # 422 before anything reaches the log
    args: dict[str, Any] = {"namespace": ns, "name": name, "spec": spec.to_dict()}
    raw_check = request.query.get("check_index")
    if raw_check is not None:
        # Checked again where it counts, when the command applies (a 409 there).
        args["check_index"] = parse_check_index(_query_int(raw_check, "check_index"))
    res = await store_of(request).write(C.JOB_PUT, args, idem_key(request))
    return ok({"job": res["job"], "index": res["index"], "changed": res.get("changed", True)})


def _query_int(raw: str, field: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise invalid(field, "must be an integer") from None


@documented(Operation("Plan a job: what submitting the spec would change, without "
                      "changing anything (a scheduler dry run)", "jobs", ok=PLAN,
                      body=spec_schema(), errors=(*READ_ERRORS, 400, 413)))
async def plan_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    spec = parse_job_spec(await json_body(request))
    now = time.time()
    found = await store_of(request).read(lambda m: dryrun.survey(m, ns, name, spec, now))
    return ok(dryrun.finish(found))  # placement is planned outside the apply lock


def _job_rows(m: StateMachine) -> list[tuple[str, dict[str, Any]]]:
    return [(jns, m.job_view(j)) for (jns, _), j in sorted(m.jobs.items())]


@documented(Operation("List jobs", "jobs", ok=listing("jobs", JOB), params=(
    STALE, Param("namespace", NAME, "only this namespace's jobs"))))
async def list_jobs(request: web.Request) -> web.Response:
    ns = request.query.get("namespace")
    if ns is not None:
        check_name(ns, "namespace")

    shown = visible(request, Action.LIST_JOBS)

    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [v for jns, v in cached("jobs", m, _job_rows)
                if (ns is None or jns == ns) and shown(m, jns)]
    jobs = await store_of(request).read(view, is_stale(request))
    return ok({"jobs": jobs})


@documented(Operation("Read a job with its allocations", "jobs", params=(STALE,),
                      ok={"type": "object", "required": ["job"], "properties": {"job": JOB}}))
async def get_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    leader = leader_of(request)

    def view(m: StateMachine) -> dict[str, Any] | None:
        job = m.jobs.get((ns, name))
        if job is None:
            return None
        v = m.job_view(job)
        v["allocations"] = [m.alloc_view(a) for a in m.job_allocs(job)]
        for a in v["allocations"]:
            reason = leader.pending_reason(a["id"], a["state"], a["node"]) if leader else None
            if reason is not None:
                a["pending_reason"] = reason
        return v
    out = await store_of(request).read(view, is_stale(request))
    if out is None:
        raise not_found(f"job {ns}/{name}", "name")
    return ok({"job": out})


@documented(Operation("Set a job's count", "jobs", ok=written("job", JOB), write=True,
                      errors=WRITE_ERRORS, body={
                          "type": "object", "required": ["count"],
                          "additionalProperties": False,
                          "properties": {"count": JOB["properties"]["count"]}}))
async def scale_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    body = await json_body(request)
    only_fields(body, ("count",))
    if "count" not in body:
        raise invalid("count", "required")
    count = parse_count(body["count"])
    res = await store_of(request).write(C.JOB_SCALE, {"namespace": ns, "name": name,
                                                      "count": count}, idem_key(request))
    return ok({"job": res["job"], "index": res["index"], "changed": res.get("changed", True)})


@documented(Operation("Stop a job (removed once none of its processes run)", "jobs",
                      ok=written("job", JOB), write=True, errors=WRITE_ERRORS))
async def delete_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    res = await store_of(request).write(C.JOB_DELETE, {"namespace": ns, "name": name},
                                        idem_key(request))
    return ok({"job": res["job"], "index": res["index"]})


# ------------------------------------------------------------- allocations

def _metrics_of(leader: LeaderState | None, alloc_id: str) -> dict[str, Any] | None:
    return leader.alloc_metrics.get(alloc_id) if leader is not None else None


@documented(Operation("List allocations", "allocations",
                      ok=listing("allocations", ALLOCATION), errors=(401, 403, 503),
                      params=(STALE, Param("namespace", {"type": "string"}),
                              Param("job", {"type": "string"}),
                              Param("node", {"type": "string"}))))
async def list_allocs(request: web.Request) -> web.Response:
    q = request.query
    ns, job, node = q.get("namespace"), q.get("job"), q.get("node")
    leader = leader_of(request)
    shown = visible(request, Action.READ_JOB)

    def view(m: StateMachine) -> list[dict[str, Any]]:
        out = []
        for a in _job_allocs(m, ns, job) if job is not None else m.allocs.values():
            if ((ns is None or a.namespace == ns) and (job is None or a.job == job)
                    and (node is None or a.node == node) and shown(m, a.namespace)):
                v = m.alloc_view(a)
                v["metrics"] = _metrics_of(leader, a.id)
                reason = leader.pending_reason(a.id, a.state, a.node) if leader else None
                if reason is not None:
                    v["pending_reason"] = reason
                out.append(v)
        return out
    return ok({"allocations": await store_of(request).read(view, is_stale(request))})


def _job_allocs(m: StateMachine, ns: str | None, job: str) -> Iterable[Allocation]:
    """The allocations of `job` (in namespace `ns`, or in any), in the order of `m.allocs`:
    through the job index, not a walk over every allocation under the apply lock (one
    job's listing among 100,000 allocations took 9 % of a busy leader's CPU)."""
    by_job = m.store.by_job
    keys = [(ns, job)] if ns is not None else [k for k in by_job if k[1] == job]
    if len(keys) > 1:  # one name in several namespaces: their indexes interleave
        return m.allocs.values()
    return [m.allocs[i] for i in by_job.get(keys[0], {})] if keys else []


@documented(Operation("Read an allocation", "allocations", params=(STALE,), ok={
    "type": "object", "required": ["allocation"], "properties": {"allocation": ALLOCATION}}))
async def get_alloc(request: web.Request) -> web.Response:
    alloc_id = request.match_info["id"]

    def view(m: StateMachine) -> dict[str, Any] | None:
        a = m.allocs.get(alloc_id)
        return m.alloc_view(a) if a is not None else None
    out = await store_of(request).read(view, is_stale(request))
    if out is None:
        raise not_found(f"allocation {alloc_id!r}", "id")
    leader = leader_of(request)
    out["metrics"] = _metrics_of(leader, alloc_id)
    reason = leader.pending_reason(alloc_id, out["state"], out["node"]) if leader else None
    if reason is not None:
        out["pending_reason"] = reason
    return ok({"allocation": out})


def _since(request: web.Request) -> float | None:
    raw = request.query.get("since")
    if raw is None or raw == "":
        return None
    try:
        since = float(raw)
    except ValueError:
        raise invalid("since", "must be a time in seconds since the epoch") from None
    if since != since or since in (float("inf"), float("-inf")):
        raise invalid("since", "must be a finite number")
    return since


@documented(Operation(
    "An allocation's CPU and memory over the last minutes, as its agent reported them",
    "allocations", ok=METRIC_HISTORY,
    params=(STALE, Param("since", {"type": "number"},
                         "only the points after this time (epoch seconds)")),
    description="Points arrive when the values change: each holds until the next, the last "
                "until `now`. Only the leader keeps them, in memory (lost when leadership "
                "moves); another replica asks the leader on the caller's behalf (`via` names it) and, when the leader cannot be reached, answers `kept: false` and the leader's API."))
async def get_alloc_metrics(request: web.Request) -> web.Response:
    alloc_id = request.match_info["id"]
    since = _since(request)
    known = await store_of(request).read(lambda m: alloc_id in m.allocs, is_stale(request))
    if not known:
        raise not_found(f"allocation {alloc_id!r}", "id")
    leader = leader_of(request)
    history = leader.alloc_history if leader is not None else None
    out: dict[str, Any] = {
        "allocation": alloc_id, "kept": history is not None, "now": time.time(),
        "window_s": history.window_s if history is not None else 0.0,
        "points": history.points(alloc_id, since) if history is not None else []}
    if history is None:
        leader_api = cluster_of(request).status()["leader_api"]
        forwarded = await from_leader(request, leader_api)
        if forwarded is not None and forwarded.get("kept"):
            return ok({**forwarded, "via": cluster_of(request).id})
        out["leader_api"] = leader_api
    return ok(out)


# ------------------------------------------------------------------- nodes

def _measured(leader: LeaderState | None, node: str, alloc_ids: list[str]
              ) -> dict[str, Any] | None:
    """What a node's allocations use, as their agents last reported it (the leader's
    memory: None on other replicas), beside the resources they reserve."""
    return leader.measured(node, alloc_ids) if leader is not None else None


def _with_allocs(m: StateMachine, name: str, n: Any) -> tuple[dict[str, Any], list[str]]:
    return m.node_view(n), list(m.store.by_node.get(name, {}))


def _node_rows(m: StateMachine) -> list[tuple[dict[str, Any], list[str]]]:
    return [_with_allocs(m, name, n) for name, n in sorted(m.nodes.items())]


@documented(Operation("List nodes", "nodes", ok=listing("nodes", NODE), params=(STALE,),
                      errors=(401, 403, 503)))
async def list_nodes(request: web.Request) -> web.Response:
    def view(m: StateMachine) -> list[tuple[dict[str, Any], list[str]]]:
        return cached("nodes", m, _node_rows)
    rows = await store_of(request).read(view, is_stale(request))
    leader = leader_of(request)
    nodes = []
    for shared, alloc_ids in rows:
        n = dict(shared)  # the cached view stays as the state made it
        n["last_heartbeat"] = leader.last_heartbeat(n["name"]) if leader else None
        n["measured"] = _measured(leader, n["name"], alloc_ids)
        nodes.append(n)
    return ok({"nodes": nodes})


@documented(Operation("Read a node", "nodes", params=(STALE,),
                      path={"name": {"type": "string"}},
                      ok={"type": "object", "required": ["node"], "properties": {"node": NODE}}))
async def get_node(request: web.Request) -> web.Response:
    name = request.match_info["name"]

    def view(m: StateMachine) -> tuple[dict[str, Any], list[str]] | None:
        n = m.nodes.get(name)
        return _with_allocs(m, name, n) if n is not None else None
    row = await store_of(request).read(view, is_stale(request))
    if row is None:
        raise not_found(f"node {name!r}", "name")
    out, alloc_ids = row
    leader = leader_of(request)
    out["last_heartbeat"] = leader.last_heartbeat(name) if leader else None
    out["measured"] = _measured(leader, name, alloc_ids)
    out["agent"] = leader.node_info.get(name) if leader else None
    return ok({"node": out})


def register(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/status", get_status)
    r.add_get("/v1/health", get_health)
    r.add_get("/v1/health/ready", get_ready)
    r.add_get("/v1/namespaces", list_namespaces)
    r.add_get("/v1/namespaces/{ns}", get_namespace)
    r.add_put("/v1/namespaces/{ns}", put_namespace)
    r.add_get("/v1/jobs", list_jobs)
    r.add_get("/v1/jobs/{ns}/{name}", get_job)
    r.add_put("/v1/jobs/{ns}/{name}", put_job)
    r.add_delete("/v1/jobs/{ns}/{name}", delete_job)
    r.add_post("/v1/jobs/{ns}/{name}/plan", plan_job)
    r.add_post("/v1/jobs/{ns}/{name}/scale", scale_job)
    r.add_get("/v1/allocations", list_allocs)
    r.add_get("/v1/allocations/{id}", get_alloc)
    r.add_get("/v1/allocations/{id}/metrics", get_alloc_metrics)
    r.add_get("/v1/nodes", list_nodes)
    r.add_get("/v1/nodes/{name}", get_node)
