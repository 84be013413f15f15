#!/usr/bin/env python3
"""What `job plan` and job anti-affinity cost, next to what they are compared with.

    python bench/dryrun.py [--nodes 200] [--jobs 100] [--per-job 1000] [--runs 5]

1. plan      an in-memory state of `jobs x per-job` running allocations on `nodes` nodes;
             the time `job plan` holds the apply lock (`dryrun.survey`) and plans without
             it (`dryrun.finish`), for a scale-up (10 more), a new version (every
             allocation replaced) and a scale-down (nothing to place), next to one leader
             placement round's read of the same state (`decide.placement_inputs_of`).
2. spread    `plan_placements` of 10,000 demands (100 jobs x 100) on 200 nodes, plain
             binpack next to binpack with job anti-affinity, with the nodes each uses.

Medians over the runs. Nothing is started: no cluster, no processes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hacontrol.model.spec_parse import parse_job_spec  # noqa: E402
from hacontrol.model.states import AllocState  # noqa: E402
from hacontrol.scheduler import dryrun  # noqa: E402
from hacontrol.scheduler.decide import placement_inputs_of  # noqa: E402
from hacontrol.scheduler.placement import Demand, NodeRoom, plan_placements  # noqa: E402
from hacontrol.state import commands as C  # noqa: E402
from hacontrol.state.machine import StateMachine  # noqa: E402

SPEC: dict[str, Any] = {"command": ["sleep", "1"], "resources": {"cpu": 0.1, "memory_mb": 64}}


def state(nodes: int, jobs: int, per_job: int) -> StateMachine:
    m = StateMachine()
    index = 0

    def apply(op: str, args: dict[str, Any]) -> None:
        nonlocal index
        index += 1
        res = m.apply(C.Command(op, 1000.0, args, None).encode(), index)
        assert res["ok"], res
    for i in range(nodes):
        apply(C.NODE_REGISTER, {"name": f"n{i:05d}", "cpu": 64, "memory_mb": 10**6,
                                "address": "", "labels": {}, "attributes": {}})
    for j in range(jobs):
        apply(C.JOB_PUT, {"namespace": "default", "name": f"j{j}",
                          "spec": parse_job_spec({**SPEC, "count": per_job}).to_dict()})
    names = sorted(m.nodes)
    # Placed and running without a leader: only the shape of the state matters here.
    for k, a in enumerate(m.pending_allocs()):
        m.store.place(a, names[k % nodes])
        a.state = AllocState.RUNNING
    return m


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:8.1f} ms"


def bench_plan(m: StateMachine, per_job: int, runs: int) -> None:
    print(f"plan: {len(m.allocs)} allocations on {len(m.nodes)} nodes (median of {runs})")
    for label, spec in (("scale up by 10", {"count": per_job + 10}),
                        ("new version", {"count": per_job, "env": {"V": "2"}}),
                        ("scale down by 10", {"count": per_job - 10})):
        parsed = parse_job_spec({**SPEC, **spec})
        locked, unlocked = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            s = dryrun.survey(m, "default", "j1", parsed, 1000.0)
            t1 = time.perf_counter()
            out = dryrun.finish(s)
            locked.append(t1 - t0)
            unlocked.append(time.perf_counter() - t1)
        print(f"  job plan, {label:17} under the lock {ms(locked)}, after it "
              f"{ms(unlocked)}  {out['changes']}")
    forks = []
    for _ in range(runs):
        t0 = time.perf_counter()
        m.store.fork(("default", "j1"))
        forks.append(time.perf_counter() - t0)
    print(f"  of which Store.fork{'':26}{ms(forks)}")
    # The peer: the leader's read for one placement round once that scale-up is submitted
    # (really applied now, so it comes last).
    m.apply(C.Command(C.JOB_SCALE, 1000.0, {"namespace": "default", "name": "j1",
                                            "count": per_job + 10}, None).encode(),
            m.index + 1)
    rounds = []
    for _ in range(runs):
        t0 = time.perf_counter()
        placement_inputs_of(m, 1000.0)
        rounds.append(time.perf_counter() - t0)
    print(f"  peer: a leader placement round's read {'':7}{ms(rounds)}")


def bench_spread(runs: int) -> None:
    print(f"spread: 10,000 demands (100 jobs x 100) on 200 nodes (median of {runs})")
    nodes = [NodeRoom(f"n{i:05d}", 8.0, 32000, 8.0, 32000) for i in range(200)]
    for label, count in (("binpack", 0), ("binpack + job anti-affinity", 100)):
        ds = [Demand(f"j{j}-{k:04d}", "default", f"j{j}", 0.1, 64, job_count=count)
              for j in range(100) for k in range(100)]
        times, used = [], 0
        for _ in range(runs):
            t0 = time.perf_counter()
            plan = plan_placements(ds, nodes)
            times.append(time.perf_counter() - t0)
            used = len({n for _, n in plan.placements})
        per_job: dict[str, set[str]] = {}
        for alloc_id, node in plan.placements:
            per_job.setdefault(alloc_id.split("-")[0], set()).add(node)
        spread = statistics.median(len(v) for v in per_job.values())
        print(f"  {label:28} {ms(times)}  nodes used {used}, nodes per job {spread:g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=100)
    ap.add_argument("--per-job", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    bench_plan(state(a.nodes, a.jobs, a.per_job), a.per_job, a.runs)
    bench_spread(max(1, a.runs // 2))


if __name__ == "__main__":
    main()
