"""Pure decisions of the agent: health, exit causes, identity, limits, cgroups, metrics, logs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hacontrol.agent import cgroups, limits, logs, metrics
from hacontrol.agent.backoff import (
    ACTION_COMPLETE,
    ACTION_GIVE_UP,
    ACTION_RESTART,
    RestartState,
    decide,
)
from hacontrol.agent.health import HealthState, health_step
from hacontrol.agent.process import resolve_identity, shell_command
from hacontrol.agent.spec import AllocationSpec
from hacontrol.agent.transitions import exit_reason
from hacontrol.model.resources import Resources
from hacontrol.model.spec import HealthCheck, LogPolicy, RestartSpec, SocketSpec
from hacontrol.model.states import HealthCheckType, RestartPolicy

CHECK = HealthCheck(type=HealthCheckType.TCP, port=1, failures=3, grace_s=5.0)


def run_checks(results: list[bool], ages: list[float]) -> list[str]:
    state = HealthState()
    out = []
    for ok, age in zip(results, ages, strict=True):
        state = health_step(CHECK, state, ok, age)
        out.append(state.status)
    return out


def test_health_failures_in_grace_do_not_count() -> None:
    assert run_checks([False] * 5, [1, 2, 3, 4, 4.9]) == ["starting"] * 5
    assert run_checks([False] * 3, [6, 7, 8]) == ["starting", "starting", "unhealthy"]


def test_health_needs_consecutive_failures() -> None:
    ages = [6.0] * 7
    got = run_checks([True, False, False, True, False, False, False], ages)
    assert got == ["healthy"] * 6 + ["unhealthy"]


def test_health_recovers_on_success() -> None:
    state = HealthState("unhealthy", 3)
    assert health_step(CHECK, state, True, 10) == HealthState("healthy", 0)


def test_exit_reason() -> None:
    assert exit_reason(0, None, False, None) == "exit"
    assert exit_reason(3, None, False, None) == "exit"
    assert exit_reason(None, "SIGSEGV", False, None) == "signal"
    assert exit_reason(None, "SIGKILL", True, None) == "oom"
    assert exit_reason(None, "SIGTERM", True, "health") == "health"
    assert exit_reason(0, None, False, "stopped") == "stopped"


def test_health_failure_restarts_even_after_a_clean_exit() -> None:
    policy = RestartSpec(policy=RestartPolicy.ON_FAILURE)
    clean = decide(policy, RestartState(), 0, None, 10.0, 100.0, 0.0)
    assert clean.action == ACTION_COMPLETE
    forced = decide(policy, RestartState(), 0, None, 10.0, 100.0, 0.0, failed=True)
    assert forced.action == ACTION_RESTART
    never = decide(RestartSpec(policy=RestartPolicy.NEVER), RestartState(), 0, None, 1, 1, 0, failed=True)
    assert never.action == ACTION_GIVE_UP and "health" in never.reason


def test_identity_resolution() -> None:
    assert resolve_identity(None, None, 1000).uid is None
    ident = resolve_identity("root", None, 0)
    assert ident.uid == 0 and ident.gid == 0 and ident.groups is not None and 0 in ident.groups
    assert resolve_identity("0", "0", 0).gid == 0
    with pytest.raises(ValueError, match="unknown user"):
        resolve_identity("hacontrol-no-such-user", None, 0)
    with pytest.raises(ValueError, match="unknown group"):
        resolve_identity(None, "hacontrol-no-such-group", 0)
    with pytest.raises(ValueError, match="root"):
        resolve_identity("root", None, 12345)


def test_shell_only_when_asked() -> None:
    plain = AllocationSpec("a", ["echo", "$HOME"])
    assert shell_command(plain) == ["echo", "$HOME"]
    sh = AllocationSpec("a", ["echo $1", "zero", "one"], shell=True)
    assert shell_command(sh) == ["/bin/sh", "-c", "echo $1", "zero", "one"]


def test_spec_defaults_and_validation() -> None:
    spec = AllocationSpec("a", ["true"])
    assert spec.user is None and not spec.shell and spec.health is None
    assert spec.resources is None and spec.logs == LogPolicy() and spec.sockets == []
    with pytest.raises(ValueError):
        AllocationSpec("a", ["true"], umask=0o1000)
    with pytest.raises(ValueError):
        AllocationSpec("a", ["true"], sockets=[SocketSpec("x", 1), SocketSpec("x", 2)])


def test_cgroup_limit_writes() -> None:
    res = Resources(cpu=0.25, memory_mb=50, pids=64)
    assert cgroups.v1_limit_writes(res, has_memsw=True) == [
        ("memory", "memory.limit_in_bytes", str(50 * 1024 * 1024)),
        ("memory", "memory.memsw.limit_in_bytes", str(50 * 1024 * 1024)),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "-1"),  # the quota comes after the start
        ("pids", "pids.max", "64"),
    ]
    assert cgroups.v2_limit_writes(res) == [
        ("memory.max", str(50 * 1024 * 1024)),
        ("memory.swap.max", "0"),
        ("cpu.max", "max 100000"),
        ("pids.max", "64"),
    ]
    assert cgroups.cpu_limit(cgroups.MODE_V1, res) == ("cpu", "cpu.cfs_quota_us", "25000")
    assert cgroups.cpu_limit(cgroups.MODE_V2, res) == ("unified", "cpu.max", "25000 100000")
    assert cgroups.cpu_limit(cgroups.MODE_V1, None) is None
    assert cgroups.cpu_limit(cgroups.MODE_RLIMIT, res) is None
    assert cgroups.v1_limit_writes(None, has_memsw=False) == []
    assert cgroups.v2_limit_writes(None) == []
    assert cgroups.cpu_quota_us(0.0001) == 1000


def test_a_kept_cgroup_gets_every_limit_written_again() -> None:
    """A cgroup kept from another allocation: unlimited where the new one sets nothing,
    memsw lifted before the limit and set after it (it must never be below the limit)."""
    mib50 = str(50 * 1024 * 1024)
    assert cgroups.v1_reset_writes(Resources(cpu=0.25, memory_mb=50), has_memsw=True) == [
        ("memory", "memory.memsw.limit_in_bytes", "-1"),
        ("memory", "memory.limit_in_bytes", mib50),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "-1"),
        ("pids", "pids.max", "max"),
        ("memory", "memory.memsw.limit_in_bytes", mib50),
        ("memory", "memory.failcnt", "0"),
    ]
    assert cgroups.v1_reset_writes(None, has_memsw=False) == [
        ("memory", "memory.limit_in_bytes", "-1"),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "-1"),
        ("pids", "pids.max", "max"),
        ("memory", "memory.failcnt", "0"),
    ]
    writes = cgroups.v1_reset_writes(Resources(cpu=1.0, memory_mb=8, pids=9), False)
    assert ("pids", "pids.max", "9") in writes


def test_parse_proc_cgroup_and_keyed() -> None:
    text = "12:cpu,cpuacct:/a\n4:memory:/b/c\n0::/unified\n"
    assert cgroups.parse_proc_cgroup(text) == {
        "cpu": "/a",
        "cpuacct": "/a",
        "memory": "/b/c",
        "": "/unified",
    }
    events = "low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\n"
    assert cgroups.parse_keyed(events)["oom_kill"] == 1
    assert cgroups.parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")["oom_kill"] == 3


def test_detect_falls_back_to_rlimit_without_cgroups(tmp_path: Path) -> None:
    layout = cgroups.detect(tmp_path / "nothing", "0::/\n")
    assert layout.mode == cgroups.MODE_RLIMIT


def test_rlimit_fallback() -> None:
    assert limits.rlimits_for(None) == []
    ((name, soft, hard),) = limits.rlimits_for(Resources(memory_mb=50))
    assert name == "RLIMIT_DATA" and soft == hard > 50 * limits.MIB
    assert limits.over_memory(51 * limits.MIB, Resources(memory_mb=50))
    assert not limits.over_memory(49 * limits.MIB, Resources(memory_mb=50))
    assert not limits.over_memory(10**12, None)


def _sample(pid: int, ctime: float, cpu: float, rss: int = 1) -> metrics.ProcSample:
    return metrics.ProcSample(pid, ctime, cpu, rss, 2, 5, 10, 20)


def test_metrics_cpu_from_deltas() -> None:
    prev = {(1, 0.0): 1.0, (2, 0.0): 5.0}
    # pid 1 used 0.5 s; pid 2 exited; pid 3 is new since the last sample (0.2 s);
    # pid 4 was already running but unseen (reused key): not counted.
    samples = [_sample(1, 0.0, 1.5), _sample(3, 10.5, 0.2), _sample(4, 1.0, 7.0)]
    m = metrics.aggregate(1, samples, prev, 10.0, 11.0)
    assert m.cpu_percent == pytest.approx(70.0)
    assert m.processes == 3 and m.rss_bytes == 3 and m.threads == 6 and m.open_files == 15
    assert m.io_read_bytes == 30 and m.io_write_bytes == 60
    assert metrics.aggregate(1, samples, {}, None, 11.0).cpu_percent == 0.0


def test_log_rotation_keeps_keep_files(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    policy = LogPolicy(max_bytes=10, keep=2)
    for i in range(4):
        path.write_bytes(f"gen{i}-".encode() * 5)
        assert logs.rotate_if_needed(path, policy)
        assert path.read_bytes() == b""
    assert logs.rotated(path, 1).read_bytes().startswith(b"gen3")
    assert logs.rotated(path, 2).read_bytes().startswith(b"gen2")
    assert not logs.rotated(path, 3).exists()
    path.write_bytes(b"short")
    assert not logs.rotate_if_needed(path, policy)


def test_tail_and_read_log(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"
    body = b"".join(f"line {i}\n".encode() for i in range(5000))
    path.write_bytes(body)
    assert logs.tail(path, 2) == b"line 4998\nline 4999\n"
    assert logs.tail(path, 0) == b""
    path.write_bytes(b"a\nb\nc")
    assert logs.tail(path, 2) == b"b\nc"
    assert logs.tail(path, 10) == b"a\nb\nc"
    logs.rotated(path, 1).write_bytes(b"x\ny\n")
    path.write_bytes(b"z\n")
    assert logs.read_log(tmp_path, "stdout", 2) == b"y\nz\n"
    with pytest.raises(ValueError):
        logs.read_log(tmp_path, "other", 1)
    assert logs.tail(tmp_path / "missing", 3) == b""
    assert os.path.exists(path)
