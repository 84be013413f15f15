"""The allocation runner's states and the events that move between them.

Pure: the table below is the whole story of which state may follow which.
The runner asks :func:`transition` before it reports anything, so a report
the table does not allow is a bug caught where it happens, not a puzzling
state on the controllers.
"""

from __future__ import annotations

import enum

from hacontrol.agent.spec import (
    REASON_EXIT,
    REASON_OOM,
    REASON_SIGNAL,
    STATE_EXITED,
    STATE_FAILED,
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_STARTING,
    STATE_STOPPED,
)


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


_LIVE = (STATE_STARTING, STATE_RUNNING, STATE_PAUSED, STATE_EXITED)

# (current state, trigger) -> next state. Anything missing is not allowed.
TRANSITIONS: dict[tuple[str, Trigger], str] = {
    (STATE_STARTING, Trigger.LAUNCH): STATE_STARTING,
    (STATE_EXITED, Trigger.LAUNCH): STATE_STARTING,
    (STATE_STARTING, Trigger.LAUNCHED): STATE_RUNNING,
    (STATE_STARTING, Trigger.LAUNCH_FAILED): STATE_FAILED,
    (STATE_RUNNING, Trigger.EXITED): STATE_EXITED,
    (STATE_PAUSED, Trigger.EXITED): STATE_EXITED,
    (STATE_RUNNING, Trigger.GAVE_UP): STATE_FAILED,
    (STATE_PAUSED, Trigger.GAVE_UP): STATE_FAILED,
    (STATE_RUNNING, Trigger.HEALTH): STATE_RUNNING,
    (STATE_RUNNING, Trigger.PAUSE): STATE_PAUSED,
    (STATE_PAUSED, Trigger.RESUME): STATE_RUNNING,
    **{(state, Trigger.STOPPED): STATE_STOPPED for state in _LIVE},
    **{(state, Trigger.CRASHED): STATE_FAILED for state in _LIVE},
}


class InvalidTransition(RuntimeError):
    """The runner tried a move the table does not allow (a bug in the runner)."""


def transition(state: str, trigger: Trigger) -> str:
    """The state after ``trigger`` in ``state``; InvalidTransition if not allowed."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise InvalidTransition(f"{trigger} is not allowed in state {state!r}") from None


def exit_reason(exit_code: int | None, sig: str | None, oom: bool, requested: str | None) -> str:
    """Why a process ended; an ending we caused names our cause."""
    if requested is not None:
        return requested
    if oom:
        return REASON_OOM
    if sig is not None:
        return REASON_SIGNAL
    return REASON_EXIT
