"""Every replica's status in one answer: `GET /v1/status/members`.

A browser may ask only the origin that served its page (no route sends CORS headers), so
the replica it asks gathers the others' `GET /v1/status` for it, each with a short
timeout: a replica that does not answer in time is shown unreachable, not waited for.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from hacontrol.tls.roles import Role

from .openapi import Operation, documented
from .request import AGENT_SESSION, AGENT_TLS, cluster_of, ok

PEER_TIMEOUT_S = 1.5
FIELDS = ("role", "leader", "term", "commit_index", "applied_index", "healthy",
          "storage_error")

MEMBER = {"type": "object", "required": ["id", "api", "reachable"], "properties": {
    "id": {"type": "string"}, "api": {"type": "string"}, "reachable": {"type": "boolean"},
    "error": {"type": ["string", "null"]}, "role": {"type": "string"},
    "leader": {"type": ["string", "null"]}, "term": {"type": "integer"},
    "commit_index": {"type": "integer"}, "applied_index": {"type": "integer"},
    "healthy": {"type": "boolean"}, "storage_error": {"type": ["string", "null"]},
    "lag": {"type": ["integer", "null"],
            "description": "entries this replica has yet to apply of the leader's commits"}}}
MEMBERS = {"type": "object", "required": ["leader", "members"], "properties": {
    "leader": {"type": ["string", "null"]}, "asked": {"type": "string"},
    "members": {"type": "array", "items": MEMBER}}}


def with_lag(members: list[dict[str, Any]], leader: str | None) -> list[dict[str, Any]]:
    """Each member's lag behind the leader's commit index (or, without a reachable leader,
    behind the furthest replica heard from); None for a member not heard from."""
    heard = [m for m in members if m["reachable"]]
    lead = next((m for m in heard if m["id"] == leader), None)
    ref = lead["commit_index"] if lead else max((m["applied_index"] for m in heard),
                                                default=None)
    return [{**m, "lag": max(0, ref - m["applied_index"])
             if m["reachable"] and ref is not None else None} for m in members]


async def _ask(request: web.Request, member: dict[str, Any]) -> dict[str, Any]:
    api: str = member["api"]
    tls = request.app[AGENT_TLS]
    # With TLS on, a peer is reached only over https and only when its certificate says it
    # is a controller replica.
    if tls is not None and not api.startswith("https://"):
        return {**member, "reachable": False, "error": "plain-HTTP address with TLS on"}
    name = Role.SERVER.hostname if tls is not None else None
    try:
        async with request.app[AGENT_SESSION].get(
                f"{api}/v1/status", server_hostname=name,
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)) as resp:
            body = await resp.json(content_type=None)
        return {**member, "reachable": True, "error": None,
                **{k: body.get(k) for k in FIELDS}}
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
        return {**member, "reachable": False, "error": str(exc) or type(exc).__name__}


@documented(Operation("Every replica's role, term, indexes, lag and health, as the replica "
                      "asked gathers them", "status", ok=MEMBERS, errors=(401, 403)))
async def members_status(request: web.Request) -> web.Response:
    return ok(await gather(request))


async def gather(request: web.Request) -> dict[str, Any]:
    """`{"leader", "asked", "members"}`: every replica's status, with its lag, as this
    replica gathers them (also what the health score judges the replicas by)."""
    st = cluster_of(request).status()
    own = {"id": st["id"], "api": next((m["api"] for m in st["members"]
                                        if m["id"] == st["id"]), ""),
           "reachable": True, "error": None, **{k: st.get(k) for k in FIELDS}}
    peers = [dict(m) for m in st["members"] if m["id"] != st["id"]]
    answers = await asyncio.gather(*(_ask(request, {"id": m["id"], "api": m["api"]})
                                     for m in peers))
    members = sorted([own, *answers], key=lambda m: str(m["id"]))
    leader = st["leader"]
    return {"leader": leader, "asked": st["id"], "members": with_lag(members, leader)}


def register(app: web.Application) -> None:
    app.router.add_get("/v1/status/members", members_status)
