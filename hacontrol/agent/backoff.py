"""Pure restart decisions: no clocks, no randomness, no I/O.

The supervisor feeds in what happened (exit status, uptime, the current time,
a random number) and gets back what to do, so every branch here is testable
with plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hacontrol.model.spec import RestartSpec
from hacontrol.model.states import RestartPolicy

# Fraction of the delay that jitter may remove. Removing (rather than adding)
# keeps the result within backoff_max_s while still spreading out restarts of
# many allocations that crashed together.
JITTER = 0.5

# 2.0 ** 1000 is still a finite float; beyond it the cap has long applied.
_MAX_EXPONENT = 1000

ACTION_RESTART = "restart"
ACTION_COMPLETE = "complete"
ACTION_GIVE_UP = "give_up"


def should_restart(
    policy: RestartSpec, exit_code: int | None, signal: str | None, failed: bool = False
) -> bool:
    """Whether the policy wants the process back after this exit.

    ``failed`` marks a process ended for cause (failed health checks) whose
    exit status, typically from a graceful stop, would otherwise read as success.
    """
    if policy.policy == RestartPolicy.ALWAYS:
        return True
    if policy.policy == RestartPolicy.NEVER:
        return False
    return failed or signal is not None or exit_code != 0


def base_delay(policy: RestartSpec, attempt: int) -> float:
    """Delay before restart number ``attempt`` (0-based), before jitter."""
    exponent = min(max(attempt, 0), _MAX_EXPONENT)
    return min(policy.backoff_s * 2.0**exponent, policy.backoff_max_s)


def restart_delay(policy: RestartSpec, attempt: int, rand: float) -> float:
    """Jittered delay; ``rand`` in [0, 1] (0 gives the full base delay)."""
    rand = min(max(rand, 0.0), 1.0)
    return base_delay(policy, attempt) * (1.0 - JITTER * rand)


def recent_restarts(
    policy: RestartSpec, restart_times: Sequence[float], now: float
) -> list[float]:
    """The restart times that still count towards the window at ``now``."""
    return [t for t in restart_times if now - t < policy.window_s]


def gave_up(policy: RestartSpec, restart_times: Sequence[float], now: float) -> bool:
    """True if restarting at ``now`` would exceed max_restarts within window_s.

    ``restart_times`` holds when the earlier restarts happened; the restart
    being considered at ``now`` counts too.
    """
    return len(recent_restarts(policy, restart_times, now)) + 1 > policy.max_restarts


def next_attempt_base(policy: RestartSpec, attempt: int, uptime_s: float) -> int:
    """Backoff attempt to use after a run of ``uptime_s``: a healthy run resets it."""
    return 0 if uptime_s >= policy.min_uptime_s else max(attempt, 0)


def _failure(exit_code: int | None, signal: str | None, failed: bool) -> str:
    if failed:
        return "failed health checks"
    if signal is not None:
        return f"killed by {signal}"
    return f"exited with code {exit_code}"


@dataclass(frozen=True)
class RestartState:
    """What the decision needs to remember between exits of one allocation."""

    attempt: int = 0
    restart_times: tuple[float, ...] = ()


@dataclass(frozen=True)
class Decision:
    action: str  # restart | complete | give_up
    delay_s: float
    state: RestartState
    reason: str


def decide(
    policy: RestartSpec,
    state: RestartState,
    exit_code: int | None,
    signal: str | None,
    uptime_s: float,
    now: float,
    rand: float,
    failed: bool = False,
) -> Decision:
    """What to do after a process ended (not by request)."""
    if not should_restart(policy, exit_code, signal, failed):
        if policy.policy != RestartPolicy.NEVER:
            return Decision(ACTION_COMPLETE, 0.0, state, "completed successfully")
        if failed or signal is not None or exit_code != 0:
            # A failure that will not be restarted is a failed allocation, not an exited
            # one that looks as if it had finished its work (as Nomad marks it).
            return Decision(ACTION_GIVE_UP, 0.0, state,
                            f"{_failure(exit_code, signal, failed)}; restart policy is never")
        return Decision(ACTION_COMPLETE, 0.0, state, "restart policy is never")
    recent = recent_restarts(policy, state.restart_times, now)
    if gave_up(policy, recent, now):
        reason = f"gave up: more than {policy.max_restarts} restarts within {policy.window_s:g}s"
        return Decision(ACTION_GIVE_UP, 0.0, RestartState(state.attempt, tuple(recent)), reason)
    attempt = next_attempt_base(policy, state.attempt, uptime_s)
    delay = restart_delay(policy, attempt, rand)
    new_state = RestartState(attempt + 1, (*recent, now))
    return Decision(ACTION_RESTART, delay, new_state, f"restarting in {delay:.3f}s")
