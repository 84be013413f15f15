"""The agent's own small HTTP API, used by the controllers (never by users directly):
health, Prometheus metrics, allocation logs and allocation controls. Token auth as everywhere;
served over TLS, every path but the health check also needs a controller's certificate.

It sees the agent only through :class:`LocalAllocations` (the supervisor satisfies it), so
this module and :mod:`hacontrol.agent.main` do not import each other.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from hacontrol.agent.spec import AllocationEvent
from hacontrol.model import protocol
from hacontrol.model.checks import ALLOC_ID_RE
from hacontrol.tls.roles import Role, peer_roles

from .httpserver import Handler, Request, Response, json_response
from .metrics import AllocationMetrics
from .report import event_report

if TYPE_CHECKING:
    from .exposition import Exposition


class LocalAllocations(Protocol):
    """What the HTTP API needs of the allocations running on this node."""

    def allocations(self) -> dict[str, AllocationEvent]: ...
    def active(self, alloc_id: str) -> bool: ...
    def alloc_dir(self, alloc_id: str) -> Path: ...
    def metrics(self) -> dict[str, AllocationMetrics]: ...
    def read_log(self, alloc_id: str, stream: str, tail_lines: int) -> bytes: ...
    def follow_log(
        self, alloc_id: str, stream: str, from_offset: int = 0
    ) -> AsyncIterator[bytes]: ...
    def signal(self, alloc_id: str, name: str) -> bool | None: ...
    async def pause(self, alloc_id: str) -> AllocationEvent | None: ...
    async def resume(self, alloc_id: str) -> AllocationEvent | None: ...
    async def restart(self, alloc_id: str) -> AllocationEvent | None: ...


ACTIONS = ("pause", "resume", "restart", "signal")


def _err(status: int, code: str, message: str, field: str | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message, "field": field}},
                         status)


class _Unavailable(Exception):
    """No supervisor yet: every route but the health check answers 503."""


def build_agent_app(local: LocalAllocations | None,
                    accepts: Callable[[str], bool]) -> Handler:
    """The handler of every request; ``local`` None answers 503 to everything but the
    health check. ``accepts`` says whether a bearer secret is the controllers' credential."""

    def sup() -> LocalAllocations:
        if local is None:
            raise _Unavailable()
        return local

    async def action(request: Request, alloc_id: str, what: str) -> Response:
        s = sup()
        if what not in ACTIONS:
            return _err(404, "not_found", f"unknown action {what!r}", "action")
        if not s.active(alloc_id):
            return _err(404, "not_found", f"allocation {alloc_id!r} does not run here", "id")
        try:
            ev: AllocationEvent | None
            if what == "signal":
                body = request.json()
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                s.signal(alloc_id, str(body.get("signal", "")))
                ev = s.allocations().get(alloc_id)
            elif what == "pause":
                ev = await s.pause(alloc_id)
            elif what == "resume":
                ev = await s.resume(alloc_id)
            else:
                ev = await s.restart(alloc_id)
        except ValueError as exc:
            return _err(422, "invalid", str(exc), "signal" if what == "signal" else None)
        except RuntimeError as exc:  # no live process to act on
            return _err(409, "conflict", str(exc), "id")
        return json_response({"allocation": event_report(ev) if ev is not None else None,
                              "action": what})

    async def logs(request: Request, alloc_id: str) -> Response:
        s = sup()
        stream = request.query.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            return _err(422, "invalid", "must be stdout or stderr", "stream")
        try:
            tail = int(request.query.get("tail", "100"))
        except ValueError:
            return _err(422, "invalid", "must be an integer", "tail")
        follow = request.query.get("follow", "false").lower() in ("1", "true", "yes")
        if not s.alloc_dir(alloc_id).exists():
            return _err(404, "not_found", f"no logs for {alloc_id!r} here", "id")
        # Disk reads off the event loop: a slow read must not delay the next heartbeat.
        data = await asyncio.to_thread(s.read_log, alloc_id, stream, tail)
        resp = Response(200, data, {"Content-Type": "text/plain; charset=utf-8"})
        if follow:
            live = s.alloc_dir(alloc_id) / f"{stream}.log"
            offset = live.stat().st_size if live.exists() else 0
            resp.stream = s.follow_log(alloc_id, stream, offset)
        return resp

    made: list[Exposition] = []

    async def metrics() -> Response:
        s = sup()
        if not made:
            # prometheus_client is loaded at the first scrape, not before: 1.6 MB of the
            # agent's memory that an agent nobody scrapes never holds. Imported off the
            # loop (60 ms).
            module = await asyncio.to_thread(importlib.import_module,
                                             "hacontrol.agent.exposition")
            exposition: type[Exposition] = module.Exposition
            if not made:
                made.append(exposition(s))
        body, content_type = made[0].render()
        return Response(200, body, {"Content-Type": content_type})

    def refused(request: Request) -> Response | None:
        """Why the caller may not call anything but the health check; None if it may."""
        if request.tls and Role.SERVER not in peer_roles(request.peercert):
            return _err(403, "forbidden", "only a controller's certificate "
                        f"({Role.SERVER.hostname}) may call this agent", "certificate")
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return _err(401, "unauthorized", "missing bearer token", "Authorization")
        if not accepts(header[7:].strip()):
            return _err(403, "forbidden", "wrong token", "Authorization")
        return None

    async def route(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        path = request.segments
        if path == ("v1", "health"):
            if method != "GET":
                return _err(405, "method_not_allowed", "GET only", "method")
            return json_response({"status": "ok"})
        no = refused(request)
        if no is not None:
            return no
        if len(path) == 4 and path[:2] == ("v1", "allocations"):
            if not ALLOC_ID_RE.fullmatch(path[2]):
                # The id becomes a directory name under the data dir: nothing else may pass.
                return _err(422, "invalid", "must be an allocation id", "id")
            if method == "POST":
                return await action(request, path[2], path[3])
            if path[3] == "logs" and method == "GET":
                return await logs(request, path[2])
            return _err(405, "method_not_allowed", f"{request.method} not allowed here",
                        "method")
        if path == ("metrics",):
            if method != "GET":
                return _err(405, "method_not_allowed", "GET only", "method")
            return await metrics()
        return _err(404, "not_found", f"no route {request.path}", "path")

    async def handle(request: Request) -> Response:
        try:
            response = await route(request)
        except _Unavailable:
            response = _err(503, "unavailable", "the agent is not ready", None)
        # Every answer names the agent's protocol (model/protocol.py); version 1 did not.
        if protocol.versioned():
            response.headers[protocol.HEADER] = str(protocol.spoken())
        return response

    return handle
