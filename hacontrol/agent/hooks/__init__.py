"""Hooks: one per concern an allocation runner composes.

As in Nomad's ``client/allocrunner/taskrunner``, the runner drives the life
of an allocation and each concern (listening sockets, cgroup and OOM, the pid
record, health checks, logs, metrics) plugs in at four points:

* ``prestart(config)``: before a process is spawned (not before an adopted
  one); may add to the launch config, or raise ``LaunchFailed``.
* ``poststart(handle)``: a process runs, spawned or adopted.
* ``exited(outcome)``: that process group is gone (or its launch failed);
  release what belonged to this one process and annotate the outcome.
* ``stop()``: the runner ends for good (final state, or detached); release
  what belonged to the allocation. Runs even when the runner is cancelled.

Hooks run in list order; a hook must not block the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hacontrol.agent.nursery import Nursery
from hacontrol.agent.process import Handle, LaunchConfig
from hacontrol.agent.spec import AllocationSpec
from hacontrol.model.states import ExitReason, Health


@dataclass
class Outcome:
    """How one process ended, filled in by the runner and the exited hooks."""

    handle: Handle | None  # None: the launch failed
    oom: bool = False
    # The runner found no live process left in the group or the cgroup (none to kill).
    emptied: bool = False


class HookHost(Protocol):
    """What a hook may see of, and ask from, its runner."""

    spec: AllocationSpec
    alloc_dir: Path
    nursery: Nursery
    health: Health | None  # reported with the next state the runner emits

    @property
    def paused(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def report_health(self, status: Health, message: str, pid: int) -> None:
        """A health transition: recorded and reported in the current state."""

    def end_process(self, reason: ExitReason) -> None:
        """Ask for the current process to be ended for ``reason`` (then restarted or not,
        as the restart policy says)."""


class Hook(Protocol):
    async def prestart(self, config: LaunchConfig) -> None: ...

    def poststart(self, handle: Handle) -> None: ...

    async def exited(self, outcome: Outcome) -> None: ...

    def stop(self) -> None: ...


__all__ = ["Hook", "HookHost", "Outcome"]
