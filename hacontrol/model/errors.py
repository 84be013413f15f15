"""Failures a user can see, each with a stable code.

Raised by the model's parsers and the state machine's checks. The state machine never raises
to its caller: `apply` turns them into result values at its edge. The API maps the codes to HTTP
statuses in one place (`hacontrol/api/errors.py`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection(Exception):
    """A command that was refused as a whole; nothing of it was applied."""

    code: str
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.code}: {self.message}{where}"

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


def invalid(field: str, message: str) -> Rejection:
    return Rejection("invalid", message, field)


def not_found(what: str, field: str | None = None) -> Rejection:
    return Rejection("not_found", f"{what} not found", field)


def quota_exceeded(message: str, field: str | None = None) -> Rejection:
    return Rejection("quota_exceeded", message, field)


def conflict(message: str, field: str | None = None) -> Rejection:
    return Rejection("conflict", message, field)
