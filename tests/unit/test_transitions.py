"""The allocation runner's transition table, on its own."""

from __future__ import annotations

import pytest

from hacontrol.agent.spec import (
    STATE_EXITED,
    STATE_FAILED,
    STATE_PAUSED,
    STATE_RUNNING,
    STATE_STARTING,
    STATE_STOPPED,
    STATES,
)
from hacontrol.agent.transitions import TRANSITIONS, InvalidTransition, Trigger, transition

FINAL = (STATE_FAILED, STATE_STOPPED)
LIVE = sorted(STATES - set(FINAL))


def test_table_names_only_known_states() -> None:
    for (state, trigger), target in TRANSITIONS.items():
        assert state in STATES and target in STATES
        assert isinstance(trigger, Trigger)


@pytest.mark.parametrize("state", FINAL)
@pytest.mark.parametrize("trigger", list(Trigger))
def test_nothing_leaves_a_final_state(state: str, trigger: Trigger) -> None:
    with pytest.raises(InvalidTransition):
        transition(state, trigger)


@pytest.mark.parametrize("state", LIVE)
def test_stop_and_crash_are_accepted_in_every_live_state(state: str) -> None:
    assert transition(state, Trigger.STOPPED) == STATE_STOPPED
    assert transition(state, Trigger.CRASHED) == STATE_FAILED


def test_a_normal_life() -> None:
    state = STATE_STARTING
    for trigger, expected in [
        (Trigger.LAUNCH, STATE_STARTING),
        (Trigger.LAUNCHED, STATE_RUNNING),
        (Trigger.HEALTH, STATE_RUNNING),
        (Trigger.PAUSE, STATE_PAUSED),
        (Trigger.RESUME, STATE_RUNNING),
        (Trigger.EXITED, STATE_EXITED),  # restart pending
        (Trigger.LAUNCH, STATE_STARTING),
        (Trigger.LAUNCHED, STATE_RUNNING),
        (Trigger.GAVE_UP, STATE_FAILED),
    ]:
        state = transition(state, trigger)
        assert state == expected


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (STATE_STARTING, Trigger.PAUSE),  # nothing to freeze yet
        (STATE_EXITED, Trigger.PAUSE),
        (STATE_RUNNING, Trigger.RESUME),  # only a paused allocation resumes
        (STATE_PAUSED, Trigger.HEALTH),  # checks are suspended while paused
        (STATE_RUNNING, Trigger.LAUNCH),  # one process at a time
        (STATE_EXITED, Trigger.EXITED),
        (STATE_STARTING, Trigger.EXITED),  # it never ran
    ],
)
def test_moves_the_runner_never_makes(state: str, trigger: Trigger) -> None:
    with pytest.raises(InvalidTransition):
        transition(state, trigger)


def test_paused_process_may_end_or_be_stopped() -> None:
    assert transition(STATE_PAUSED, Trigger.EXITED) == STATE_EXITED
    assert transition(STATE_PAUSED, Trigger.GAVE_UP) == STATE_FAILED
    assert transition(STATE_PAUSED, Trigger.STOPPED) == STATE_STOPPED
