#!/usr/bin/env python3
"""How long a full garbage collection holds the GIL in a replica holding a large state,
with and without the collector's freezing (`hacontrol/raft/collector.py`).

    python bench/gc_pause.py [--nodes 5000] [--jobs 1000] [--per-job 100] [--runs 5]

The state is built in this process through the real state machine: NODES nodes, JOBS jobs
of PER_JOB instances each, all placed and reported running. Then, medians over RUNS:
- full collection, nothing frozen: what every full collection cost before;
- after churn, frozen: what one costs once the survivors of the last were frozen and a
  tenth of the allocations was rewritten since (the state machine's usual work);
- sweep: the collector's periodic full walk of everything, frozen included.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hacontrol.raft.collector import Collector  # noqa: E402
from hacontrol.state import commands as C  # noqa: E402
from hacontrol.state.machine import StateMachine  # noqa: E402


class Builder:
    def __init__(self) -> None:
        self.m = StateMachine()
        self.index = 0

    def do(self, op: str, **args: Any) -> None:
        self.index += 1
        r = self.m.apply(C.Command(op, 1.7e9 + self.index, args).encode(), self.index)
        assert r["ok"], r

    def build(self, nodes: int, jobs: int, per_job: int) -> None:
        for n in range(nodes):
            self.do(C.NODE_REGISTER, name=f"n{n}", cpu=1000.0, memory_mb=10**7,
                    address=f"http://10.0.{n // 250}.{n % 250}:8200",
                    labels={"zone": "abc"[n % 3]}, attributes={})
        for i in range(jobs):
            self.do(C.JOB_PUT, namespace="default", name=f"j{i}",
                    spec={"command": ["/bin/sleep", "3600"], "count": per_job,
                          "env": {"JOB": str(i)}, "resources": {"cpu": 0.001, "memory_mb": 1},
                          "restart": {"policy": "always"}})
        pending = [a.id for a in self.m.pending_allocs()]
        for at in range(0, len(pending), 1000):
            self.do(C.PLAN, placements=[[a, f"n{k % nodes}"]
                                        for k, a in enumerate(pending[at:at + 1000], at)])
        self.report(1)

    def report(self, restarts: int, every: int = 1) -> None:
        by_node: dict[str, list[dict[str, Any]]] = {}
        for k, a in enumerate(self.m.allocs.values()):
            if a.node is not None and not a.terminal and k % every == 0:
                by_node.setdefault(a.node, []).append(
                    {"id": a.id, "state": "running", "pid": 1000 + k, "restarts": restarts})
        for node, updates in by_node.items():
            self.do(C.ALLOC_UPDATE, node=node, updates=updates)


def timed_full() -> float:
    started = time.perf_counter()
    gc.collect()
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--per-job", type=int, default=100, dest="per_job")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    b = Builder()
    started = time.perf_counter()
    b.build(args.nodes, args.jobs, args.per_job)
    print(f"state: {len(b.m.allocs)} allocations on {args.nodes} nodes, built in "
          f"{time.perf_counter() - started:.1f} s; {len(gc.get_objects())} containers "
          f"tracked by the collector")
    plain = statistics.median(timed_full() for _ in range(args.runs))
    collector = Collector()
    collector.install()
    churned, young = [], []
    for run in range(args.runs):
        gc.collect()  # a full collection: its survivors are frozen
        b.report(run + 2, every=10)
        young.append(len(gc.get_objects()))
        churned.append(timed_full())
    sweeps = [collector.sweep().seconds for _ in range(args.runs)]
    collector.uninstall()
    gc.unfreeze()
    print(f"full collection, nothing frozen:    {plain * 1000:8.1f} ms")
    print(f"full collection after churn, frozen: {statistics.median(churned) * 1000:8.1f} ms"
          f" ({statistics.median(young):.0f} containers not frozen)")
    print(f"sweep (everything, hourly):          {statistics.median(sweeps) * 1000:8.1f} ms")
    print(f"medians of {args.runs}")


if __name__ == "__main__":
    main()
