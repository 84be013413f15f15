"""A real aiohttp server on 127.0.0.1, run on its own thread, for testing the synchronous
CLI client against real sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextmanager
def serve_in_thread(handle: Handler, sites: int = 1
                    ) -> Iterator[tuple[asyncio.AbstractEventLoop, list[int]]]:
    """Serve every path with `handle` on `sites` free ports; yields (loop, ports)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, shutdown_timeout=0.5)

    async def start() -> list[int]:
        await runner.setup()
        for _ in range(sites):
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        return [int(a[1]) for a in runner.addresses]

    try:
        ports = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield loop, ports
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
