"""The tick thread's wake-up: a byte in a pipe that its poll watches.

pysyncobj's tick thread sleeps in `poll` until a socket is ready or its tick period
(`RaftTuning.auto_tick_period`) passes. A proposal, a read or a finished sync from another
thread writes a byte here instead, so the thread is up within microseconds and finds it in
its next tick.
"""

from __future__ import annotations

import os
from typing import Any


class WakePipe:
    def __init__(self) -> None:
        self._r: int | None = None
        self._w: int | None = None
        self._pending = False

    def attach(self, poller: Any) -> None:
        """Tick thread: watch the pipe from now on (pysyncobj's `Poller`)."""
        from pysyncobj.poller import POLL_EVENT_TYPE

        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._r, self._w = r, w
        poller.subscribe(r, self._readable, POLL_EVENT_TYPE.READ)

    def _readable(self, _descr: int, _events: int) -> None:
        # Drain before clearing the flag. Clearing first lets a waker set the flag and
        # write a byte that this drain then swallows, leaving the flag set with nothing in
        # the pipe: every later wake-up would wait for the poll timeout. Whatever a waker
        # that still sees the flag set here queued is there for the coming tick to find.
        try:
            while os.read(self._r, 4096):  # type: ignore[arg-type]
                pass
        except OSError:
            pass  # BlockingIOError: drained
        self._pending = False

    def wake(self) -> None:
        """Any thread: end the tick thread's poll (once, however many call it meanwhile)."""
        if self._pending or self._w is None:
            return
        self._pending = True
        try:
            os.write(self._w, b"w")
        except OSError:
            pass  # BlockingIOError: the pipe is full, a wake-up is already pending

    def close(self) -> None:
        for fd in (self._r, self._w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._r = self._w = None
