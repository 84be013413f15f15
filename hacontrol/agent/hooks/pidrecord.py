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
    def __init__(self, host: HookHost) -> None:
        self._host = host

    async def prestart(self, config: LaunchConfig) -> None:
        pass

    def poststart(self, handle: Handle) -> None:
        if handle.adopted:
            return  # the record that led to it is still in place
        ctime = procinfo.create_time(handle.pid)
        if ctime is None:
            return
        cg = handle.cg
        try:
            procinfo.write_pid_record(
                self._host.alloc_dir,
                procinfo.PidRecord(
                    handle.pid,
                    handle.pgid,
                    ctime,
                    list(self._host.spec.command),
                    cgroup_mode=cg.mode if cg else None,
                    cgroups=cg.record() if cg else {},
                ),
            )
        except OSError:
            log.warning("cannot write pid.json for %s", self._host.spec.alloc_id, exc_info=True)

    async def exited(self, outcome: Outcome) -> None:
        if outcome.handle is not None:
            procinfo.remove_pid_record(self._host.alloc_dir)

    def stop(self) -> None:
        pass
