"""Planners of network faults: partitions of every shape, and packet loss."""

from __future__ import annotations

import random

from .base import K_LOSS, K_PARTITION, LEADER, OTHERS, FaultPlan


def partition_leader(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_PARTITION, [LEADER], groups=[[LEADER], [OTHERS]])


def halves(rng: random.Random, reps: list[str]) -> tuple[list[str], list[str]]:
    shuffled = rng.sample(reps, len(reps))
    cut = len(reps) // 2
    return sorted(shuffled[:cut]), sorted(shuffled[cut:])


def partition_halves(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    minority, majority = halves(rng, reps)
    return FaultPlan(K_PARTITION, groups=[minority, majority])


def partition_bridge(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Two halves with one replica in both: it sees everyone, nobody else does.
    shuffled = rng.sample(reps, len(reps))
    bridge, rest = shuffled[0], shuffled[1:]
    cut = len(rest) // 2
    return FaultPlan(K_PARTITION, groups=[sorted([bridge, *rest[:cut]]),
                                          sorted([bridge, *rest[cut:]])])


def partition_ring(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Each replica sees a majority (itself and its nearest ring neighbours), and no two see
    # the same one. With three replicas every pair is adjacent, so nothing is cut: the ring
    # needs five to bite.
    ring = rng.sample(reps, len(reps))
    n = len(ring)
    reach = (n // 2 + 1) // 2
    edges = {tuple(sorted((ring[i], ring[(i + d) % n]))) for i in range(n)
             for d in range(1, reach + 1) if ring[i] != ring[(i + d) % n]}
    groups = [list(e) for e in sorted(edges)] or [[r] for r in ring]
    return FaultPlan(K_PARTITION, groups=groups)


def partition_random(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    k = rng.randint(2, max(2, min(3, len(reps))))
    order = rng.sample(reps, len(reps))
    groups: list[list[str]] = [[] for _ in range(k)]
    for i, r in enumerate(order):
        # The first k go one per group so none is empty; the rest land anywhere.
        groups[i if i < k else rng.randrange(k)].append(r)
    return FaultPlan(K_PARTITION, groups=[sorted(g) for g in groups if g])


def netem(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    n = rng.randint(1, len(reps))
    return FaultPlan(K_LOSS, sorted(rng.sample(reps, n)),
                     percent=rng.choice([5, 10, 20, 30, 50]))

