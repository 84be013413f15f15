"""Wake-ups for code waiting on the log: long polls, the event stream, the leader loop."""

from __future__ import annotations

import asyncio


class ChangeFeed:
    """Wakes every waiter once per burst of applied entries.

    `notify` may be called from any thread (the Raft tick thread applies entries); a burst
    of writes costs the event loop one callback, not one per entry, and none at all while
    nobody waits: a follower applies every write of the cluster, and waking its event loop
    for each batch cost it about a sixth of its CPU under write load.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()
        self._pending = False
        # Changes notified (written by `notify`'s thread only) and the count the last fire
        # covered (event loop): a waiter that arrives after a change nobody was woken for
        # returns at once, as it would have with a wake-up on its way.
        self._seq = 0
        self._fired_seq = 0
        self._waiters = 0  # event loop only

    def notify(self) -> None:
        """Thread-safe: schedule one wake-up unless one is already on its way or nobody
        waits.

        Ordering (under the GIL): the change is counted before the waiters are; `wait`
        counts itself before it looks at the count of changes. So either this sees the
        waiter and wakes it, or the waiter sees the change and does not wait."""
        self._seq += 1
        if self._pending or not self._waiters:
            return
        self._pending = True
        self._loop.call_soon_threadsafe(self._fire)

    def notify_now(self) -> None:
        """Thread-safe, never coalesced (a local event must reach its readers)."""
        self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        self._fired_seq = self._seq
        self._pending = False
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return at the next change, or after `timeout` seconds."""
        self._waiters += 1
        try:
            if self._seq != self._fired_seq:
                self._fire()  # a change no waiter was woken for: every waiter goes now
                return
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), timeout)
            except TimeoutError:
                pass
        finally:
            self._waiters -= 1
