"""Request helpers shared by every route module: what the app holds, and the parts of a
request (body, flags, headers) parsed the same way everywhere."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import aiohttp
import orjson
from aiohttp import web

from hacontrol.controller.errors import NotApplied
from hacontrol.model.acl import Token
from hacontrol.model.errors import invalid
from hacontrol.scheduler.leader_state import Leadership, LeaderState
from hacontrol.state import commands as C

from .backend import ActingStore, Cluster, Store
from .errors import RequestError

MAX_BODY_BYTES = 1024 * 1024

STORE = web.AppKey[Store]("store")
CLUSTER = web.AppKey[Cluster]("cluster")
LEADERSHIP = web.AppKey[Leadership]("leadership")
# The credential the controllers present to agents (`acl.secrets.controller_credential`).
TOKEN = web.AppKey[str]("token")
MAX_BODY = web.AppKey[int]("max_body_bytes")
# Whether this replica was given a token to bootstrap with (ready only once applied).
ACL_CONFIGURED = web.AppKey[bool]("acl_configured")
# The token a request was authorised with (set by `auth.acl_middleware`).
IDENTITY = web.RequestKey[Token]("identity")
AGENT_SESSION = web.AppKey[aiohttp.ClientSession]("agent_session")
# The client side of mutual TLS towards agents; None: agents are called over plain HTTP.
AGENT_TLS = web.AppKey[ssl.SSLContext | None]("agent_tls")
# Set when the replica stops. aiohttp waits for every request in flight before it closes
# (up to a minute), so requests that last as long as their client wants (event streams,
# followed logs, blocking queries) end with what they have once it is set: a stop, and so
# a rolling restart, does not wait them out.
STOPPING = web.AppKey[asyncio.Event]("stopping")

T = TypeVar("T")


async def unless_stopping(request: web.Request, aw: Awaitable[T]) -> tuple[bool, T | None]:
    """`(True, result of aw)`, or `(False, None)` once the replica stops first (`aw` is then
    cancelled)."""
    stopping = request.app[STOPPING]
    work = asyncio.ensure_future(aw)
    if stopping.is_set():
        work.cancel()
        return False, None
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not work.done():
            work.cancel()
    if not work.done() or work.cancelled():
        return False, None
    return True, work.result()


async def changed_or_stopping(request: web.Request, timeout: float) -> bool:
    """Wait for the next applied change here, or `timeout`; False once the replica stops."""
    done, _ = await unless_stopping(request, request.app[STORE].wait_changed(timeout))
    return done


def controllers_credential(app: web.Application) -> str:
    """What the controllers present to agents: the one kept in the state, else (until
    this replica has applied it) the one derived from this replica's cluster secret, which
    is what every replica proposes for the state to keep."""
    try:
        kept = app[STORE].read_local(lambda m: m.controller_credential)
    except NotApplied:
        kept = None
    return kept or app[TOKEN]


def controller_credential_hash(request: web.Request) -> str:
    """What agents pin to recognise the controllers' calls (a hash: no secret)."""
    return hashlib.sha256(controllers_credential(request.app).encode()).hexdigest()


def store_of(request: web.Request) -> Store:
    """The replicated state; writes through it act for the request's token."""
    token = request.get(IDENTITY)
    return ActingStore(request.app[STORE], token.accessor_id if token is not None else None)


def cluster_of(request: web.Request) -> Cluster:
    return request.app[CLUSTER]


def leader_of(request: web.Request) -> LeaderState | None:
    """The leader's memory for this term, or None when this replica does not lead."""
    return request.app[LEADERSHIP].current()


async def json_body(request: web.Request) -> dict[str, Any]:
    limit = request.app.get(MAX_BODY, MAX_BODY_BYTES)
    too_large = RequestError("payload_too_large", f"body over {limit} bytes", "body")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a chunked body that said nothing of its size
        raise too_large from None
    except ConnectionResetError:
        # The client went away mid-body (it was retrying against a restarted replica, say):
        # a client's failure, answered (if anyone listens) as such, not a server traceback.
        raise invalid("body", "the connection closed before the whole body arrived") from None
    if not raw:
        raise invalid("body", "a JSON object body is required")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # What orjson refuses but the json module reads (NaN, integers beyond 64 bits) keeps
        # the answer it always had: read here, refused by the field's own check.
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid("body", f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise invalid("body", "body must be a JSON object")
    return body


def only_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for k in body:
        if k not in allowed:
            raise invalid(k, "unknown field")


def is_stale(request: web.Request) -> bool:
    return request.query.get("stale", "false").lower() in ("1", "true", "yes")


def idem_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= C.MAX_IDEM_LEN:
        raise invalid("Idempotency-Key", f"must be 1-{C.MAX_IDEM_LEN} characters")
    return key


def dumps(data: object) -> bytes:
    """JSON as `json.dumps` gives it, by orjson (a job's answer in a fifth of the time);
    what orjson cannot encode (integers beyond 64 bits) falls back to the json module."""
    try:
        return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(data).encode()


def ok(data: Mapping[str, object], status: int = 200) -> web.Response:
    return web.Response(body=dumps(data), status=status, content_type="application/json",
                        charset="utf-8")
