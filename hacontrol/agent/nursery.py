"""An owned set of asyncio tasks: nothing the agent starts runs unwatched.

Like trio's nursery or ``asyncio.TaskGroup``, but usable from objects whose
lifetime is not one ``async with`` block (the supervisor lives as long as its
owner calls it). Every task started here is either awaited by whoever needs
its result or cancelled and awaited by :meth:`Nursery.aclose`; a task that
fails while nobody awaits it is logged at once with its traceback, never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Nursery:
    def __init__(self, name: str) -> None:
        self.name = name
        self._running: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` as a task owned by this nursery."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._running.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # also marks it retrieved, so asyncio does not warn later
        if exc is not None:
            log.error("%s: task %s failed", self.name, task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._running)

    async def aclose(self) -> None:
        """Cancel every task still running and wait until all have ended."""
        while self._running:
            pending = list(self._running)
            for task in pending:
                task.cancel()
            # asyncio.wait, not await task: a cancellation of the caller must
            # reach the caller, not be taken for the child's.
            await asyncio.wait(pending)


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel one task and wait for it; an exception it raised propagates."""
    if task is None:
        return
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        exc = task.exception()
        if exc is not None:
            raise exc
