"""The admin API: JSON over HTTP on every replica.

Writes become commands proposed through the local replica (pysyncobj carries a follower's
command to the leader); reads are linearizable by default. Handlers only translate between
HTTP and the controller; every decision lives in the state machine or the scheduler.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hacontrol.state import commands as C
from hacontrol.state.errors import Rejection
from hacontrol.state.machine import StateMachine
from hacontrol.state.validate import check_name, parse_count, parse_job_spec, parse_quota

from . import agent_routes, ops_routes, ui
from .auth import error_middleware, token_middleware
from .errors import ApiError

if TYPE_CHECKING:
    from hacontrol.server import Controller

MAX_BODY_BYTES = 1024 * 1024


def ctl_of(request: web.Request) -> Controller:
    return request.app["ctl"]


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError("payload_too_large", f"body over {MAX_BODY_BYTES} bytes", "body")
    raw = await request.read()
    if not raw:
        raise ApiError("invalid", "a JSON object body is required", "body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("invalid", f"body is not valid JSON: {exc}", "body") from None
    if not isinstance(body, dict):
        raise ApiError("invalid", "body must be a JSON object", "body")
    return body


def checked(fn: Any, *a: Any) -> Any:
    """Run a validator; its Rejection becomes a 422 naming the field."""
    try:
        return fn(*a)
    except Rejection as rej:
        raise ApiError(rej.code, rej.message, rej.field) from None


def is_stale(request: web.Request) -> bool:
    return request.query.get("stale", "false").lower() in ("1", "true", "yes")


def idem_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= C.MAX_IDEM_LEN:
        raise ApiError("invalid", f"must be 1-{C.MAX_IDEM_LEN} characters", "Idempotency-Key")
    return key


def ok(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


# ------------------------------------------------------------------ status

async def get_status(request: web.Request) -> web.Response:
    return ok(ctl_of(request).status())


# Health answers carry no secrets; the cluster page reads every replica's from one origin.
CORS_OPEN = {"Access-Control-Allow-Origin": "*"}


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=CORS_OPEN)


async def get_ready(request: web.Request) -> web.Response:
    st = ctl_of(request).status()
    ready = (st["leader"] is not None and st["healthy"]
             and st["applied_index"] >= st["commit_index"])
    return web.json_response(
        {"ready": ready, **{k: st[k] for k in ("id", "role", "leader", "term", "applied_index",
                                                "commit_index")}},
        status=200 if ready else 503, headers=CORS_OPEN)


# -------------------------------------------------------------- namespaces

async def list_namespaces(request: web.Request) -> web.Response:
    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [m.namespace_view(n) for n in sorted(m.namespaces)]
    return ok({"namespaces": await ctl_of(request).read(view, is_stale(request))})


async def get_namespace(request: web.Request) -> web.Response:
    ns = checked(check_name, request.match_info["ns"], "namespace")

    def view(m: StateMachine) -> dict[str, Any] | None:
        return m.namespace_view(ns) if ns in m.namespaces else None
    out = await ctl_of(request).read(view, is_stale(request))
    if out is None:
        raise ApiError("not_found", f"namespace {ns!r} not found", "namespace")
    return ok({"namespace": out, **out})


async def put_namespace(request: web.Request) -> web.Response:
    ns = checked(check_name, request.match_info["ns"], "namespace")
    body = await json_body(request)
    for k in body:
        if k != "quota":
            raise ApiError("invalid", "unknown field", k)
    quota = checked(parse_quota, body.get("quota"))
    res = await ctl_of(request).write(C.NS_PUT, {"name": ns, "quota": quota.to_dict()},
                                      idem_key(request))
    return ok({"namespace": res["namespace"], **res["namespace"], "index": res["index"]})


# -------------------------------------------------------------------- jobs

def _job_path(request: web.Request) -> tuple[str, str]:
    return (checked(check_name, request.match_info["ns"], "namespace"),
            checked(check_name, request.match_info["name"], "name"))


async def put_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    body = await json_body(request)
    spec = checked(parse_job_spec, body)  # 422 before anything reaches the log
    args = {"namespace": ns, "name": name, "spec": spec.to_dict()}
    res = await ctl_of(request).write(C.JOB_PUT, args, idem_key(request))
    return ok({"job": res["job"], "index": res["index"], "changed": res.get("changed", True)})


async def list_jobs(request: web.Request) -> web.Response:
    ns = request.query.get("namespace")
    if ns is not None:
        checked(check_name, ns, "namespace")

    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [m.job_view(j) for (jns, _), j in sorted(m.jobs.items())
                if ns is None or jns == ns]
    jobs = await ctl_of(request).read(view, is_stale(request))
    return ok({"jobs": jobs})


async def get_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    ctl = ctl_of(request)

    def view(m: StateMachine) -> dict[str, Any] | None:
        job = m.jobs.get((ns, name))
        if job is None:
            return None
        v = m.job_view(job)
        v["allocations"] = [m.alloc_view(a) for a in m.job_allocs(job)]
        for a in v["allocations"]:
            if a["id"] in ctl.unplaced and a["state"] == "pending" and a["node"] is None:
                a["pending_reason"] = ctl.unplaced[a["id"]]
        return v
    out = await ctl.read(view, is_stale(request))
    if out is None:
        raise ApiError("not_found", f"job {ns}/{name} not found", "name")
    return ok({"job": out})


async def scale_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    body = await json_body(request)
    for k in body:
        if k != "count":
            raise ApiError("invalid", "unknown field", k)
    if "count" not in body:
        raise ApiError("invalid", "required", "count")
    count = checked(parse_count, body["count"])
    res = await ctl_of(request).write(C.JOB_SCALE, {"namespace": ns, "name": name,
                                                    "count": count}, idem_key(request))
    return ok({"job": res["job"], "index": res["index"], "changed": res.get("changed", True)})


async def delete_job(request: web.Request) -> web.Response:
    ns, name = _job_path(request)
    res = await ctl_of(request).write(C.JOB_DELETE, {"namespace": ns, "name": name},
                                      idem_key(request))
    return ok({"job": res["job"], "index": res["index"]})


# ------------------------------------------------------------- allocations

async def list_allocs(request: web.Request) -> web.Response:
    q = request.query
    ns, job, node = q.get("namespace"), q.get("job"), q.get("node")
    ctl = ctl_of(request)

    def view(m: StateMachine) -> list[dict[str, Any]]:
        out = []
        for a in m.allocs.values():
            if ((ns is None or a.namespace == ns) and (job is None or a.job == job)
                    and (node is None or a.node == node)):
                v = m.alloc_view(a)
                v["metrics"] = ctl.alloc_metrics.get(a.id)
                if a.id in ctl.unplaced and a.state == "pending" and a.node is None:
                    v["pending_reason"] = ctl.unplaced[a.id]
                out.append(v)
        return out
    return ok({"allocations": await ctl.read(view, is_stale(request))})


async def get_alloc(request: web.Request) -> web.Response:
    alloc_id = request.match_info["id"]

    def view(m: StateMachine) -> dict[str, Any] | None:
        a = m.allocs.get(alloc_id)
        return m.alloc_view(a) if a is not None else None
    ctl = ctl_of(request)
    out = await ctl.read(view, is_stale(request))
    if out is None:
        raise ApiError("not_found", f"allocation {alloc_id!r} not found", "id")
    out["metrics"] = ctl.alloc_metrics.get(alloc_id)
    if out["state"] == "pending" and out["node"] is None and alloc_id in ctl.unplaced:
        out["pending_reason"] = ctl.unplaced[alloc_id]
    return ok({"allocation": out})


# ------------------------------------------------------------------- nodes

async def list_nodes(request: web.Request) -> web.Response:
    ctl = ctl_of(request)

    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [m.node_view(n) for _, n in sorted(m.nodes.items())]
    nodes = await ctl.read(view, is_stale(request))
    for n in nodes:
        n["last_heartbeat"] = ctl.last_heartbeat(n["name"])
    return ok({"nodes": nodes})


async def get_node(request: web.Request) -> web.Response:
    ctl = ctl_of(request)
    name = request.match_info["name"]

    def view(m: StateMachine) -> dict[str, Any] | None:
        n = m.nodes.get(name)
        return m.node_view(n) if n is not None else None
    out = await ctl.read(view, is_stale(request))
    if out is None:
        raise ApiError("not_found", f"node {name!r} not found", "name")
    out["last_heartbeat"] = ctl.last_heartbeat(name)
    out["agent"] = ctl.node_info.get(name)
    return ok({"node": out})


def build_app(ctl: Controller, token: str) -> web.Application:
    app = web.Application(middlewares=[error_middleware, token_middleware(token)],
                          client_max_size=MAX_BODY_BYTES)
    app["ctl"] = ctl
    app["token"] = token
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
    agent_routes.register(app)
    ops_routes.register(app)
    ui.register(app)
    return app
