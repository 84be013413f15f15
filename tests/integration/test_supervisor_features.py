"""Supervisor isolation, limits, control, health, logs, metrics and sockets, with real processes."""

from __future__ import annotations

import asyncio
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hacontrol.agent.spec import AllocationSpec
from hacontrol.agent.supervisor import Supervisor
from hacontrol.model.resources import Resources
from hacontrol.model.spec import HealthCheck, LogPolicy, RestartSpec, SocketSpec, StopSpec
from hacontrol.model.states import HealthCheckType, RestartPolicy

from .test_supervisor import Harness, gone, py, spec, wait_for

pytestmark = pytest.mark.timeout(60)

ALL = os.environ.get("HACONTROL_TEST_ALL") == "1"
WORKER = str(Path(__file__).resolve().parents[2] / "examples" / "socket_worker.py")
MiB = 1024 * 1024


def need(ok: bool, reason: str) -> None:
    """Skip where the host cannot run the test, unless every test must run."""
    if ok:
        return
    if ALL:
        pytest.fail(f"HACONTROL_TEST_ALL=1 but {reason}")
    pytest.skip(reason)


def need_root() -> None:
    need(os.geteuid() == 0, "needs root")


class FeatureHarness(Harness):
    def __init__(self, data_dir: Path, isolation: str | None = None) -> None:
        self.isolation = isolation
        super().__init__(data_dir)

    def new_supervisor(self) -> Supervisor:
        return Supervisor(
            self.data_dir, self._on_event, isolation=self.isolation, sample_interval_s=0.05
        )

    def reasons(self, alloc_id: str) -> list[str | None]:
        return [e.reason for e in self.of(alloc_id) if e.reason is not None]


def need_cgroups(h: FeatureHarness) -> None:
    need(h.sup.isolation_mode.startswith("cgroup"), "no writable cgroups on this host")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[FeatureHarness]:
    harness = FeatureHarness(tmp_path / "data")
    yield harness
    harness.kill_leftovers()


@pytest.fixture
def hr(tmp_path: Path) -> Iterator[FeatureHarness]:
    """Forced rlimit (fallback) mode, whatever the host offers."""
    harness = FeatureHarness(tmp_path / "data-rlimit", isolation="rlimit")
    yield harness
    harness.kill_leftovers()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def allocation(alloc_id: str, command: list[str], policy: str = "never", **kw: object) -> AllocationSpec:
    return AllocationSpec(
        alloc_id=alloc_id,
        command=command,
        restart=RestartSpec(
            policy=RestartPolicy(policy), backoff_s=0.05, max_restarts=50, min_uptime_s=0.1
        ),
        stop=StopSpec(timeout_s=1.0),
        **kw,  # type: ignore[arg-type]
    )


MEMORY_HOG = py(
    """
    import time
    hog = []
    while True:
        hog.append(bytearray(4 * 1024 * 1024))
        time.sleep(0.01)
    """
)


# --------------------------------------------------------------- lifecycle


def test_user_group_and_umask(h: FeatureHarness, tmp_path: Path) -> None:
    need_root()
    nobody = pwd.getpwnam("nobody")
    # pytest's tmp_path sits below a directory only root may enter.
    out = Path(tempfile.mkdtemp(prefix="hacontrol-user-"))
    os.chmod(out, 0o777)

    async def scenario() -> None:
        # Not python: the interpreter under test may live where nobody cannot read.
        cmd = ["sh", "-c", f"touch {out / 'f'}; exec sleep 30"]
        ev = await h.sup.ensure(allocation("u1", cmd, user="nobody", umask=0o027))
        assert ev.state == "running" and ev.pid is not None
        proc = psutil.Process(ev.pid)
        assert proc.uids().real == nobody.pw_uid
        assert proc.gids().real == nobody.pw_gid
        st = await wait_for(lambda: (out / "f").exists() and (out / "f").stat(), what="file")
        assert st.st_mode & 0o777 == 0o640
        assert st.st_uid == nobody.pw_uid

    try:
        h.run(scenario)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_a_command_its_user_may_not_exec_is_a_failed_start(h: FeatureHarness) -> None:
    """Found and executable by root, not by nobody: the exec fails after the agent let the
    process go, which must still read as a failed start, not as a crash to restart."""
    need_root()
    d = Path(tempfile.mkdtemp(prefix="hacontrol-noexec-"))
    try:
        prog = d / "root-only"
        prog.write_text("#!/bin/sh\nexec sleep 30\n")
        prog.chmod(0o700)
        d.chmod(0o755)

        async def scenario() -> None:
            ev = await h.sup.ensure(allocation("u4", [str(prog)], policy="always",
                                               user="nobody"))
            assert ev.state == "failed" and ev.reason == "failed-start", ev
            assert "root-only" in ev.message
            assert not (h.sup.alloc_dir("u4") / "pid.json").exists()

        h.run(scenario)
    finally:
        shutil.rmtree(d, ignore_errors=True)


PRELOAD_C = """
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
    const char *path = getenv("HACONTROL_TEST_MARK");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (f) { fprintf(f, "%d %s\\n", (int)geteuid(), "loaded"); fclose(f); }
}
"""


@pytest.mark.parametrize("env_name", ["MARK_OK", "odd.name"])
def test_a_jobs_ld_preload_never_runs_as_root(h: FeatureHarness, env_name: str) -> None:
    """A job may set LD_PRELOAD for itself, but nothing the agent runs as root on its
    way to the job (the start gate, setpriv, the exec wrapper for odd variable names)
    may load it: that would be root for anyone allowed to submit a job."""
    need_root()
    gcc = shutil.which("gcc") or shutil.which("cc")
    need(gcc is not None, "needs a C compiler")
    d = Path(tempfile.mkdtemp(prefix="hacontrol-preload-"))
    try:
        d.chmod(0o777)
        (d / "mark.c").write_text(PRELOAD_C)
        lib = d / "mark.so"
        subprocess.run([str(gcc), "-shared", "-fPIC", "-o", str(lib), str(d / "mark.c")],
                       check=True)
        lib.chmod(0o755)
        marks = d / "marks"
        marks.touch()
        marks.chmod(0o666)
        env = {"LD_PRELOAD": str(lib), "HACONTROL_TEST_MARK": str(marks), env_name: "1"}

        async def scenario() -> None:
            ev = await h.sup.ensure(allocation("p1", ["sleep", "30"], user="nobody", env=env))
            assert ev.state == "running", ev
            lines = await wait_for(lambda: marks.read_text().splitlines(), what="marks")
            euids = {int(line.split()[0]) for line in lines}
            assert 0 not in euids, f"loaded into a root process: {lines}"
            assert pwd.getpwnam("nobody").pw_uid in euids  # the job itself did load it
            await h.sup.stop("p1")

        h.run(scenario)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_unknown_user_is_a_failed_start(h: FeatureHarness) -> None:
    async def scenario() -> None:
        ev = await h.sup.ensure(allocation("u2", ["true"], user="hacontrol-no-such-user"))
        assert ev.state == "failed" and ev.reason == "failed-start"
        assert "hacontrol-no-such-user" in ev.message
        ev = await h.sup.ensure(allocation("u3", ["/nonexistent/hacontrol-bin"]))
        assert ev.state == "failed" and ev.reason == "failed-start"

    h.run(scenario)


def test_shell_only_when_asked(h: FeatureHarness, tmp_path: Path) -> None:
    async def scenario() -> None:
        env = {"GREETING": "hello"}
        await h.sup.ensure(allocation("s1", ["echo $GREETING"], shell=True, env=env))
        await h.sup.ensure(allocation("s2", ["echo", "$GREETING"], env=env))
        for a in ("s1", "s2"):
            await wait_for(h.state_is(a, "exited"), what=f"{a} exit")
        assert h.sup.read_log("s1", "stdout", 10) == b"hello\n"
        assert h.sup.read_log("s2", "stdout", 10) == b"$GREETING\n"
        assert h.last("s1").reason == "exit"  # type: ignore[union-attr]

    h.run(scenario)


# ----------------------------------------------------------------- limits


def test_memory_hog_is_oom_killed_in_cgroup(h: FeatureHarness) -> None:
    need_root()
    need_cgroups(h)

    async def scenario() -> None:
        await h.sup.ensure(allocation("m1", MEMORY_HOG, resources=Resources(memory_mb=50)))
        # killed, and the never policy does not restart it: failed
        ev = await wait_for(h.state_is("m1", "failed"), timeout=20, what="oom")
        assert ev.reason == "oom", ev
        assert ev.signal == "SIGKILL"

    h.run(scenario)


def test_restart_reuses_the_cgroup_and_counts_only_its_own_oom(
        h: FeatureHarness, tmp_path: Path) -> None:
    """A restart runs in the same (emptied) cgroup; an OOM kill of the first process is
    not blamed on the next one, which exits on its own."""
    need_root()
    need_cgroups(h)
    marker = tmp_path / "hogged"
    code = f"""
        import os, sys, time
        if os.path.exists({str(marker)!r}):
            sys.exit(3)
        open({str(marker)!r}, "w").close()
        hog = []
        while True:
            hog.append(bytearray(4 * 1024 * 1024))
            time.sleep(0.01)
    """

    async def scenario() -> None:
        first = await h.sup.ensure(allocation("m3", py(code), policy="on-failure",
                                              resources=Resources(memory_mb=50)))
        cgroups = h.sup.cgroup_paths("m3")
        assert cgroups and all(p.is_dir() for p in cgroups.values())
        # A directory removed and made again under the same name gets a new inode.
        inodes = {k: p.stat().st_ino for k, p in cgroups.items()}
        await wait_for(lambda: len(h.of("m3", "exited")) >= 2, timeout=20, what="2 exits")
        exits = h.of("m3", "exited")
        assert exits[0].reason == "oom", exits[0]
        assert exits[1].exit_code == 3 and exits[1].reason != "oom", exits[1]
        running = h.of("m3", "running")
        assert len(running) >= 2 and running[1].pid != first.pid
        # The same directories all along: never removed between the restarts.
        now = await wait_for(lambda: h.sup.cgroup_paths("m3"), timeout=10, what="running")
        assert now == cgroups
        assert {k: p.stat().st_ino for k, p in cgroups.items()} == inodes
        await h.sup.stop("m3")
        await h.sup.stop_all()
        assert not any(p.exists() for p in cgroups.values())  # removed at the end

    h.run(scenario)


def _limits(paths: dict[str, Path]) -> dict[str, str]:
    """The v1 limits the agent sets, as the kernel shows them."""
    files = {"memory": ["memory.limit_in_bytes", "memory.failcnt"],
             "cpu": ["cpu.cfs_quota_us", "cpu.cfs_period_us"], "pids": ["pids.max"],
             "freezer": ["freezer.state"]}
    return {f: (paths[c] / f).read_text().strip() for c, fs in files.items() if c in paths
            for f in fs}


def test_an_ended_allocations_cgroup_serves_the_next_one_with_nothing_left_of_it(
        h: FeatureHarness) -> None:
    """cgroup v1 keeps an ended allocation's emptied cgroup for the next new one, renamed
    after it: no limit, no frozen state, no process and no OOM kill of the first one is
    the second's. Elsewhere (v2) it is removed as before."""
    need_root()
    need_cgroups(h)

    async def scenario() -> None:
        first = await h.sup.ensure(allocation(
            "q1", MEMORY_HOG, resources=Resources(cpu=0.5, memory_mb=40, pids=64)))
        assert first.state == "running", first
        old = h.sup.cgroup_paths("q1")
        inodes = {k: p.stat().st_ino for k, p in old.items()}
        ev = await wait_for(h.state_is("q1", "failed"), timeout=20, what="oom")
        assert ev.reason == "oom", ev
        await wait_for(lambda: not h.sup.active("q1"), what="q1 ended")
        if h.sup.isolation_mode != "cgroup-v1":
            assert not any(p.exists() for p in old.values())
            return
        second = await h.sup.ensure(allocation(
            "q2", ["sleep", "30"], resources=Resources(cpu=0.25, memory_mb=64)))
        assert second.state == "running", second
        now = h.sup.cgroup_paths("q2")
        assert {k: p.stat().st_ino for k, p in now.items()} == inodes  # the same cgroups
        assert all(p.name.startswith("q2.") for p in now.values())
        assert not any(p.exists() for p in old.values())  # renamed, not copied
        assert _limits(now) == {
            "memory.limit_in_bytes": str(64 * MiB), "memory.failcnt": "0",
            "cpu.cfs_quota_us": "25000", "cpu.cfs_period_us": "100000",
            "pids.max": "max", "freezer.state": "THAWED"}
        cg = h.sup._runners["q2"].handle.cg  # type: ignore[union-attr]
        assert cg is not None and cg.pids() == [second.pid]
        # Killed by a signal: not blamed on the first allocation's OOM kill.
        assert h.sup.signal("q2", "KILL")
        ev = await wait_for(h.state_is("q2", "failed"), what="q2 killed")
        assert ev.reason == "signal", ev
        await wait_for(lambda: not h.sup.active("q2"), what="q2 ended")
        third = await h.sup.ensure(allocation("q3", ["sleep", "30"]))
        assert third.state == "running", third
        now = h.sup.cgroup_paths("q3")
        assert {k: p.stat().st_ino for k, p in now.items()} == inodes
        limits = _limits(now)
        assert limits["cpu.cfs_quota_us"] == "-1" and limits["pids.max"] == "max"
        assert int(limits["memory.limit_in_bytes"]) > 2**60, limits  # unlimited
        await h.sup.stop_all()
        assert not any(p.exists() for p in now.values())  # the pool is emptied at the end

    h.run(scenario)


@pytest.mark.parametrize("user", [None, "nobody"])
def test_a_process_is_born_in_its_cgroups_and_no_agent_thread_stays(
        h: FeatureHarness, user: str | None) -> None:
    """Its first instruction already runs in every cgroup of the allocation (nothing can
    fork out before it is confined), and the start thread that put it there went back:
    no thread of the agent is left in an allocation's cgroup, nor listed among its pids."""
    need_root()
    need_cgroups(h)

    async def scenario() -> None:
        cmd = ["sh", "-c", "cat /proc/$$/cgroup; exec sleep 30"]
        ev = await h.sup.ensure(allocation("b1", cmd, user=user))
        assert ev.state == "running", ev
        paths = h.sup.cgroup_paths("b1")
        assert paths
        def printed() -> str | None:
            # Whole lines only: the log may be read while `cat` is still writing.
            out = h.sup.read_log("b1", "stdout", 20).decode()
            return out if out.endswith("\n") else None

        first = await wait_for(printed, what="cgroups printed")
        for controller, path in paths.items():
            assert any(line.endswith(path.name) and controller in line.split(":")[1]
                       for line in first.splitlines()), (controller, first)
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/cgroup") as f:
                assert "b1." not in f.read(), f"agent thread {task} left in the cgroup"
        cg = h.sup._runners["b1"].handle.cg  # type: ignore[union-attr]
        assert cg is not None and os.getpid() not in cg.pids()
        # `cat` has printed but may not have exited yet: once the shell has reaped it and
        # exec'd sleep, the allocation's own process is all the cgroup holds.
        await wait_for(lambda: cg.pids() == [ev.pid], what="only the process left")
        await h.sup.stop("b1")

    h.run(scenario)


def test_memory_hog_is_killed_by_watchdog_in_rlimit_mode(hr: FeatureHarness) -> None:
    assert hr.sup.isolation_mode == "rlimit"

    async def scenario() -> None:
        ev = await hr.sup.ensure(allocation("m2", MEMORY_HOG, resources=Resources(memory_mb=50)))
        assert ev.state == "running"
        ev = await wait_for(hr.state_is("m2", "failed"), timeout=20, what="oom")
        assert ev.reason == "oom", ev

    hr.run(scenario)


def test_cpu_quota_throttles(h: FeatureHarness) -> None:
    need_root()
    need_cgroups(h)

    async def scenario() -> None:
        ev = await h.sup.ensure(allocation("c1", py("while True: pass"), resources=Resources(cpu=0.2)))
        assert ev.pid is not None
        proc = psutil.Process(ev.pid)
        proc.cpu_percent(None)
        # A measurement window, not a wait for a condition.
        await asyncio.sleep(2.0)
        usage = proc.cpu_percent(None)
        assert 10.0 <= usage <= 35.0, usage

    h.run(scenario)


def test_setsid_grandchild_is_killed_at_stop(h: FeatureHarness, tmp_path: Path) -> None:
    need_root()
    need_cgroups(h)
    pidfile = tmp_path / "gc.pid"

    async def scenario() -> None:
        grandchild = f"""
            import os, signal, time
            os.setsid()
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            open({str(pidfile)!r} + '.tmp', 'w').write(str(os.getpid()))
            os.rename({str(pidfile)!r} + '.tmp', {str(pidfile)!r})
            time.sleep(60)
        """
        parent = f"""
            import subprocess, sys, time
            subprocess.Popen([sys.executable, '-c', {textwrap.dedent(grandchild)!r}])
            time.sleep(60)
        """
        await h.sup.ensure(allocation("g1", py(parent)))
        gc = int(await wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="gc"))
        h.track(gc)
        assert os.getsid(gc) == gc  # it left the instance's session and group
        paths = h.sup.cgroup_paths("g1")
        assert paths and all(str(gc) in (p / "cgroup.procs").read_text() for p in paths.values())
        ev = await h.sup.stop("g1")
        assert ev is not None and ev.reason == "stopped"
        assert gone(gc)
        assert h.sup.cgroup_paths("g1") == {}
        # Removed, or kept empty for the next allocation (cgroup v1's pool).
        assert not any(p.exists() and (p / "cgroup.procs").read_text().strip()
                       for p in paths.values())

    h.run(scenario)


# ---------------------------------------------------------------- control


COUNTER = """
    import os, signal, sys, time
    d = sys.argv[1]
    def usr1(*_):
        open(os.path.join(d, 'usr1'), 'w').write('got it')
    signal.signal(signal.SIGUSR1, usr1)
    n = 0
    while True:
        n += 1
        with open(os.path.join(d, 'count.tmp'), 'w') as f:
            f.write(str(n))
        os.replace(os.path.join(d, 'count.tmp'), os.path.join(d, 'count'))
        time.sleep(0.01)
"""


def _count(d: Path) -> int:
    try:
        return int((d / "count").read_text())
    except (OSError, ValueError):
        return 0


def _pause_resume_signal(h: FeatureHarness, d: Path, frozen_states: set[str]) -> None:
    async def scenario() -> None:
        ev = await h.sup.ensure(allocation("p1", [*py(COUNTER), str(d)]))
        assert ev.pid is not None
        await wait_for(lambda: _count(d) > 0, what="counter")
        ev = await h.sup.pause("p1")
        assert ev is not None and ev.state == "paused"
        proc = psutil.Process(ev.pid)
        await wait_for(lambda: proc.status() in frozen_states, what="stopped state")
        if h.sup.isolation_mode == "cgroup-v1":
            freezer = h.sup.cgroup_paths("p1")["freezer"]
            assert (freezer / "freezer.state").read_text().strip() == "FROZEN"
        frozen_at = _count(d)
        ev = await h.sup.resume("p1")
        assert ev is not None and ev.state == "running"
        await wait_for(lambda: _count(d) > frozen_at + 2, what="progress after resume")
        assert h.sup.signal("p1", "USR1") is True
        await wait_for(lambda: (d / "usr1").exists(), what="SIGUSR1 marker")
        # Stopping a paused task works too.
        await h.sup.pause("p1")
        ev = await h.sup.stop("p1")
        assert ev is not None and ev.state == "stopped" and ev.reason == "stopped"
        assert gone(proc.pid)

    h.run(scenario)


def test_pause_resume_signal_with_freezer(h: FeatureHarness, tmp_path: Path) -> None:
    need_root()
    need_cgroups(h)
    # The v1 freezer parks tasks in an uninterruptible-looking sleep.
    states = {psutil.STATUS_DISK_SLEEP, psutil.STATUS_STOPPED, psutil.STATUS_SLEEPING}
    _pause_resume_signal(h, tmp_path, states)
    assert [e.state for e in h.of("p1")].count("paused") == 2


def test_pause_resume_signal_with_sigstop(hr: FeatureHarness, tmp_path: Path) -> None:
    _pause_resume_signal(hr, tmp_path, {psutil.STATUS_STOPPED})


def test_restart_counts_and_skips_backoff(h: FeatureHarness) -> None:
    async def scenario() -> None:
        spec = AllocationSpec(
            "r1",
            ["sleep", "30"],
            restart=RestartSpec(
                policy=RestartPolicy.ON_FAILURE, backoff_s=30.0, backoff_max_s=30.0
            ),
            stop=StopSpec(timeout_s=1.0),
        )
        first = await h.sup.ensure(spec)
        ev = await h.sup.restart("r1")
        assert ev is not None and ev.state == "running"
        assert ev.pid != first.pid and ev.restarts == 1
        assert first.pid is not None and gone(first.pid)
        ended = h.of("r1", "exited")
        assert len(ended) == 1 and ended[0].reason == "stopped"
        ev = await h.sup.restart("r1")
        assert ev is not None and ev.restarts == 2

    h.run(scenario)


# ----------------------------------------------------------------- health

HEALTH_SERVER = """
    import os, socket, sys, time
    flag, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if os.path.exists(flag):
        os.unlink(flag)  # a fresh instance starts healthy
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(('127.0.0.1', port))
    srv.listen(16)
    srv.settimeout(0.02)
    sick = False
    while True:
        sick = sick or os.path.exists(flag)
        if sick and mode == 'tcp':
            srv.close()
            time.sleep(60)
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        if mode == 'http':
            conn.settimeout(1)
            conn.recv(4096)
            status = b'500 Sick' if sick else b'200 OK'
            conn.sendall(b'HTTP/1.0 ' + status + b'\\r\\nContent-Length: 0\\r\\n\\r\\n')
        conn.close()
"""


@pytest.mark.parametrize("kind", ["tcp", "http", "exec"])
def test_health_check_restarts_unhealthy(h: FeatureHarness, tmp_path: Path, kind: str) -> None:
    port = free_port()
    flag = tmp_path / "sick"
    if kind == "exec":
        check = HealthCheck(
            type=HealthCheckType.EXEC,
            command=("sh", "-c", f"test ! -e {flag}"),
            interval_s=0.1,
            failures=2,
            grace_s=0.0,
        )
    else:
        check = HealthCheck(
            type=HealthCheckType(kind), port=port, path="/ok", interval_s=0.1, failures=2,
            grace_s=0.0,
        )

    async def scenario() -> None:
        spec = allocation("h1", [*py(HEALTH_SERVER), str(flag), str(port), kind], policy="always")
        ev = await h.sup.ensure(AllocationSpec(**{**spec.__dict__, "health": check}))
        assert ev.health == "starting"
        healthy = await wait_for(lambda: any(e.health == "healthy" for e in h.of("h1")))
        assert healthy
        flag.touch()
        ended = await wait_for(lambda: h.of("h1", "exited"), what="health restart")
        assert ended[0].reason == "health"
        assert any(e.health == "unhealthy" for e in h.of("h1"))
        await wait_for(
            lambda: (e := h.last("h1")) is not None and e.restarts == 1 and e.health == "healthy",
            # A Python start plus the first checks: seconds on a loaded 2-core machine.
            timeout=20.0, what="healthy again after the restart",
        )

    h.run(scenario)


def test_exec_check_runs_as_the_allocations_user_in_its_cgroup(h: FeatureHarness) -> None:
    need_root()
    nobody = pwd.getpwnam("nobody")
    out = Path(tempfile.mkdtemp(prefix="hacontrol-check-"))
    os.chmod(out, 0o777)
    # Healthy only if the check runs as nobody, in the allocation's cgroup, under its umask.
    check = HealthCheck(
        type=HealthCheckType.EXEC,
        command=("sh", "-c", f'test "$(id -u)" = {nobody.pw_uid} && test "$(umask)" = 0027 '
                             f'&& test "$(cat /proc/self/cgroup)" = "$(cat {out / "cg"})"'),
        interval_s=0.1, failures=1000, grace_s=0.0)

    async def scenario() -> None:
        cmd = ["sh", "-c", f"cat /proc/self/cgroup > {out / 'cg'}; exec sleep 30"]
        spec = allocation("c1", cmd, user="nobody", umask=0o027)
        await h.sup.ensure(AllocationSpec(**{**spec.__dict__, "health": check}))
        await wait_for(lambda: any(e.health == "healthy" for e in h.of("c1")),
                       what="healthy: the check ran as the allocation")

    try:
        h.run(scenario)
    finally:
        shutil.rmtree(out, ignore_errors=True)


# ------------------------------------------------------------------- logs


def test_log_rotation_and_follow(h: FeatureHarness) -> None:
    writer = py(
        """
        import sys, time
        for i in range(600):
            print(f'line {i:05d} ' + 'x' * 16, flush=True)
            time.sleep(0.002)
        """
    )
    policy = LogPolicy(max_bytes=2000, keep=2)

    async def scenario() -> None:
        seen = bytearray()

        async def follow() -> None:
            async for chunk in h.sup.follow_log("l1", "stdout", 0):
                seen.extend(chunk)

        follower = asyncio.create_task(follow())
        await h.sup.ensure(allocation("l1", writer, logs=policy))
        await wait_for(h.state_is("l1", "exited"), timeout=15, what="writer done")
        await wait_for(lambda: b"line 00599" in seen, what="follower reaches the end")
        follower.cancel()
        alloc = h.data_dir / "allocs" / "l1"
        assert (alloc / "stdout.log.1").exists() and (alloc / "stdout.log.2").exists()
        assert not (alloc / "stdout.log.3").exists()
        lines = bytes(seen).splitlines()
        assert lines[0].startswith(b"line 00000")
        numbers = [int(x.split()[1]) for x in lines if x.startswith(b"line ")]
        assert numbers == sorted(numbers)
        # Copy-truncate may lose a few bytes per rotation, never whole stretches.
        assert len(numbers) > 550
        tail = h.sup.read_log("l1", "stdout", 3).splitlines()
        assert [t.split()[1] for t in tail] == [b"00597", b"00598", b"00599"]

    h.run(scenario)


# ---------------------------------------------------------------- metrics


def test_metrics_report_rss(h: FeatureHarness, tmp_path: Path) -> None:
    code = """
        import time
        ballast = bytearray(30 * 1024 * 1024)
        for i in range(0, len(ballast), 4096):
            ballast[i] = 1
        time.sleep(60)
    """

    async def scenario() -> None:
        ev = await h.sup.ensure(allocation("x1", py(code)))
        m = await wait_for(
            lambda: (m := h.sup.metrics().get("x1")) and m.rss_bytes >= 30 * MiB and m,
            what="rss >= 30 MiB",
        )
        assert m.pid == ev.pid and m.processes == 1
        assert m.threads >= 1 and m.open_files >= 3
        await h.sup.stop("x1")
        await wait_for(lambda: "x1" not in h.sup.metrics(), what="metrics dropped")

    h.run(scenario)


# ---------------------------------------------------------------- sockets


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read()
    finally:
        conn.close()


def test_shared_sockets_survive_worker_crashes(h: FeatureHarness) -> None:
    port = free_port()
    ids = ["w1", "w2", "w3"]

    async def scenario() -> None:
        for a in ids:
            ev = await h.sup.ensure(
                allocation(
                    a,
                    [sys.executable, WORKER],
                    policy="always",
                    sockets=[SocketSpec("http", port, host="127.0.0.1")],
                    socket_key="ns/job",
                )
            )
            assert ev.state == "running"
        stop = threading.Event()
        ok: list[int] = []
        failures: list[str] = []

        def client() -> None:
            while not stop.is_set():
                try:
                    ok.append(int(_get(port, "/")))
                except Exception as exc:  # every failed connection is a test failure
                    failures.append(repr(exc))

        thread = threading.Thread(target=client)
        thread.start()
        try:
            for i in range(5):
                before = sum(e.restarts for e in (h.last(a) for a in ids) if e)
                await asyncio.to_thread(_get, port, "/crash")
                await wait_for(
                    lambda b=before: sum(  # type: ignore[misc]
                        e.restarts for e in (h.last(a) for a in ids) if e and e.state == "running"
                    )
                    > b,
                    what=f"restart after crash {i}",
                )
            await wait_for(lambda: len(ok) > 200, what="enough requests")
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
        assert failures == []
        assert len(set(ok)) >= 3
        crashed = [e for e in h.events if e.state == "exited"]
        assert len(crashed) >= 5 and all(e.reason == "exit" and e.exit_code == 1 for e in crashed)
        await h.sup.stop_all()
        # The agent closed its copy once no instance of the key remained.
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()

    h.run(scenario)


def test_listen_env_matches_systemd(h: FeatureHarness, tmp_path: Path) -> None:
    out = tmp_path / "env"
    code = f"""
        import os, socket
        s = socket.socket(fileno=3)
        s4 = socket.socket(fileno=4)
        open({str(out)!r}, 'w').write(' '.join([
            os.environ['LISTEN_FDS'], os.environ['LISTEN_FDNAMES'],
            str(os.environ['LISTEN_PID'] == str(os.getpid())),
            str(s.getsockname()[1]), str(s4.getsockname()[1]),
        ]))
    """
    p1, p2 = free_port(), free_port()

    async def scenario() -> None:
        socks = [SocketSpec("a", p1, "127.0.0.1"), SocketSpec("b", p2, "127.0.0.1")]
        await h.sup.ensure(allocation("e1", py(code), sockets=socks))
        await wait_for(h.state_is("e1", "exited"), what="exit")
        assert out.read_text() == f"2 a:b True {p1} {p2}", h.sup.read_log("e1", "stderr", 20)

    h.run(scenario)




def _memory_cgroups() -> int:
    """Memory cgroups the kernel holds, live and dying (/proc/cgroups)."""
    for line in Path("/proc/cgroups").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "memory":
            return int(fields[2])
    raise AssertionError("no memory controller in /proc/cgroups")


def test_removed_cgroups_leave_no_dying_memory_cgroups(tmp_path: Path) -> None:
    """A removed allocation cgroup takes the page cache charged to it along: removed with
    it, it would live on in the kernel (a dying cgroup), and thousands of them slow every
    later start."""
    from hacontrol.agent.cgroups import MODE_V1, AllocationCgroup, detect

    need_root()
    layout = detect()
    need(layout.mode == MODE_V1, "needs cgroup v1 (memory.force_empty)")
    n = 20
    before = _memory_cgroups()
    for i in range(n):
        cg = AllocationCgroup.create(layout, f"dying-{os.getpid()}-{i}", None)
        try:
            # A child that writes 256 kB of page cache from inside the cgroup, then exits.
            out = tmp_path / f"f{i}"
            script = (f"import os; [open('{cg.paths['memory']}/cgroup.procs', 'w')"
                      f".write(str(os.getpid()))]; open('{out}', 'wb').write(os.urandom(1 << 18))")
            subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
        finally:
            assert cg.remove()
    # Some pages may be under writeback as their cgroup goes: a few may linger a moment.
    assert _memory_cgroups() - before <= n // 4, (before, _memory_cgroups())


def test_a_killed_agents_cgroups_are_swept_by_its_data_dir(tmp_path: Path) -> None:
    """An agent killed with its allocations running leaves their cgroups; once the
    processes are gone, whoever deletes its data dir for good (the test, chaos and bench
    harnesses) sweeps them by that dir, and no other agent's are touched."""
    from hacontrol.agent.cgroups import MODE_RLIMIT
    from hacontrol.agent.supervisor import sweep_leftovers

    need_root()
    killed, other = Harness(tmp_path / "killed"), Harness(tmp_path / "other")
    need(killed.sup.isolation_mode != MODE_RLIMIT, "needs cgroups")
    layout = killed.sup._layout

    def left(alloc_id: str, h: Harness) -> list[Path]:
        name = h.sup._cg_name(alloc_id)
        return [base / name for base in layout.bases.values() if (base / name).is_dir()]

    async def scenario() -> None:
        pids = []
        for i in range(3):
            ev = await killed.sup.ensure(spec(f"k{i}", ["sleep", "60"]))
            assert ev.pid is not None
            pids.append(ev.pid)
        assert (await other.sup.ensure(spec("o1", ["sleep", "60"]))).state == "running"
        await killed.sup.detach_all()  # as if killed: the processes run on, unwatched
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: all(gone(p) for p in pids), 5, "killed processes gone")
        assert all(left(f"k{i}", killed) for i in range(3))
        assert sweep_leftovers(killed.data_dir) == 3 * len(layout.bases)
        assert not any(left(f"k{i}", killed) for i in range(3))
        assert len(left("o1", other)) == len(layout.bases)  # another agent's, running
        await other.sup.stop_all()
    try:
        asyncio.run(scenario())
    finally:
        killed.kill_leftovers()
        other.kill_leftovers()
