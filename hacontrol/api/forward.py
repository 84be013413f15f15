"""Reads only the leader can answer, asked of the leader on the caller's behalf.

Some answers live in the leader's memory alone (an allocation's metric history). A browser
may ask only the origin that served its page, so a replica that does not lead forwards such
a GET to the leader with the caller's own `Authorization` (the leader judges it again, as
for any request) and passes the answer on. A forwarded request carries `FORWARDED`, and a
replica never forwards one again, so two replicas that each believe the other leads cannot
bounce a request between them.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web

from hacontrol.tls.roles import Role

from .request import AGENT_SESSION, AGENT_TLS

FORWARDED = "Hacontrol-Forwarded"
TIMEOUT_S = 1.5


async def from_leader(request: web.Request, leader_api: str | None) -> dict[str, Any] | None:
    """The leader's JSON answer to this same GET, or None when it cannot be had (no leader
    known, already forwarded, a plain-HTTP address with TLS on, no answer in time, or any
    answer but a 200)."""
    if not leader_api or request.headers.get(FORWARDED):
        return None
    tls = request.app[AGENT_TLS]
    # With TLS on, the leader is reached only over https and only when its certificate says
    # it is a controller replica: the caller's token is never sent anywhere else.
    if tls is not None and not leader_api.startswith("https://"):
        return None
    headers = {FORWARDED: "1"}
    auth = request.headers.get("Authorization")
    if auth:
        headers["Authorization"] = auth
    try:
        async with request.app[AGENT_SESSION].get(
                f"{leader_api.rstrip('/')}{request.rel_url}", headers=headers,
                server_hostname=Role.SERVER.hostname if tls is not None else None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
            if resp.status != 200:
                return None
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        del exc
        return None
    return body if isinstance(body, dict) else None
