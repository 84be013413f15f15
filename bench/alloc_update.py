#!/usr/bin/env python3
"""What applying an alloc_update costs on a large job, with each job's history trimmed from
the index of its finished allocations (`Store.done`) and, in the same run, by the walk over
all of the job's allocations it replaced; and the alert tally's share of the apply.

    python bench/alloc_update.py [--allocs 1000 10000] [--updates 2000] [--runs 5]

One job of `--allocs` allocations on 10 nodes (bench/services.py's, without services),
each entry reporting one allocation's health flipping. The two ways of trimming alternate
within each run; the tally's refresh is timed inside each apply. Medians over the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import services as bench_services  # noqa: E402

from hacontrol.model.records import Job  # noqa: E402
from hacontrol.state import lifecycle  # noqa: E402
from hacontrol.state.context import Applying  # noqa: E402
from hacontrol.state.tally import Tally  # noqa: E402


def walk_trim(tx: Applying, job: Job) -> None:
    """`trim_history` as it was: every allocation of the job looked at, each report."""
    done = [a for a in tx.store.job_allocs(job) if a.terminal]
    excess = len(done) - lifecycle.TERMINAL_ALLOCS_KEPT_PER_JOB
    if excess > 0:
        done.sort(key=lambda a: (a.updated_at, a.id))
        for a in done[:excess]:
            tx.store.forget_alloc(a)


def timed(allocs: int, updates: int, trim: Callable[[Applying, Job], None]) -> tuple[
        float, float]:
    """(apply, of which the tally's refresh) in seconds per entry."""
    m, ids = bench_services.build(allocs, False)
    todo = bench_services.entries(m, ids, updates)
    kept_trim, kept_refresh = lifecycle.trim_history, Tally.refresh
    spent = 0.0

    def timed_refresh(self: Tally, *args: Any) -> None:
        nonlocal spent
        t = time.perf_counter()
        try:
            kept_refresh(self, *args)
        finally:
            spent += time.perf_counter() - t

    lifecycle.trim_history = trim  # type: ignore[assignment]
    Tally.refresh = timed_refresh  # type: ignore[method-assign]
    try:
        total = bench_services.apply_all(m, todo)
    finally:
        lifecycle.trim_history = kept_trim  # type: ignore[assignment]
        Tally.refresh = kept_refresh  # type: ignore[method-assign]
    return total / len(todo), spent / len(todo)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--allocs", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    ways = {"walk": walk_trim, "index": lifecycle.trim_history}
    print(f"alloc_update apply cost, one job, median of {args.runs} x {args.updates} entries"
          " (us/entry)")
    print(f"  {'allocations':>11s} {'walk':>9s} {'index':>9s} {'ratio':>6s} "
          f"{'tally refresh':>14s}")
    for allocs in args.allocs:
        got: dict[str, list[tuple[float, float]]] = {"walk": [], "index": []}
        for run in range(args.runs):
            order = list(ways.items()) if run % 2 == 0 else list(reversed(ways.items()))
            for name, trim in order:
                got[name].append(timed(allocs, args.updates, trim))
        walk = statistics.median(t for t, _ in got["walk"]) * 1e6
        index = statistics.median(t for t, _ in got["index"]) * 1e6
        tally = statistics.median(r for _, r in got["index"]) * 1e6
        print(f"  {allocs:11d} {walk:9.1f} {index:9.1f} {walk / index:5.1f}x "
              f"{tally:8.1f} ({100 * tally / index:.0f} %)")


if __name__ == "__main__":
    main()
