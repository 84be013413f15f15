"""Placement: a pure function from (pending work, nodes) to a plan.

Feasibility first (a node must be ready and have the cpu and memory free), then scoring:
binpack prefers the node that will be fullest after the placement, which keeps whole nodes
free for large work and is what Nomad does by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeRoom:
    name: str
    cpu_capacity: float
    memory_capacity: int
    cpu_free: float
    memory_free: int


@dataclass(frozen=True)
class Demand:
    alloc_id: str
    cpu: float
    memory_mb: int


@dataclass
class Plan:
    placements: list[tuple[str, str]] = field(default_factory=list)
    # alloc id -> why it could not be placed, readable by users
    unplaced: dict[str, str] = field(default_factory=dict)


def _score(node: NodeRoom, cpu_left: float, mem_left: int, d: Demand) -> float:
    cpu_used = 1.0 - (cpu_left - d.cpu) / node.cpu_capacity if node.cpu_capacity else 1.0
    mem_used = (1.0 - (mem_left - d.memory_mb) / node.memory_capacity
                if node.memory_capacity else 1.0)
    return cpu_used + mem_used


def plan_placements(demands: list[Demand], nodes: list[NodeRoom]) -> Plan:
    """Place as many demands as fit; larger demands first so they are not crowded out."""
    free = {n.name: (n.cpu_free, n.memory_free) for n in nodes}
    by_name = {n.name: n for n in nodes}
    plan = Plan()
    order = sorted(demands, key=lambda d: (-d.cpu, -d.memory_mb, d.alloc_id))
    for d in order:
        best: tuple[float, str] | None = None
        for name in sorted(free):
            cpu, mem = free[name]
            if d.cpu > cpu + 1e-9 or d.memory_mb > mem:
                continue
            score = _score(by_name[name], cpu, mem, d)
            if best is None or score > best[0]:
                best = (score, name)
        if best is None:
            if not nodes:
                plan.unplaced[d.alloc_id] = "no ready node"
            else:
                plan.unplaced[d.alloc_id] = (f"no node has {d.cpu:g} cpu and {d.memory_mb} MB "
                                             f"memory free ({len(nodes)} ready nodes checked)")
            continue
        name = best[1]
        cpu, mem = free[name]
        free[name] = (cpu - d.cpu, mem - d.memory_mb)
        plan.placements.append((d.alloc_id, name))
    return plan
