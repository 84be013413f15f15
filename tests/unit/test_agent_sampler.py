"""The metrics sampler: /proc parsing, back-off when nothing changes, and the outbox that
sends the controllers only what changed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from hacontrol.agent import metrics
from hacontrol.agent.cgroups import AllocationCgroup
from hacontrol.agent.metrics import AllocationMetrics
from hacontrol.agent.nursery import Nursery
from hacontrol.agent.report import MetricsOutbox, metrics_report
from hacontrol.agent.sampler import WATCHDOG_BACKOFF, Sampler, _collect, _Target

STAT = (b"42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 "
        b"12345 1000000 77 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0")


def test_stat_fields_after_a_command_name_with_parentheses() -> None:
    start, cpu, threads, rss = metrics.parse_stat(STAT)  # type: ignore[misc]
    assert start == pytest.approx(12345 / metrics.CLOCK_TICKS)
    assert cpu == pytest.approx(300 / metrics.CLOCK_TICKS)
    assert threads == 3
    assert rss == 77 * metrics.PAGE_SIZE
    assert metrics.parse_stat(STAT.replace(b") S 1", b") Z 1")) is None


def test_io_counters() -> None:
    text = b"rchar: 9\nwchar: 8\nsyscr: 1\nsyscw: 1\nread_bytes: 4096\nwrite_bytes: 512\n"
    assert metrics.parse_io(text) == (4096, 512)
    assert metrics.parse_io(b"") == (0, 0)


def test_sample_of_this_process() -> None:
    s = metrics.sample_process(os.getpid())
    assert s is not None
    assert s.rss > 1_000_000 and s.threads >= 1 and s.fds >= 3 and s.cpu_s > 0
    assert 0 < s.create_time <= metrics.boot_clock()


def test_zombie_is_not_sampled() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while b") Z " not in _stat(child.pid):
            assert time.monotonic() < deadline, "child never became a zombie"
            time.sleep(0.01)
        assert metrics.sample_process(child.pid) is None
    finally:
        child.wait()
    assert metrics.sample_process(child.pid) is None  # gone


def _stat(pid: int) -> bytes:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read()


# --------------------------------------------------------------------- outbox


def _m(cpu: float = 0.0, ts: float = 1.0) -> AllocationMetrics:
    return AllocationMetrics(7, 1, cpu, 100, 1, 3, 0, 0, ts)


def test_outbox_sends_only_what_changed_since_the_leader_got_it() -> None:
    box = MetricsOutbox()
    a, b = _m(), _m(cpu=5.0)
    assert box.pending({"a": a, "b": b}, ("L1", 3)) == {"a": metrics_report(a),
                                                        "b": metrics_report(b)}
    box.delivered(("L1", 3))
    assert box.pending({"a": a, "b": b}, ("L1", 3)) == {}
    box.delivered(("L1", 3))
    b2 = _m(cpu=6.0, ts=2.0)
    assert box.pending({"a": a, "b": b2}, ("L1", 3)) == {"b": metrics_report(b2)}
    # Not delivered (the sync failed): sent again.
    assert box.pending({"a": a, "b": b2}, ("L1", 3)) == {"b": metrics_report(b2)}
    box.delivered(("L1", 3))
    # A new leader (or term) knows nothing: everything again.
    assert set(box.pending({"a": a, "b": b2}, ("L2", 4))) == {"a", "b"}
    box.delivered(("L2", 4))
    assert box.pending({"a": a, "b": b2}, ("L2", 4)) == {}


def test_outbox_answer_from_another_leader_counts_for_nothing() -> None:
    box = MetricsOutbox()
    a = _m()
    assert set(box.pending({"a": a}, ("L1", 3))) == {"a"}
    box.delivered(("L2", 4))  # the answer came at a higher term
    assert set(box.pending({"a": a}, ("L2", 4))) == {"a"}


def test_outbox_forgets_ended_allocations() -> None:
    box = MetricsOutbox()
    a = _m()
    box.pending({"a": a}, 1)
    box.delivered(1)
    assert box.pending({}, 1) == {}
    assert set(box.pending({"a": a}, 1)) == {"a"}  # back (a new process): told again


def test_report_has_every_field() -> None:
    m = _m(cpu=1.5)
    assert metrics_report(m) == {f: getattr(m, f) for f in m.__dataclass_fields__}
    assert m.same_values(replace(m, ts=9.0)) and not m.same_values(replace(m, threads=2))


# -------------------------------------------------------------------- sampler


@dataclass
class FakeHandle:
    pid: int
    pgid: int
    done: asyncio.Future[tuple[int | None, str | None]]
    adopted: bool = False
    cg: AllocationCgroup | None = None

    def close(self) -> None:
        pass


def _asleep(pid: int) -> bool:
    wchan = Path(f"/proc/{pid}/wchan").read_text()
    if wchan not in ("", "0"):
        return "nanosleep" in wchan
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "S"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "60"], start_new_session=True)
    # Until it reaches its nanosleep, `sleep` is still loading (its CPU time and RSS still
    # grow), and a sample taken then differs from the next one: wait for the sleep itself.
    # (A kernel that hides wchan shows "0": then its sleeping state has to do.)
    deadline = time.monotonic() + 20
    while not _asleep(p.pid):
        assert time.monotonic() < deadline, "sleep never went to sleep"
        time.sleep(0.01)
    yield p
    p.kill()
    p.wait()


def test_unchanged_allocation_is_sampled_less_often_and_not_replaced(
    sleeper: subprocess.Popen[bytes],
) -> None:
    async def scenario() -> None:
        clock = [100.0]
        sampler = Sampler(1.0, Nursery("t"), max_interval_s=8.0, monotonic=lambda: clock[0])
        handle = FakeHandle(sleeper.pid, sleeper.pid, asyncio.get_running_loop().create_future())
        seen: list[AllocationMetrics] = []
        sampler.watch("a1", handle, seen.append)
        assert sampler.interval_of("a1") == 1.0
        await sampler.sample_once()
        first = sampler.metrics()["a1"]
        assert first.pid == sleeper.pid and first.processes == 1 and first.rss_bytes > 0
        intervals = []
        for _ in range(4):
            await sampler.sample_once()
            intervals.append(sampler.interval_of("a1"))
        # Without a cgroup the memory watchdog depends on these samples: a short cap.
        assert intervals == [2.0, WATCHDOG_BACKOFF, WATCHDOG_BACKOFF, WATCHDOG_BACKOFF]
        assert sampler.metrics()["a1"] is first and seen == [first]
        handle.done.set_result((0, None))
        assert sampler.metrics() == {}

    asyncio.run(scenario())


def test_a_change_brings_the_interval_back() -> None:
    code = "import time, sys\nsys.stdin.readline()\nx = b\"x\" * (64 << 20)\ntime.sleep(60)\n"
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         start_new_session=True)
    try:
        async def scenario() -> None:
            sampler = Sampler(1.0, Nursery("t"), max_interval_s=8.0)
            done = asyncio.get_running_loop().create_future()
            sampler.watch("a1", FakeHandle(p.pid, p.pid, done), lambda m: None)
            deadline = time.monotonic() + 20
            while sampler.interval_of("a1") != 2.0:  # started, and waiting for its input
                assert time.monotonic() < deadline, "the allocation never settled"
                await sampler.sample_once()
                await asyncio.sleep(0.02)
            before = sampler.metrics()["a1"]
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            p.stdin.flush()
            while sampler.metrics()["a1"].rss_bytes < before.rss_bytes + (32 << 20):
                assert time.monotonic() < deadline, "the allocation never grew"
                await sampler.sample_once()
            assert sampler.interval_of("a1") == 1.0

        asyncio.run(scenario())
    finally:
        p.kill()
        p.wait()


def test_processes_of_a_group_without_cgroup(sleeper: subprocess.Popen[bytes]) -> None:
    assert sleeper.pid in metrics.pids_by_pgid({sleeper.pid})[sleeper.pid]
    assert metrics.pids_by_pgid(set()) == {}


def test_quiet_allocation_is_checked_without_reading_it(sleeper: subprocess.Popen[bytes]) -> None:
    target = _Target("a1", sleeper.pid, None, None, None)
    deadline = time.monotonic() + 10
    while True:  # until it sleeps (it may still be starting)
        found, _ = _collect([target], [], [])
        procs, ran = found["a1"]
        assert [p.pid for p in procs] == [sleeper.pid] and set(ran) == {sleeper.pid}
        quick = target._replace(ran=ran)
        if _collect([quick], [], [])[0] == {}:  # nothing ran: left out
            break
        assert time.monotonic() < deadline, "the process never went quiet"
    # A signal makes it run (the kernel delivers it in the process's context).
    os.kill(sleeper.pid, signal.SIGSTOP)
    os.kill(sleeper.pid, signal.SIGCONT)
    deadline = time.monotonic() + 10
    while not _collect([quick], [], [])[0]:
        assert time.monotonic() < deadline, "the run of the process went unnoticed"
    # Gone: read again in full (and found empty).
    sleeper.kill()
    sleeper.wait()
    assert _collect([quick], [], [])[0]["a1"] == ([], {})
