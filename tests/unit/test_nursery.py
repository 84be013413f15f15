"""The agent's owned task set: nothing runs unwatched, no exception is lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hacontrol.agent.nursery import Nursery, cancel_and_wait


async def _fail() -> None:
    raise RuntimeError("boom")


def test_a_failure_nobody_awaits_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        n = Nursery("test")
        task = n.start(_fail(), name="failing")
        await asyncio.wait({task})
        assert len(n) == 0

    with caplog.at_level(logging.ERROR, logger="hacontrol.agent.nursery"):
        asyncio.run(main())
    (rec,) = caplog.records
    assert "failing" in rec.getMessage() and rec.exc_info is not None
    assert isinstance(rec.exc_info[1], RuntimeError)


def test_aclose_cancels_and_waits_for_everything() -> None:
    ended: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(name)

    async def main() -> None:
        n = Nursery("test")
        tasks = [n.start(forever(x)) for x in "abc"]
        await asyncio.sleep(0)
        await n.aclose()
        assert all(t.cancelled() for t in tasks) and len(n) == 0

    asyncio.run(main())
    assert sorted(ended) == ["a", "b", "c"]


def test_cancel_and_wait_raises_what_the_task_raised() -> None:
    async def main() -> None:
        task = asyncio.get_running_loop().create_task(_fail())
        await asyncio.wait({task})
        with pytest.raises(RuntimeError, match="boom"):
            await cancel_and_wait(task)
        await cancel_and_wait(None)

    asyncio.run(main())


def test_cancel_and_wait_does_not_swallow_the_callers_cancellation() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def slow_to_die() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await release.wait()

        inner = asyncio.get_running_loop().create_task(slow_to_die())
        await asyncio.sleep(0)
        outer = asyncio.get_running_loop().create_task(cancel_and_wait(inner))
        await asyncio.sleep(0)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        release.set()
        await asyncio.wait({inner})

    asyncio.run(main())
