"""Resource usage of allocations, sampled for all of them in one pass.

CPU percent is computed from cpu_times deltas between samples, per pid, so a
sample needs no second pass or sleep and processes that come and go between
samples are accounted for (a new process counts from zero, one that exited is
simply absent).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class AllocationMetrics:
    pid: int | None
    processes: int
    cpu_percent: float  # 100 = one core
    rss_bytes: int
    threads: int
    open_files: int  # file descriptors
    io_read_bytes: int
    io_write_bytes: int
    ts: float


@dataclass(frozen=True)
class ProcSample:
    pid: int
    create_time: float
    cpu_s: float
    rss: int
    threads: int
    fds: int
    read_bytes: int
    write_bytes: int


def sample_process(pid: int) -> ProcSample | None:
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                return None
            times = p.cpu_times()
            io_read = io_write = 0
            with contextlib.suppress(psutil.AccessDenied, AttributeError):
                io = p.io_counters()
                io_read, io_write = io.read_bytes, io.write_bytes
            fds = 0
            with contextlib.suppress(psutil.AccessDenied):
                fds = p.num_fds()
            return ProcSample(
                pid=pid,
                create_time=p.create_time(),
                cpu_s=times.user + times.system,
                rss=p.memory_info().rss,
                threads=p.num_threads(),
                fds=fds,
                read_bytes=io_read,
                write_bytes=io_write,
            )
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


CpuMemo = dict[tuple[int, float], float]


def cpu_delta(
    samples: Iterable[ProcSample], previous: Mapping[tuple[int, float], float], prev_ts: float
) -> float:
    """CPU seconds used since ``prev_ts`` by ``samples`` (pure)."""
    used = 0.0
    for s in samples:
        key = (s.pid, s.create_time)
        if key in previous:
            used += max(s.cpu_s - previous[key], 0.0)
        elif s.create_time >= prev_ts:
            used += s.cpu_s
    return used


def aggregate(
    leader: int | None,
    samples: list[ProcSample],
    previous: Mapping[tuple[int, float], float],
    prev_ts: float | None,
    now: float,
) -> AllocationMetrics:
    """One allocation's metrics from its processes' samples (pure)."""
    cpu = 0.0
    if prev_ts is not None and now > prev_ts:
        cpu = 100.0 * cpu_delta(samples, previous, prev_ts) / (now - prev_ts)
    return AllocationMetrics(
        pid=leader,
        processes=len(samples),
        cpu_percent=cpu,
        rss_bytes=sum(s.rss for s in samples),
        threads=sum(s.threads for s in samples),
        open_files=sum(s.fds for s in samples),
        io_read_bytes=sum(s.read_bytes for s in samples),
        io_write_bytes=sum(s.write_bytes for s in samples),
        ts=now,
    )


def memo(samples: Iterable[ProcSample]) -> CpuMemo:
    return {(s.pid, s.create_time): s.cpu_s for s in samples}


def pids_by_pgid(pgids: set[int]) -> dict[int, list[int]]:
    """Members of each of ``pgids`` from a single scan of the process table."""
    out: dict[int, list[int]] = {g: [] for g in pgids}
    if not pgids:
        return out
    for pid in psutil.pids():
        try:
            g = os.getpgid(pid)
        except (ProcessLookupError, PermissionError):
            continue
        if g in out:
            out[g].append(pid)
    return out
