"""AllocationRunner with recording hooks around real processes: the hook protocol."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from hacontrol.agent.allocrunner import AllocationRunner
from hacontrol.agent.hooks import HookHost, Outcome
from hacontrol.agent.nursery import cancel_and_wait
from hacontrol.agent.process import Handle, LaunchConfig, LaunchFailed
from hacontrol.agent.spec import AllocationEvent, AllocationSpec
from hacontrol.model.spec import RestartSpec, StopSpec
from hacontrol.model.states import RestartPolicy

pytestmark = pytest.mark.timeout(30)


class Recorder:
    def __init__(self, host: HookHost, calls: list[str], *, refuse: bool = False,
                 helper_fails: bool = False) -> None:
        self.host = host
        self.calls = calls
        self.refuse = refuse
        self.helper_fails = helper_fails
        self.helper: asyncio.Task[None] | None = None

    async def prestart(self, config: LaunchConfig) -> None:
        self.calls.append("prestart")
        if self.refuse:
            raise LaunchFailed("refused by a hook")

    def poststart(self, handle: Handle) -> None:
        self.calls.append("poststart adopted" if handle.adopted else "poststart")
        if self.helper_fails:
            self.helper = self.host.nursery.start(self._broken(), name="broken-helper")

    async def _broken(self) -> None:
        raise RuntimeError("helper broke")

    async def exited(self, outcome: Outcome) -> None:
        self.calls.append("exited" if outcome.handle is not None else "exited no-process")
        await cancel_and_wait(self.helper)

    def stop(self) -> None:
        self.calls.append("stop")


def runner(tmp_path: Path, command: list[str], events: list[AllocationEvent],
           policy: RestartPolicy = RestartPolicy.NEVER) -> AllocationRunner:
    spec = AllocationSpec("r1", command, restart=RestartSpec(policy=policy, backoff_s=0.0),
                          stop=StopSpec(timeout_s=1.0))
    return AllocationRunner(spec, tmp_path / "r1", events.append, time.time, lambda: 0.0,
                            time.monotonic)


async def run_to_end(r: AllocationRunner) -> None:
    r.supervising = asyncio.get_running_loop().create_task(r.run(None))
    await asyncio.wait_for(r.supervising, 10)


def test_hooks_run_in_order_around_one_process(tmp_path: Path) -> None:
    calls: list[str] = []
    events: list[AllocationEvent] = []

    async def main() -> None:
        r = runner(tmp_path, ["true"], events)
        r.hooks = [Recorder(r, calls)]
        await run_to_end(r)

    asyncio.run(main())
    assert calls == ["prestart", "poststart", "exited", "stop"]
    assert [e.state for e in events] == ["starting", "running", "exited"]
    assert events[-1].reason == "exit"


def test_a_prestart_hook_can_refuse_the_launch(tmp_path: Path) -> None:
    calls: list[str] = []
    events: list[AllocationEvent] = []

    async def main() -> None:
        r = runner(tmp_path, ["true"], events)
        r.hooks = [Recorder(r, calls, refuse=True)]
        await run_to_end(r)

    asyncio.run(main())
    assert calls == ["prestart", "exited no-process", "stop"]
    assert events[-1].state == "failed" and events[-1].reason == "failed-start"
    assert events[-1].message == "refused by a hook"


def test_a_failing_helper_surfaces_in_the_runner(tmp_path: Path) -> None:
    calls: list[str] = []
    events: list[AllocationEvent] = []

    async def main() -> None:
        r = runner(tmp_path, [sys.executable, "-c", "pass"], events)
        r.hooks = [Recorder(r, calls, helper_fails=True)]
        await run_to_end(r)

    asyncio.run(main())
    assert events[-1].state == "failed"
    assert "helper broke" in events[-1].message
    assert calls[-1] == "stop"


def test_stop_goes_through_the_runner(tmp_path: Path) -> None:
    calls: list[str] = []
    events: list[AllocationEvent] = []

    async def main() -> None:
        r = runner(tmp_path, ["sleep", "30"], events, RestartPolicy.ALWAYS)
        r.hooks = [Recorder(r, calls)]
        r.supervising = asyncio.get_running_loop().create_task(r.run(None))
        await asyncio.wait_for(r.started.wait(), 10)
        r.request_stop()
        await asyncio.wait_for(r.supervising, 10)

    asyncio.run(main())
    assert calls == ["prestart", "poststart", "exited", "stop"]
    assert [e.state for e in events] == ["starting", "running", "stopped"]
    assert events[-1].signal == "SIGTERM" and events[-1].reason == "stopped"
