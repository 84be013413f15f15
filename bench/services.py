#!/usr/bin/env python3
"""What keeping the service registry costs `apply`: the registry's share of applying
alloc_update entries, for a job without services and one with a service, in one run.

    python bench/services.py [--allocs 1000] [--updates 2000] [--runs 5]

One job of `--allocs` allocations on 10 nodes, either without services (the common case:
the refresh only finds the job declares none) or with one service. Each entry reports one
allocation's health flipping, so every entry changes the endpoint set when the job has a
service. The refresh is timed inside each apply, so its share is measured against the
same entries on the same (noisy, shared) machine; medians over `--runs` rounds.
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


def timed(allocs: int, updates: int, with_service: bool) -> tuple[float, float]:
    """(apply, of which the registry's refresh) in seconds per entry, in one pass: the
    refresh is timed inside apply, so both share whatever else the machine is doing."""
    m, ids = build(allocs, with_service)
    todo = entries(m, ids, updates)
    saved: Callable[..., Any] = dispatch.refresh
    spent = 0.0

    def timed_refresh(store: Any, index: int) -> Any:
        nonlocal spent
        t = time.perf_counter()
        try:
            return saved(store, index)
        finally:
            spent += time.perf_counter() - t

    dispatch.refresh = timed_refresh  # type: ignore[assignment]
    try:
        total = apply_all(m, todo)
    finally:
        dispatch.refresh = saved  # type: ignore[assignment]
    return total / len(todo), spent / len(todo)


def apply_all(m: StateMachine, todo: list[bytes]) -> float:
    """Apply `todo` after what `m` holds, in order; seconds it took."""
    start = m.index + 1
    t0 = time.perf_counter()
    for i, raw in enumerate(todo):
        m.apply(raw, start + i)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--allocs", type=int, default=1000)
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for run in range(args.runs):
        for with_service in ((False, True) if run % 2 == 0 else (True, False)):
            results[with_service].append(timed(args.allocs, args.updates, with_service))
    print(f"alloc_update apply cost, one job of {args.allocs} allocations, "
          f"median of {args.runs} x {args.updates} entries")
    for with_service in (False, True):
        total = statistics.median(t for t, _ in results[with_service]) * 1e6
        refresh = statistics.median(r for _, r in results[with_service]) * 1e6
        what = "with a service   " if with_service else "without services"
        print(f"  {what}: apply {total:8.1f} us/entry, of which the registry "
              f"{refresh:6.1f} us ({100 * refresh / total:.1f} %)")


if __name__ == "__main__":
    main()
