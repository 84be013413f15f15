"""Which certificate role may call which paths, when the API is served over TLS.

The agents' sync (`/v1/agent/...`) carries orders to processes: only a peer holding an
agent certificate from the cluster's CA may call it. Other paths take any client (the
token decides); their certificate, if sent, has been checked against the CA already.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from hacontrol.tls.roles import Role, peer_roles

from .errors import Handler, RequestError

ROLE_BY_PREFIX: tuple[tuple[str, Role], ...] = (("/v1/agent/", Role.AGENT),)


def peer_role_middleware() -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and transport.get_extra_info("ssl_object") is not None:
            for prefix, role in ROLE_BY_PREFIX:
                if request.path.startswith(prefix):
                    if role not in peer_roles(transport.get_extra_info("peercert")):
                        raise RequestError(
                            "forbidden", f"this path needs a client certificate of role "
                            f"{role.value} ({role.hostname})", "certificate")
        return await handler(request)

    return check
