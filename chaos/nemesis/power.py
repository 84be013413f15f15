"""Planners of power cuts: replicas SIGKILLed and their disks reverted to what was synced.

They need the run's replicas on power-loss mounts (chaos.lazyfs), which the runner sets up
when its nemesis is one of `POWER_NEMESES`; `mixed` never draws them, so a mixed run needs
no FUSE.
"""

from __future__ import annotations

import random

from .base import K_POWER, K_POWER_ELECTION, LEADER, FaultPlan
from .crash import RESTART_ALL_MAX_S

POWER_NEMESES = frozenset({"power-loss-one", "power-loss-majority", "power-loss-all",
                           "power-loss-election"})
ELECTION_ROUNDS = (2, 4)  # power cuts per power-loss-election window


def power_loss_one(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # The leader holds the newest unsynced entries, so half the time it is the one cut.
    return FaultPlan(K_POWER, [LEADER if rng.random() < 0.5 else rng.choice(reps)])


def power_loss_majority(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_POWER, sorted(rng.sample(reps, len(reps) // 2 + 1)))


def power_loss_all(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_POWER, list(reps), max_duration_s=RESTART_ALL_MAX_S)


def power_loss_election(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Each round: stall a voter's disk, SIGKILL the leader, cut the voter's power when a new
    # leader shows (see `Nemesis._power_election`).
    return FaultPlan(K_POWER_ELECTION, [LEADER], size=rng.randint(*ELECTION_ROUNDS))
