"""The pid record (``pid.json``) that lets a restarted agent re-adopt a process.

Written once a spawned process runs, removed once its group is gone; a
detached runner leaves it in place on purpose.
"""

from __future__ import annotations

import logging

from hacontrol.agent import procinfo
from hacontrol.agent.hooks import HookHost, Outcome
from hacontrol.agent.process import Handle, LaunchConfig

log = logging.getLogger(__name__)


class PidRecordHook:
    __slots__ = ("_host",)

    def __init__(self, host: HookHost) -> None:
        self._host = host

    async def prestart(self, config: LaunchConfig) -> None:
        # Written by the start itself, in its worker thread, before the process counts as
        # started: no /proc read or file write per start on the event loop (a thousand
        # starts add up to seconds its heartbeats would wait for), and no window in which
        # a detached process has no record to be adopted by.
        config.record_pid = True

    def poststart(self, handle: Handle) -> None:
        pass

    async def exited(self, outcome: Outcome) -> None:
        if outcome.handle is not None:
            procinfo.remove_pid_record(self._host.alloc_dir)

    def stop(self) -> None:
        pass
