"""The allocation runner's states and the events that move between them.

Pure: the table below is the whole story of which state may follow which.
The runner asks :func:`transition` before it reports anything, so a report
the table does not allow is a bug caught where it happens, not a puzzling
state on the controllers.
"""

from __future__ import annotations

import enum

from hacontrol.model.states import AllocState, ExitReason


class Trigger(enum.StrEnum):
    """What happened to an allocation, as the runner sees it."""

    LAUNCH = "launch"  # a process is about to be started (first time or restart)
    LAUNCHED = "launched"  # the process runs (spawned, or adopted from an earlier agent)
    LAUNCH_FAILED = "launch-failed"  # the process could not be started at all
    EXITED = "exited"  # the process ended; a restart may follow, or it completed
    GAVE_UP = "gave-up"  # the process ended and the restart policy gives up
    HEALTH = "health"  # the health status changed
    PAUSE = "pause"
    RESUME = "resume"
    STOPPED = "stopped"  # ended on request; never restarted afterwards
    CRASHED = "crashed"  # the runner itself failed (a bug): report and give up


_LIVE = (AllocState.STARTING, AllocState.RUNNING, AllocState.PAUSED, AllocState.EXITED)

# (current state, trigger) -> next state. Anything missing is not allowed.
TRANSITIONS: dict[tuple[AllocState, Trigger], AllocState] = {
    (AllocState.STARTING, Trigger.LAUNCH): AllocState.STARTING,
    (AllocState.EXITED, Trigger.LAUNCH): AllocState.STARTING,
    (AllocState.STARTING, Trigger.LAUNCHED): AllocState.RUNNING,
    (AllocState.STARTING, Trigger.LAUNCH_FAILED): AllocState.FAILED,
    (AllocState.RUNNING, Trigger.EXITED): AllocState.EXITED,
    (AllocState.PAUSED, Trigger.EXITED): AllocState.EXITED,
    (AllocState.RUNNING, Trigger.GAVE_UP): AllocState.FAILED,
    (AllocState.PAUSED, Trigger.GAVE_UP): AllocState.FAILED,
    (AllocState.RUNNING, Trigger.HEALTH): AllocState.RUNNING,
    (AllocState.RUNNING, Trigger.PAUSE): AllocState.PAUSED,
    (AllocState.PAUSED, Trigger.RESUME): AllocState.RUNNING,
    **{(state, Trigger.STOPPED): AllocState.STOPPED for state in _LIVE},
    **{(state, Trigger.CRASHED): AllocState.FAILED for state in _LIVE},
}


class InvalidTransition(RuntimeError):
    """The runner tried a move the table does not allow (a bug in the runner)."""


def transition(state: AllocState, trigger: Trigger) -> AllocState:
    """The state after ``trigger`` in ``state``; InvalidTransition if not allowed."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise InvalidTransition(f"{trigger} is not allowed in state {state!r}") from None


def exit_reason(
    exit_code: int | None, sig: str | None, oom: bool, requested: ExitReason | None
) -> ExitReason:
    """Why a process ended; an ending we caused names our cause."""
    if requested is not None:
        return requested
    if oom:
        return ExitReason.OOM
    if sig is not None:
        return ExitReason.SIGNAL
    return ExitReason.EXIT
