"""Operations beyond plain CRUD: node drain, job versions and revert, the event stream,
allocation controls and logs (carried to the agent that runs the allocation).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from hacontrol.controller.errors import AgentUnreachable
from hacontrol.model import protocol
from hacontrol.model.checks import check_name
from hacontrol.model.errors import Rejection, conflict, invalid, not_found
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.tls.roles import Role

from .backend import Store
from .openapi import READ_ERRORS, STALE, WRITE_ERRORS, Operation, Param, documented
from .request import (
    AGENT_SESSION,
    AGENT_TLS,
    changed_or_stopping,
    controllers_credential,
    idem_key,
    is_stale,
    json_body,
    only_fields,
    store_of,
    unless_stopping,
)
from .schemas import EVENT, NODE, VERSION, listing, written

ALLOC_ACTIONS = ("pause", "resume", "restart", "signal")
MAX_DRAIN_DEADLINE_S = 86400 * 7  # as `state.validate.parse_drain` allows


# --------------------------------------------------------------------- drain

@documented(Operation("Drain a node (or end a drain)", "nodes", ok=written("node", NODE),
                      write=True, errors=WRITE_ERRORS, path={"name": {"type": "string"}},
                      body={"type": "object", "required": ["enable"],
                            "additionalProperties": False,
                            "properties": {"enable": {"type": "boolean"},
                                           "deadline_s": {
                                               "type": "number", "minimum": 0, "default": 60,
                                               "maximum": MAX_DRAIN_DEADLINE_S}}}))
async def drain_node(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await json_body(request)
    only_fields(body, ("enable", "deadline_s"))
    if not isinstance(body.get("enable"), bool):
        raise invalid("enable", "required: true or false")
    deadline = body.get("deadline_s", 60)
    # The bounds apply checks (an integer past 64 bits could not even be encoded: a 500).
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) \
            or not 0 <= deadline <= MAX_DRAIN_DEADLINE_S:
        raise invalid("deadline_s", "must be a number of seconds, at most "
                                    f"{MAX_DRAIN_DEADLINE_S}")
    res = await store_of(request).write(C.NODE_DRAIN, {"name": name, "enable": body["enable"],
                                                       "deadline_s": deadline},
                                        idem_key(request))
    return web.json_response({"node": res["node"], "index": res["index"]})


# ------------------------------------------------------------ versions, revert

@documented(Operation("A job's recent versions, newest first", "jobs", params=(STALE,),
                      ok=listing("versions", VERSION)))
async def job_versions(request: web.Request) -> web.Response:
    ns = check_name(request.match_info["ns"], "namespace")
    name = check_name(request.match_info["name"], "name")

    def view(m: StateMachine) -> list[dict[str, Any]] | None:
        job = m.jobs.get((ns, name))
        return None if job is None else [v.to_dict() for v in reversed(job.history)]
    out = await store_of(request).read(view, is_stale(request))
    if out is None:
        raise not_found(f"job {ns}/{name}", "name")
    return web.json_response({"versions": out})


@documented(Operation("Submit an earlier version of a job again", "jobs",
                      ok=written("job", {"type": "object"}), write=True, errors=WRITE_ERRORS,
                      body={"type": "object", "required": ["version"],
                            "properties": {"version": {"type": "integer", "minimum": 1,
                                                       "maximum": 2**62}}}))
async def job_revert(request: web.Request) -> web.Response:
    ns = check_name(request.match_info["ns"], "namespace")
    name = check_name(request.match_info["name"], "name")
    body = await json_body(request)
    version = body.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 2**62:
        raise invalid("version", "required: a version number")
    res = await store_of(request).write(C.JOB_REVERT, {"namespace": ns, "name": name,
                                                       "version": version}, idem_key(request))
    return web.json_response({"job": res["job"], "index": res["index"]})


# -------------------------------------------------------------------- events

@documented(Operation(
    "The change feed: every applied change as an event", "events",
    description="With follow=true (the default) a server-sent event stream that never ends: "
                "each event's id is INDEX.SEQ, and a Last-Event-ID header resumes after it. "
                "With follow=false one JSON batch.",
    media="text/event-stream", other_media={"application/json": {
        "type": "object", "required": ["events", "index", "oldest_index"],
        "properties": {"events": {"type": "array", "items": EVENT},
                       "index": {"type": "integer"}, "oldest_index": {"type": "integer"}}}},
    params=(Param("index", {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                  "after this log index, or event id INDEX.SEQ"),
            Param("follow", {"type": "boolean", "default": True}, "stream until closed"),
            Param("type", {"type": "string"}, "comma-separated event types to keep"),
            Param("Last-Event-ID", {"type": "string"}, "resume after this event id",
                  where="header")),
    errors=(401, 403, 422)))
async def events(request: web.Request) -> web.StreamResponse:
    store = store_of(request)
    raw = request.headers.get("Last-Event-ID") or request.query.get("index", "0")
    try:
        head, _, tail = raw.partition(".")
        index, seq = int(head), (int(tail) if tail else -1)
    except ValueError:
        raise invalid("index", "must be a log index, or an event id INDEX.SEQ") from None
    follow = request.query.get("follow", "true").lower() in ("1", "true", "yes")
    kinds = set(filter(None, request.query.get("type", "").split(",")))

    def batch(after: int, after_seq: int) -> tuple[list[dict[str, Any]], int, int]:
        def read(m: StateMachine) -> tuple[list[dict[str, Any]], int, int]:
            oldest = m.events[0]["index"] if m.events else m.index + 1
            return m.events_since(after, after_seq, kinds=kinds or None), oldest, m.index
        return store.read_local(read)

    evs, oldest, _ = batch(index, seq)
    if not follow:
        return web.json_response({"events": evs, "index": evs[-1]["index"] if evs else index,
                                  "oldest_index": oldest})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    if index and index < oldest - 1:
        # Older events are gone (bounded buffer, or restored from a snapshot): say so.
        await resp.write(f"event: truncated\ndata: {json.dumps({'oldest_index': oldest})}\n\n"
                         .encode())
    last, last_seq = index, seq
    try:
        while True:
            for e in evs:  # already filtered by kind
                last, last_seq = e["index"], e["seq"]
                await resp.write(f"id: {e['id']}\nevent: {e['type']}\ndata: "
                                 f"{json.dumps(e)}\n\n".encode())
            if not evs:
                await resp.write(b": keep-alive\n\n")
            if not await changed_or_stopping(request, 10.0):
                break  # the client resumes elsewhere with Last-Event-ID
            evs, _, _ = batch(last, last_seq)
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away: the stream's normal end
    return resp


# -------------------------------------------------- allocation controls, logs

def _agent_for(store: Store, alloc_id: str) -> tuple[str, dict[str, Any]]:
    def find(m: StateMachine) -> tuple[str | None, dict[str, Any] | None]:
        a = m.allocs.get(alloc_id)
        if a is None:
            return None, None
        node = m.nodes.get(a.node) if a.node else None
        return (node.address if node else None), m.alloc_view(a)
    address, view = store.read_local(find)
    if view is None:
        raise not_found(f"allocation {alloc_id!r}", "id")
    if not address:
        raise conflict("the allocation is not placed on a reachable node", "id")
    return address, view


def _agent_server_name(request: web.Request, address: str) -> str | None:
    """How to reach an agent: with TLS on, only over https and only to a peer whose
    certificate says agent (the controllers' token never goes to anyone else)."""
    if request.app[AGENT_TLS] is None:
        return None
    if not address.startswith("https://"):
        raise AgentUnreachable("TLS is on, but the agent advertises a plain-HTTP address",
                               address)
    return Role.AGENT.hostname


@documented(Operation(
    "Pause, resume, restart or signal an allocation (carried to its agent)", "allocations",
    description="The agent's answer is passed on with its status.",
    path={"action": {"type": "string", "enum": list(ALLOC_ACTIONS)}},
    ok={"type": "object"}, errors=WRITE_ERRORS,
    body={"type": "object", "properties": {"signal": {"type": "string"}},
          "description": "only for signal: {\"signal\": \"SIGHUP\"}"}))
async def alloc_action(request: web.Request) -> web.Response:
    alloc_id, action = request.match_info["id"], request.match_info["action"]
    if action not in ALLOC_ACTIONS:
        raise Rejection("not_found", f"unknown action {action!r}", "action")
    body: dict[str, Any] = {}
    if action == "signal":
        body = await json_body(request)
        if not isinstance(body.get("signal"), str):
            raise invalid("signal", "required: a signal name such as SIGHUP")
    address, _ = _agent_for(store_of(request), alloc_id)
    status, data = await _to_agent(request, "POST", address,
                                   f"/v1/allocations/{alloc_id}/{action}", body)
    return web.json_response(data, status=status)


@documented(Operation(
    "An allocation's log (carried from its agent)", "allocations", media="text/plain",
    params=(Param("stream", {"type": "string", "enum": ["stdout", "stderr"],
                             "default": "stdout"}),
            Param("tail", {"type": "integer", "minimum": 0}, "last lines only"),
            Param("follow", {"type": "boolean"}, "keep streaming")),
    errors=(*READ_ERRORS, 409)))
async def alloc_logs(request: web.Request) -> web.StreamResponse:
    alloc_id = request.match_info["id"]
    stream = request.query.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise invalid("stream", "must be stdout or stderr")
    address, _ = _agent_for(store_of(request), alloc_id)
    token = controllers_credential(request.app)
    url = f"{address}/v1/allocations/{alloc_id}/logs"
    session = request.app[AGENT_SESSION]
    name = _agent_server_name(request, address)
    try:
        async with session.get(url, params=dict(request.query),
                               headers={"Authorization": f"Bearer {token}"},
                               server_hostname=name,
                               timeout=aiohttp.ClientTimeout(total=None, sock_connect=3)) as up:
            resp = web.StreamResponse(status=up.status, headers={
                "Content-Type": up.headers.get("Content-Type", "text/plain")})
            await resp.prepare(request)
            while True:
                going, chunk = await unless_stopping(request, up.content.readany())
                if not going or not chunk:
                    break
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AgentUnreachable(str(exc), address) from None


async def _to_agent(request: web.Request, method: str, address: str, path: str,
                    body: dict[str, Any]) -> tuple[int, Any]:
    session = request.app[AGENT_SESSION]
    token = controllers_credential(request.app)
    name = _agent_server_name(request, address)
    try:
        async with session.request(method, address + path, json=body,
                                   headers={"Authorization": f"Bearer {token}"},
                                   server_hostname=name,
                                   timeout=aiohttp.ClientTimeout(total=30)) as up:
            return up.status, await up.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise AgentUnreachable(str(exc)) from None


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    tls = app[AGENT_TLS]
    connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else None
    # Every call to an agent says which protocol this controller speaks (protocol 1 did not).
    headers = {protocol.HEADER: str(protocol.spoken())} if protocol.versioned() else None
    app[AGENT_SESSION] = aiohttp.ClientSession(connector=connector, headers=headers)
    yield
    await app[AGENT_SESSION].close()


def register(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/nodes/{name}/drain", drain_node)
    r.add_get("/v1/jobs/{ns}/{name}/versions", job_versions)
    r.add_post("/v1/jobs/{ns}/{name}/revert", job_revert)
    r.add_get("/v1/events", events)
    r.add_post("/v1/allocations/{id}/{action}", alloc_action)
    r.add_get("/v1/allocations/{id}/logs", alloc_logs)
    app.cleanup_ctx.append(_session_ctx)



