#!/usr/bin/env python3
"""What keeping the service registry costs `apply`: the same alloc_update entries applied
with the registry's refresh and without it, side by side in one run.

    python bench/services.py [--allocs 1000] [--updates 2000] [--runs 5]

One job of `--allocs` allocations on 10 nodes, either without services (the common case:
the refresh only finds the job undeclared) or with one service (each entry derives the
job's offer again from its allocations). Each entry reports one allocation's health
flipping, so every entry changes an endpoint set when the job has a service. Medians over
`--runs` rounds, in a rotated order, and each variant's cost per entry next to the same
entries applied with the refresh switched off.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hacontrol.model.spec_parse import parse_job_spec  # noqa: E402
from hacontrol.state import commands as C  # noqa: E402
from hacontrol.state import dispatch  # noqa: E402
from hacontrol.state.machine import StateMachine  # noqa: E402

SERVICE = {"ports": [{"name": "http"}], "services": [{"name": "websvc", "port": "http"}],
           "health": {"type": "http", "port": "http"}}


def build(allocs: int, with_service: bool) -> tuple[StateMachine, list[bytes]]:
    m = StateMachine()
    index = 0

    def do(op: str, **args: Any) -> None:
        nonlocal index
        index += 1
        assert m.apply(C.Command(op, 1000.0 + index, args).encode(), index)["ok"]

    for n in range(10):
        do(C.NODE_REGISTER, name=f"n{n}", cpu=10_000, memory_mb=2**30,
           address=f"http://10.0.0.{n}:4647", labels={}, attributes={})
    spec = {"command": ["x"], "count": allocs, "resources": {"cpu": 0.01, "memory_mb": 1},
            "health": {"type": "tcp", "port": 1}, **(SERVICE if with_service else {})}
    do(C.JOB_PUT, namespace="default", name="web", spec=parse_job_spec(spec).to_dict())
    ids = [a.id for a in m.pending_allocs()]
    for n in range(10):
        mine = ids[n::10]
        do(C.PLAN, placements=[[a, f"n{n}"] for a in mine])
        do(C.ALLOC_UPDATE, node=f"n{n}", updates=[
            {"id": a, "state": "running", "pid": 1, "health": "healthy",
             "ports": {"http": 20000 + i}} for i, a in enumerate(mine)])
    return m, ids


def entries(m: StateMachine, ids: list[str], count: int) -> list[bytes]:
    out = []
    for k in range(count):
        a = m.allocs[ids[k % len(ids)]]
        health = "unhealthy" if (k // len(ids)) % 2 == 0 else "healthy"
        out.append(C.Command(C.ALLOC_UPDATE, 5000.0 + k, {"node": a.node, "updates": [
            {"id": a.id, "state": "running", "pid": 1, "health": health,
             "ports": a.ports}]}).encode())
    return out


def timed(allocs: int, updates: int, with_service: bool, refresh_on: bool) -> float:
    m, ids = build(allocs, with_service)
    todo = entries(m, ids, updates)
    saved: Callable[..., Any] = dispatch.refresh
    if not refresh_on:
        dispatch.refresh = lambda store, index: []  # type: ignore[assignment]
    try:
        start = m.index + 1
        t0 = time.perf_counter()
        for i, raw in enumerate(todo):
            m.apply(raw, start + i)
        return (time.perf_counter() - t0) / len(todo)
    finally:
        dispatch.refresh = saved  # type: ignore[assignment]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--allocs", type=int, default=1000)
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    variants = [(w, r) for w in (False, True) for r in (False, True)]
    results: dict[tuple[bool, bool], list[float]] = {v: [] for v in variants}
    for run in range(args.runs):
        for k in range(len(variants)):
            v = variants[(run + k) % len(variants)]
            results[v].append(timed(args.allocs, args.updates, *v))
    print(f"alloc_update apply cost, one job of {args.allocs} allocations, "
          f"median of {args.runs} x {args.updates} entries")
    for with_service in (False, True):
        off = statistics.median(results[(with_service, False)]) * 1e6
        on = statistics.median(results[(with_service, True)]) * 1e6
        what = "with a service   " if with_service else "without services"
        print(f"  {what}: registry off {off:8.1f} us/entry, on {on:8.1f} us/entry "
              f"(x{on / off:.2f})")


if __name__ == "__main__":
    main()
