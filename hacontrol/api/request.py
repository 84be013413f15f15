"""Request helpers shared by every route module: what the app holds, and the parts of a
request (body, flags, headers) parsed the same way everywhere."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from hacontrol.model.errors import invalid
from hacontrol.scheduler.leader_state import Leadership, LeaderState
from hacontrol.state import commands as C

from .backend import Cluster, Store
from .errors import RequestError

MAX_BODY_BYTES = 1024 * 1024

STORE = web.AppKey[Store]("store")
CLUSTER = web.AppKey[Cluster]("cluster")
LEADERSHIP = web.AppKey[Leadership]("leadership")
TOKEN = web.AppKey[str]("token")
AGENT_SESSION = web.AppKey[aiohttp.ClientSession]("agent_session")


def store_of(request: web.Request) -> Store:
    return request.app[STORE]


def cluster_of(request: web.Request) -> Cluster:
    return request.app[CLUSTER]


def leader_of(request: web.Request) -> LeaderState | None:
    """The leader's memory for this term, or None when this replica does not lead."""
    return request.app[LEADERSHIP].current()


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise RequestError("payload_too_large", f"body over {MAX_BODY_BYTES} bytes", "body")
    raw = await request.read()
    if not raw:
        raise invalid("body", "a JSON object body is required")
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


def ok(data: Mapping[str, object], status: int = 200) -> web.Response:
    return web.json_response(data, status=status)
