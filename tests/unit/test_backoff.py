from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hacontrol.agent.backoff import (
    ACTION_COMPLETE,
    ACTION_GIVE_UP,
    ACTION_RESTART,
    JITTER,
    RestartState,
    base_delay,
    decide,
    gave_up,
    next_attempt_base,
    restart_delay,
    should_restart,
)
from hacontrol.agent.spec import AllocationSpec, parse_signal
from hacontrol.model.spec import RestartSpec, StopSpec
from hacontrol.model.states import RestartPolicy

ON_FAILURE = RestartSpec(policy=RestartPolicy.ON_FAILURE)
ALWAYS = RestartSpec(policy=RestartPolicy.ALWAYS)
NEVER = RestartSpec(policy=RestartPolicy.NEVER)

policies = st.builds(
    RestartSpec,
    policy=st.sampled_from(["always", "on-failure", "never"]),
    max_restarts=st.integers(0, 50),
    window_s=st.floats(0, 1e4),
    backoff_s=st.floats(0, 1e3),
    backoff_max_s=st.floats(0, 1e4),
    min_uptime_s=st.floats(0, 1e3),
)
attempts = st.integers(-5, 10_000)
unit = st.floats(0, 1)


# ------------------------------------------------------------ should_restart


@pytest.mark.parametrize(
    ("policy", "exit_code", "sig", "expected"),
    [
        (ON_FAILURE, 0, None, False),
        (ON_FAILURE, 3, None, True),
        (ON_FAILURE, None, "SIGKILL", True),
        (ALWAYS, 0, None, True),
        (ALWAYS, 1, None, True),
        (NEVER, 1, None, False),
        (NEVER, None, "SIGSEGV", False),
    ],
)
def test_should_restart(
    policy: RestartSpec, exit_code: int | None, sig: str | None, expected: bool
) -> None:
    assert should_restart(policy, exit_code, sig) is expected


# ------------------------------------------------------------ delays


def test_first_delay_is_backoff_s_and_doubles_until_cap() -> None:
    p = RestartSpec(backoff_s=0.1, backoff_max_s=1.0)
    assert [base_delay(p, a) for a in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert restart_delay(p, 0, 0.0) == pytest.approx(0.1)
    assert restart_delay(p, 0, 1.0) == pytest.approx(0.1 * (1 - JITTER))


def test_zero_backoff_means_immediate_restart() -> None:
    p = RestartSpec(backoff_s=0.0)
    assert all(restart_delay(p, a, 0.5) == 0.0 for a in range(100))


def test_huge_attempt_does_not_overflow() -> None:
    assert base_delay(RestartSpec(backoff_s=1e3, backoff_max_s=7.0), 10**9) == 7.0


@given(policies, attempts, unit)
def test_delay_within_bounds(policy: RestartSpec, attempt: int, rand: float) -> None:
    d = restart_delay(policy, attempt, rand)
    base = base_delay(policy, attempt)
    assert 0.0 <= d <= policy.backoff_max_s
    assert base * (1 - JITTER) - 1e-9 <= d <= base + 1e-9


@given(policies, attempts)
def test_base_delay_monotone(policy: RestartSpec, attempt: int) -> None:
    assert base_delay(policy, attempt) <= base_delay(policy, attempt + 1)


@given(policies, attempts, unit, unit)
def test_more_jitter_never_lengthens(
    policy: RestartSpec, attempt: int, a: float, b: float
) -> None:
    lo, hi = sorted((a, b))
    assert restart_delay(policy, attempt, hi) <= restart_delay(policy, attempt, lo)


@given(policies, attempts, st.floats(-10, 10))
def test_rand_out_of_range_is_clamped(policy: RestartSpec, attempt: int, rand: float) -> None:
    assert 0.0 <= restart_delay(policy, attempt, rand) <= policy.backoff_max_s


# ------------------------------------------------------------ giving up


def test_gave_up_counts_only_the_window() -> None:
    p = RestartSpec(max_restarts=2, window_s=10.0)
    assert not gave_up(p, [], 100.0)
    assert not gave_up(p, [95.0], 100.0)
    assert gave_up(p, [95.0, 99.0], 100.0)
    # Old restarts have left the window.
    assert not gave_up(p, [80.0, 85.0, 99.0], 100.0)


def test_zero_max_restarts_gives_up_at_once() -> None:
    assert gave_up(RestartSpec(max_restarts=0), [], 0.0)


@given(policies, st.lists(st.floats(0, 1e4), max_size=60), st.floats(0, 2e4))
def test_gave_up_matches_definition(policy: RestartSpec, times: list[float], now: float) -> None:
    in_window = sum(1 for t in times if now - t < policy.window_s)
    assert gave_up(policy, times, now) == (in_window + 1 > policy.max_restarts)


def test_uptime_resets_attempt() -> None:
    p = RestartSpec(min_uptime_s=5.0)
    assert next_attempt_base(p, 7, 4.9) == 7
    assert next_attempt_base(p, 7, 5.0) == 0


# ------------------------------------------------------------ decide


def test_decide_restart_sequence_backs_off_then_gives_up() -> None:
    p = RestartSpec(max_restarts=3, window_s=60.0, backoff_s=1.0, backoff_max_s=100.0)
    state = RestartState()
    delays = []
    for i in range(3):
        d = decide(p, state, 1, None, uptime_s=0.1, now=float(i), rand=0.0)
        assert d.action == ACTION_RESTART
        delays.append(d.delay_s)
        state = d.state
    assert delays == [1.0, 2.0, 4.0]
    d = decide(p, state, 1, None, uptime_s=0.1, now=3.0, rand=0.0)
    assert d.action == ACTION_GIVE_UP
    assert "3" in d.reason


def test_decide_long_run_resets_backoff() -> None:
    p = RestartSpec(backoff_s=1.0, backoff_max_s=100.0, min_uptime_s=5.0)
    state = RestartState(attempt=4, restart_times=(0.0,))
    d = decide(p, state, 1, None, uptime_s=30.0, now=31.0, rand=0.0)
    assert d.action == ACTION_RESTART
    assert d.delay_s == 1.0
    assert d.state.attempt == 1


def test_decide_completion() -> None:
    assert decide(ON_FAILURE, RestartState(), 0, None, 1.0, 1.0, 0.0).action == ACTION_COMPLETE
    d = decide(NEVER, RestartState(), 0, None, 1.0, 1.0, 0.0)
    assert d.action == ACTION_COMPLETE
    assert "never" in d.reason


def test_a_failure_the_never_policy_does_not_restart_is_given_up() -> None:
    # Given up means `failed` on the controllers, never a silent `exited`.
    for code, sig, why in ((3, None, "exited with code 3"), (None, "SIGKILL", "SIGKILL")):
        d = decide(NEVER, RestartState(), code, sig, 1.0, 1.0, 0.0)
        assert d.action == ACTION_GIVE_UP
        assert why in d.reason and "never" in d.reason


@given(
    policies,
    st.lists(st.tuples(st.floats(0, 100), unit), max_size=80),
)
def test_decide_never_exceeds_max_restarts_in_window(
    policy: RestartSpec, gaps: list[tuple[float, float]]
) -> None:
    """Simulated crash loop: restarts granted within any window stay <= max_restarts."""
    state = RestartState()
    now = 0.0
    granted: list[float] = []
    for gap, rand in gaps:
        now += gap
        d = decide(policy, state, 1, None, uptime_s=gap, now=now, rand=rand)
        if d.action != ACTION_RESTART:
            assert d.action == ACTION_GIVE_UP  # exit code 1: a failure either way
            break
        assert 0.0 <= d.delay_s <= policy.backoff_max_s
        granted.append(now)
        state = d.state
        assert sum(1 for t in granted if now - t < policy.window_s) <= policy.max_restarts


# ------------------------------------------------------------ spec validation


def test_allocation_spec_validation() -> None:
    with pytest.raises(ValueError):
        AllocationSpec("a", [])
    with pytest.raises(ValueError):
        AllocationSpec("../etc", ["true"])
    with pytest.raises(ValueError):
        AllocationSpec("a", ["true"], stop=StopSpec(signal="SIGNOPE"))
    assert AllocationSpec("a", ["true"]).restart == RestartSpec()


@pytest.mark.parametrize("name", ["SIGTERM", "TERM", "term", "15"])
def test_parse_signal(name: str) -> None:
    assert parse_signal(name).name == "SIGTERM"
