"""Planners of faults on agents and their job processes (runs with agents only)."""

from __future__ import annotations

import random

from .base import AGENT, K_CRASH, K_KILL, K_OVERLOAD, K_PARTITION, LEADER, FaultPlan

# Comfortably past the servers' default heartbeat grace (3 s), so the node is marked down and
# its allocations replaced before the agent returns to find them gone.
NODE_LOSS_MIN_S = 10.0

# Allocations one overload burst asks for, spread over the run's agents.
OVERLOAD_SIZES = (200, 400, 600)

# Nemeses that act on agents or their job processes: they need a run with agents.
AGENT_NEMESES = frozenset({"kill-agent", "partition-agent", "crash-storm", "node-loss",
                           "overload"})


def one_agent(rng: random.Random, agents: list[str]) -> str:
    # Planned without agent names (e.g. only to learn the kind), a placeholder stands in.
    return rng.choice(agents) if agents else AGENT


def kill_agent(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_KILL, [one_agent(rng, agents)])


def partition_agent(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Other agents, named in no group, join every group (see `Nemesis._resolve`).
    return FaultPlan(K_PARTITION, groups=[[one_agent(rng, agents)], list(reps)])


def crash_storm(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_CRASH, size=rng.randint(3, 8))


def node_loss(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_KILL, [one_agent(rng, agents)], min_duration_s=NODE_LOSS_MIN_S)



def overload(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # The leader is killed twice per window: once as the burst starts, once as it is
    # scaled down again; the second leader is whoever leads then.
    return FaultPlan(K_OVERLOAD, [LEADER], size=rng.choice(OVERLOAD_SIZES))
