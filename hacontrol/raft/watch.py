"""Spotting pysyncobj's known wedges in its log, and waking a replica weakly."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol


class Replica(Protocol):
    """What the watch needs of a replica (hacontrol.raft.replica.Replica)."""

    _tick_thread_id: int | None

    def _on_pysyncobj_log(self, record: logging.LogRecord) -> None: ...

    def _wake(self) -> None: ...


class _WedgeWatch(logging.Handler):
    """Spots pysyncobj's known wedges in its own log records.

    The logger is process-global, so records are attributed to a replica by
    the thread that emitted them (each replica has its own tick thread).
    """

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.replicas: weakref.WeakSet[Any] = weakref.WeakSet()

    def emit(self, record: logging.LogRecord) -> None:
        tid = record.thread
        for replica in list(self.replicas):
            if replica._tick_thread_id == tid:
                replica._on_pysyncobj_log(record)


watch = _WedgeWatch()
_lock = threading.Lock()
_installed = False


def install_watch() -> None:
    global _installed
    with _lock:
        if not _installed:
            logging.getLogger("pysyncobj.syncobj").addHandler(watch)
            _installed = True


def weak_wake(ref: weakref.ref[Replica]) -> Callable[[], None]:
    def wake() -> None:
        replica = ref()
        if replica is not None:
            replica._wake()
    return wake
