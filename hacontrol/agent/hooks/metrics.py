"""Resource usage of the running process, sampled by the node-wide sampler."""

from __future__ import annotations

from collections.abc import Callable

from hacontrol.agent.hooks import HookHost, Outcome
from hacontrol.agent.metrics import AllocationMetrics
from hacontrol.agent.process import Handle, LaunchConfig
from hacontrol.agent.sampler import Sampler


class MetricsHook:
    __slots__ = ("_host", "_on_sample", "_sampler")

    def __init__(
        self,
        host: HookHost,
        sampler: Sampler,
        on_sample: Callable[[AllocationMetrics], None],
    ) -> None:
        self._host = host
        self._sampler = sampler
        self._on_sample = on_sample

    async def prestart(self, config: LaunchConfig) -> None:
        pass

    def poststart(self, handle: Handle) -> None:
        self._sampler.watch(self._host.spec.alloc_id, handle, self._on_sample)

    async def exited(self, outcome: Outcome) -> None:
        self._sampler.unwatch(self._host.spec.alloc_id)

    def stop(self) -> None:
        self._sampler.forget(self._host.spec.alloc_id)
