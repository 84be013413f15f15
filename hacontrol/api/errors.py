"""The one place where failures become HTTP answers.

Handlers and the controller raise the failure they mean (`Rejection` for a refused request
or command, the domain errors of `hacontrol/controller/errors.py` for what the log or the
replica could not do, `RequestError` for what is wrong with the HTTP request itself);
`error_middleware` answers each with its status code and JSON body, here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hacontrol.controller.errors import (
    AgentUnreachable,
    CommandFailed,
    MembershipConflict,
    NoQuorum,
    NotApplied,
    NotLeader,
    OutcomeUnknown,
    Rejection,
    Unsupported,
)

# Error codes to HTTP statuses: the state machine's rejection codes, then the API's own.
STATUS_BY_CODE: dict[str, int] = {
    "invalid": 422,
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "quota_exceeded": 409,
    "limit_exceeded": 409,
    "unsupported_by_cluster": 409,  # a command type some replica does not know yet
    "payload_too_large": 413,
    "not_leader": 503,
    "unavailable": 503,
    "internal": 500,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestError(Exception):
    """Something wrong with the HTTP request itself: its token, its size, its route."""

    def __init__(self, code: str, message: str, field: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status


@dataclass(frozen=True)
class Failure:
    """An error answer: `{"error": {"code", "message", "field", **extra}}`."""

    code: str
    message: str
    field: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: int | None = None  # None: by code

    def response(self) -> web.Response:
        status = self.status or STATUS_BY_CODE.get(self.code, 400)
        body: dict[str, Any] = {"code": self.code, "message": self.message,
                                "field": self.field, **self.extra}
        headers = {"Retry-After": "1"} if status == 503 else {}
        return web.json_response({"error": body}, status=status, headers=headers,
                                 dumps=json.dumps)


def failure_of(exc: Exception) -> Failure | None:
    """The answer to each failure a user can see; None for anything else (a bug)."""
    match exc:
        case Rejection():
            return Failure(exc.code, exc.message, exc.field)
        case RequestError():
            return Failure(exc.code, exc.message, exc.field, status=exc.status)
        case NotApplied():
            return Failure("unavailable", f"not applied: {exc.reason}",
                           extra={"outcome": "not_applied", "leader": exc.leader})
        case OutcomeUnknown():
            return Failure("unavailable", f"outcome unknown: {exc.reason}; retry with the same "
                           "Idempotency-Key", extra={"outcome": "unknown",
                                                     "idempotency_key": exc.idempotency_key})
        case CommandFailed():
            return Failure("internal", exc.reason)
        case NoQuorum():
            return Failure("unavailable", f"no quorum for a linearizable read: {exc.reason}; "
                           "use ?stale=true for a local read", extra={"outcome": "not_applied"})
        case Unsupported():
            return Failure("unsupported_by_cluster", exc.reason,
                           extra={"outcome": "not_applied"})
        case NotLeader():
            return Failure("not_leader", exc.reason,
                           extra={"leader": exc.leader, "leader_api": exc.leader_api})
        case MembershipConflict():
            return Failure("conflict", exc.reason, extra={"reason": exc.code, **exc.detail})
        case AgentUnreachable():
            where = f"agent at {exc.address}" if exc.address else "agent"
            return Failure("unavailable", f"{where} unreachable: {exc.reason}",
                           extra={"outcome": "not_applied"})
        case web.HTTPException() if exc.status >= 400:
            code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
                exc.status, "bad_request")
            return Failure(code, exc.reason or "error", status=exc.status)
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        failure = failure_of(exc)
        if failure is None:
            raise
        return failure.response()
