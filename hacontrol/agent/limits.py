"""Fallback limits for hosts without usable cgroups (isolation mode "rlimit").

rlimits are per process, not per allocation, so they can only be a backstop: the
memory limit proper is enforced by the supervisor's sampling watchdog, which
sums the resident memory of the allocation's process group and kills the group
(reported as an OOM) once it is over the limit. RLIMIT_DATA is set with
headroom above the limit so that a process growing faster than the sampling
interval still stops somewhere; RLIMIT_AS is not used because runtimes that
reserve large virtual ranges (Go, the JVM) would fail to start under it.

Not enforceable in this mode: the cpu limit (no rlimit throttles, RLIMIT_CPU
only caps total seconds) and the pids limit (RLIMIT_NPROC counts per user and
is ignored for root). Process-group kill replaces the cgroup kill, so a
grandchild that calls setsid() can escape a stop in this mode.
"""

from __future__ import annotations

from hacontrol.model.resources import Resources

MIB = 1024 * 1024
# Backstop = factor * limit + slack; generous enough that the watchdog, not
# an allocation failure, is what normally ends a process over its limit.
RLIMIT_FACTOR = 2
RLIMIT_SLACK_BYTES = 64 * MIB


def rlimits_for(res: Resources | None) -> list[tuple[str, int, int]]:
    """(resource name, soft, hard) to apply in the child before exec; None: no limits."""
    if res is None:
        return []
    backstop = res.memory_mb * MIB * RLIMIT_FACTOR + RLIMIT_SLACK_BYTES
    return [("RLIMIT_DATA", backstop, backstop)]


def over_memory(rss_bytes: int, res: Resources | None) -> bool:
    """The watchdog's verdict for one allocation; None: no limit."""
    return res is not None and rss_bytes > res.memory_mb * MIB
