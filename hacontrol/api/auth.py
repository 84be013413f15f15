"""Who is asking, and may they: one middleware and one table of what each route needs.

Every route is listed in `ROUTES` with the permission it needs; a route missing from the
table is refused to everyone (default deny; `tests/unit/test_acl_api.py` checks that every
registered route is listed). The bearer secret is hashed and looked up in the replicated
token table as applied on this replica; a write is checked again where it counts, when
every replica applies it (`hacontrol/state/permit.py`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from hacontrol.acl.authorize import Action, Decision, authorize, node_may, usable
from hacontrol.acl.secrets import hash_secret, same_hash
from hacontrol.model.acl import Token, TokenType
from hacontrol.state.machine import StateMachine
from hacontrol.state.store import DEFAULT_NAMESPACE

from .errors import Handler, RequestError
from .request import IDENTITY, store_of


@dataclass(frozen=True)
class Need:
    """What a route needs. `kind`:
    - `open`: nothing (probes, the page, bootstrap, which the state allows once);
    - `token`: any valid user token (the route filters what it shows, or shows the token);
    - `action`: `action` (or `also`, when given), in the namespace from the path (`ns`)
      or of the allocation `id`;
    - `node`: a node credential, or a token that may write nodes (the agents' sync);
    - `intro`: an introduction token (exchanged for a node credential)."""

    kind: str
    action: Action | None = None
    # "ns": match_info["ns"]; "query-ns": the `namespace` query parameter, "default" when
    # absent; "alloc": the allocation's namespace
    scope: str | None = None
    also: Action | None = None  # an action that will do as well


OPEN = Need("open")
TOKEN = Need("token")
NODE = Need("node")
INTRO = Need("intro")


def act(action: Action, scope: str | None = None, also: Action | None = None) -> Need:
    return Need("action", action, scope, also)


A = Action
ROUTES: dict[tuple[str, str], Need] = {
    ("GET", "/v1/health"): OPEN,
    ("GET", "/v1/health/ready"): OPEN,
    ("GET", "/"): OPEN,
    ("GET", "/ui"): OPEN,
    ("GET", "/ui/"): OPEN,
    ("GET", "/ui/{path}"): OPEN,  # only the files the package ships (api/ui.py)
    ("GET", "/v1/status"): OPEN,  # members and leader, as Nomad's /v1/status/*
    ("GET", "/v1/status/members"): TOKEN,  # asks the peers' open /v1/status for the UI
    ("GET", "/v1/openapi.json"): TOKEN,
    ("GET", "/v1/namespaces"): TOKEN,  # filtered to the namespaces whose jobs it may list
    ("GET", "/v1/namespaces/{ns}"): act(A.LIST_JOBS, "ns"),
    ("PUT", "/v1/namespaces/{ns}"): act(A.OPERATOR_WRITE),
    ("GET", "/v1/jobs"): TOKEN,  # filtered by list-jobs
    ("GET", "/v1/jobs/{ns}/{name}"): act(A.READ_JOB, "ns"),
    ("PUT", "/v1/jobs/{ns}/{name}"): act(A.SUBMIT_JOB, "ns"),
    ("DELETE", "/v1/jobs/{ns}/{name}"): act(A.SUBMIT_JOB, "ns"),
    # A plan changes nothing, but it is the preview of a submission and shows where the
    # cluster has room: it needs what submitting needs (as Nomad's job plan does).
    ("POST", "/v1/jobs/{ns}/{name}/plan"): act(A.SUBMIT_JOB, "ns"),
    ("POST", "/v1/jobs/{ns}/{name}/scale"): act(A.SCALE_JOB, "ns"),
    # A pushed value moves the job's count as a scale does: the same capability.
    ("PUT", "/v1/jobs/{ns}/{name}/metrics/{metric}"): act(A.SCALE_JOB, "ns"),
    ("GET", "/v1/jobs/{ns}/{name}/metrics"): act(A.READ_JOB, "ns"),
    ("GET", "/v1/jobs/{ns}/{name}/versions"): act(A.READ_JOB, "ns"),
    ("POST", "/v1/jobs/{ns}/{name}/revert"): act(A.SUBMIT_JOB, "ns"),
    ("GET", "/v1/allocations"): TOKEN,  # filtered by read-job
    ("GET", "/v1/allocations/{id}"): act(A.READ_JOB, "alloc"),
    ("GET", "/v1/allocations/{id}/metrics"): act(A.READ_JOB, "alloc"),  # as reading it
    ("POST", "/v1/allocations/{id}/{action}"): act(A.ALLOC_LIFECYCLE, "alloc"),
    ("GET", "/v1/allocations/{id}/logs"): act(A.READ_LOGS, "alloc"),
    # Where a service's allocations listen: what reading its jobs shows, or listing them.
    ("GET", "/v1/services"): TOKEN,  # filtered by read-job or list-jobs
    ("GET", "/v1/services/{ns}/{name}"): act(A.READ_JOB, "ns", also=A.LIST_JOBS),
    ("GET", "/v1/services/{name}"): act(A.READ_JOB, "query-ns", also=A.LIST_JOBS),
    ("GET", "/v1/nodes"): act(A.NODE_READ),
    ("GET", "/v1/nodes/{name}"): act(A.NODE_READ),
    ("POST", "/v1/nodes/{name}/drain"): act(A.NODE_WRITE),
    ("POST", "/v1/nodes/intro"): act(A.NODE_WRITE),
    ("GET", "/v1/events"): act(A.OPERATOR_READ),
    ("GET", "/metrics"): act(A.OPERATOR_READ),
    ("GET", "/v1/operator/raft/peers"): act(A.OPERATOR_READ),
    ("POST", "/v1/operator/raft/peers"): act(A.OPERATOR_WRITE),
    ("DELETE", "/v1/operator/raft/peers/{id}"): act(A.OPERATOR_WRITE),
    ("POST", "/v1/agent/sync"): NODE,
    ("POST", "/v1/agent/credential"): INTRO,
    ("POST", "/v1/acl/bootstrap"): OPEN,
    ("GET", "/v1/acl/policies"): act(A.ACL_READ),
    ("GET", "/v1/acl/policies/{name}"): act(A.ACL_READ),
    ("PUT", "/v1/acl/policies/{name}"): act(A.ACL_WRITE),
    ("DELETE", "/v1/acl/policies/{name}"): act(A.ACL_WRITE),
    ("GET", "/v1/acl/tokens"): act(A.ACL_READ),
    ("POST", "/v1/acl/tokens"): act(A.ACL_WRITE),
    ("GET", "/v1/acl/tokens/self"): TOKEN,
    ("DELETE", "/v1/acl/tokens/{accessor_id}"): act(A.ACL_WRITE),
    # A snapshot holds every secret hash and every namespace's jobs, and a restore
    # replaces every token: acl:write here, operator:write checked by the route too.
    ("GET", "/v1/operator/snapshot"): act(A.ACL_WRITE),
    ("PUT", "/v1/operator/snapshot"): act(A.ACL_WRITE),
    # The receipt (a secret only the restore's own answer carried) is the credential: the
    # restore may have replaced the token that asked for it (api/snapshot_routes.py).
    ("GET", "/v1/operator/snapshot/restore/{receipt}"): OPEN,
    # Alert sinks run commands and send requests from the leader's host: writing a rule
    # needs cluster-wide operator rights, never a namespace's.
    ("GET", "/v1/alerts"): act(A.OPERATOR_READ),
    ("GET", "/v1/alerts/{name}"): act(A.OPERATOR_READ),
    ("PUT", "/v1/alerts/{name}"): act(A.OPERATOR_WRITE),
    ("DELETE", "/v1/alerts/{name}"): act(A.OPERATOR_WRITE),
    ("GET", "/v1/health/score"): act(A.OPERATOR_READ),  # names nodes, namespaces, jobs
    ("GET", "/v1/operator/config"): act(A.OPERATOR_READ),
    ("PUT", "/v1/operator/config"): act(A.OPERATOR_WRITE),
}

USER_TYPES = (TokenType.MANAGEMENT, TokenType.CLIENT)


def identity_of(request: web.Request) -> Token | None:
    """The token the request was authorised with (None on open routes)."""
    return request.get(IDENTITY)


def visible(request: web.Request, action: Action) -> Callable[[StateMachine, str], bool]:
    """A test, to call inside a read, of whether the request's token may `action` in a
    namespace (for list routes, which show only what the token may see)."""
    token = identity_of(request)

    def test(m: StateMachine, namespace: str) -> bool:
        return token is not None and bool(authorize(token, m.store.acl_policies, action,
                                                    namespace))
    return test


def require(request: web.Request, action: Action, namespace: str | None = None) -> None:
    """Raise 403 unless the request's token may `action`."""
    token = identity_of(request)
    decision = (Decision(False, "no token") if token is None else store_of(request).read_local(
        lambda m: authorize(token, m.store.acl_policies, action, namespace)))
    if not decision:
        raise RequestError("forbidden", f"permission denied: {decision.reason}", "Authorization")


def speaks_for(request: web.Request, node: str) -> None:
    """Raise 403 unless the request's token may speak for `node` (a node credential for
    its own node; a token that may write nodes for any)."""
    token = identity_of(request)
    decision = (Decision(False, "no token") if token is None else store_of(request).read_local(
        lambda m: node_may(token, m.store.acl_policies, node)))
    if not decision:
        raise RequestError("forbidden", f"permission denied: {decision.reason}", "node.name")


# A client sends the same secret with every request: its hash is remembered (only the
# hash function's answer; whether the token is valid is looked up in the state each time).
_hashed = functools.lru_cache(maxsize=1024)(hash_secret)


def _lookup(secret: str) -> Callable[[StateMachine], tuple[Token | None, bool]]:
    wanted = _hashed(secret)

    def find(m: StateMachine) -> tuple[Token | None, bool]:
        token = m.store.token_by_hash(wanted)
        if token is not None and not same_hash(token.secret_hash, wanted):
            token = None
        return token, m.store.acl_bootstrapped
    return find


def _route_key(request: web.Request) -> tuple[str, str] | None:
    route = request.match_info.route
    resource = route.resource
    if resource is None or route.method == "*":
        return None  # no route matched: the handler answers 404 or 405
    method = "GET" if request.method == "HEAD" else request.method
    return method, resource.canonical


def _scope_namespace(request: web.Request, need: Need) -> str | None:
    if need.scope == "ns":
        return request.match_info.get("ns")
    if need.scope == "query-ns":
        return request.query.get("namespace", DEFAULT_NAMESPACE)
    if need.scope == "alloc":
        alloc_id = request.match_info.get("id", "")
        alloc = store_of(request).read_local(lambda m: m.allocs.get(alloc_id))
        # Unknown allocation: judge against no namespace (refused unless management), so a
        # token cannot probe which allocation ids exist.
        return alloc.namespace if alloc is not None else None
    return None


def _judge(request: web.Request, need: Need, token: Token) -> Decision:
    match need.kind:
        case "token":
            return Decision(token.type in USER_TYPES, f"a {token.type} token may not do this")
        case "node":
            if token.type == TokenType.NODE:
                return Decision(True, "node credential")
            return store_of(request).read_local(
                lambda m: authorize(token, m.store.acl_policies, Action.NODE_WRITE))
        case "intro":
            return Decision(token.type == TokenType.INTRO, "needs an introduction token")
        case "action":
            assert need.action is not None
            ns = _scope_namespace(request, need)
            if token.type == TokenType.MANAGEMENT:
                return Decision(True, "management token")
            decision = store_of(request).read_local(
                lambda m: authorize(token, m.store.acl_policies, need.action or Action.ACL_WRITE,
                                    ns))
            if not decision and need.also is not None:
                also = need.also
                decision = store_of(request).read_local(
                    lambda m: authorize(token, m.store.acl_policies, also, ns))
            return decision
    return Decision(False, "this route is not open to anyone")


def acl_middleware(clock: Callable[[], float] = time.time) -> Middleware:
    """Authenticate the bearer token and check the route's permission (default deny)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = _route_key(request)
        need = ROUTES.get(key) if key is not None else TOKEN
        if need is None:
            need = Need("deny")
        if need.kind == "open":
            return await handler(request)
        header = request.headers.get("Authorization", "")
        secret = header[7:].strip() if header.startswith("Bearer ") else ""
        if not secret:
            raise RequestError("unauthorized", "missing bearer token", "Authorization")
        token, bootstrapped = store_of(request).read_local(_lookup(secret))
        if token is None and request.query.get("stale") not in ("1", "true"):
            # Not applied here yet (a token just created through another replica): look
            # again after a linearizable barrier, so that a token the cluster acknowledged
            # works on every replica. Barriers are coalesced, so a stream of wrong secrets
            # costs one log round per batch, not one per request.
            token, bootstrapped = await store_of(request).read(_lookup(secret))
        valid = usable(token, clock())
        if token is None or not valid:
            hint = "" if bootstrapped else (
                " (ACLs are not bootstrapped yet: run 'hacontrol acl bootstrap')")
            raise RequestError("forbidden", f"{valid.reason}{hint}", "Authorization")
        request[IDENTITY] = token
        decision = _judge(request, need, token)
        if not decision:
            raise RequestError("forbidden", f"permission denied: {decision.reason}",
                               "Authorization")
        return await handler(request)

    return check
