"""The one place where failures become HTTP answers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# Rejection codes from the state machine, and API-level codes, to HTTP statuses.
STATUS_BY_CODE: dict[str, int] = {
    "invalid": 422,
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "quota_exceeded": 409,
    "payload_too_large": 413,
    "not_leader": 503,
    "unavailable": 503,
    "internal": 500,
}


class ApiError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None,
                 status: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status or STATUS_BY_CODE.get(code, 400)
        self.extra = extra

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message,
                                "field": self.field, **self.extra}
        headers = {}
        if self.status == 503:
            headers["Retry-After"] = "1"
        return web.json_response({"error": body}, status=self.status, headers=headers,
                                 dumps=json.dumps)


def from_rejection(err: dict[str, Any]) -> ApiError:
    return ApiError(err.get("code", "internal"), err.get("message", ""), err.get("field"))
