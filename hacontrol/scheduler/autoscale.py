"""Scaling a job, as pure functions: on the CPU its allocations report (`decide`), or on a
metric of its load such as a queue's length (`decide_metric`)."""

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


# ------------------------------------------------------------ metric scaling

@dataclass(frozen=True)
class Reading:
    """The metric's total over the job, as the leader knows it now.

    `complete` is False when some running allocation has not reported its value (a
    prometheus metric scraped from each): the sum may be short, so it may scale up on it
    but never down."""

    total: float
    complete: bool = True


@dataclass(frozen=True)
class Rule:
    """A job's metric scaling settings (`ScalingSpec`), resolved."""

    lo: int
    hi: int
    target: float  # per allocation, > 0
    cooldown_s: float
    down_delay_s: float
    tolerance: float  # the dead band: a ratio to the target this close to 1 changes nothing


@dataclass(frozen=True)
class LowSince:
    """The metric has asked for fewer than `count` allocations continuously since `since`
    (wall time); `peak` is the most it asked for in that time, what a scale-down goes to."""

    since: float
    peak: int
    count: int  # the count it was asking to lower (another count starts the wait again)


@dataclass(frozen=True)
class MetricDecision:
    count: int | None  # the new count; None: no change
    low: LowSince | None  # what to remember for the next round
    reason: str


def wanted(count: int, total: float, rule: Rule) -> int:
    """How many allocations `total` calls for: ceil(total / target) within min..max,
    except that a current count inside the bounds whose load per allocation is within the
    tolerance of the target stays (the dead band that stops flapping)."""
    raw = total / rule.target  # may be inf for a tiny target: never ceil() that
    want = rule.hi if raw >= rule.hi else max(rule.lo, math.ceil(raw - 1e-9))
    if count > 0 and rule.lo <= count <= rule.hi:
        ratio = total / (count * rule.target)
        if abs(ratio - 1.0) <= rule.tolerance:
            return count
    return want


def decide_metric(count: int, reading: Reading | None, rule: Rule,
                  last_change: float | None, low: LowSince | None,
                  now: float) -> MetricDecision:
    """The next count of a job that scales on a metric.

    - No reading (no value, or only a stale one): no change, and a scale-down must wait
      its whole delay again once values come back.
    - Up: at once to what the total calls for, once the cooldown since the last change is
      over.
    - Down: only after the metric has asked for fewer allocations continuously for
      `down_delay_s` (and the cooldown is over), and only to the most it asked for in that
      time; never on an incomplete reading.
    """
    if reading is None:
        return MetricDecision(None, None, "no fresh value of the metric: no change")
    want = wanted(count, reading.total, rule)
    cooling = last_change is not None and now - last_change < rule.cooldown_s
    what = (f"metric total {reading.total:g} for {rule.target:g} per allocation"
            f"{'' if reading.complete else ' (not every allocation reported)'}")
    if want > count:
        if cooling:
            return MetricDecision(None, None, f"{what} calls for {want}: cooling down")
        return MetricDecision(want, None, f"{what}: {count} -> {want}")
    if want == count:
        return MetricDecision(None, None, f"{what}: {count} is right")
    if not reading.complete:
        return MetricDecision(None, None, f"{what} calls for {want}: waiting for every "
                                          "allocation's value before scaling down")
    low = (LowSince(now, want, count) if low is None or low.count != count
           else LowSince(low.since, max(low.peak, want), count))
    if now - low.since < rule.down_delay_s:
        return MetricDecision(None, low, f"{what} calls for {want} since "
                                         f"{now - low.since:.0f}s: scaling down after "
                                         f"{rule.down_delay_s:g}s")
    if cooling:
        return MetricDecision(None, low, f"{what} calls for {low.peak}: cooling down")
    return MetricDecision(low.peak, None, f"{what}, for {rule.down_delay_s:g}s: "
                                          f"{count} -> {low.peak}")
