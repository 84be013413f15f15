"""The agent's light wake-up flags: the asyncio.Event behaviour the runners rely on."""

from __future__ import annotations

import asyncio
import time

import pytest

from hacontrol.agent.wakeup import Flag, first_of


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_waiters_wake_on_set_and_a_set_flag_does_not_block() -> None:
    async def main() -> None:
        f = Flag()
        waiters = [asyncio.ensure_future(f.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        f.set()
        await asyncio.wait_for(asyncio.gather(*waiters), 1)
        await asyncio.wait_for(f.wait(), 1)  # set: returns at once
        f.clear()
        again = asyncio.ensure_future(f.wait())
        for _ in range(3):  # nothing but set() can wake it: a few turns of the loop show it
            await asyncio.sleep(0)
        assert not again.done(), "a cleared flag must block again"
        f.set()
        await asyncio.wait_for(again, 1)
    run(main())


def test_one_waiter_cancelled_leaves_the_others_waiting() -> None:
    async def main() -> None:
        f = Flag()
        a = asyncio.ensure_future(f.wait())
        b = asyncio.ensure_future(f.wait())
        await asyncio.sleep(0)
        a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await a
        assert not b.done()
        f.set()
        await asyncio.wait_for(b, 1)
    run(main())


def test_first_of_returns_on_the_first_future_and_cancels_none() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        x: asyncio.Future[int] = loop.create_future()
        y: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.01, y.set_result, 2)
        await asyncio.wait_for(first_of(x, y), 1)
        assert y.done() and not x.done() and not x.cancelled()
        # the callbacks it added are gone: x holds none once the wait is over
        assert not x._callbacks  # type: ignore[attr-defined]
    run(main())


def test_first_of_times_out_and_cancelling_it_spares_the_futures() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        x: asyncio.Future[int] = loop.create_future()
        t0 = time.monotonic()
        await first_of(x, timeout=0.05)
        assert time.monotonic() - t0 >= 0.04 and not x.done()
        waiting = asyncio.ensure_future(first_of(x))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert not x.cancelled()
    run(main())
