"""Wake-ups for code waiting on the log: long polls, the event stream, the leader loop."""

from __future__ import annotations

import asyncio


class ChangeFeed:
    """Wakes every waiter once per burst of applied entries.

    `notify` may be called from any thread (the Raft tick thread applies entries); a burst
    of writes costs the event loop one callback, not one per entry.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()
        self._pending = False

    def notify(self) -> None:
        """Thread-safe: schedule one wake-up unless one is already on its way."""
        if self._pending:
            return
        self._pending = True
        self._loop.call_soon_threadsafe(self._fire)

    def notify_now(self) -> None:
        """Thread-safe, never coalesced (a local event must reach its readers)."""
        self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self._pending = False
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return at the next change, or after `timeout` seconds."""
        ev = self._changed
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
