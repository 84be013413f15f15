"""Processes the benchmarks start: started through one registry, stopped by pid.

Every daemon is stopped with SIGTERM (then SIGKILL), and whatever it had started that is
still alive afterwards (collected before the stop, identified by pid and start time through
psutil, so a reused pid is never hit) is killed too. The registry stops everything left on
exit, Ctrl-C or a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path

import psutil


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_meter(pids: Sequence[int]) -> Callable[[], Callable[[float], tuple[float, float]]]:
    """For `http_load.throughput(meter=...)`: CPU seconds the server processes `pids` used
    in the measured window, and those this process (the load generator) used. Steadier
    than throughput on a shared machine. The servers' figure includes what they spend idle
    (heartbeats, polls), so a slow run's figure is a little high; the load generator's
    shares the two cores with them and so bounds what any server can show."""
    procs = [psutil.Process(p) for p in pids]

    def used() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    def start() -> Callable[[float], tuple[float, float]]:
        t0, c0 = used(), time.process_time()
        return lambda _elapsed: (used() - t0, time.process_time() - c0)
    return start


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def live_named(pid: int, name: str) -> int:
    """How many live (non-zombie) descendants of `pid` are called `name`."""
    n = 0
    for p in descendants(pid):
        with suppress(psutil.Error):
            if p.name() == name and p.status() != psutil.STATUS_ZOMBIE:
                n += 1
    return n


def kill_leftovers(procs: Sequence[psutil.Process]) -> int:
    """SIGKILL those of `procs` still alive (psutil checks pid reuse); returns how many."""
    n = 0
    for p in procs:
        with suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
                n += 1
    return n


def process_cpu_s(pid: int) -> float:
    """CPU seconds `pid` has used (all its threads, also those that ended; not its
    children), to the nanosecond: the kernel's CPU-time clock of that process.

    Not /proc's user and system times: those count whole clock ticks (10 ms here), so
    over a few seconds of a nearly idle daemon they read 0 or 0.33 % by chance."""
    # clock_getcpuclockid(3) for another process, spelled out (CPUCLOCK_SCHED = 2):
    # Python exposes the thread variant only.
    return time.clock_gettime(((~pid) << 3) | 2)


def idle_usage(pid: int, seconds: float) -> tuple[float, float]:
    """(RSS in MB at the end, CPU % over `seconds`; 100 = one core) of one process."""
    p = psutil.Process(pid)
    c0 = process_cpu_s(pid)
    t0 = time.monotonic()
    time.sleep(seconds)  # the window is a length of time, not a condition
    c1 = process_cpu_s(pid)
    dt = time.monotonic() - t0
    cpu = max(0.0, (c1 - c0) / dt * 100.0) if dt > 0 else 0.0
    return p.memory_info().rss / 2**20, cpu


class Reaper:
    """The processes one benchmark started; `stop_all` ends them all by pid."""

    def __init__(self) -> None:
        self.procs: dict[int, tuple[str, psutil.Process]] = {}

    def spawn(self, name: str, argv: Sequence[str], logfile: Path,
              env: dict[str, str] | None = None, cwd: Path | None = None
              ) -> subprocess.Popen[bytes]:
        out = open(logfile, "ab")
        try:
            popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        finally:
            out.close()
        self.adopt(name, popen.pid)
        return popen

    def adopt(self, name: str, pid: int) -> None:
        """Track a process started indirectly (a daemon that forked itself away)."""
        with suppress(psutil.Error):
            self.procs[pid] = (name, psutil.Process(pid))

    def stop(self, pid: int, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int:
        """Stop one tracked process and everything it started; returns leftovers killed."""
        entry = self.procs.pop(pid, None)
        if entry is None:
            return 0
        proc = entry[1]
        kids = descendants(pid)
        with suppress(psutil.Error):
            if proc.is_running():
                proc.send_signal(sig)
                try:
                    proc.wait(timeout)
                except psutil.TimeoutExpired:
                    kids = descendants(pid) or kids
                    proc.kill()
                    proc.wait(10)
        with suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it was our child
        return kill_leftovers(kids)

    def stop_all(self) -> None:
        for pid in list(self.procs)[::-1]:
            n = self.stop(pid)
            if n:
                log(f"killed {n} leftover processes of pid {pid}")
