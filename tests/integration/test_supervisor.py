"""Supervisor against real OS processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

from hacontrol.agent import allocrunner
from hacontrol.agent.spec import AllocationEvent, AllocationSpec
from hacontrol.agent.supervisor import Supervisor
from hacontrol.model.spec import RestartSpec, StopSpec
from hacontrol.model.states import RestartPolicy

pytestmark = pytest.mark.timeout(60)

PY = sys.executable
T = TypeVar("T")


async def wait_for(pred: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
    """Poll ``pred`` until truthy; fail the test once the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def _cmdline(p: psutil.Process) -> list[str]:
    """Its command line; none for a zombie (an earlier test's, not reaped yet)."""
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaps (some container inits do not)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Harness:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.events: list[AllocationEvent] = []
        self._tracked: dict[int, float] = {}
        self.sup = self.new_supervisor()

    def new_supervisor(self) -> Supervisor:
        return Supervisor(self.data_dir, self._on_event)

    def _on_event(self, ev: AllocationEvent) -> None:
        self.events.append(ev)
        if ev.pid is not None:
            self.track(ev.pid)

    def track(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self._tracked.setdefault(pid, psutil.Process(pid).create_time())

    def of(self, alloc_id: str, state: str | None = None) -> list[AllocationEvent]:
        return [e for e in self.events if e.alloc_id == alloc_id and state in (None, e.state)]

    def last(self, alloc_id: str) -> AllocationEvent | None:
        evs = self.of(alloc_id)
        return evs[-1] if evs else None

    def state_is(self, alloc_id: str, state: str) -> Callable[[], AllocationEvent | None]:
        def pred() -> AllocationEvent | None:
            ev = self.last(alloc_id)
            return ev if ev is not None and ev.state == state else None

        return pred

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            try:
                await scenario()
            finally:
                await self.sup.stop_all()

        asyncio.run(main())

    def kill_leftovers(self) -> None:
        """Last line of defence: kill every process a test saw, by pid and create_time."""
        for pid, ctime in self._tracked.items():
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - ctime) > 0.05:
                    continue
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                proc.kill()
            except psutil.Error:
                continue
        # Instance cgroups can only be removed once the killed processes are gone.
        deadline = time.monotonic() + 5.0
        while not all(gone(pid) for pid in self._tracked) and time.monotonic() < deadline:
            time.sleep(0.01)
        for pid in self._tracked:  # ours, if the test's supervisor let go of them: reaped
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        self.new_supervisor().sweep_cgroups()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path / "data")
    yield harness
    harness.kill_leftovers()


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def spec(
    alloc_id: str,
    command: list[str],
    policy: str = "on-failure",
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    stop_timeout_s: float = 2.0,
    **restart: float,
) -> AllocationSpec:
    return AllocationSpec(
        alloc_id=alloc_id,
        command=command,
        env=env if env is not None else {},
        cwd=cwd,
        restart=RestartSpec(policy=RestartPolicy(policy), **restart),  # type: ignore[arg-type]
        stop=StopSpec(timeout_s=stop_timeout_s),
    )


def test_start_reports_running_with_real_pid(h: Harness) -> None:
    async def scenario() -> None:
        ev = await h.sup.ensure(spec("a1", ["sleep", "30"]))
        assert ev.state == "running"
        assert ev.pid is not None
        proc = psutil.Process(ev.pid)
        assert proc.cmdline() == ["sleep", "30"]
        # Own process group and session, so a group kill cannot hit the agent.
        assert os.getpgid(ev.pid) == ev.pid != os.getpgid(0)
        record = json.loads((h.data_dir / "allocs/a1/pid.json").read_text())
        assert record["pid"] == ev.pid
        assert record["create_time"] == pytest.approx(proc.create_time())
        assert [e.state for e in h.of("a1")] == ["starting", "running"]
        assert h.sup.allocations()["a1"] == ev

        stopped = await h.sup.stop("a1")
        assert stopped is not None
        assert stopped.state == "stopped"
        assert stopped.signal == "SIGTERM"
        assert gone(ev.pid)
        assert not (h.data_dir / "allocs/a1/pid.json").exists()

    h.run(scenario)


def test_crash_is_restarted_quickly_and_counted(h: Harness, tmp_path: Path) -> None:
    stamps = tmp_path / "exits"
    code = f"""
        import sys, time
        with open({str(stamps)!r}, "a") as f:
            f.write(repr(time.time()) + "\\n")
        sys.exit(3)
    """

    async def scenario() -> None:
        await h.sup.ensure(spec("crash", py(code), backoff_s=0.0, max_restarts=100))
        await wait_for(
            lambda: any(e.restarts >= 3 for e in h.of("crash", "running")), what="3 restarts"
        )
        await h.sup.stop("crash")
        exited = h.of("crash", "exited")
        assert exited and all(e.exit_code == 3 and e.signal is None for e in exited)
        running = h.of("crash", "running")
        assert [e.restarts for e in running[:4]] == [0, 1, 2, 3]
        # The exit is noticed from the child itself, not a periodic poll.
        exit_times = [float(x) for x in stamps.read_text().split()]
        starts = h.of("crash", "starting")
        for died, next_start in zip(exit_times, starts[1:], strict=False):
            assert 0 <= next_start.ts - died < 0.25, next_start.ts - died

    h.run(scenario)


@pytest.mark.parametrize("backoff_s", [0.0, 0.3])
def test_a_restarts_events_are_delivered_once_its_new_process_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backoff_s: float) -> None:
    """Without backoff a crash's exit and the new start reach the callback together, in
    order, once the new process runs (the agent's answer to them, a sync, then does not
    compete with the spawn); with a backoff the exit is told at once."""
    monkeypatch.setattr(allocrunner, "RESTART_HOLD_S", 60.0)  # only the outcome ends it
    delivered: list[tuple[str, str]] = []  # (event, the allocation's state at delivery)

    def on_event(ev: AllocationEvent) -> None:
        delivered.append((ev.state, sup.allocations()[ev.alloc_id].state))

    sup = Supervisor(tmp_path / "data", on_event)

    async def scenario() -> None:
        try:
            await sup.ensure(spec("r", py("import sys; sys.exit(3)"), backoff_s=backoff_s,
                                  max_restarts=100))
            await wait_for(lambda: sum(e == "running" for e, _ in delivered) >= 3,
                           what="2 restarts")
        finally:
            await sup.stop_all()

    asyncio.run(scenario())
    events = [e for e, _ in delivered]
    assert events[:7] == ["starting", "running", "exited", "starting", "running",
                          "exited", "starting"], events
    at_exit = [now for e, now in delivered[:6] if e == "exited"]
    assert at_exit == (["running"] * 2 if backoff_s == 0 else ["exited"] * 2), delivered


def test_never_policy_fails_it_on_a_non_zero_exit(h: Harness) -> None:
    async def scenario() -> None:
        await h.sup.ensure(spec("n", py("import sys; sys.exit(3)"), policy="never"))
        ev = await wait_for(h.state_is("n", "failed"), what="failed")
        assert ev.exit_code == 3
        assert "never" in ev.message
        assert not h.sup.active("n")
        assert len(h.of("n", "running")) == 1

    h.run(scenario)


def test_on_failure_success_completes(h: Harness) -> None:
    async def scenario() -> None:
        await h.sup.ensure(spec("ok", py("pass")))
        ev = await wait_for(h.state_is("ok", "exited"), what="exited")
        assert ev.exit_code == 0
        assert not h.sup.active("ok")

    h.run(scenario)


def test_gives_up_after_max_restarts_within_window(h: Harness) -> None:
    async def scenario() -> None:
        s = spec("g", py("import sys; sys.exit(1)"), max_restarts=2, backoff_s=0.01)
        await h.sup.ensure(s)
        ev = await wait_for(h.state_is("g", "failed"), what="failed")
        assert ev.restarts == 2
        assert ev.exit_code == 1
        assert "gave up" in ev.message
        assert len(h.of("g", "running")) == 3
        assert not h.sup.active("g")

    h.run(scenario)


def test_exit_by_signal_reports_signal_name(h: Harness) -> None:
    async def scenario() -> None:
        code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
        await h.sup.ensure(spec("sig", py(code), policy="never"))
        ev = await wait_for(h.state_is("sig", "failed"), what="failed")
        assert ev.signal == "SIGKILL"
        assert ev.exit_code is None

    h.run(scenario)


def test_stop_escalates_to_sigkill_when_sigterm_ignored(h: Harness, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").close()
        time.sleep(60)
    """

    async def scenario() -> None:
        ev = await h.sup.ensure(spec("stubborn", py(code), stop_timeout_s=0.5))
        await wait_for(ready.exists, what="SIGTERM handler installed")
        t0 = time.monotonic()
        stopped = await h.sup.stop("stubborn")
        took = time.monotonic() - t0
        assert stopped is not None and stopped.state == "stopped"
        assert stopped.signal == "SIGKILL"
        assert 0.45 <= took < 3.0
        assert ev.pid is not None and gone(ev.pid)
        assert not h.of("stubborn", "exited")
        assert len(h.of("stubborn", "starting")) == 1

    h.run(scenario)


GRANDCHILD_PARENT = """
    import signal, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
    with open({pidfile!r}, "w") as f:
        f.write(str(child.pid))
    {tail}
"""


def test_no_grandchild_survives_stop(h: Harness, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = GRANDCHILD_PARENT.format(pidfile=str(pidfile), tail="time.sleep(60)")

    async def scenario() -> None:
        ev = await h.sup.ensure(spec("family", py(code), stop_timeout_s=0.3))
        text = await wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="grandchild")
        grandchild = int(text)
        h.track(grandchild)
        assert os.getpgid(grandchild) == ev.pid
        await h.sup.stop("family")
        assert ev.pid is not None and gone(ev.pid)
        assert gone(grandchild)

    h.run(scenario)


def test_leftover_grandchild_killed_before_restart(h: Harness, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = GRANDCHILD_PARENT.format(pidfile=str(pidfile), tail="sys.exit(4)")

    async def scenario() -> None:
        s = spec("orphaner", py(code), policy="never")
        await h.sup.ensure(s)
        await wait_for(h.state_is("orphaner", "failed"), what="failed (exit 4)")
        grandchild = int(pidfile.read_text())
        h.track(grandchild)
        await wait_for(lambda: gone(grandchild), what="grandchild killed")

    h.run(scenario)


def test_ensure_is_idempotent(h: Harness) -> None:
    async def scenario() -> None:
        s = spec("once", ["sleep", "30"])
        first, second = await asyncio.gather(h.sup.ensure(s), h.sup.ensure(s))
        third = await h.sup.ensure(s)
        assert first.pid == second.pid == third.pid
        assert first.pid is not None
        assert len(h.of("once", "starting")) == 1
        sleepers = [p for p in psutil.Process().children() if _cmdline(p) == ["sleep", "30"]]
        assert [p.pid for p in sleepers] == [first.pid]

    h.run(scenario)


def test_ensure_after_stop_starts_again(h: Harness) -> None:
    async def scenario() -> None:
        s = spec("again", ["sleep", "30"])
        first = await h.sup.ensure(s)
        await h.sup.stop("again")
        second = await h.sup.ensure(s)
        assert second.state == "running"
        assert second.pid != first.pid

    h.run(scenario)


def test_logs_are_written_and_appended(h: Harness) -> None:
    code = "import sys; print('to-out', flush=True); print('to-err', file=sys.stderr)"

    async def scenario() -> None:
        await h.sup.ensure(spec("logs", py(code), policy="always", max_restarts=1, backoff_s=0))
        await wait_for(h.state_is("logs", "failed"), what="failed")
        alloc = h.data_dir / "allocs/logs"
        assert (alloc / "stdout.log").read_text() == "to-out\n" * 2
        assert (alloc / "stderr.log").read_text() == "to-err\n" * 2

    h.run(scenario)


def test_env_and_cwd(h: Harness, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    code = "import os; print(os.getcwd(), os.environ['GREETING'], bool(os.environ.get('PATH')))"

    async def scenario() -> None:
        s = spec("env", py(code), policy="never", env={"GREETING": "hi"}, cwd=str(workdir))
        await h.sup.ensure(s)
        await wait_for(h.state_is("env", "exited"), what="exited")
        out = (h.data_dir / "allocs/env/stdout.log").read_text().split()
        assert out == [str(workdir), "hi", "True"]

    h.run(scenario)


def test_missing_binary_reports_failed(h: Harness, tmp_path: Path) -> None:
    async def scenario() -> None:
        ev = await h.sup.ensure(spec("nobin", ["/nonexistent/hacontrol-no-such-binary"]))
        assert ev.state == "failed"
        assert "hacontrol-no-such-binary" in ev.message
        assert not h.sup.active("nobin")
        ev = await h.sup.ensure(spec("nocwd", ["true"], cwd=str(tmp_path / "missing")))
        assert ev.state == "failed"
        # The supervisor keeps working afterwards.
        ok = await h.sup.ensure(spec("fine", ["sleep", "30"]))
        assert ok.state == "running"

    h.run(scenario)


def test_stop_during_backoff_prevents_restart(h: Harness) -> None:
    async def scenario() -> None:
        s = spec("slow", py("import sys; sys.exit(1)"), backoff_s=30.0, backoff_max_s=30.0)
        await h.sup.ensure(s)
        await wait_for(h.state_is("slow", "exited"), what="exited")
        t0 = time.monotonic()
        ev = await h.sup.stop("slow")
        assert time.monotonic() - t0 < 1.0
        assert ev is not None and ev.state == "stopped"
        assert len(h.of("slow", "starting")) == 1
        assert await h.sup.stop("slow") == ev

    h.run(scenario)


def test_stop_all_leaves_no_process(h: Harness) -> None:
    async def scenario() -> None:
        evs = [await h.sup.ensure(spec(f"all{i}", ["sleep", "30"])) for i in range(3)]
        await h.sup.stop_all()
        assert all(e.pid is not None and gone(e.pid) for e in evs)
        assert {e.state for e in h.sup.allocations().values()} == {"stopped"}

    h.run(scenario)


def test_callback_errors_do_not_break_supervision(tmp_path: Path) -> None:
    seen: list[AllocationEvent] = []

    def bad(ev: AllocationEvent) -> None:
        seen.append(ev)
        raise RuntimeError("boom")

    sup = Supervisor(tmp_path, bad)

    async def scenario() -> None:
        ev = await sup.ensure(spec("cb", ["sleep", "30"]))
        try:
            assert ev.state == "running"
        finally:
            await sup.stop_all()
        assert ev.pid is not None and gone(ev.pid)
        assert [e.state for e in seen] == ["starting", "running", "stopped"]

    asyncio.run(scenario())


def test_adopt_after_detach(h: Harness) -> None:
    async def scenario() -> None:
        s = spec("adoptee", ["sleep", "30"])
        ev = await h.sup.ensure(s)
        await h.sup.detach_all()
        assert ev.pid is not None and not gone(ev.pid)

        h.sup = h.new_supervisor()
        adopted = await h.sup.adopt(s)
        assert adopted is not None
        assert adopted.state == "running" and adopted.pid == ev.pid
        assert adopted.message == "adopted"
        stopped = await h.sup.stop("adoptee")
        assert stopped is not None and stopped.state == "stopped"
        assert gone(ev.pid)

    h.run(scenario)


def test_adopt_refuses_recycled_pid(h: Harness) -> None:
    async def scenario() -> None:
        s = spec("stale", ["true"])
        alloc = h.data_dir / "allocs/stale"
        alloc.mkdir(parents=True)
        # Our own pid is certainly alive, but its create_time does not match.
        record = {"pid": os.getpid(), "pgid": os.getpgid(0), "create_time": 1.0, "command": []}
        (alloc / "pid.json").write_text(json.dumps(record))
        assert await h.sup.adopt(s) is None
        assert not (alloc / "pid.json").exists()
        assert await h.sup.adopt(s) is None

    h.run(scenario)


def test_adopted_process_exit_is_noticed_and_restarted(h: Harness) -> None:
    async def scenario() -> None:
        s = spec("readopt", ["sleep", "30"], backoff_s=0.0)
        ev = await h.sup.ensure(s)
        await h.sup.detach_all()
        h.sup = h.new_supervisor()
        assert (await h.sup.adopt(s)) is not None
        assert ev.pid is not None
        os.kill(ev.pid, signal.SIGKILL)
        restarted = await wait_for(
            lambda: next((e for e in h.of("readopt", "running") if e.restarts == 1), None),
            what="restart after the adopted process died",
        )
        assert restarted.pid != ev.pid
        exited = h.of("readopt", "exited")[-1]
        # The exit status of a process that is not our child is unknown.
        assert exited.pid == ev.pid and exited.exit_code is None

    h.run(scenario)


def test_concurrent_stops_share_one_stop(h: Harness) -> None:
    async def scenario() -> None:
        ev = await h.sup.ensure(spec("twice", ["sleep", "30"]))
        a, b = await asyncio.gather(h.sup.stop("twice"), h.sup.stop("twice"))
        assert a == b
        assert a is not None and a.state == "stopped" and a.pid == ev.pid
        assert len(h.of("twice", "stopped")) == 1
        assert await h.sup.stop("unknown") is None

    h.run(scenario)


def test_loop_shutdown_with_adopted_task_does_not_hang(h: Harness) -> None:
    s = spec("detached", ["sleep", "30"])

    async def first() -> None:
        await h.sup.ensure(s)
        await h.sup.detach_all()

    async def second() -> None:
        h.sup = h.new_supervisor()
        assert await h.sup.adopt(s) is not None
        # Return without stop_all/detach_all: asyncio.run cancels the runner.

    asyncio.run(first())
    t0 = time.monotonic()
    asyncio.run(second())
    assert time.monotonic() - t0 < 2.0


def test_ensure_during_stop_starts_once_after_it(h: Harness) -> None:
    async def scenario() -> None:
        s = spec("race", ["sleep", "30"])
        first = await h.sup.ensure(s)
        stopped, a, b = await asyncio.gather(h.sup.stop("race"), h.sup.ensure(s), h.sup.ensure(s))
        assert stopped is not None and stopped.pid == first.pid
        assert a.state == b.state == "running"
        assert a.pid == b.pid != first.pid
        assert len(h.of("race", "starting")) == 2

    h.run(scenario)
