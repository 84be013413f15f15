"""The change feed: waiters woken by changes applied on another thread, and the event loop
left alone while nobody waits."""

from __future__ import annotations

import asyncio
import random
import threading
import time

from hacontrol.controller.changes import ChangeFeed


def test_changes_with_nobody_waiting_do_not_wake_the_loop() -> None:
    async def go() -> None:
        feed = ChangeFeed(asyncio.get_running_loop())
        fired: list[float] = []
        real = feed._fire

        def counting() -> None:
            fired.append(time.monotonic())
            real()

        feed._fire = counting  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        behind = loop.create_future()

        def burst() -> None:
            for _ in range(1000):
                feed.notify()
            # Queued after anything the burst scheduled: once it has run, so has that.
            loop.call_soon_threadsafe(behind.set_result, None)

        notifier = threading.Thread(target=burst)
        notifier.start()
        await behind
        await asyncio.to_thread(notifier.join)
        assert fired == []
        # ... but a waiter that comes after them is not kept waiting for the next one.
        started = time.monotonic()
        await feed.wait(10.0)
        assert time.monotonic() - started < 1.0 and len(fired) == 1
        # Once told, it waits for a new change.
        started = time.monotonic()
        await feed.wait(0.2)
        assert time.monotonic() - started >= 0.19

    asyncio.run(go())


def test_every_change_after_a_wait_began_ends_it() -> None:
    """A thread notifies at random moments around each wait's start (before the waiter
    counts itself, while it does, after): no wait may sleep through a change that came
    after it began, whatever the interleaving."""
    rounds = 300
    rng = random.Random(7)

    async def go() -> None:
        feed = ChangeFeed(asyncio.get_running_loop())
        go_ahead = [threading.Event() for _ in range(rounds)]

        def notifier() -> None:
            for i in range(rounds):
                go_ahead[i].wait(10)
                time.sleep(rng.choice([0, 0, 1e-5, 1e-4, 1e-3]))
                feed.notify()

        t = threading.Thread(target=notifier)
        t.start()
        try:
            for i in range(rounds):
                go_ahead[i].set()
                started = time.monotonic()
                await feed.wait(5.0)
                assert time.monotonic() - started < 2.0, f"round {i} slept through a change"
        finally:
            await asyncio.to_thread(t.join, 10)

    asyncio.run(go())


def test_local_events_always_wake_the_waiters() -> None:
    async def go() -> None:
        feed = ChangeFeed(asyncio.get_running_loop())
        waiters = [asyncio.create_task(feed.wait(10.0)) for _ in range(3)]
        while feed._waiters < 3:  # each task runs up to its wait in one loop turn
            await asyncio.sleep(0)
        started = time.monotonic()
        threading.Thread(target=feed.notify_now).start()
        await asyncio.gather(*waiters)
        assert time.monotonic() - started < 1.0

    asyncio.run(go())
