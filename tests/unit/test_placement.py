"""Placement: constraints, scoring, priorities, preemption, reasons and determinism."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hacontrol.scheduler.constraints import Constraint, constraint_error, satisfies
from hacontrol.scheduler.placement import (
    Demand,
    NodeRoom,
    Placed,
    Plan,
    plan_placements,
)

CPU_TOL = 1e-6


def node(name: str, cpu: float = 4.0, mem: int = 4096, *, labels: dict[str, str] | None = None,
         attrs: dict[str, str] | None = None, eligible: bool = True,
         allocs: tuple[Placed, ...] = ()) -> NodeRoom:
    used_cpu = sum(a.cpu for a in allocs)
    used_mem = sum(a.memory_mb for a in allocs)
    return NodeRoom(name, cpu, mem, cpu - used_cpu, mem - used_mem, labels=labels or {},
                    attributes=attrs or {}, eligible=eligible, allocations=allocs)


def demand(alloc_id: str, cpu: float = 1.0, mem: int = 256, *, job: str = "web",
           ns: str = "default", priority: int = 50, job_type: str = "service",
           constraints: tuple[Constraint, ...] = (), scoring: str = "binpack",
           preempt: bool = False, job_count: int = 0) -> Demand:
    return Demand(alloc_id, ns, job, cpu, mem, priority=priority,
                  job_type=job_type,  # type: ignore[arg-type]
                  constraints=constraints, scoring=scoring,  # type: ignore[arg-type]
                  preempt=preempt, job_count=job_count)


def batch(alloc_id: str, cpu: float, mem: int, priority: int, job: str = "etl") -> Placed:
    return Placed(alloc_id, "default", job, cpu, mem, priority, "batch")


def service(alloc_id: str, cpu: float, mem: int, priority: int, job: str = "api") -> Placed:
    return Placed(alloc_id, "default", job, cpu, mem, priority, "service")


def where(plan: Plan) -> dict[str, str]:
    return dict(plan.placements)


# --- constraints ------------------------------------------------------------------------

ZONED = [node("n1", labels={"zone": "a"}, attrs={"os": "linux", "arch": "amd64"}),
         node("n2", labels={"zone": "b"}, attrs={"os": "linux", "arch": "arm64"}),
         node("n3", attrs={"os": "darwin", "arch": "arm64"})]


def feasible(c: Constraint) -> set[str]:
    return {n.name for n in ZONED if satisfies(c, n)}


def test_equal_operator() -> None:
    assert feasible(Constraint("label.zone", "=", "a")) == {"n1"}
    assert feasible(Constraint("attr.arch", "=", "arm64")) == {"n2", "n3"}
    assert feasible(Constraint("node.name", "=", "n3")) == {"n3"}


def test_not_equal_operator() -> None:
    assert feasible(Constraint("attr.os", "!=", "linux")) == {"n3"}
    assert feasible(Constraint("node.name", "!=", "n1")) == {"n2", "n3"}


def test_in_operator_with_list_and_comma_string() -> None:
    assert feasible(Constraint("label.zone", "in", ["a", "b"])) == {"n1", "n2"}
    assert feasible(Constraint("attr.arch", "in", "amd64, riscv")) == {"n1"}
    # a list value is stored as a tuple so constraints stay hashable
    assert hash(Constraint("label.zone", "in", ["a"])) == hash(Constraint("label.zone", "in",
                                                                          ("a",)))


def test_regexp_operator_searches() -> None:
    assert feasible(Constraint("attr.arch", "regexp", "64$")) == {"n1", "n2", "n3"}
    assert feasible(Constraint("attr.arch", "regexp", "^arm")) == {"n2", "n3"}
    assert feasible(Constraint("node.name", "regexp", "[13]")) == {"n1", "n3"}


def test_missing_label_fails_positive_operators_and_passes_not_equal() -> None:
    assert "n3" not in feasible(Constraint("label.zone", "=", "a"))
    assert "n3" not in feasible(Constraint("label.zone", "in", ["a", "b"]))
    assert "n3" not in feasible(Constraint("label.zone", "regexp", ".*"))
    assert feasible(Constraint("label.zone", "!=", "a")) == {"n2", "n3"}
    assert feasible(Constraint("attr.gpu", "!=", "none")) == {"n1", "n2", "n3"}


def test_invalid_constraints_are_reported_not_raised() -> None:
    assert constraint_error(Constraint("label.zone", "~", "a")) is not None
    assert constraint_error(Constraint("zone", "=", "a")) is not None
    assert constraint_error(Constraint("attr.os", "regexp", "(")) is not None
    assert constraint_error(Constraint("attr.os", "in", [])) is not None
    assert constraint_error(Constraint(operator="distinct_nodes")) is None
    plan = plan_placements([demand("x", constraints=(Constraint("attr.os", "regexp", "("),))],
                           ZONED)
    assert plan.placements == []
    assert plan.unplaced["x"].startswith("invalid constraint attr.os regexp (")


def test_constraints_applied_by_planner() -> None:
    d = demand("x", constraints=(Constraint("label.zone", "in", ["b", "c"]),
                                 Constraint("attr.os", "=", "linux")))
    assert where(plan_placements([d], ZONED)) == {"x": "n2"}


def test_distinct_nodes_within_one_plan() -> None:
    distinct = (Constraint(operator="distinct_nodes"),)
    ds = [demand(f"w{i}", cpu=0.5, mem=64, constraints=distinct) for i in range(4)]
    plan = plan_placements(ds, ZONED)
    placed = where(plan)
    assert len(placed) == 3
    assert sorted(placed.values()) == ["n1", "n2", "n3"]
    (left,) = plan.unplaced
    assert "3 nodes filtered by constraint distinct_nodes" in plan.unplaced[left]


def test_distinct_nodes_counts_existing_allocations_of_the_same_job_only() -> None:
    distinct = (Constraint(operator="distinct_nodes"),)
    nodes = [node("n1", allocs=(Placed("old", "default", "web", 0.5, 64),)),
             node("n2", allocs=(Placed("o2", "other", "web", 0.5, 64),)),
             node("n3", allocs=(Placed("o3", "default", "db", 0.5, 64),))]
    ds = [demand(f"w{i}", constraints=distinct) for i in range(3)]
    plan = plan_placements(ds, nodes)
    assert sorted(where(plan).values()) == ["n2", "n3"]
    assert len(plan.unplaced) == 1


# --- scoring ------------------------------------------------------------------------------

def test_binpack_prefers_fullest_node_after_placement() -> None:
    nodes = [node("a", allocs=(service("s1", 1.0, 1024, 50),)),
             node("b", allocs=(service("s2", 3.0, 3072, 50),)),
             node("c")]
    assert where(plan_placements([demand("x")], nodes)) == {"x": "b"}


def test_binpack_fills_one_node_before_the_next() -> None:
    nodes = [node("b"), node("a")]
    plan = plan_placements([demand(f"x{i}") for i in range(5)], nodes)
    # ties go to the smallest name, then binpack keeps choosing the now fuller node
    assert [n for _, n in plan.placements] == ["a", "a", "a", "a", "b"]


def test_spread_prefers_fewest_instances_then_emptiest() -> None:
    nodes = [node("a", allocs=(service("s1", 1.0, 1024, 50, job="web"),)),
             node("b", allocs=(service("s2", 3.0, 3072, 50, job="db"),)),
             node("c", allocs=(service("s3", 1.0, 512, 50, job="db"),))]
    plan = plan_placements([demand(f"x{i}", scoring="spread") for i in range(3)], nodes)
    placed = where(plan)
    # c and b have no web instance; c is emptier. Then b (0 instances) beats a (1).
    # Then a, b and c all have one: a is the emptiest.
    assert [placed[f"x{i}"] for i in range(3)] == ["c", "b", "a"]


def test_binpack_and_spread_differ_on_the_same_input() -> None:
    nodes = [node("a"), node("b"), node("c")]
    packed = plan_placements([demand(f"x{i}") for i in range(3)], nodes)
    spread = plan_placements([demand(f"x{i}", scoring="spread") for i in range(3)], nodes)
    assert set(where(packed).values()) == {"a"}
    assert set(where(spread).values()) == {"a", "b", "c"}


def test_job_anti_affinity_spreads_one_job_over_empty_nodes() -> None:
    nodes = [node("a"), node("b")]
    plan = plan_placements([demand(f"x{i}", 0.1, 64, job_count=5) for i in range(5)], nodes)
    on = [n for _, n in plan.placements]
    # ties go to the smallest name; each further instance goes where the job has fewer
    assert on == ["a", "b", "a", "b", "a"]


def test_job_anti_affinity_counts_instances_already_running() -> None:
    nodes = [node("a", allocs=(service("w1", 0.1, 64, 50, job="web"),
                               service("w2", 0.1, 64, 50, job="web"))),
             node("b", allocs=(service("w3", 0.1, 64, 50, job="web"),))]
    plan = plan_placements([demand("x", 0.1, 64, job_count=4)], nodes)
    assert where(plan) == {"x": "b"}


def test_job_anti_affinity_still_binpacks_different_jobs() -> None:
    # `db` is alone on b: a new `web` instance joins the fuller node b rather than the
    # empty c, as plain binpack would, because b runs no instance of `web` yet.
    nodes = [node("a", allocs=(service("w1", 0.5, 256, 50, job="web"),)),
             node("b", allocs=(service("d1", 2.0, 2048, 50, job="db"),)),
             node("c")]
    assert where(plan_placements([demand("x", 0.5, 256, job_count=2)], nodes)) == {"x": "b"}


def test_job_anti_affinity_gives_way_to_a_much_fuller_node() -> None:
    # The mean of fit and penalty, as Nomad scores it: with count 10 a second instance on
    # a nearly full node (fit 0.95) scores (0.95 - 0.2) / 2 > 0.04, the empty node's fit.
    nodes = [node("a", allocs=(service("w1", 3.6, 3686, 50, job="web"),)), node("b")]
    assert where(plan_placements([demand("x", 0.2, 256, job_count=10)], nodes)) == {"x": "a"}


def test_without_job_count_binpack_keeps_one_job_together() -> None:
    # job_count 0 is what `spread: false` gives: today's binpack, one job on one node
    nodes = [node("a"), node("b")]
    plan = plan_placements([demand(f"x{i}", 0.1, 64) for i in range(5)], nodes)
    assert {n for _, n in plan.placements} == {"a"}


def test_ineligible_nodes_take_no_work() -> None:
    nodes = [node("a", eligible=False), node("b")]
    plan = plan_placements([demand("x", cpu=4.0), demand("y")], nodes)
    assert where(plan) == {"x": "b"}
    assert "1 node not eligible (draining or down)" in plan.unplaced["y"]


# --- priorities and capacity --------------------------------------------------------------

def test_higher_priority_wins_when_capacity_is_short() -> None:
    nodes = [node("a", cpu=2.0, mem=2048)]
    ds = [demand("low", cpu=2.0, priority=10), demand("high", cpu=2.0, priority=90),
          demand("mid", cpu=2.0, priority=50)]
    plan = plan_placements(ds, nodes)
    assert plan.placements == [("high", "a")]
    assert set(plan.unplaced) == {"low", "mid"}


def test_larger_first_within_a_priority_then_alloc_id() -> None:
    nodes = [node("a", cpu=3.0, mem=4096)]
    ds = [demand("s1", cpu=1.0), demand("big", cpu=2.0), demand("s0", cpu=1.0)]
    plan = plan_placements(ds, nodes)
    assert plan.placements == [("big", "a"), ("s0", "a")]
    assert list(plan.unplaced) == ["s1"]


def test_reason_lists_shortfall_and_filter_counts() -> None:
    zone_a = (Constraint("label.zone", "=", "a"),)
    nodes = [node("z1", labels={"zone": "b"}), node("z2", labels={"zone": "b"}),
             node("z3"), node("z4", labels={"zone": "a"}, eligible=False),
             node("z5", cpu=1.0, labels={"zone": "a"})]
    plan = plan_placements([demand("x", cpu=2.0, mem=512, constraints=zone_a)], nodes)
    assert plan.unplaced["x"] == (
        "no node has 2.0 cpu and 512 MB free; 1 node without enough free cpu or memory; "
        "3 nodes filtered by constraint label.zone = a; 1 node not eligible (draining or down)")


def test_reason_with_no_nodes() -> None:
    assert plan_placements([demand("x")], []).unplaced == {"x": "no nodes registered"}


# --- preemption ---------------------------------------------------------------------------

def test_preemption_picks_node_with_fewest_evictions_and_lowest_victims() -> None:
    nodes = [
        node("a", cpu=4.0, allocs=(batch("a1", 1.0, 256, 10), batch("a2", 1.0, 256, 10),
                                   batch("a3", 2.0, 256, 10))),
        node("b", cpu=4.0, allocs=(batch("b1", 2.0, 256, 20), batch("b2", 2.0, 256, 5))),
        node("c", cpu=4.0, allocs=(batch("c1", 2.0, 256, 30), batch("c2", 2.0, 256, 30))),
    ]
    plan = plan_placements([demand("x", cpu=2.0, priority=80, preempt=True)], nodes)
    # every node needs one eviction; b's lowest-priority victim has priority 5
    assert plan.evictions == [("b2", "preempted by default/web")]
    assert plan.placements == []
    assert plan.unplaced["x"] == "waiting for 1 preempted allocation to stop on b"


def test_preemption_evicts_lowest_priority_then_smallest_and_no_more_than_needed() -> None:
    nodes = [node("a", cpu=4.0, allocs=(batch("p10big", 2.0, 256, 10),
                                        batch("p10small", 1.0, 256, 10),
                                        batch("p20", 1.0, 256, 20)))]
    plan = plan_placements([demand("x", cpu=3.0, priority=80, preempt=True)], nodes)
    # three cpu takes both priority-10 victims; the priority-20 one is spared
    assert sorted(a for a, _ in plan.evictions) == ["p10big", "p10small"]
    plan = plan_placements([demand("x", cpu=2.0, priority=80, preempt=True)], nodes)
    # p10small is taken first but is not enough; once p10big is taken it alone suffices,
    # so p10small is given back rather than stopped for nothing
    assert [a for a, _ in plan.evictions] == ["p10big"]


def test_preemption_never_evicts_service_or_equal_priority() -> None:
    nodes = [node("a", cpu=2.0, allocs=(service("svc", 2.0, 256, 10),)),
             node("b", cpu=2.0, allocs=(batch("eq", 2.0, 256, 80),)),
             node("c", cpu=2.0, allocs=(batch("hi", 2.0, 256, 90),))]
    plan = plan_placements([demand("x", cpu=2.0, priority=80, preempt=True)], nodes)
    assert plan.evictions == []
    assert "no lower-priority batch allocations could be preempted" in plan.unplaced["x"]


def test_preemption_only_for_service_demands_with_preempt() -> None:
    nodes = [node("a", cpu=2.0, allocs=(batch("low", 2.0, 256, 1),))]
    assert plan_placements([demand("x", cpu=2.0, priority=90)], nodes).evictions == []
    assert plan_placements([demand("x", cpu=2.0, priority=90, job_type="batch",
                                   preempt=True)], nodes).evictions == []


def test_preemption_respects_constraints_and_eligibility() -> None:
    nodes = [node("a", cpu=2.0, labels={"zone": "a"}, allocs=(batch("a1", 2.0, 256, 1),)),
             node("b", cpu=2.0, labels={"zone": "b"}, allocs=(batch("b1", 2.0, 256, 5),)),
             node("c", cpu=2.0, labels={"zone": "b"}, eligible=False,
                  allocs=(batch("c1", 2.0, 256, 0),))]
    d = demand("x", cpu=2.0, priority=80, preempt=True,
               constraints=(Constraint("label.zone", "=", "b"),))
    assert plan_placements([d], nodes).evictions == [("b1", "preempted by default/web")]


def test_evicted_allocation_is_not_evicted_twice_nor_counted_as_free() -> None:
    nodes = [node("a", cpu=2.0, allocs=(batch("a1", 2.0, 256, 1),)),
             node("b", cpu=2.0, allocs=(batch("b1", 2.0, 256, 2),))]
    ds = [demand("x", cpu=2.0, priority=90, preempt=True, job="x"),
          demand("y", cpu=2.0, priority=80, preempt=True, job="y"),
          demand("z", cpu=1.0, priority=70, preempt=True, job="z")]
    plan = plan_placements(ds, nodes)
    assert plan.evictions == [("a1", "preempted by default/x"), ("b1", "preempted by default/y")]
    assert plan.placements == []
    assert plan.unplaced["x"].endswith("stop on a")
    assert plan.unplaced["y"].endswith("stop on b")
    assert "could be preempted" in plan.unplaced["z"]


def test_room_held_for_a_preempting_demand_is_not_given_to_lower_priorities() -> None:
    nodes = [node("a", cpu=4.0, allocs=(batch("a1", 2.0, 256, 1),))]
    ds = [demand("x", cpu=3.0, priority=90, preempt=True), demand("y", cpu=2.0, priority=10)]
    plan = plan_placements(ds, nodes)
    assert plan.evictions == [("a1", "preempted by default/web")]
    # x needs one cpu of today's free two on top of a1's two, so y (two cpu) does not fit
    assert plan.placements == []
    assert "y" in plan.unplaced


# --- properties ---------------------------------------------------------------------------

LABELS = st.dictionaries(st.sampled_from(["zone", "rack"]), st.sampled_from(["a", "b", "c"]),
                         max_size=2)
ATTRS = st.dictionaries(st.sampled_from(["os", "arch"]),
                        st.sampled_from(["linux", "darwin", "amd64", "arm64"]), max_size=2)
CONSTRAINT = st.one_of(
    st.builds(Constraint, st.sampled_from(["label.zone", "label.rack", "attr.os", "attr.arch",
                                           "node.name"]),
              st.sampled_from(["=", "!="]),
              st.sampled_from(["a", "b", "linux", "arm64", "n0", "n1"])),
    st.builds(Constraint, st.sampled_from(["label.zone", "attr.os"]), st.just("in"),
              st.lists(st.sampled_from(["a", "b", "linux"]), min_size=1, max_size=2)),
    st.builds(Constraint, st.sampled_from(["label.zone", "attr.arch", "node.name"]),
              st.just("regexp"), st.sampled_from(["^a", "64$", "[01]", "."])),
    st.just(Constraint(operator="distinct_nodes")),
)
CPU = st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0])
MEM = st.sampled_from([64, 128, 256, 512, 1024, 2048])
JOBS = st.sampled_from(["web", "db", "etl"])


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[Demand], list[NodeRoom]]:
    nodes: list[NodeRoom] = []
    for i in range(draw(st.integers(0, 6))):
        cap_cpu = draw(st.sampled_from([1.0, 2.0, 4.0, 8.0]))
        cap_mem = draw(st.sampled_from([1024, 2048, 4096]))
        allocs: list[Placed] = []
        used_cpu, used_mem = 0.0, 0
        for k in range(draw(st.integers(0, 4))):
            cpu, mem = draw(CPU), draw(MEM)
            if used_cpu + cpu > cap_cpu or used_mem + mem > cap_mem:
                continue
            used_cpu += cpu
            used_mem += mem
            allocs.append(Placed(f"n{i}-a{k}", "default", draw(JOBS), cpu, mem,
                                 draw(st.integers(0, 100)),
                                 draw(st.sampled_from(["service", "batch"]))))
        nodes.append(node(f"n{i}", cap_cpu, cap_mem, labels=draw(LABELS), attrs=draw(ATTRS),
                          eligible=draw(st.booleans()), allocs=tuple(allocs)))
    # Constraints, scoring, priority, type and preemption belong to a job, as in job files:
    # every allocation of it shares them.
    specs = {job: (tuple(draw(st.lists(CONSTRAINT, max_size=2))),
                   draw(st.sampled_from(["binpack", "spread"])),
                   draw(st.integers(0, 6)),  # job_count: 0 is `spread: false`
                   draw(st.integers(0, 100)),
                   draw(st.sampled_from(["service", "batch"])),
                   draw(st.booleans()))
             for job in ["web", "db", "etl"]}
    demands = []
    for j in range(draw(st.integers(0, 25))):
        job = draw(JOBS)
        constraints, scoring, job_count, priority, job_type, preempt = specs[job]
        demands.append(Demand(f"d{j}", "default", job, draw(CPU), draw(MEM),
                              priority=priority, job_type=job_type,
                              constraints=constraints, scoring=scoring,
                              preempt=preempt, job_count=job_count))
    return demands, nodes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters())
def test_never_oversubscribed_and_constraints_hold(
        cluster: tuple[list[Demand], list[NodeRoom]]) -> None:
    demands, nodes = cluster
    plan = plan_placements(demands, nodes)
    by_id = {d.alloc_id: d for d in demands}
    by_name = {n.name: n for n in nodes}
    placed = where(plan)

    # every demand is accounted for exactly once
    assert len(placed) == len(plan.placements)
    assert set(placed) | set(plan.unplaced) == set(by_id)
    assert not set(placed) & set(plan.unplaced)

    for n in nodes:
        mine = [by_id[a] for a, name in plan.placements if name == n.name]
        assert n.eligible or not mine
        cpu = sum(a.cpu for a in n.allocations) + sum(d.cpu for d in mine)
        mem = sum(a.memory_mb for a in n.allocations) + sum(d.memory_mb for d in mine)
        assert cpu <= n.cpu_capacity + CPU_TOL
        assert mem <= n.memory_capacity

    for alloc_id, name in plan.placements:
        d = by_id[alloc_id]
        for c in d.constraints:
            if c.operator == "distinct_nodes":
                same = [a for a in by_name[name].allocations
                        if (a.namespace, a.job) == (d.namespace, d.job)]
                same_planned = [a for a, nm in plan.placements
                                if nm == name and (by_id[a].namespace, by_id[a].job)
                                == (d.namespace, d.job)]
                assert not same and len(same_planned) == 1
            else:
                assert satisfies(c, by_name[name])

    existing = {a.alloc_id: (a, n) for n in nodes for a in n.allocations}
    evicted = [a for a, _ in plan.evictions]
    assert len(evicted) == len(set(evicted))
    for alloc_id, reason in plan.evictions:
        victim, n = existing[alloc_id]
        assert victim.job_type == "batch"
        assert n.eligible
        ns_job = reason.removeprefix("preempted by ")
        preemptors = [d for d in demands if f"{d.namespace}/{d.job}" == ns_job
                      and d.preempt and d.job_type == "service"
                      and plan.unplaced.get(d.alloc_id, "").endswith(f"stop on {n.name}")]
        assert preemptors and all(victim.priority < d.priority for d in preemptors)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.randoms(use_true_random=False))
def test_deterministic_under_shuffled_input(cluster: tuple[list[Demand], list[NodeRoom]],
                                            rnd: random.Random) -> None:
    demands, nodes = cluster
    first = plan_placements(demands, nodes)
    assert plan_placements(demands, nodes) == first
    shuffled_nodes, shuffled_demands = nodes[:], demands[:]
    rnd.shuffle(shuffled_nodes)
    rnd.shuffle(shuffled_demands)
    assert plan_placements(shuffled_demands, shuffled_nodes) == first


# --- performance --------------------------------------------------------------------------

def large_cluster(n_nodes: int, n_demands: int) -> tuple[list[Demand], list[NodeRoom]]:
    rnd = random.Random(7)
    nodes = []
    for i in range(n_nodes):
        allocs = tuple(Placed(f"n{i}-a{k}", "default", f"job{rnd.randrange(50)}", 0.5, 256,
                              rnd.randrange(100), rnd.choice(["service", "batch"]))
                       for k in range(rnd.randrange(10)))
        nodes.append(node(f"node-{i:03d}", 32.0, 32768, labels={"zone": f"z{i % 4}"},
                          attrs={"os": "linux"}, allocs=allocs))
    zone = (Constraint("label.zone", "in", ["z0", "z1", "z2"]),)
    distinct = (Constraint(operator="distinct_nodes"),)
    demands = [
        Demand(f"d{j:05d}", "default", f"job{j % 300}", rnd.choice([0.25, 0.5, 1.0, 2.0]),
               rnd.choice([128, 256, 512, 1024]), priority=rnd.randrange(100),
               constraints=(zone, distinct, ())[j % 3], scoring=rnd.choice(["binpack", "spread"]),
               preempt=j % 5 == 0)
        for j in range(n_demands)
    ]
    return demands, nodes


def test_ten_thousand_demands_over_two_hundred_nodes_places_what_fits() -> None:
    # Speed is measured by bench/placement_cpu.py and bench/scheduler.py next to the
    # previous tree, not asserted here: a wall-clock bound fails on a loaded machine.
    demands, nodes = large_cluster(200, 10_000)
    plan = plan_placements(demands, nodes)
    # the cluster cannot hold everything, so the unplaced and preemption paths run too
    assert plan.placements and plan.unplaced
    assert len(plan.placements) + len(plan.unplaced) == len(demands)


@pytest.mark.slow
def test_report_planning_time() -> None:
    demands, nodes = large_cluster(200, 10_000)
    best = min(_timed(demands, nodes) for _ in range(3))
    print(f"\n10000 demands x 200 nodes: {best:.3f}s")


def _timed(demands: list[Demand], nodes: list[NodeRoom]) -> float:
    start = time.perf_counter()
    plan_placements(demands, nodes)
    return time.perf_counter() - start
