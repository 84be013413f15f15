"""The fault schedule and its executor.

A schedule is a list of `FaultWindow`s drawn from a seed alone (`make_schedule`), so a run is
reproducible: the same seed gives the same windows. Windows never overlap and are separated
by quiet gaps in which the cluster may recover. Targets that depend on the cluster's state
(the leader) are placeholders resolved when the window starts; the resolved names go into
the history.

    base       windows, plans, placeholders, primitive fault kinds and what they need
    crash      planners of SIGKILL/SIGSTOP/restart-all/load faults on replicas
    network    planners of partitions and packet loss
    agents     planners of faults on agents and their job processes
    power      planners of power cuts (replicas on power-loss mounts, chaos.lazyfs)
    membership replicas joined and removed under kills and partitions (`Changes`)
    registry   every nemesis by name; schedules; what a backend can run
    executor   `Nemesis`, which runs a schedule against a backend
"""

from .base import (
    AGENT,
    DEFAULT_INTERVAL,
    KIND_NEEDS,
    LEADER,
    OTHERS,
    FaultPlan,
    FaultWindow,
    NemesisDef,
    UnsupportedNemesis,
)
from .executor import Nemesis
from .registry import (
    AGENT_NEMESES,
    NEMESES,
    POWER_NEMESES,
    check_supported,
    list_nemeses,
    make_schedule,
    mixable,
    plan_needs,
    supported,
    validate_schedule,
)

__all__ = [
    "AGENT", "AGENT_NEMESES", "DEFAULT_INTERVAL", "KIND_NEEDS", "LEADER", "NEMESES", "OTHERS",
    "POWER_NEMESES", "FaultPlan", "FaultWindow", "Nemesis", "NemesisDef", "UnsupportedNemesis",
    "check_supported", "list_nemeses", "make_schedule", "mixable", "plan_needs", "supported",
    "validate_schedule",
]
