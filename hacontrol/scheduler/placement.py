"""Placement: a pure function from (pending work, nodes) to a plan.

Each demand goes through feasibility first (the node is eligible, passes the demand's
constraints and has the cpu and memory free), then scoring among the feasible nodes:

* binpack (default) prefers the node that is fullest after the placement, which keeps whole
  nodes free for large work; with job anti-affinity (`Demand.job_count` > 0, what a job
  gets unless its spec says `spread: false`) a node already running n instances of the
  same job scores the mean of its fit and a penalty of -(n + 1) / count, as Nomad's job
  anti-affinity does: the instances of one job go to different nodes while nodes are
  roughly as full, and different jobs still pack together (the fit is the mean of the
  cpu and memory fractions used after the placement, in [0, 1]; a node with no instance
  of the job scores its fit alone);
* spread prefers the node running the fewest instances of the same job, then the emptiest,
  so one node going away takes as few instances of a job with it as possible.

Ties go to the node with the smallest name so the same input always gives the same plan.
Demands are taken highest priority first, then largest, so when room is short it goes to
the work that matters most, and small work cannot crowd out large work of equal priority.
The plan keeps its own account of free room, so it never oversubscribes a node.

A service demand with `preempt` that fits nowhere may evict lower-priority batch work from
one node. It is not placed in the same plan: the evicted work has to stop before its room is
really free, and the next plan places the demand, ahead of lower priorities, once it is.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .constraints import Constraint, constraint_error, describe, is_distinct, satisfies

JobType = Literal["service", "batch"]
Scoring = Literal["binpack", "spread"]

SERVICE: JobType = "service"
BATCH: JobType = "batch"
BINPACK: Scoring = "binpack"
SPREAD: Scoring = "spread"

# cpu is fractional; sums of fractions must not make an exact fit look like a miss
_CPU_EPS = 1e-9
# On a large cluster each demand is scored against this many nodes that fit, not against
# every node (as Nomad limits its candidates): scanning 5,000 nodes for each of 100,000
# demands was most of the leader's time. The scan starts at the node chosen last for the
# same filters, so binpack keeps filling one node before it moves on.
SCAN_LIMIT = 32
# Up to this many candidates a scan goes over a copy in its order (see `_scan_order`):
# 10,000 demands on 200 nodes planned 0.41 s lazily, 0.32 s over copies; 1,000 on 5,000
# nodes 23 ms lazily, 38 ms over copies (CPU, on a loaded machine).
_COPY_UP_TO = 1000


@dataclass(frozen=True)
class Placed:
    """An allocation already running (or placed) on a node."""

    alloc_id: str
    namespace: str
    job: str
    cpu: float
    memory_mb: int
    priority: int = 50
    job_type: JobType = SERVICE


@dataclass(frozen=True)
class NodeRoom:
    name: str
    cpu_capacity: float
    memory_capacity: int
    cpu_free: float
    memory_free: int
    labels: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    # False while draining or down: such nodes keep their work but take no new work
    eligible: bool = True
    allocations: tuple[Placed, ...] = ()
    # Ports held by allocations here (static ones asked for, dynamic ones reported).
    ports_used: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Demand:
    alloc_id: str
    namespace: str
    job: str
    cpu: float
    memory_mb: int
    priority: int = 50  # 0-100, higher is placed first
    job_type: JobType = SERVICE
    constraints: tuple[Constraint, ...] = ()
    scoring: Scoring = BINPACK
    preempt: bool = False  # honoured for service demands only
    # The job's count: above 0, binpack scoring adds the job anti-affinity penalty (see
    # the module docstring); 0 packs instances of one job like any other work.
    job_count: int = 0
    # Static ports the work listens on: never two users of one port on one node.
    ports: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Plan:
    # (alloc id, node name), highest priority first, so a prefix is a sensible partial plan
    placements: list[tuple[str, str]] = field(default_factory=list)
    # alloc id -> why it was not placed, readable by users
    unplaced: dict[str, str] = field(default_factory=dict)
    # (alloc id, reason) of running allocations to stop to make room for higher priorities
    evictions: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Filtered:
    """Nodes left after the filters that do not change during a plan, with the counts of
    nodes each filter removed (the first failing filter per node)."""

    candidates: tuple[int, ...]
    not_eligible: int
    by_constraint: tuple[int, ...]  # aligned with the demand's non-distinct constraints


def _order(d: Demand) -> tuple[int, float, int, str]:
    return (-d.priority, -d.cpu, -d.memory_mb, d.alloc_id)


def _filter(nodes: Sequence[NodeRoom], static: tuple[Constraint, ...]) -> _Filtered:
    candidates: list[int] = []
    not_eligible = 0
    by_constraint = [0] * len(static)
    for i, node in enumerate(nodes):
        if not node.eligible:
            not_eligible += 1
            continue
        for k, c in enumerate(static):
            if not satisfies(c, node):
                by_constraint[k] += 1
                break
        else:
            candidates.append(i)
    return _Filtered(tuple(candidates), not_eligible, tuple(by_constraint))


def _scan_order(candidates: tuple[int, ...], start: int | None) -> Iterable[int]:
    """The candidates from the one at or after `start` (the node chosen last), wrapping
    round; all of them, in name order, on a small cluster or at first.

    A large cluster's candidates are not copied into the new order: a scan mostly stops
    after SCAN_LIMIT nodes that fit, and copying 5,000 candidates for each demand was a
    fifth of a plan (bench/placement_cpu.py). A small cluster's are: iterating a copy is
    faster than the lazy order when the scan goes through them all (work that fits
    nowhere), and copying a few hundred costs little.
    """
    if start is None or len(candidates) <= SCAN_LIMIT:
        return candidates
    k = bisect.bisect_left(candidates, start)
    if len(candidates) <= _COPY_UP_TO:
        return candidates[k:] + candidates[:k]
    return itertools.chain(itertools.islice(candidates, k, None), itertools.islice(candidates, k))


def _nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def _explain(d: Demand, static: tuple[Constraint, ...], f: _Filtered, distinct_blocked: int,
             too_full: int, total_nodes: int, port_blocked: int = 0) -> str:
    if total_nodes == 0:
        return "no nodes registered"
    parts = [f"no node has {float(d.cpu)!r} cpu and {d.memory_mb} MB free"
             + (" and port " + ", ".join(map(str, sorted(d.ports))) + " unused"
                if d.ports else "")]
    if too_full:
        parts.append(f"{_nodes(too_full)} without enough free cpu or memory")
    if port_blocked:
        parts.append(f"{_nodes(port_blocked)} with static port "
                     + ", ".join(map(str, sorted(d.ports))) + " already in use")
    for c, n in zip(static, f.by_constraint, strict=True):
        if n:
            parts.append(f"{_nodes(n)} filtered by constraint {describe(c)}")
    if distinct_blocked:
        parts.append(f"{_nodes(distinct_blocked)} filtered by constraint distinct_nodes "
                     f"(already running {d.namespace}/{d.job})")
    if f.not_eligible:
        parts.append(f"{_nodes(f.not_eligible)} not eligible (draining or down)")
    return "; ".join(parts)


@dataclass(frozen=True)
class _Preemption:
    node: int
    victims: tuple[Placed, ...]


def _choose_victims(d: Demand, cpu_free: float, mem_free: int, batch: Sequence[Placed],
                    evicted: set[str]) -> tuple[Placed, ...] | None:
    """Lowest priority first, then smallest, until the demand fits; None if it never does."""
    chosen: list[Placed] = []
    cpu, mem = cpu_free, mem_free
    for v in batch:
        if d.cpu <= cpu + _CPU_EPS and d.memory_mb <= mem:
            break
        if v.priority >= d.priority:
            break  # `batch` is sorted by priority: nothing further is evictable
        if v.alloc_id in evicted:
            continue
        chosen.append(v)
        cpu += v.cpu
        mem += v.memory_mb
    if not (d.cpu <= cpu + _CPU_EPS and d.memory_mb <= mem):
        return None
    # Small low-priority victims taken early can turn out unnecessary once a larger one is
    # taken; give back the highest-priority ones first so no more work stops than needed.
    for v in reversed(chosen[:]):
        if d.cpu <= cpu - v.cpu + _CPU_EPS and d.memory_mb <= mem - v.memory_mb:
            chosen.remove(v)
            cpu -= v.cpu
            mem -= v.memory_mb
    return tuple(chosen)


def plan_placements(demands: Sequence[Demand], nodes: Sequence[NodeRoom]) -> Plan:
    """Place as many demands as fit; see the module docstring for the rules."""
    # Work on nodes sorted by name: scans in this order with strict comparisons make ties go
    # to the smallest name whatever order the caller listed them in.
    rooms = sorted(nodes, key=lambda n: n.name)
    names = [n.name for n in rooms]
    cpu_free = [float(n.cpu_free) for n in rooms]
    mem_free = [int(n.memory_free) for n in rooms]
    cpu_cap = [float(n.cpu_capacity) for n in rooms]
    mem_cap = [float(n.memory_capacity) for n in rooms]
    # Scores use used-after-placement fractions; a zero-capacity dimension contributes nothing.
    cpu_inv = [1.0 / c if c > 0 else 0.0 for c in cpu_cap]
    mem_inv = [1.0 / m if m > 0 else 0.0 for m in mem_cap]

    # (namespace, job) -> node index -> instances there, counting this plan's placements;
    # kept up to date so spread and distinct_nodes cost O(1) per node.
    instances: dict[tuple[str, str], dict[int, int]] = {}
    for i, node in enumerate(rooms):
        for a in node.allocations:
            per_node = instances.setdefault((a.namespace, a.job), {})
            per_node[i] = per_node.get(i, 0) + 1
    # Ports in use per node, counting this plan's placements (only built when some demand
    # asks for a static port).
    ports_used = ([set(n.ports_used) for n in rooms] if any(d.ports for d in demands)
                  else [])
    # Preemption candidates per node, in the order they would be evicted.
    batch_by_node: list[list[Placed]] | None = None

    filtered: dict[tuple[Constraint, ...], _Filtered] = {}
    last: dict[tuple[Constraint, ...], int] = {}  # node chosen last, per set of filters
    evicted: set[str] = set()
    seen: set[str] = set()
    placements: list[tuple[str, str]] = []
    unplaced: dict[str, str] = {}
    evictions: list[tuple[str, str]] = []

    for d in sorted(demands, key=_order):
        if d.alloc_id in seen:
            continue  # a duplicate must not be placed twice
        seen.add(d.alloc_id)

        bad = next(((c, e) for c in d.constraints if (e := constraint_error(c)) is not None),
                   None)
        if bad is not None:
            unplaced[d.alloc_id] = f"invalid constraint {describe(bad[0])}: {bad[1]}"
            continue

        static = tuple(c for c in d.constraints if not is_distinct(c))
        distinct = len(static) != len(d.constraints)
        f = filtered.get(static)
        if f is None:
            f = filtered[static] = _filter(rooms, static)
        counts = instances.setdefault((d.namespace, d.job), {})

        dc = float(d.cpu) - _CPU_EPS
        dm = d.memory_mb
        best = -1
        if d.scoring == SPREAD:
            best_key = (0, 0.0)
            fits = 0
            for i in _scan_order(f.candidates, last.get(static)):
                if cpu_free[i] < dc or mem_free[i] < dm:
                    continue
                if d.ports and not d.ports.isdisjoint(ports_used[i]):
                    continue
                n = counts.get(i, 0)
                if n and distinct:
                    continue
                key = (n, (cpu_cap[i] - cpu_free[i] + d.cpu) * cpu_inv[i]
                       + (mem_cap[i] - mem_free[i] + dm) * mem_inv[i])
                if best < 0 or key < best_key or (key == best_key and i < best):
                    best, best_key = i, key
                fits += 1
                if fits >= SCAN_LIMIT and len(f.candidates) > SCAN_LIMIT:
                    break
        else:
            # Scores are kept doubled (cpu + memory fractions, in [0, 2]) as before; the
            # anti-affinity mean is doubled alike so both compare on one scale.
            anti = d.job_count
            best_score = 0.0
            fits = 0
            for i in _scan_order(f.candidates, last.get(static)):
                if cpu_free[i] < dc or mem_free[i] < dm:
                    continue
                if d.ports and not d.ports.isdisjoint(ports_used[i]):
                    continue
                n = counts.get(i, 0)
                if distinct and n:
                    continue
                score = ((cpu_cap[i] - cpu_free[i] + d.cpu) * cpu_inv[i]
                         + (mem_cap[i] - mem_free[i] + dm) * mem_inv[i])
                if anti and n:
                    # twice the mean of the fit (score / 2) and the penalty
                    score = score / 2 - (n + 1) / anti
                if best < 0 or score > best_score or (score == best_score and i < best):
                    best, best_score = i, score
                fits += 1
                if fits >= SCAN_LIMIT and len(f.candidates) > SCAN_LIMIT:
                    break

        if best >= 0:
            last[static] = best
            cpu_free[best] -= d.cpu
            mem_free[best] -= dm
            counts[best] = counts.get(best, 0) + 1
            if d.ports:
                ports_used[best] |= d.ports
            placements.append((d.alloc_id, names[best]))
            continue

        distinct_blocked = sum(1 for i in f.candidates if distinct and counts.get(i))
        port_blocked = sum(1 for i in f.candidates if d.ports and not (distinct and counts.get(i))
                           and not d.ports.isdisjoint(ports_used[i]))
        too_full = len(f.candidates) - distinct_blocked - port_blocked
        reason = _explain(d, static, f, distinct_blocked, too_full, len(rooms), port_blocked)
        if not (d.preempt and d.job_type == SERVICE):
            unplaced[d.alloc_id] = reason
            continue

        if batch_by_node is None:
            batch_by_node = [
                sorted((a for a in node.allocations if a.job_type == BATCH),
                       key=lambda a: (a.priority, a.cpu, a.memory_mb, a.alloc_id))
                for node in rooms
            ]
        choice: _Preemption | None = None
        choice_key: tuple[int, float] = (0, 0)
        for i in f.candidates:
            if distinct and counts.get(i):
                continue
            if d.ports and not d.ports.isdisjoint(ports_used[i]):
                continue  # evicting batch work frees room, not a port held by a service
            victims = _choose_victims(d, cpu_free[i], mem_free[i], batch_by_node[i], evicted)
            if victims is None:
                continue
            key = (len(victims), sum(v.priority for v in victims))
            if choice is None or key < choice_key:
                choice, choice_key = _Preemption(i, victims), key
        if choice is None:
            unplaced[d.alloc_id] = (reason + "; no lower-priority batch allocations "
                                    "could be preempted to make room")
            continue

        i = choice.node
        freed_cpu = sum(v.cpu for v in choice.victims)
        freed_mem = sum(v.memory_mb for v in choice.victims)
        for v in choice.victims:
            evicted.add(v.alloc_id)
            evictions.append((v.alloc_id, f"preempted by {d.namespace}/{d.job}"))
        # Hold back the part of today's free room the demand will need on top of what the
        # victims free, so lower priorities in this plan cannot take it and force a second
        # round of preemption; the victims' own room is not free until they stop.
        cpu_free[i] -= max(0.0, d.cpu - freed_cpu)
        mem_free[i] -= max(0, dm - freed_mem)
        counts[i] = counts.get(i, 0) + 1
        k = len(choice.victims)
        unplaced[d.alloc_id] = (f"waiting for {k} preempted allocation{'s' if k != 1 else ''} "
                                f"to stop on {names[i]}")

    return Plan(placements=placements, unplaced=unplaced, evictions=evictions)
