"""`hacontrol server --join` when the cluster redirects the add to the joiner itself."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from hacontrol.join import JoinClient, JoinRefused
from hacontrol.raft.membership import MemberInfo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _join_through(leader_api: str, me: MemberInfo) -> dict[str, object]:
    """A cluster of one replica that names `leader_api` as the leader of every add."""
    async def add(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(leader_api + request.path_qs)

    app = web.Application()
    app.router.add_post("/v1/operator/raft/peers", add)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        client = JoinClient([f"http://127.0.0.1:{port}"], "token", None)
        return await client.join(me, deadline_s=5.0)
    finally:
        await runner.cleanup()


def test_a_joiner_elected_leader_is_joined() -> None:
    """Seen in a chaos run (membership nemesis): the add committed, the leader was killed,
    and the new replica won the election; its retried add was redirected to itself and it
    gave up ("join refused ... not a member") while being the cluster's leader."""
    me = MemberInfo("c5", "127.0.0.9:7000", "http://127.0.0.9:8000")
    answer = asyncio.run(_join_through(me.api, me))
    assert answer["leader"] is True and answer["index_lag"] == 0
    assert answer["member"] == me.to_dict()


def test_a_redirect_outside_the_cluster_is_still_refused() -> None:
    me = MemberInfo("c5", "127.0.0.9:7000", "http://127.0.0.9:8000")
    with pytest.raises(JoinRefused, match="not a member"):
        asyncio.run(_join_through("http://198.51.100.7:8000", me))
