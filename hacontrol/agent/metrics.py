"""Resource usage of allocations, read from /proc for all of them in one pass.

Each process costs a few small reads (``stat``, ``io`` and the ``fd`` directory),
parsed here instead of through psutil: the sampler reads every process of
every allocation, and psutil's per-call object set-up cost several times the
reads themselves.

CPU percent is computed from cpu time deltas between samples, per process, so
a sample needs no second pass or sleep and processes that come and go between
samples are accounted for (a new process counts from zero, one that exited is
simply absent). Start times and sample times are in seconds since boot
(``CLOCK_BOOTTIME``, the clock of ``/proc/<pid>/stat``), so they compare.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# /proc/<pid>/stat fields (1-based in proc(5)), counted from the state field (3),
# the first one after the command name, which may itself hold spaces and ")".
STAT_STATE, _UTIME, _STIME, _THREADS, STAT_START, _RSS = (
    n - 3 for n in (3, 14, 15, 20, 22, 24))
# States of gone processes whose pid is still listed (not yet reaped): nothing left to
# account, nothing left to stop.
GONE = (b"Z", b"X", b"x")


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
    # When these values were sampled; a later sample that finds the same values
    # keeps this one (see Sampler: unchanged metrics are not resent).
    ts: float

    def same_values(self, other: AllocationMetrics) -> bool:
        """Equal in everything but the time of the sample."""
        return (
            self.pid == other.pid
            and self.processes == other.processes
            and self.cpu_percent == other.cpu_percent
            and self.rss_bytes == other.rss_bytes
            and self.threads == other.threads
            and self.open_files == other.open_files
            and self.io_read_bytes == other.io_read_bytes
            and self.io_write_bytes == other.io_write_bytes
        )


@dataclass(frozen=True)
class ProcSample:
    pid: int
    create_time: float  # seconds since boot
    cpu_s: float
    rss: int
    threads: int
    fds: int
    read_bytes: int
    write_bytes: int


def boot_clock() -> float:
    """Now, in seconds since boot: the clock process start times are on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def read_small(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def parse_stat(data: bytes) -> tuple[float, float, int, int] | None:
    """(start s since boot, cpu s, threads, rss bytes) from /proc/<pid>/stat; None for a
    zombie (pure)."""
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) <= _RSS or fields[STAT_STATE] in GONE:
        return None
    return (
        int(fields[STAT_START]) / CLOCK_TICKS,
        (int(fields[_UTIME]) + int(fields[_STIME])) / CLOCK_TICKS,
        int(fields[_THREADS]),
        int(fields[_RSS]) * PAGE_SIZE,
    )


def parse_io(data: bytes) -> tuple[int, int]:
    """(read_bytes, write_bytes) from /proc/<pid>/io: what reached storage (pure)."""
    read = write = 0
    for line in data.splitlines():
        if line.startswith(b"read_bytes:"):
            read = int(line[11:])
        elif line.startswith(b"write_bytes:"):
            write = int(line[12:])
    return read, write


def sample_process(pid: int) -> ProcSample | None:
    """One process's counters; None when it is gone or a zombie."""
    base = f"{PROC}/{pid}"
    try:
        stat = parse_stat(read_small(base + "/stat"))
    except (OSError, ValueError):
        return None
    if stat is None:
        return None
    start, cpu_s, threads, rss = stat
    # io needs ptrace access (another user's process, for a non-root agent); the fd
    # directory too. What cannot be read counts as zero rather than dropping the process.
    read = write = 0
    try:
        read, write = parse_io(read_small(base + "/io"))
    except (OSError, ValueError):
        pass
    fds = 0
    try:
        fds = len(os.listdir(base + "/fd"))
    except OSError:
        pass
    return ProcSample(pid, start, cpu_s, rss, threads, fds, read, write)


def ran(pid: int) -> bytes | None:
    """How long the process has run, as the kernel's scheduler counts it (nanoseconds,
    /proc/<pid>/schedstat), raw: equal between two reads when it did not run at all, so
    neither its counters nor its children can have changed. None when it is gone or the
    kernel keeps no such statistics."""
    try:
        return read_small(f"{PROC}/{pid}/schedstat").split(b" ", 1)[0]
    except OSError:
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
        # Rounded: a value that only moves in its last bits is no news to send.
        cpu = round(100.0 * cpu_delta(samples, previous, prev_ts) / (now - prev_ts), 3)
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
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            g = os.getpgid(pid)
        except (ProcessLookupError, PermissionError):
            continue
        if g in out:
            out[g].append(pid)
    return out
