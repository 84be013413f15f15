"""The agent's own HTTP API against hostile requests: ids that name paths, empty tokens,
huge tails, label values that would break the metrics format. Served on a real port by the
agent's server and called with aiohttp, as the controllers call it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hacontrol.agent import logs
from hacontrol.agent.credentials import ControllerKey
from hacontrol.agent.http import build_agent_app
from hacontrol.agent.httpserver import Handler, serve
from hacontrol.agent.supervisor import Supervisor
from hacontrol.model.text import prometheus_label

TOKEN = "agent-secret"


@contextlib.asynccontextmanager
async def served(app: Handler) -> AsyncIterator[str]:
    """The app on a free loopback port: its base URL while the block runs."""
    server = await serve(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def key_for(sup: Supervisor, token: str = TOKEN) -> ControllerKey:
    """The agent's pinned controllers' credential, as after its first sync."""
    sup.data_dir.mkdir(parents=True, exist_ok=True)
    key = ControllerKey(sup.data_dir)
    key.pin(hashlib.sha256(token.encode()).hexdigest())
    return key


def get(sup: Supervisor, path: str, token: str = TOKEN,
        ) -> tuple[int, bytes, float]:
    """(status, body, worst event-loop stall in seconds while the request ran)."""
    async def go() -> tuple[int, bytes, float]:
        worst = 0.0
        done = False

        async def ticker() -> None:
            nonlocal worst
            while not done:
                t = time.monotonic()
                await asyncio.sleep(0.01)
                worst = max(worst, time.monotonic() - t - 0.01)

        async with served(build_agent_app(sup, key_for(sup).accepts)) as url, \
                aiohttp.ClientSession() as client:
            tick = asyncio.create_task(ticker())
            async with client.get(url + path,
                                  headers={"Authorization": f"Bearer {token}"}) as resp:
                body = await resp.read()
            done = True
            await tick
            return resp.status, body, worst
    return asyncio.run(go())


@pytest.fixture
def sup(tmp_path: Path) -> Supervisor:
    return Supervisor(tmp_path / "agent", lambda _ev: None, isolation="rlimit")


@pytest.mark.parametrize("token", ["", "   \n", TOKEN])
def test_nothing_is_accepted_before_the_controllers_credential_is_pinned(
        sup: Supervisor, token: str) -> None:
    sup.data_dir.mkdir(parents=True, exist_ok=True)
    assert not ControllerKey(sup.data_dir).accepts(token)


def test_bearer_with_nothing_after_it_is_refused(sup: Supervisor) -> None:
    async def go() -> int:
        async with served(build_agent_app(sup, key_for(sup).accepts)) as url, \
                aiohttp.ClientSession() as client, \
                client.get(url + "/metrics", headers={"Authorization": "Bearer "}) as resp:
            return resp.status
    assert asyncio.run(go()) in (401, 403)


@pytest.mark.parametrize("alloc_id", ["..", "%2E%2E", "..%2F..", "web%0A-000001"])
def test_an_allocation_id_that_names_another_path_is_refused(sup: Supervisor,
                                                             alloc_id: str) -> None:
    # allocs/.. is the data dir itself: its "stdout.log" must stay unreadable
    (sup.data_dir / "allocs").mkdir(parents=True)
    (sup.data_dir / "stdout.log").write_text("agent secret\n")
    status, body, _ = get(sup, f"/v1/allocations/{alloc_id}/logs")
    assert status in (404, 422), body
    assert b"secret" not in body
    with pytest.raises(ValueError):
        sup.alloc_dir("..")


def test_a_huge_tail_of_a_big_log_answers_quickly_capped_and_off_the_loop(
        sup: Supervisor) -> None:
    d = sup.alloc_dir("web-000001")
    d.mkdir(parents=True)
    line = b"x" * 99 + b"\n"
    with open(d / "stdout.log", "wb") as f:
        for _ in range(30):
            f.write(line * 10_000)  # 1 MB
    started = time.monotonic()
    status, body, stall = get(sup, "/v1/allocations/web-000001/logs?tail=1000000000")
    assert status == 200
    assert time.monotonic() - started < 10.0
    assert logs.MAX_TAIL_BYTES - len(line) < len(body) <= logs.MAX_TAIL_BYTES
    assert body.startswith(line) and body.endswith(line)
    assert stall < 2.0  # the old tail took 39 s for 30 MB, all of it on the loop


def test_tail_reads_into_the_rotated_file_within_the_cap(tmp_path: Path) -> None:
    (tmp_path / "stdout.log.1").write_bytes(b"a\nb\nc\n")
    (tmp_path / "stdout.log").write_bytes(b"d\ne\n")
    assert logs.read_log(tmp_path, "stdout", 3) == b"c\nd\ne\n"
    assert logs.read_log(tmp_path, "stdout", 10, max_bytes=6) == b"c\nd\ne\n"
    # a line cut by the cap is left out, not shown by its end
    assert logs.read_log(tmp_path, "stdout", 10, max_bytes=5) == b"d\ne\n"
    assert logs.read_log(tmp_path, "stdout", 10, max_bytes=3) == b"e\n"


def test_metrics_label_values_are_escaped() -> None:
    assert prometheus_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
