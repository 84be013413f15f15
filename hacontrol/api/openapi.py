"""The OpenAPI 3.1 document of the controller API, served at `GET /v1/openapi.json`.

The paths and methods come from the router itself; what each route reads and answers comes
from the `Operation` declared next to its handler:

    @documented(Operation("Scale a job", "jobs", ok=written("job", JOB), body=...,
                          write=True, errors=WRITE_ERRORS))
    async def scale_job(request: web.Request) -> web.Response: ...

A route registered without one is left out of the document, and `undocumented(app)` names
it with its handler (`tests/unit/test_openapi.py` fails on it). Bodies derived from the model
live in `schemas.py`.

The document is served with the same bearer token as every other read: it tells nothing a
token holder cannot learn by calling the API, and probes (health, ready) do not need it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from hacontrol import __version__
from hacontrol.state.commands import MAX_IDEM_LEN

from .errors import STATUS_BY_CODE
from .schemas import ERROR, NAME, Schema

H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])

AUTH_ERRORS = (401, 403)
# A read may name what does not exist, carry a bad parameter, or find no quorum.
READ_ERRORS = (*AUTH_ERRORS, 404, 422, 503)
# A write may also conflict (or exceed a quota), be too large, or have an unknown outcome.
WRITE_ERRORS = (*AUTH_ERRORS, 400, 404, 409, 413, 422, 503)

# Path parameters by their name in the route; an operation may say more (`Operation.path`).
PATH_PARAMS: dict[str, Schema] = {
    "ns": NAME,
    "name": NAME,
    "id": {"type": "string", "minLength": 1, "maxLength": 200},
}

DESCRIBE_STATUS = {
    400: "Bad request", 401: "No bearer token", 403: "Wrong token", 404: "Not found",
    409: "Conflict with the current state, or over the namespace quota",
    413: "Body too large", 422: "Invalid input (the `field` names it)",
    503: "Not applied, outcome unknown (retry with the same Idempotency-Key), no quorum, "
         "not the leader, or an agent unreachable",
}


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter."""

    name: str
    schema: Schema
    description: str = ""
    where: str = "query"


STALE = Param("stale", {"type": "boolean", "default": False},
              "read this replica's state as applied so far, without confirming it with the "
              "leader: a follower's may trail the leader's by the few milliseconds it takes "
              "to hear of a commit, and by longer while it is cut off")


@dataclass(frozen=True)
class Operation:
    """What one route reads and answers.

    `ok` is the schema of the 200 answer in `media`; `body` the JSON body it reads;
    `errors` the statuses it may answer with the error body; `responses` other answers
    with their own JSON schema (status -> schema); `write` adds the Idempotency-Key header;
    `public` routes need no token.
    """

    summary: str
    tag: str
    ok: Schema | None = None
    media: str = "application/json"
    body: Schema | None = None
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = READ_ERRORS
    write: bool = False
    public: bool = False
    path: dict[str, Schema] = field(default_factory=dict)
    responses: dict[int, Schema] = field(default_factory=dict)
    other_media: dict[str, Schema] = field(default_factory=dict)
    description: str = ""


OPERATIONS: dict[Callable[..., Any], Operation] = {}


def documented(op: Operation) -> Callable[[H], H]:
    """Declare what the decorated handler's route reads and answers (see the module doc)."""
    def mark(handler: H) -> H:
        OPERATIONS[handler] = op
        return handler
    return mark


def operation_of(handler: Callable[..., Any]) -> Operation | None:
    """The handler's operation, looking through decorators that set `__wrapped__`."""
    seen: Callable[..., Any] | None = handler
    while seen is not None:
        if seen in OPERATIONS:
            return OPERATIONS[seen]
        seen = getattr(seen, "__wrapped__", None)
    return None


def route_path(route: web.AbstractRoute) -> str:
    return route.resource.canonical if route.resource is not None else ""


def _routes(app: web.Application) -> list[tuple[str, str, Callable[..., Any]]]:
    """(method, path, handler) of every route; HEAD comes with GET and is left out."""
    return [(r.method, route_path(r), r.handler) for r in app.router.routes()
            if r.method != "HEAD"]


def _describe(handler: Callable[..., Any]) -> str:
    return f"{handler.__module__}.{handler.__qualname__}"


def undocumented(app: web.Application) -> list[str]:
    """Routes of `app` whose handler declares no `Operation`, with the handler to decorate."""
    return [f"{m} {p} (add @documented(Operation(...)) to {_describe(h)})"
            for m, p, h in _routes(app) if operation_of(h) is None]


def unrouted(app: web.Application) -> list[str]:
    """Documented handlers of the API that `app` does not route to (forgotten in a
    `register()`)."""
    routed = set()
    for _, _, h in _routes(app):
        seen: Callable[..., Any] | None = h
        while seen is not None:
            routed.add(seen)
            seen = getattr(seen, "__wrapped__", None)
    return [_describe(h) for h in OPERATIONS
            if h not in routed and h.__module__.startswith("hacontrol.api.")]


def _parameters(op: Operation, path: str) -> list[Schema]:
    out: list[Schema] = []
    for name in re.findall(r"{(\w+)}", path):
        out.append({"name": name, "in": "path", "required": True,
                    "schema": op.path.get(name) or PATH_PARAMS.get(name, {"type": "string"})})
    for p in op.params:
        out.append({"name": p.name, "in": p.where, "required": False, "schema": p.schema,
                    "description": p.description})
    if op.write:
        out.append({"name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEM_LEN},
                    "description": "a retry with the same key applies once and answers the "
                                   "same"})
    return out


def _operation(op: Operation, path: str, op_id: str) -> Schema:
    ok = {op.media: {"schema": op.ok if op.ok is not None else {"type": "string"}}}
    ok.update({media: {"schema": schema} for media, schema in op.other_media.items()})
    responses: Schema = {"200": {"description": "OK", "content": ok}}
    for status, schema in op.responses.items():
        responses[str(status)] = {"description": DESCRIBE_STATUS.get(status, "See schema"),
                                  "content": {"application/json": {"schema": schema}}}
    errors = [s for s in op.errors if not (op.public and s in AUTH_ERRORS)]
    for status in errors:
        responses.setdefault(str(status), {"$ref": f"#/components/responses/E{status}"})
    out: Schema = {"operationId": op_id, "summary": op.summary, "tags": [op.tag],
                   "parameters": _parameters(op, path), "responses": responses}
    if op.description:
        out["description"] = op.description
    if op.body is not None:
        out["requestBody"] = {"required": True,
                              "content": {"application/json": {"schema": op.body}}}
    if op.public:
        out["security"] = []
    return out


def _error_responses() -> Schema:
    out: Schema = {}
    for status, what in DESCRIBE_STATUS.items():
        codes = sorted(c for c, s in STATUS_BY_CODE.items() if s == status)
        resp: Schema = {"description": f"{what} (codes: {', '.join(codes) or 'bad_request'})",
                        "content": {"application/json": {"schema": {"$ref":
                                                                    "#/components/schemas/Error"}}}}
        if status == 503:
            resp["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        out[f"E{status}"] = resp
    return out


def document(app: web.Application) -> Schema:
    """The OpenAPI document of every documented route of `app`."""
    paths: dict[str, Schema] = {}
    ids: set[str] = set()
    for method, path, handler in _routes(app):
        op = operation_of(handler)
        if op is None:
            continue
        op_id = handler.__name__
        if op_id in ids:  # one handler on two paths (the UI page)
            op_id = f"{op_id}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}"
        ids.add(op_id)
        paths.setdefault(path, {})[method.lower()] = _operation(op, path, op_id)
    return {
        "openapi": "3.1.0",
        "info": {"title": "hacontrol controller API", "version": __version__,
                 "description": "Every replica serves the whole API. Writes go through the "
                                "Raft log; reads are linearizable unless `stale=true`."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "responses": _error_responses(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


OPENAPI = web.AppKey[Schema]("openapi")


@documented(Operation("This document", "meta", ok={"type": "object"}, errors=AUTH_ERRORS))
async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def _build(app: web.Application) -> None:
    app[OPENAPI] = document(app)  # once every route is registered


def register(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.on_startup.append(_build)
