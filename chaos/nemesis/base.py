"""The vocabulary of fault schedules: windows, plans, placeholders and primitive fault kinds.

A schedule is a list of `FaultWindow`s; each is planned by one nemesis (a `NemesisDef` in
`chaos.nemesis.registry`) as a `FaultPlan` of one primitive kind, which the executor
(`chaos.nemesis.executor.Nemesis`) knows how to start and end.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..cluster.base import KILL, LOSS, MEMBERSHIP, PARTITION, PAUSE, POWER

LEADER = "@leader"  # the replica leading when the window starts
OTHERS = "@others"  # every replica but that leader
AGENT = "@agent"  # a seeded random agent, for schedules planned without agent names

# Primitive fault kinds the executor knows how to start and end.
K_KILL = "kill"
K_PAUSE = "pause"
K_PARTITION = "partition"
K_LOSS = "loss"
K_RESTART_ALL = "restart-all"
K_LOAD = "load-burst"
K_CRASH = "crash-storm"  # SIGKILL job processes (not members): needs a run with agents
K_POWER = "power-loss"  # SIGKILL replicas and lose whatever their disks had not synced
K_POWER_ELECTION = "power-loss-election"  # power cuts of a voter inside elections, repeated
# A job scaled up by hundreds of allocations, then down again, each under a leader's SIGKILL
K_OVERLOAD = "overload"
# A replica joined or removed, with a kill or a partition (where the backend can) around it
K_MEMBERSHIP = "membership"

KIND_NEEDS: dict[str, frozenset[str]] = {
    K_KILL: frozenset({KILL}),
    K_PAUSE: frozenset({PAUSE}),
    K_PARTITION: frozenset({PARTITION}),
    K_LOSS: frozenset({LOSS}),
    K_RESTART_ALL: frozenset({KILL}),
    K_LOAD: frozenset(),
    K_CRASH: frozenset(),
    K_POWER: frozenset({KILL, POWER}),
    K_POWER_ELECTION: frozenset({KILL, POWER}),
    K_OVERLOAD: frozenset({KILL}),
    K_MEMBERSHIP: frozenset({KILL, MEMBERSHIP}),
}

DEFAULT_INTERVAL = (3.0, 6.0)


class UnsupportedNemesis(ValueError):
    """The nemesis is unknown, or needs something the backend or the run does not offer."""


@dataclass
class FaultPlan:
    kind: str
    targets: list[str] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    percent: int | None = None  # loss
    # load-burst: how many operations; power-loss-election: rounds; overload: allocations
    size: int | None = None
    max_duration_s: float | None = None
    min_duration_s: float | None = None


@dataclass
class FaultWindow:
    id: int
    start_s: float  # seconds since the nemesis started
    end_s: float
    nemesis: str  # the registry name that planned it, e.g. "kill-leader"
    kind: str
    targets: list[str] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)
    percent: int | None = None
    size: int | None = None
    # Seeds the choices made at injection time (e.g. a stand-in when no leader is known).
    seed: int = 0
    schedule: str = ""  # the nemesis the whole schedule was made for, e.g. "mixed"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Each planner takes (rng, replicas, agents) and returns the fault of one window.
Planner = Callable[[random.Random, list[str], list[str]], FaultPlan]


@dataclass(frozen=True)
class NemesisDef:
    description: str
    plan: Planner | None  # None: composed from the others (mixed)
