"""Timestamps along a request's path inside a replica, for `bench/cp_trace.py`.

Installed into each replica by `bench/trace_hooks/sitecustomize.py` when HACONTROL_TRACE_DIR
is set: wraps the functions a write or a read passes through (HTTP handling, the write
grouper's submit, the wake-up of the Raft thread, journal appends and syncs, messages sent
and received, commit, apply, the hand-back to the event loop) so that each records
`(CLOCK_MONOTONIC ns, thread, label)`. CLOCK_MONOTONIC is one clock for every process on
the machine, so the three replicas' records line up. Records go to `<dir>/<pid>.trace`
(tab-separated) from a background thread. Benchmark only: never imported by hacontrol.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_records: list[tuple[int, str, str]] = []
_now = time.monotonic_ns


def mark(label: str) -> None:
    _records.append((_now(), threading.current_thread().name, label))


def _wrap(owner: Any, attr: str, label: str,
          detail: Callable[..., str | None] | None = None, end: bool = True) -> None:
    fn = getattr(owner, attr, None)
    if fn is None:
        return  # not in this version of the code
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            mark(label + ".start")
            try:
                return await fn(*args, **kwargs)
            finally:
                mark(label + ".end")
        setattr(owner, attr, awrapper)
        return

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = label
        if detail is not None:
            extra = detail(*args, **kwargs)
            if extra is None:
                return fn(*args, **kwargs)
            name = f"{label}.{extra}"
        mark(name + (".start" if end else ""))
        try:
            return fn(*args, **kwargs)
        finally:
            if end:
                mark(name + ".end")
    setattr(owner, attr, wrapper)


def _msg_type(_self: Any, *args: Any, **_kw: Any) -> str | None:
    message = args[-1]
    if isinstance(message, dict):
        kind = str(message.get("type"))
        if kind == "append_entries":
            return kind + ("+e" if message.get("entries") else "")
        if kind == "next_node_idx":
            return kind + ("+ok" if message.get("success") else "")
        return kind
    return "other"


def _caller(*_args: Any, **_kw: Any) -> str | None:
    import sys
    frame = sys._getframe(2)
    return f"{frame.f_code.co_name}"


def _sync_detail(journal: Any) -> str | None:
    return "data" if getattr(journal, "_pending", None) else None


def install(directory: str) -> None:
    out = Path(directory) / f"{os.getpid()}.trace"

    from aiohttp import web_app
    from pysyncobj import poller, transport

    import hacontrol.raft.bridge as bridge
    import hacontrol.raft.journal as journal
    import hacontrol.raft.replica as replica
    from hacontrol.controller import changes
    from hacontrol.controller import replica as controller
    from hacontrol.raft.node import node_class
    from hacontrol.scheduler import loop as leader_loop

    try:
        from hacontrol.raft import wake
    except ImportError:  # before wake.py
        wake = None  # type: ignore[assignment]
    node = node_class()
    _wrap(web_app.Application, "_handle", "http")
    _wrap(controller.Controller, "write", "write")
    _wrap(leader_loop.LeaderLoop, "step", "leader_loop.step")
    _wrap(changes.ChangeFeed, "_fire", "changes.fire", end=False)
    _wrap(controller.Controller, "read", "read")
    _wrap(bridge.LogBridge, "submit_applied", "bridge.submit")
    _wrap(bridge.LogBridge, "read_index", "bridge.read_index")
    _wrap(replica.Replica, "submit", "replica.submit", end=False)
    _wrap(replica.Replica, "read_index", "replica.read_index", end=False)
    if wake is not None:
        _wrap(wake.WakePipe, "_readable", "tick.woken", end=False)
    _wrap(replica.Replica, "_on_wake", "tick.woken", end=False)  # before wake.py
    _wrap(replica.Replica, "_wake", "wake", detail=_caller, end=False)
    _wrap(replica.Replica, "_on_tick", "on_tick")
    _wrap(replica.Replica, "apply_entry", "apply")
    _wrap(journal.DurableJournal, "add", "journal.add", end=False)
    _wrap(journal.DurableJournal, "sync", "journal.sync", detail=_sync_detail)
    _wrap(node, "_onTick", "tick")
    _wrap(node, "_SyncObj__onMessageReceived", "recv", detail=_msg_type, end=False)
    _wrap(node, "hc_read_step", "read_step")
    _wrap(transport.TCPTransport, "send", "send", detail=_msg_type, end=False)
    _wrap(poller.PollPoller, "poll", "poll")

    original_advance = node._hc_advance_commit

    def advance(self: Any) -> None:
        before = int(self._SyncObj__raftCommitIndex)
        original_advance(self)
        if int(self._SyncObj__raftCommitIndex) != before:
            mark("commit")
    node._hc_advance_commit = advance

    original_resolver = bridge._Inbox.resolver

    def resolver(self: Any, loop: Any, fut: Any) -> Any:
        callback = original_resolver(self, loop, fut)

        def traced(res: Any, err: int) -> None:
            mark("inbox.put")
            callback(res, err)
        return traced
    bridge._Inbox.resolver = resolver  # type: ignore[method-assign]
    _wrap(bridge._Inbox, "_drain", "inbox.drain", end=False)

    def flush() -> None:
        global _records
        batch, _records = _records, []
        if batch:
            with out.open("a") as f:
                f.writelines(f"{t}\t{th}\t{lab}\n" for t, th, lab in batch)

    def flusher() -> None:
        while True:
            time.sleep(0.3)
            flush()

    threading.Thread(target=flusher, name="trace-flush", daemon=True).start()
    atexit.register(flush)
