"""The agent's link against small real HTTP servers standing in for replicas."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from hacontrol.agent.link import ControllerLink


async def serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/agent/sync", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def answer(term: int, leader: str, allocs: list[dict[str, Any]]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer t"
        return web.json_response({"term": term, "leader": leader, "index": 7, "acked": 0,
                                  "allocations": allocs})
    return handler


NODE = {"name": "n1", "cpu": 1.0, "memory_mb": 100, "address": ""}


def test_orders_from_a_lower_term_are_ignored() -> None:
    async def main() -> None:
        new, new_url = await serve(answer(5, "c2", [{"id": "a", "desired": "stop"}]))
        old, old_url = await serve(answer(3, "c1", [{"id": "a", "desired": "run"}]))
        try:
            async with ControllerLink([new_url, old_url], "t") as link:
                got = await link.sync(NODE, [], 0)
                assert got is not None and got.term == 5
                link.current = old_url  # e.g. a partitioned old leader answers next
                assert await link.sync(NODE, [], 0) is None
                assert link.highest_term == 5
                assert link.current == new_url  # moved on from the deposed leader
        finally:
            await new.cleanup()
            await old.cleanup()
    asyncio.run(main())


def test_follower_redirect_and_dead_replica() -> None:
    async def main() -> None:
        leader, leader_url = await serve(answer(2, "c2", []))

        async def follower(_: web.Request) -> web.Response:
            return web.json_response({"error": {"code": "not_leader", "leader": "c2",
                                                "leader_api": leader_url}}, status=503)
        fol, fol_url = await serve(follower)
        dead = "http://127.0.0.1:1"  # nothing listens on port 1
        try:
            async with ControllerLink([dead, fol_url], "t") as link:
                assert await link.sync(NODE, [], 0) is None  # dead: move on
                assert link.current == fol_url
                assert await link.sync(NODE, [], 0) is None  # follower: redirected
                assert link.current == leader_url
                got = await link.sync(NODE, [], 0)
                assert got is not None and got.leader == "c2" and got.index == 7
        finally:
            await leader.cleanup()
            await fol.cleanup()
    asyncio.run(main())
