"""Quota arithmetic: pure functions over plain values."""

from __future__ import annotations

from hacontrol.model.errors import Rejection, quota_exceeded
from hacontrol.model.resources import Quota, Usage

_EPS = 1e-9


def check_fits(quota: Quota, usage: Usage) -> Rejection | None:
    """None when `usage` is within `quota`, else the rejection naming the first excess."""
    if quota.cpu is not None and usage.cpu > quota.cpu + _EPS:
        return quota_exceeded(f"cpu {usage.cpu:g} would exceed the namespace quota of "
                              f"{quota.cpu:g}", "resources.cpu")
    if quota.memory_mb is not None and usage.memory_mb > quota.memory_mb:
        return quota_exceeded(f"memory_mb {usage.memory_mb} would exceed the namespace quota "
                              f"of {quota.memory_mb}", "resources.memory_mb")
    if quota.processes is not None and usage.processes > quota.processes:
        return quota_exceeded(f"{usage.processes} processes would exceed the namespace quota of "
                              f"{quota.processes}", "count")
    return None


def headroom(quota: Quota, usage: Usage) -> dict[str, float | int | None]:
    return {
        "cpu": None if quota.cpu is None else round(max(0.0, quota.cpu - usage.cpu), 6),
        "memory_mb": None if quota.memory_mb is None else max(0, quota.memory_mb - usage.memory_mb),
        "processes": None if quota.processes is None else max(0, quota.processes - usage.processes),
    }
