"""The agent's sync waits for starts in flight: a restart's "starting" and "running" go in
one sync, and the wait ends as soon as nothing is starting (or at its limit)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hacontrol.agent.main import Agent
from hacontrol.agent.spec import AllocationEvent
from hacontrol.model.states import AllocState


def agent(tmp_path: Path) -> Agent:
    return Agent("n1", tmp_path / "data", ["http://127.0.0.1:1"], "token", 1.0, 64, "")


def event(alloc_id: str, state: AllocState) -> AllocationEvent:
    return AllocationEvent(alloc_id, state, 42, 1, None, None, 0.0)


def test_settle_ends_once_the_start_reports_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = agent(tmp_path)
        a._on_event(event("a1", AllocState.STARTING))
        settle = asyncio.ensure_future(a._settle(60.0))
        await asyncio.sleep(0)
        assert not settle.done()
        a._on_event(event("a1", AllocState.RUNNING))
        await asyncio.wait_for(settle, 10.0)  # long before its 60 s limit
        assert a.reports["a1"]["state"] == AllocState.RUNNING  # one report for both

    asyncio.run(scenario())


def test_settle_gives_up_at_its_limit_and_without_starts_does_not_wait(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        a = agent(tmp_path)
        await asyncio.wait_for(a._settle(60.0), 10.0)  # nothing starting
        a._on_event(event("a1", AllocState.STARTING))
        await asyncio.wait_for(a._settle(0.01), 10.0)
        assert a.reports["a1"]["state"] == AllocState.STARTING  # sent as it is

    asyncio.run(scenario())
