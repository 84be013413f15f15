"""Bearer-token authentication for every API path except liveness."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import ApiError

# Probes must work for orchestrators that hold no token (compose healthchecks, load balancers).
OPEN_PATHS = frozenset({"/v1/health", "/v1/health/ready", "/", "/ui"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_middleware(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise ApiError("unauthorized", "missing bearer token", "Authorization")
        if not hmac.compare_digest(header[7:].strip().encode(), expected):
            raise ApiError("forbidden", "wrong token", "Authorization")
        return await handler(request)

    return check


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        return err.response()
    except web.HTTPException as exc:
        if exc.status >= 400:
            code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
                exc.status, "bad_request")
            return ApiError(code, exc.reason or "error", status=exc.status).response()
        raise
