#!/usr/bin/env python3
"""The leader's CPU per placement at scale, in memory: this tree against another checkout.

    python bench/placement_cpu.py [--nodes 5000] [--jobs 1000] [--per-job 100]
                                  [--per-plan N] [--runs 3] [--base /path/to/other/checkout]

A state machine with `nodes` registered nodes gets `jobs x per-job` instances submitted;
then leader rounds (`scheduler.decide.decide`, as the leader loop runs it) propose plans
that are applied at once, until nothing is left to place. Each node then reports its
instances running (one `alloc_update` per node). Measured in CPU seconds of this process
(`time.process_time`), which a machine shared with other work disturbs far less than the
wall clock: the decisions, the plans' applies, the reports' applies, and, on the final
state, the views of `GET /v1/nodes` and `GET /v1/jobs` (what those reads cost under the
apply lock, before JSON encoding). placements/s = instances / (decisions + applies), the
rate one core could sustain without Raft, HTTP or the agents.

With `--base`, each run measures the other checkout too (its `hacontrol` imported in a
child process with that directory first on the path; this script and its workload are the
same for both), in an order alternating from run to run; medians and this tree's ratio.
Nothing is started but child Python processes; nothing is sent over the network.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def measure(nodes: int, jobs: int, per_job: int, per_plan: int | None = None
            ) -> dict[str, Any]:
    """One measurement with whichever `hacontrol` is first on the path; `per_plan`: the
    most placements one plan carries, instead of the scheduler's own."""
    from hacontrol.model.spec_parse import parse_job_spec
    from hacontrol.scheduler import decide as decide_module
    from hacontrol.scheduler.decide import Now, decide
    from hacontrol.scheduler.leader_state import LeaderState
    from hacontrol.state import commands as C
    from hacontrol.state.machine import StateMachine

    if per_plan is not None:
        decide_module.MAX_PLACEMENTS_PER_PLAN = per_plan
    m = StateMachine()
    index = 0
    wall = 1_000_000.0

    def apply(op: str, args: dict[str, Any]) -> dict[str, Any]:
        nonlocal index
        index += 1
        res: dict[str, Any] = m.apply(C.Command(op, wall, args, f"k{index}").encode(), index)
        return res

    for i in range(nodes):
        apply(C.NODE_REGISTER, {"name": f"sim-{i:04d}", "cpu": 8.0, "memory_mb": 32000,
                                "address": "", "labels": {}, "attributes": {}})
    spec = parse_job_spec({"command": ["sleep", "3600"], "count": per_job,
                           "resources": {"cpu": 0.1, "memory_mb": 64}}).to_dict()
    for j in range(jobs):
        res = apply(C.JOB_PUT, {"namespace": "default", "name": f"bench-{j:03d}",
                                "spec": spec})
        assert res.get("ok", True), res
    leader = LeaderState(term=1, since=0.0)
    t_decide = t_apply = 0.0
    plans = placed = 0
    while True:
        for name in m.nodes:
            leader.record_heartbeat(name, 1.0)
        t0 = time.process_time()
        d = decide(m, leader, Now(wall=wall, mono=1.0))
        t1 = time.process_time()
        todo = [p for p in d.proposals if p.op == C.PLAN]
        if not todo:
            t_decide += t1 - t0
            break
        for p in todo:
            res = apply(p.op, p.args)
            placed += len(res.get("placed") or ())
            plans += 1
        t_decide += t1 - t0
        t_apply += time.process_time() - t1
    assert placed == jobs * per_job, (placed, jobs * per_job)
    t0 = time.process_time()
    for name in list(m.nodes):
        updates = [{"id": a.id, "state": "running", "pid": 4_000_000}
                   for a in m.node_allocs(name)]
        if updates:
            apply(C.ALLOC_UPDATE, {"node": name, "updates": updates})
    t_reports = time.process_time() - t0
    t0 = time.process_time()
    for n in m.nodes.values():
        m.node_view(n)
    t_nodes = time.process_time() - t0
    t0 = time.process_time()
    for job in m.jobs.values():
        m.job_view(job)
    t_jobs = time.process_time() - t0
    import hacontrol
    return {"hacontrol": str(Path(hacontrol.__file__).parent.parent), "placed": placed,
            "plans": plans, "decide_s": t_decide, "apply_s": t_apply,
            "reports_s": t_reports, "nodes_view_ms": 1000 * t_nodes,
            "jobs_view_ms": 1000 * t_jobs,
            "placements_per_cpu_s": placed / max(t_decide + t_apply, 1e-9)}


def run_tree(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`measure` in a child process importing `hacontrol` from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--nodes", str(args.nodes), "--jobs",
         str(args.jobs), "--per-job", str(args.per_job)]
        + (["--per-plan", str(args.per_plan)] if args.per_plan else []),
        cwd=tree, env=env, check=True, capture_output=True, text=True, timeout=3600)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if Path(result["hacontrol"]).resolve() != tree.resolve():
        raise SystemExit(f"{tree}: the child imported hacontrol from {result['hacontrol']}")
    return result


FIGURES = ("placements_per_cpu_s", "decide_s", "apply_s", "reports_s", "nodes_view_ms",
           "jobs_view_ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--per-job", type=int, default=100, dest="per_job")
    p.add_argument("--per-plan", type=int, dest="per_plan",
                   help="the most placements per plan (default: the scheduler's own)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--base", type=Path, help="another checkout of hacontrol to compare with")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.nodes, args.jobs, args.per_job, args.per_plan)))
        return 0
    here = Path(__file__).resolve().parent.parent
    trees = {"this": here} | ({"base": args.base.resolve()} if args.base else {})
    got: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
    for r in range(args.runs):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            res = run_tree(trees[name], args)
            got[name].append(res)
            print(f"run {r + 1} {name}: " + ", ".join(f"{k} {res[k]:.2f}" for k in FIGURES),
                  file=sys.stderr, flush=True)
    print(f"{args.jobs} x {args.per_job} instances on {args.nodes} nodes, in memory, "
          f"CPU seconds of one process, median of {args.runs} run(s)")
    print(f"  {'':24}" + "".join(f"{k:>12}" for k in trees)
          + ("       ratio this/base" if args.base else ""))
    for k in FIGURES:
        meds = {name: statistics.median(x[k] for x in got[name]) for name in trees}
        line = f"  {k:24}" + "".join(f"{meds[n]:12.2f}" for n in trees)
        if args.base and meds["base"]:
            line += f"   {meds['this'] / meds['base']:10.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
