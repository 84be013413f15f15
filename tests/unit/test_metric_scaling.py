"""The metric scaling decision (`autoscale.decide_metric`), one rule at a time, on plain
data: no cluster, no clock, no I/O."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hacontrol.scheduler.autoscale import LowSince, Reading, Rule, decide_metric, wanted

RULE = Rule(lo=1, hi=10, target=10.0, cooldown_s=30.0, down_delay_s=60.0, tolerance=0.1)


def test_no_value_means_no_change_and_forgets_a_pending_scale_down() -> None:
    d = decide_metric(4, None, RULE, None, LowSince(0.0, 1, 4), now=1000)
    assert d.count is None and d.low is None
    assert "no fresh value" in d.reason


def test_scales_up_at_once_to_ceil_of_total_over_target() -> None:
    d = decide_metric(2, Reading(120.0), RULE, None, None, now=1000)
    assert d.count == 10  # ceil(120 / 10) = 12, clamped to max 10
    assert decide_metric(2, Reading(41.0), RULE, None, None, now=1000).count == 5
    assert "2 -> 5" in decide_metric(2, Reading(41.0), RULE, None, None, now=1000).reason


def test_scale_up_waits_for_the_cooldown_since_the_last_change() -> None:
    assert decide_metric(2, Reading(50.0), RULE, 990.0, None, now=1000).count is None
    assert decide_metric(2, Reading(50.0), RULE, 969.0, None, now=1000).count == 5


def test_dead_band_around_the_target_changes_nothing() -> None:
    # 2 allocations at 10 each: 21 is 5% over the target, 19 is 5% under.
    for total in (19.0, 20.0, 21.0, 21.9):
        assert decide_metric(2, Reading(total), RULE, None, None, now=1000).count is None
    assert decide_metric(2, Reading(22.5), RULE, None, None, now=1000).count == 3
    assert wanted(2, 21.0, RULE) == 2 and wanted(2, 23.0, RULE) == 3


def test_bounds_apply_even_inside_the_dead_band() -> None:
    assert wanted(0, 0.0, RULE) == 1  # min 1
    assert wanted(12, 120.0, RULE) == 10  # over max: back within
    zero = Rule(0, 5, 10.0, 0.0, 0.0, 0.1)
    assert decide_metric(0, Reading(3.0), zero, None, None, now=0).count == 1  # from zero
    assert decide_metric(0, Reading(0.0), zero, None, None, now=0).count is None


def test_extreme_values_stay_within_bounds() -> None:
    tiny = Rule(1, 7, 1e-300, 0.0, 0.0, 0.1)
    assert wanted(1, 1e15, tiny) == 7  # total / target overflows to inf
    assert wanted(3, -5.0, RULE) == 1  # a negative gauge sum calls for the minimum


def test_scale_down_waits_for_the_delay_and_goes_to_the_peak_of_that_time() -> None:
    first = decide_metric(8, Reading(20.0), RULE, None, None, now=1000)
    assert first.count is None and first.low == LowSince(1000, 2, 8)
    # The load comes back up for a moment (still under 8): the peak remembers it.
    mid = decide_metric(8, Reading(49.0), RULE, None, first.low, now=1030)
    assert mid.count is None and mid.low == LowSince(1000, 5, 8)
    late = decide_metric(8, Reading(15.0), RULE, None, mid.low, now=1060)
    assert late.count == 5 and late.low is None  # the peak, not the latest 2


def test_a_scale_down_starts_over_when_the_metric_stops_asking_for_it() -> None:
    low = decide_metric(8, Reading(20.0), RULE, None, None, now=1000).low
    back = decide_metric(8, Reading(80.0), RULE, None, low, now=1030)
    assert back.count is None and back.low is None
    again = decide_metric(8, Reading(20.0), RULE, None, back.low, now=1061)
    assert again.count is None and again.low == LowSince(1061, 2, 8)


def test_a_scale_down_starts_over_when_the_count_changed_meanwhile() -> None:
    stale = LowSince(900.0, 3, 8)
    d = decide_metric(2, Reading(5.0), Rule(1, 10, 10.0, 30.0, 60.0, 0.1), None, stale,
                      now=1000)
    assert d.count is None and d.low == LowSince(1000, 1, 2)


def test_scale_down_also_waits_for_the_cooldown() -> None:
    low = LowSince(900.0, 2, 8)
    d = decide_metric(8, Reading(20.0), RULE, 980.0, low, now=1000)
    assert d.count is None and d.low == low
    assert decide_metric(8, Reading(20.0), RULE, 960.0, low, now=1000).count == 2


def test_an_incomplete_reading_may_scale_up_but_never_down() -> None:
    assert decide_metric(2, Reading(50.0, complete=False), RULE, None, None, now=0).count == 5
    d = decide_metric(8, Reading(10.0, complete=False), RULE, None, LowSince(0, 1, 8),
                      now=1000)
    assert d.count is None and d.low is None and "every allocation" in d.reason


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 12), st.floats(0, 500, allow_nan=False),
       st.floats(0.5, 50, allow_nan=False), st.floats(0, 0.5, allow_nan=False))
def test_a_steady_load_settles_within_bounds_and_stays(count: int, total: float,
                                                       target: float, band: float) -> None:
    rule = Rule(1, 10, target, 0.0, 0.0, band)
    low: LowSince | None = None
    changes = []
    for step in range(6):
        d = decide_metric(count, Reading(total), rule, None, low, now=float(step))
        low = d.low
        if d.count is not None:
            changes.append(d.count)
            count = d.count
    # At most one change (straight to its goal), then none: no flapping.
    assert len(changes) <= 1
    assert changes == [] or 1 <= changes[0] <= 10
