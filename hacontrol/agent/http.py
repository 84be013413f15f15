"""The agent's own small HTTP API, used by the controllers (never by users directly):
health, Prometheus metrics, allocation logs and allocation controls. Token auth as everywhere;
served over TLS, every path but the health check also needs a controller's certificate.

It sees the agent only through :class:`LocalAllocations` (the supervisor satisfies it), so
this module and :mod:`hacontrol.agent.main` do not import each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from hacontrol.agent.spec import AllocationEvent
from hacontrol.model import protocol
from hacontrol.model.checks import ALLOC_ID_RE
from hacontrol.observe.metrics import CONTENT_TYPE, allocation_families, new_registry
from hacontrol.tls.roles import Role, peer_roles

from .metrics import AllocationMetrics
from .report import event_report, metrics_report


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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ACTIONS = ("pause", "resume", "restart", "signal")


def _err(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "field": field}},
                             status=status)


def build_agent_app(local: LocalAllocations | None,
                    accepts: Callable[[str], bool]) -> web.Application:
    """The app; ``local`` None answers 503 to everything but the health check.
    ``accepts`` says whether a bearer secret is the controllers' credential."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/v1/health":
            return await handler(request)
        transport = request.transport
        if transport is not None and transport.get_extra_info("ssl_object") is not None:
            if Role.SERVER not in peer_roles(transport.get_extra_info("peercert")):
                return _err(403, "forbidden", "only a controller's certificate "
                            f"({Role.SERVER.hostname}) may call this agent", "certificate")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _err(401, "unauthorized", "missing bearer token", "Authorization")
        if not accepts(header[7:].strip()):
            return _err(403, "forbidden", "wrong token", "Authorization")
        if "id" in request.match_info and not ALLOC_ID_RE.fullmatch(request.match_info["id"]):
            # The id becomes a directory name under the data dir: nothing else may pass.
            return _err(422, "invalid", "must be an allocation id", "id")
        return await handler(request)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    def sup() -> LocalAllocations:
        if local is None:
            raise web.HTTPServiceUnavailable()
        return local

    async def action(request: web.Request) -> web.Response:
        alloc_id, what = request.match_info["id"], request.match_info["action"]
        s = sup()
        if what not in ACTIONS:
            return _err(404, "not_found", f"unknown action {what!r}", "action")
        if not s.active(alloc_id):
            return _err(404, "not_found", f"allocation {alloc_id!r} does not run here", "id")
        try:
            ev: AllocationEvent | None
            if what == "signal":
                body = await request.json()
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
        return web.json_response({"allocation": event_report(ev) if ev is not None else None,
                                  "action": what})

    async def logs(request: web.Request) -> web.StreamResponse:
        alloc_id = request.match_info["id"]
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
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        # Disk reads off the event loop: a slow read must not delay the next heartbeat.
        data = await asyncio.to_thread(s.read_log, alloc_id, stream, tail)
        await resp.write(data)
        if follow:
            live = s.alloc_dir(alloc_id) / f"{stream}.log"
            offset = live.stat().st_size if live.exists() else 0
            async for chunk in s.follow_log(alloc_id, stream, offset):
                await resp.write(chunk)
        await resp.write_eof()
        return resp

    registry = new_registry()
    registry.register(_AgentCollector(sup))

    async def metrics(_: web.Request) -> web.Response:
        sup()
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE})

    async def say_protocol(_: web.Request, response: web.StreamResponse) -> None:
        # Every answer names the agent's protocol (model/protocol.py); version 1 did not.
        if protocol.versioned():
            response.headers[protocol.HEADER] = str(protocol.spoken())

    app = web.Application(middlewares=[auth])
    app.on_response_prepare.append(say_protocol)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/allocations/{id}/{action}", action)
    app.router.add_get("/v1/allocations/{id}/logs", logs)
    return app


class _AgentCollector:
    """The agent's gauges, read from its supervisor at scrape time (the same allocation
    series as the controllers', labelled by allocation only: the agent knows no jobs)."""

    def __init__(self, local: Callable[[], LocalAllocations]) -> None:
        self.local = local

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.local()
        yield GaugeMetricFamily("hacontrol_agent_allocations",
                                "allocations this agent supervises",
                                value=sum(1 for a in s.allocations() if s.active(a)))
        try:
            samples = s.metrics()
        except Exception:  # a sampler failure must not fail the scrape
            samples = {}
        yield from allocation_families(
            (({"allocation": alloc_id}, metrics_report(m))
             for alloc_id, m in sorted(samples.items())), ("allocation",))
