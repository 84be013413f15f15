"""Service discovery: where each service's live, healthy allocations listen.

Both routes answer blocking queries, as Consul's do: given `?index=N`, the answer waits
until the index it would carry passes N (the endpoint set changed), or `wait` runs out
(default `DEFAULT_WAIT_S`, at most `MAX_WAIT_S`), and then answers what is there. The
waiting is the change feed's (one wake-up per burst of applied entries, on the event loop);
each wake-up costs one short read of the registry under the apply lock, never a thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from hacontrol.acl.authorize import Action
from hacontrol.model.checks import check_name
from hacontrol.model.errors import invalid
from hacontrol.state.machine import StateMachine
from hacontrol.state.store import DEFAULT_NAMESPACE

from .auth import visible
from .openapi import READ_ERRORS, STALE, Operation, Param, documented
from .request import changed_or_stopping, is_stale, store_of
from .schemas import NAME, Schema

T = TypeVar("T")

DEFAULT_WAIT_S = 30.0
# Longer waits are cut to this: proxies and clients give up on quiet connections, and a
# client that asks again costs one read.
MAX_WAIT_S = 60.0
INDEX_HEADER = "X-Hacontrol-Index"
_WAIT_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)?")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}

ENDPOINT: Schema = {"type": "object", "required": ["allocation", "node", "address", "port"],
            "properties": {"allocation": {"type": "string"}, "node": {"type": "string"},
                           "address": {"type": "string"},
                           "port": {"type": "integer", "minimum": 1, "maximum": 65535}}}
SERVICE: Schema = {"type": "object", "required": ["namespace", "name", "index", "endpoints"],
           "properties": {"namespace": NAME, "name": {"type": "string"},
                          "index": {"type": "integer", "minimum": 0},
                          "endpoints": {"type": "array", "items": ENDPOINT}}}
BLOCKING = (
    Param("index", {"type": "integer", "minimum": 0},
          "block until the answer's index passes this one (the last answer's)"),
    Param("wait", {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m)?$"},
          f"how long to block at most, e.g. 30s (default {DEFAULT_WAIT_S:g}s, at most "
          f"{MAX_WAIT_S:g}s)"),
)


def parse_index(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 19:
        raise invalid("index", "must be a non-negative integer (an earlier answer's index)")
    return int(raw)


def parse_wait(raw: str | None) -> float:
    """`30s`, `500ms`, `1m` or plain seconds, cut to `MAX_WAIT_S`."""
    if raw is None:
        return DEFAULT_WAIT_S
    m = _WAIT_RE.fullmatch(raw.strip())
    if m is None:
        raise invalid("wait", "must be a duration such as 30s, 500ms or 1m")
    return min(float(m.group(1)) * _UNIT_S[m.group(2)], MAX_WAIT_S)


async def blocking_read(request: web.Request, read: Callable[[StateMachine], T],
                        index_of: Callable[[T], int]) -> T:
    """`read`'s answer, once its index passes the request's `index` (or at `wait`)."""
    q = request.query
    after = parse_index(q["index"]) if "index" in q else None
    wait = parse_wait(q.get("wait"))
    store = store_of(request)
    out = await store.read(read, is_stale(request))
    if after is None or index_of(out) > after:
        return out
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while (remaining := deadline - loop.time()) > 0:
        if not await changed_or_stopping(request, remaining):
            break  # the replica stops: the answer as it stands
        out = store.read_local(read)
        if index_of(out) > after:
            break
    return out


def _answer(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, headers={INDEX_HEADER: str(body["index"])})


@documented(Operation(
    "List services with their endpoints (a blocking query with index and wait)", "services",
    description="Only the namespaces whose jobs the token may read or list. `index` is the "
                "latest change of any service.",
    params=(STALE, Param("namespace", NAME, "only this namespace's services"), *BLOCKING),
    ok={"type": "object", "required": ["services", "index"],
        "properties": {"services": {"type": "array", "items": SERVICE},
                       "index": {"type": "integer"}}},
    errors=(401, 403, 422, 503)))
async def list_services(request: web.Request) -> web.Response:
    ns = request.query.get("namespace")
    if ns is not None:
        check_name(ns, "namespace")
    may_read, may_list = visible(request, Action.READ_JOB), visible(request, Action.LIST_JOBS)

    def view(m: StateMachine) -> dict[str, Any]:
        reg = m.store.registry
        shown: dict[str, bool] = {}
        out = []
        for key in sorted(reg.endpoints):
            if ns is not None and key[0] != ns:
                continue
            if key[0] not in shown:
                shown[key[0]] = may_read(m, key[0]) or may_list(m, key[0])
            if shown[key[0]]:
                out.append(reg.view(key))
        return {"services": out, "index": reg.last_index}
    return _answer(await blocking_read(request, view, lambda body: int(body["index"])))


@documented(Operation(
    "Read a service's endpoints (a blocking query with index and wait)", "services",
    description="A service no running job declares answers no endpoints.",
    path={"name": {"type": "string"}}, params=(STALE, *BLOCKING), ok=SERVICE,
    errors=READ_ERRORS))
async def get_service(request: web.Request) -> web.Response:
    ns = check_name(request.match_info["ns"], "namespace")
    return await _service(request, ns, request.match_info["name"])


@documented(Operation(
    "Read a service's endpoints in the namespace given by `?namespace=` (default: "
    "`default`), as Nomad's `/v1/service/NAME`", "services",
    path={"name": {"type": "string"}},
    params=(STALE, Param("namespace", NAME, "the service's namespace (default: default)"),
            *BLOCKING), ok=SERVICE, errors=READ_ERRORS))
async def get_service_by_name(request: web.Request) -> web.Response:
    ns = check_name(request.query.get("namespace", DEFAULT_NAMESPACE), "namespace")
    return await _service(request, ns, request.match_info["name"])


async def _service(request: web.Request, ns: str, name: str) -> web.Response:
    if len(name) > 63:
        raise invalid("name", "a service name is at most 63 characters")

    def view(m: StateMachine) -> dict[str, Any]:
        return m.store.registry.view((ns, name))
    return _answer(await blocking_read(request, view, lambda body: int(body["index"])))


def register(app: web.Application) -> None:
    app.router.add_get("/v1/services", list_services)
    app.router.add_get("/v1/services/{ns}/{name}", get_service)
    app.router.add_get("/v1/services/{name}", get_service_by_name)
