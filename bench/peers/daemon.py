"""What every process supervisor is measured on, given how to start N and how to tell.

The same sequence for supervisord, circus and PM2: settle, start N `sleep 3600`, time until
N are running, settle, then the daemon's RSS and CPU over a quiet window. Those without an
API for "running" are read through the process table: N live `sleep` descendants.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.measure.procs import idle_usage, live_named
from tests.integration.harness import wait_for

Figures = dict[str, float | None]
POLL_S = 0.05


@dataclass(frozen=True)
class ManySettings:
    n: int
    settle_s: float
    idle_s: float  # 0: no idle window (the 1,000 row only times the start)
    limit_s: float  # report a timeout (None) past this


def sleeps_running(pid: int, n: int) -> Callable[[], bool]:
    return lambda: live_named(pid, "sleep") >= n


def measure_many(pid: int, trigger: Callable[[], None], running: Callable[[], bool],
                 s: ManySettings) -> Figures:
    """start_s (None past the limit), and rss_mb / idle_cpu_pct when s.idle_s > 0."""
    out: Figures = {}
    time.sleep(s.settle_s)
    t0 = time.perf_counter()
    try:
        trigger()  # may itself wait (a CLI that returns once it has started them)
        left = max(0.1, s.limit_s - (time.perf_counter() - t0))
        wait_for(running, left, interval=POLL_S, what=f"{s.n} running")
        out["start_s"] = time.perf_counter() - t0
    except (AssertionError, subprocess.TimeoutExpired):
        out["start_s"] = None
        return out
    if s.idle_s > 0:
        time.sleep(s.settle_s)
        out["rss_mb"], out["idle_cpu_pct"] = idle_usage(pid, s.idle_s)
    return out
