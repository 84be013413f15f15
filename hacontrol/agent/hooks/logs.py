"""The allocation's stdout/stderr files: rotated by the sampler while the runner lives.

The files themselves are opened by the launch (they are the process's
stdout and stderr) and outlive the runner, so ``hacontrol logs`` still shows
why something ended.
"""

from __future__ import annotations

from hacontrol.agent.hooks import HookHost, Outcome
from hacontrol.agent.process import Handle, LaunchConfig
from hacontrol.agent.sampler import Sampler


class LogsHook:
    __slots__ = ("_host", "_sampler")

    def __init__(self, host: HookHost, sampler: Sampler) -> None:
        self._host = host
        self._sampler = sampler

    async def prestart(self, config: LaunchConfig) -> None:
        pass

    def poststart(self, handle: Handle) -> None:
        host = self._host
        self._sampler.rotate_logs(host.spec.alloc_id, host.alloc_dir, host.spec.logs)

    async def exited(self, outcome: Outcome) -> None:
        pass

    def stop(self) -> None:
        self._sampler.stop_rotating(self._host.spec.alloc_id)
