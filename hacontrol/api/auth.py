"""Bearer-token authentication for every API path except liveness."""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Middleware

from .errors import Handler, RequestError

# Probes must work for orchestrators that hold no token (compose healthchecks, load balancers).
OPEN_PATHS = frozenset({"/v1/health", "/v1/health/ready", "/", "/ui"})


def token_middleware(token: str) -> Middleware:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise RequestError("unauthorized", "missing bearer token", "Authorization")
        if not hmac.compare_digest(header[7:].strip().encode(), expected):
            raise RequestError("forbidden", "wrong token", "Authorization")
        return await handler(request)

    return check
