"""The scheduler's placement inputs as read from the state (`scheduler/view.py`), and the
plan check on apply, against references that walk every allocation.

The view reads only the allocations of the demands' jobs (and of batch jobs when a demand
may preempt) through the store's index by job, and a plan works out the free room of the
nodes it names only; both must give what a walk over everything gives.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hacontrol.model.states import AllocState, DesiredState
from hacontrol.scheduler.decide import MAX_PLACEMENTS_PER_PLAN, placement_inputs_of
from hacontrol.scheduler.placement import BATCH, SERVICE, Placed
from hacontrol.scheduler.view import placement_inputs
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .test_leader_decisions import GRACE_S, World


def reference_allocations(m: StateMachine, jobs: set[tuple[str, str]], preempting: bool
                          ) -> dict[str, Counter[Placed]]:
    """What runs on each node that placement must see: a walk over every allocation."""
    out: dict[str, Counter[Placed]] = {}
    for a in m.allocs.values():
        if a.node is None or not a.holds_resources or a.desired != DesiredState.RUN:
            continue
        job = m.jobs.get((a.namespace, a.job))
        if (a.namespace, a.job) not in jobs and not (
                preempting and job is not None and job.spec.type == BATCH):
            continue
        out.setdefault(a.node, Counter())[Placed(
            alloc_id=a.id, namespace=a.namespace, job=a.job, cpu=a.resources.cpu,
            memory_mb=a.resources.memory_mb, priority=job.spec.priority if job else 0,
            job_type=(BATCH if job and job.spec.type == BATCH else SERVICE))] += 1
    return out


def busy_world(seed: int) -> World:
    """Nodes running service and batch jobs, some stopped or scaled down, some pending."""
    rng = random.Random(seed)
    w = World(*(f"n{i}" for i in range(6)), cpu=4.0)
    for j in range(8):
        kind = rng.choice(["service", "batch"])
        w.put_job(f"j{j}", type=kind, priority=rng.choice([10, 50, 90]),
                  count=rng.randint(1, 6),
                  resources={"cpu": rng.choice([0.1, 0.25, 0.5]), "memory_mb": 16})
    w.settle()
    w.apply(C.JOB_SCALE, {"namespace": "default", "name": "j0", "count": 1})
    w.apply(C.JOB_DELETE, {"namespace": "default", "name": "j1"})
    w.round()  # the stops are ordered but not yet reported: instances on their way out
    w.put_job("late", count=5, preempt=True, priority=95,
              resources={"cpu": 0.25, "memory_mb": 16})
    return w


def test_the_view_sees_what_a_walk_over_every_allocation_sees() -> None:
    for seed in range(20):
        w = busy_world(seed)
        everything = w.m.pending_allocs()
        assert any(a.job == "late" for a in everything)
        without_preempting = [a for a in everything if a.job != "late"]
        for pending in (everything, without_preempting):
            demands, rooms = placement_inputs(w.m, pending)
            jobs = {(d.namespace, d.job) for d in demands}
            want = reference_allocations(w.m, jobs, any(d.preempt for d in demands))
            got = {r.name: Counter(r.allocations) for r in rooms if r.allocations}
            assert got == want, seed
            for r in rooms:
                node = w.m.nodes[r.name]
                assert (r.cpu_free, r.memory_free) == w.m.node_free(node)


def test_the_view_counts_a_demands_job_on_every_node_it_runs_on() -> None:
    w = World("a", "b", "c", cpu=4.0)
    w.put_job("web", count=3, resources={"cpu": 0.5, "memory_mb": 16})
    w.settle()
    w.apply(C.JOB_SCALE, {"namespace": "default", "name": "web", "count": 5})
    demands, rooms = placement_inputs(w.m, w.m.pending_allocs())
    assert len(demands) == 2
    on = {r.name: [p.job for p in r.allocations] for r in rooms}
    assert on == {"a": ["web"], "b": ["web"], "c": ["web"]}


def test_a_plan_is_checked_against_the_room_left_on_the_nodes_it_names() -> None:
    w = World("a", "b", cpu=1.0)
    w.put_job("big", count=1, resources={"cpu": 0.75, "memory_mb": 16})
    w.settle()
    (big,) = w.live("big")
    w.put_job("small", count=3, resources={"cpu": 0.6, "memory_mb": 16})
    ids = sorted(a.id for a in w.m.pending_allocs())
    full, other = big.node, "b" if big.node == "a" else "a"
    # one fits on the other node, a second one there has no room, nor has the full node
    res: dict[str, Any] = w.apply(C.PLAN, {"placements": [[ids[0], other], [ids[1], other],
                                                           [ids[2], full]],
                                           "evictions": []})
    assert res["placed"] == [ids[0]]
    assert res["rejected"] == [[ids[1], "node has no room"], [ids[2], "node has no room"]]


def free_by_walk(m: StateMachine, node: str) -> tuple[float, int]:
    """A node's free room summed over its allocations, as the store once worked it out."""
    cpu_u, mem = 0, 0
    for a in m.node_allocs(node):
        if a.holds_resources:
            cpu_u += round(a.resources.cpu * 1_000_000)
            mem += a.resources.memory_mb
    n = m.nodes[node]
    return n.capacity.cpu - cpu_u / 1_000_000, n.capacity.memory_mb - mem


def holding_by_walk(m: StateMachine, node: str) -> int:
    return sum(1 for a in m.allocs.values() if a.node == node and a.holds_resources)


def states_by_walk(m: StateMachine) -> dict[tuple[str, str], dict[tuple[int, str], int]]:
    out: dict[tuple[str, str], dict[tuple[int, str], int]] = {}
    for a in m.allocs.values():
        counts = out.setdefault((a.namespace, a.job), {})
        counts[(a.version, a.state)] = counts.get((a.version, a.state), 0) + 1
    return out


def test_the_room_kept_per_node_is_the_room_a_walk_finds() -> None:
    for seed in range(20):
        w = busy_world(seed)
        w.settle()  # placements, stops reported, preemptions, forgotten allocations
        w.silent.add("n0")
        w.tick(GRACE_S + 1)
        w.settle()  # n0 is marked down: its allocations lost, replaced elsewhere
        for name in w.m.nodes:
            assert w.m.node_free(w.m.nodes[name]) == free_by_walk(w.m, name), (seed, name)
            assert w.m.store.node_holding(name) == holding_by_walk(w.m, name), (seed, name)
        restored = StateMachine()
        restored.restore(w.m.snapshot())
        for name in w.m.nodes:
            assert restored.node_free(restored.nodes[name]) == free_by_walk(w.m, name)
            assert restored.store.node_holding(name) == holding_by_walk(w.m, name)
        # So are the counts of each job's allocations by version and state.
        assert w.m.store.job_states == states_by_walk(w.m), seed
        assert restored.store.job_states == states_by_walk(w.m), seed


def test_a_plan_takes_the_highest_priorities_first_then_the_smallest_ids() -> None:
    w = World("a", cpu=1.0)  # no room: nothing is placed, everything stays pending
    # "mz" is created before "ma": creation order is not id order
    cap = MAX_PLACEMENTS_PER_PLAN
    # More than one plan carries, so the cap cuts through "mz" and leaves out "low".
    for name, priority, count in (("low", 10, cap // 10), ("mz", 50, cap * 45 // 100),
                                  ("ma", 50, cap * 45 // 100), ("top", 90, cap // 4),
                                  ("waits", 95, 50)):
        w.put_job(name, priority=priority, count=count,
                  resources={"cpu": 2.0, "memory_mb": 16},
                  **({"depends_on": ["top"]} if name == "waits" else {}))
    pending = w.m.pending_allocs()
    prio = {j.name: j.spec.priority for j in w.m.jobs.values()}
    want = sorted((a for a in pending if a.job != "waits"),
                  key=lambda a: (-prio[a.job], a.id))[:MAX_PLACEMENTS_PER_PLAN]
    demands, _, blocked = placement_inputs_of(w.m, w.wall)
    assert [d.alloc_id for d in demands] == [a.id for a in want]
    taken = Counter(d.job for d in demands)
    assert taken == {"top": cap // 4, "ma": cap * 45 // 100,
                     "mz": cap - cap // 4 - cap * 45 // 100}
    assert sorted(blocked) == sorted(a.id for a in pending if a.job == "waits")
    assert set(blocked.values()) == {"waiting for job(s) to complete: top"}


def pending_by_walk(m: StateMachine) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for a in m.allocs.values():
        if a.node is None and a.state == AllocState.PENDING and a.desired == DesiredState.RUN:
            out.setdefault((a.namespace, a.job), set()).add(a.id)
    return out


def pending_kept(m: StateMachine) -> dict[tuple[str, str], set[str]]:
    kept = m.pending_by_job()
    assert all(kept.values()), "a job with nothing pending keeps no entry"
    return {key: set(ids) for key, ids in kept.items()}


def test_the_pending_allocations_kept_by_job_are_those_a_walk_finds() -> None:
    for seed in range(20):
        w = busy_world(seed)
        assert pending_kept(w.m) == pending_by_walk(w.m) != {}, seed
        w.apply(C.JOB_SCALE, {"namespace": "default", "name": "late", "count": 2})
        w.apply(C.JOB_DELETE, {"namespace": "default", "name": "j2"})
        assert pending_kept(w.m) == pending_by_walk(w.m), seed
        w.settle()
        w.silent.add("n0")
        w.tick(GRACE_S + 1)
        w.round()  # n0 is marked down: its allocations are replaced by pending ones
        assert pending_kept(w.m) == pending_by_walk(w.m), seed
        restored = StateMachine()
        restored.restore(w.m.snapshot())
        assert pending_kept(restored) == pending_by_walk(w.m), seed
        w.settle()
        assert pending_kept(w.m) == pending_by_walk(w.m), seed


def test_listing_one_jobs_allocations_through_the_index_matches_a_walk() -> None:
    """`GET /v1/allocations?job=` reads the job index (`api/routes._job_allocs`): the same
    allocations in the same order as a walk over all, with or without a namespace, and
    with one job name in two namespaces."""
    from hacontrol.api.routes import _job_allocs
    from hacontrol.model.spec_parse import parse_job_spec

    from .test_leader_decisions import SLEEP
    w = busy_world(3)
    w.apply(C.NS_PUT, {"name": "other", "quota": {}})
    res = w.apply(C.JOB_PUT, {"namespace": "other", "name": "j2",
                              "spec": parse_job_spec({**SLEEP, "count": 2}).to_dict()})
    assert res["ok"], res
    w.settle()
    m = w.m
    for ns, job in [("default", "j2"), ("other", "j2"), (None, "j2"), (None, "late"),
                    ("default", "late"), ("other", "late"), (None, "nope")]:
        walk = [a.id for a in m.allocs.values()
                if a.job == job and (ns is None or a.namespace == ns)]
        got = [a.id for a in _job_allocs(m, ns, job)
               if a.job == job and (ns is None or a.namespace == ns)]
        assert got == walk, (ns, job)
    assert len([a for a in m.allocs.values() if a.job == "j2"]) > 2
