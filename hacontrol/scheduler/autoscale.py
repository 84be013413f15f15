"""Scaling a job from the CPU its instances report, as a pure function."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScaleDecision:
    count: int
    reason: str


def decide(count: int, cpu_request: float, cpu_used: list[float], lo: int, hi: int,
           target: float, last_change: float | None, cooldown_s: float,
           now: float) -> ScaleDecision | None:
    """New count from the mean CPU use per instance relative to `target` × request.

    None while cooling down, without samples, or when the count would not change.
    `cpu_used` is in cores per running instance.
    """
    if last_change is not None and now - last_change < cooldown_s:
        return None
    if not cpu_used or cpu_request <= 0:
        return None
    utilisation = sum(cpu_used) / len(cpu_used) / cpu_request
    want = math.ceil(count * utilisation / target - 1e-9) if count else lo
    want = max(lo, min(hi, want))
    if want == count:
        return None
    return ScaleDecision(want, f"mean cpu {utilisation:.0%} of request vs target "
                               f"{target:.0%}: {count} -> {want}")
