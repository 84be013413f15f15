"""The core resources: status and health, namespaces, jobs, allocations and nodes.

Handlers only translate between HTTP and the replica; every decision lives in the state
machine or the scheduler. Failures are raised, and answered by `errors.error_middleware`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hacontrol.model.checks import check_name
from hacontrol.model.errors import invalid, not_found
from hacontrol.model.spec_parse import parse_count, parse_job_spec
from hacontrol.scheduler.leader_state import LeaderState
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.state.validate import parse_quota

from .request import (
    cluster_of,
    idem_key,
    is_stale,
    json_body,
    leader_of,
    ok,
    only_fields,
    store_of,
)

# ------------------------------------------------------------------ status

async def get_status(request: web.Request) -> web.Response:
    return ok(cluster_of(request).status())


# Health answers carry no secrets; the cluster page reads every replica's from one origin.
CORS_OPEN = {"Access-Control-Allow-Origin": "*"}


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=CORS_OPEN)


async def get_ready(request: web.Request) -> web.Response:
    st = cluster_of(request).status()
    ready = (st["leader"] is not None and st["healthy"]
             and st["applied_index"] >= st["commit_index"])
    return web.json_response(
        {"ready": ready, "id": st["id"], "role": st["role"], "leader": st["leader"],
         "term": st["term"], "applied_index": st["applied_index"],
         "commit_index": st["commit_index"]},
        status=200 if ready else 503, headers=CORS_OPEN)


# -------------------------------------------------------------- namespaces

async def list_namespaces(request: web.Request) -> web.Response:
    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [m.namespace_view(n) for n in sorted(m.namespaces)]
    return ok({"namespaces": await store_of(request).read(view, is_stale(request))})


async def get_namespace(request: web.Request) -> web.Response:
    ns = check_name(request.match_info["ns"], "namespace")

    def view(m: StateMachine) -> dict[str, Any] | None:
        return m.namespace_view(ns) if ns in m.namespaces else None
    out = await store_of(request).read(view, is_stale(request))
    if out is None:
        raise not_found(f"namespace {ns!r}", "namespace")
    return ok({"namespace": out, **out})


async def put_namespace(request: web.Request) -> web.Response:
    ns = check_name(request.match_info["ns"], "namespace")
    body = await json_body(request)
    only_fields(body, ("quota",))
    quota = parse_quota(body.get("quota"))
    res = await store_of(request).write(C.NS_PUT, {"name": ns, "quota": quota.to_dict()},
                                        idem_key(request))
    return ok({"namespace": res["namespace"], **res["namespace"], "index": res["index"]})


# -------------------------------------------------------------------- jobs

def _job_path(request: web.Request) -> tuple[str, str]:
    return (check_name(request.match_info["ns"], "namespace"),
            check_name(request.match_info["name"], "name"))


async def put_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    body = await json_body(request)
    spec = parse_job_spec(body)  # 422 before anything reaches the log
    args = {"namespace": ns, "name": name, "spec": spec.to_dict()}
    res = await store_of(request).write(C.JOB_PUT, args, idem_key(request))
    return ok({"job": res["job"], "index": res["index"], "changed": res.get("changed", True)})


async def list_jobs(request: web.Request) -> web.Response:
    ns = request.query.get("namespace")
    if ns is not None:
        check_name(ns, "namespace")

    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [m.job_view(j) for (jns, _), j in sorted(m.jobs.items())
                if ns is None or jns == ns]
    jobs = await store_of(request).read(view, is_stale(request))
    return ok({"jobs": jobs})


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


async def delete_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    res = await store_of(request).write(C.JOB_DELETE, {"namespace": ns, "name": name},
                                        idem_key(request))
    return ok({"job": res["job"], "index": res["index"]})


# ------------------------------------------------------------- allocations

def _metrics_of(leader: LeaderState | None, alloc_id: str) -> dict[str, Any] | None:
    return leader.alloc_metrics.get(alloc_id) if leader is not None else None


async def list_allocs(request: web.Request) -> web.Response:
    q = request.query
    ns, job, node = q.get("namespace"), q.get("job"), q.get("node")
    leader = leader_of(request)

    def view(m: StateMachine) -> list[dict[str, Any]]:
        out = []
        for a in m.allocs.values():
            if ((ns is None or a.namespace == ns) and (job is None or a.job == job)
                    and (node is None or a.node == node)):
                v = m.alloc_view(a)
                v["metrics"] = _metrics_of(leader, a.id)
                reason = leader.pending_reason(a.id, a.state, a.node) if leader else None
                if reason is not None:
                    v["pending_reason"] = reason
                out.append(v)
        return out
    return ok({"allocations": await store_of(request).read(view, is_stale(request))})


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


# ------------------------------------------------------------------- nodes

async def list_nodes(request: web.Request) -> web.Response:
    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [m.node_view(n) for _, n in sorted(m.nodes.items())]
    nodes = await store_of(request).read(view, is_stale(request))
    leader = leader_of(request)
    for n in nodes:
        n["last_heartbeat"] = leader.last_heartbeat(n["name"]) if leader else None
    return ok({"nodes": nodes})


async def get_node(request: web.Request) -> web.Response:
    name = request.match_info["name"]

    def view(m: StateMachine) -> dict[str, Any] | None:
        n = m.nodes.get(name)
        return m.node_view(n) if n is not None else None
    out = await store_of(request).read(view, is_stale(request))
    if out is None:
        raise not_found(f"node {name!r}", "name")
    leader = leader_of(request)
    out["last_heartbeat"] = leader.last_heartbeat(name) if leader else None
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
    r.add_post("/v1/jobs/{ns}/{name}/scale", scale_job)
    r.add_get("/v1/allocations", list_allocs)
    r.add_get("/v1/allocations/{id}", get_alloc)
    r.add_get("/v1/nodes", list_nodes)
    r.add_get("/v1/nodes/{name}", get_node)
