"""Access control: bootstrap, policies, tokens, node introductions and credentials.

Secrets are made here, on the replica that answers, and shown once in the answer; only
their SHA-256 goes into the log. A retry of a token creation therefore makes a new secret:
retried with the same Idempotency-Key it is refused as a different request (409) rather
than answered with a secret nobody holds.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from hacontrol.acl.authorize import NAMESPACED, Action, authorize
from hacontrol.acl.secrets import hash_secret, new_accessor, new_secret
from hacontrol.model.acl import (
    Token,
    TokenType,
    check_accessor,
    parse_policy,
    parse_token_request,
    parse_ttl,
)
from hacontrol.model.checks import check_name, obj
from hacontrol.model.errors import invalid, not_found
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .auth import identity_of
from .errors import RequestError
from .openapi import STALE, WRITE_ERRORS, Operation, documented
from .request import (
    controller_credential_hash,
    idem_key,
    is_stale,
    json_body,
    ok,
    only_fields,
    store_of,
)

DEFAULT_INTRO_TTL_S = 600.0
CLUSTER_ACTIONS = tuple(a for a in Action if a not in NAMESPACED)

NAME = {"type": "string"}
TOKEN_ANSWER = {"type": "object", "properties": {"token": {"type": "object"}}}
POLICY_BODY = {"type": "object", "properties": {
    "description": {"type": "string"},
    "rules": {"type": "object", "properties": {
        "namespaces": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {
                "policy": {"enum": ["deny", "read", "write"]},
                "capabilities": {"type": "array", "items": {"type": "string"}}}}},
        "node": {"enum": ["deny", "read", "write"]},
        "operator": {"enum": ["deny", "read", "write"]},
        "acl": {"enum": ["deny", "read", "write"]}}}}}
TOKEN_BODY = {"type": "object", "properties": {
    "name": {"type": "string"}, "type": {"enum": ["management", "client"]},
    "policies": {"type": "array", "items": {"type": "string"}},
    "ttl_s": {"type": "number"}}}
INTRO_BODY = {"type": "object", "properties": {"name": {"type": "string"},
                                               "ttl_s": {"type": "number"}}}

async def _create(request: web.Request, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Propose a command that creates a token; the answer: the token with its secret."""
    secret, accessor = new_secret(), new_accessor()
    res = await store_of(request).write(op, {"accessor_id": accessor,
                                             "secret_hash": hash_secret(secret), **args},
                                        idem_key(request))
    return {"token": {**res["token"], "secret_id": secret}, "index": res["index"]}


# ------------------------------------------------------------------ bootstrap

@documented(Operation("Bootstrap ACLs once: answers the first management token (secret shown once)",
                      "acl", ok=TOKEN_ANSWER, public=True, write=True, errors=WRITE_ERRORS,
                      # open to anyone, so 403 is not about the token: already bootstrapped
                      responses={403: {"$ref": "#/components/schemas/Error"}}))
async def bootstrap(request: web.Request) -> web.Response:
    """The first management token; refused (403) once the cluster is bootstrapped."""
    if await store_of(request).read(lambda m: m.store.acl_bootstrapped, is_stale(request)):
        raise RequestError("forbidden", "the ACL system is already bootstrapped", "bootstrap")
    return ok(await _create(request, C.ACL_BOOTSTRAP, {"name": "bootstrap"}))


# ------------------------------------------------------------------- policies

@documented(Operation("Create or replace a policy", "acl", ok={"type": "object"},
                      body=POLICY_BODY, path={"name": NAME}, write=True,
                      errors=WRITE_ERRORS))
async def put_policy(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "name")
    policy = parse_policy(name, await json_body(request))  # 422 naming the field
    res = await store_of(request).write(C.ACL_POLICY_PUT, {"policy": policy.to_dict()},
                                        idem_key(request))
    return ok({"policy": res["policy"], "index": res["index"]})


@documented(Operation("List the policies", "acl", ok={"type": "object"}))
async def list_policies(request: web.Request) -> web.Response:
    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [p.to_dict() for _, p in sorted(m.store.acl_policies.items())]
    return ok({"policies": await store_of(request).read(view, is_stale(request))})


@documented(Operation("One policy", "acl", ok={"type": "object"}, path={"name": NAME}))
async def get_policy(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "name")

    def view(m: StateMachine) -> dict[str, Any] | None:
        p = m.store.acl_policies.get(name)
        return p.to_dict() if p is not None else None
    out = await store_of(request).read(view, is_stale(request))
    if out is None:
        raise not_found(f"policy {name!r}", "name")
    return ok({"policy": out})


@documented(Operation("Delete a policy", "acl", ok={"type": "object"}, path={"name": NAME},
                      write=True, errors=WRITE_ERRORS))
async def delete_policy(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "name")
    res = await store_of(request).write(C.ACL_POLICY_DELETE, {"name": name}, idem_key(request))
    return ok({"policy": res["policy"], "index": res["index"]})


# --------------------------------------------------------------------- tokens

@documented(Operation("Create a token (its secret is answered once, never again)", "acl",
                      ok=TOKEN_ANSWER, body=TOKEN_BODY, write=True, errors=WRITE_ERRORS))
async def create_token(request: web.Request) -> web.Response:
    req = parse_token_request(await json_body(request))
    return ok(await _create(request, C.ACL_TOKEN_CREATE, req.to_dict()))


@documented(Operation("List the tokens (accessor ids, never secrets)", "acl",
                      ok={"type": "object"}))
async def list_tokens(request: web.Request) -> web.Response:
    def view(m: StateMachine) -> list[dict[str, Any]]:
        return [t.public() for t in sorted(m.store.acl_tokens.values(),
                                           key=lambda t: (t.create_ts, t.accessor_id))]
    return ok({"tokens": await store_of(request).read(view, is_stale(request))})


SELF_ANSWER = {"type": "object", "required": ["token", "permissions"], "properties": {
    "token": {"type": "object"},
    "permissions": {"type": "object", "required": ["cluster", "namespaces"], "properties": {
        "cluster": {"type": "array", "items": {"enum": [str(a) for a in CLUSTER_ACTIONS]}},
        "namespaces": {"type": "object", "additionalProperties": {
            "type": "array", "items": {"enum": [str(a) for a in NAMESPACED]}}}}}}}


def permissions(token: Token, m: StateMachine) -> dict[str, Any]:
    """What `token` may do, as `authorize` decides it now: the cluster-wide actions, and
    the namespaced ones in each existing namespace (so a client such as the UI offers only
    what will be allowed; every request is still judged on its own)."""
    policies = m.store.acl_policies
    return {"cluster": [str(a) for a in CLUSTER_ACTIONS
                        if authorize(token, policies, a)],
            "namespaces": {ns: [str(a) for a in sorted(NAMESPACED)
                                if authorize(token, policies, a, ns)]
                           for ns in sorted(m.namespaces)}}


@documented(Operation("The token this request was made with, and what it may do", "acl",
                      ok=SELF_ANSWER, params=(STALE,)))
async def token_self(request: web.Request) -> web.Response:
    token = identity_of(request)
    assert token is not None  # the middleware let only a valid token through
    allowed = await store_of(request).read(lambda m: permissions(token, m), is_stale(request))
    return ok({"token": token.public(), "permissions": allowed})


@documented(Operation("Revoke a token on every replica", "acl", ok={"type": "object"},
                      path={"accessor_id": {"type": "string"}}, write=True,
                      errors=WRITE_ERRORS))
async def revoke_token(request: web.Request) -> web.Response:
    accessor = check_accessor(request.match_info["accessor_id"])
    res = await store_of(request).write(C.ACL_TOKEN_REVOKE, {"accessor_id": accessor},
                                        idem_key(request))
    return ok({"token": res["token"], "index": res["index"]})


# ------------------------------------------------------- node introductions

@documented(Operation("Create a short-lived introduction token for one node", "nodes",
                      ok=TOKEN_ANSWER, body=INTRO_BODY, write=True, errors=WRITE_ERRORS))
async def create_intro(request: web.Request) -> web.Response:
    """A short-lived introduction token, optionally for one node name."""
    raw = await request.read()
    body = obj(await json_body(request), "body") if raw else {}
    only_fields(body, ("name", "ttl_s"))
    name = None if body.get("name") is None else check_name(body["name"], "name")
    ttl = parse_ttl(body.get("ttl_s")) or DEFAULT_INTRO_TTL_S
    return ok(await _create(request, C.ACL_TOKEN_CREATE, {
        "name": f"intro {name or '*'}", "type": str(TokenType.INTRO), "policies": [],
        "ttl_s": ttl, "node": name}))


@documented(Operation("An agent exchanges its introduction token for its node credential",
                      "agent", ok=TOKEN_ANSWER,
                      body={"type": "object", "properties": {"node": {"type": "string"}},
                            "required": ["node"]},
                      write=True, errors=WRITE_ERRORS))
async def exchange_intro(request: web.Request) -> web.Response:
    """An agent's introduction token, used once, for its own node credential."""
    body = await json_body(request)
    only_fields(body, ("node",))
    if "node" not in body:
        raise invalid("node", "required: the node's name")
    node = check_name(body["node"], "node")
    answer = await _create(request, C.NODE_CREDENTIAL, {"node": node})
    # The agent pins this to recognise the controllers' calls from now on.
    return ok({**answer, "controller_credential_sha256": controller_credential_hash(request)})


def register(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/acl/bootstrap", bootstrap)
    r.add_get("/v1/acl/policies", list_policies)
    r.add_get("/v1/acl/policies/{name}", get_policy)
    r.add_put("/v1/acl/policies/{name}", put_policy)
    r.add_delete("/v1/acl/policies/{name}", delete_policy)
    r.add_get("/v1/acl/tokens", list_tokens)
    r.add_post("/v1/acl/tokens", create_token)
    r.add_get("/v1/acl/tokens/self", token_self)
    r.add_delete("/v1/acl/tokens/{accessor_id}", revoke_token)
    r.add_post("/v1/nodes/intro", create_intro)
    r.add_post("/v1/agent/credential", exchange_intro)
