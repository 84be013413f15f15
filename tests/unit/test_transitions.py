"""The allocation runner's transition table, on its own."""

from __future__ import annotations

import pytest

from hacontrol.agent.transitions import TRANSITIONS, InvalidTransition, Trigger, transition
from hacontrol.model.states import REPORTED_STATES as STATES
from hacontrol.model.states import AllocState

FINAL = (AllocState.FAILED, AllocState.STOPPED)
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
    assert transition(state, Trigger.STOPPED) == AllocState.STOPPED
    assert transition(state, Trigger.CRASHED) == AllocState.FAILED


def test_a_normal_life() -> None:
    state = AllocState.STARTING
    for trigger, expected in [
        (Trigger.LAUNCH, AllocState.STARTING),
        (Trigger.LAUNCHED, AllocState.RUNNING),
        (Trigger.HEALTH, AllocState.RUNNING),
        (Trigger.PAUSE, AllocState.PAUSED),
        (Trigger.RESUME, AllocState.RUNNING),
        (Trigger.EXITED, AllocState.EXITED),  # restart pending
        (Trigger.LAUNCH, AllocState.STARTING),
        (Trigger.LAUNCHED, AllocState.RUNNING),
        (Trigger.GAVE_UP, AllocState.FAILED),
    ]:
        state = transition(state, trigger)
        assert state == expected


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (AllocState.STARTING, Trigger.PAUSE),  # nothing to freeze yet
        (AllocState.EXITED, Trigger.PAUSE),
        (AllocState.RUNNING, Trigger.RESUME),  # only a paused allocation resumes
        (AllocState.PAUSED, Trigger.HEALTH),  # checks are suspended while paused
        (AllocState.RUNNING, Trigger.LAUNCH),  # one process at a time
        (AllocState.EXITED, Trigger.EXITED),
        (AllocState.STARTING, Trigger.EXITED),  # it never ran
    ],
)
def test_moves_the_runner_never_makes(state: str, trigger: Trigger) -> None:
    with pytest.raises(InvalidTransition):
        transition(state, trigger)


def test_paused_process_may_end_or_be_stopped() -> None:
    assert transition(AllocState.PAUSED, Trigger.EXITED) == AllocState.EXITED
    assert transition(AllocState.PAUSED, Trigger.GAVE_UP) == AllocState.FAILED
    assert transition(AllocState.PAUSED, Trigger.STOPPED) == AllocState.STOPPED
