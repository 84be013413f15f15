"""Planners of process faults on replicas: SIGKILL, SIGSTOP, whole-cluster restarts, load."""

from __future__ import annotations

import random

from .base import K_KILL, K_LOAD, K_PAUSE, K_RESTART_ALL, LEADER, FaultPlan

RESTART_ALL_MAX_S = 2.0  # a whole-cluster outage longer than this only measures downtime

def kill_leader(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_KILL, [LEADER])


def kill_random(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_KILL, [rng.choice(reps)])


def kill_minority(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    n = max(1, (len(reps) - 1) // 2)
    return FaultPlan(K_KILL, sorted(rng.sample(reps, n)))


def pause(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    # Pausing the leader is the interesting case (a stale leader waking up), so half the time.
    return FaultPlan(K_PAUSE, [LEADER if rng.random() < 0.5 else rng.choice(reps)])


def restart_all(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_RESTART_ALL, list(reps), max_duration_s=RESTART_ALL_MAX_S)


def load_burst(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    return FaultPlan(K_LOAD, size=rng.choice([1000, 2000, 4000]))

