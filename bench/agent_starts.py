#!/usr/bin/env python3
"""The agent's start path alone, this tree against an earlier one, alternating in one run.

    python bench/agent_starts.py --before DIR [--runs 5] [-n 200] [--user nobody]
                                 [--crashes 20] [--cpu 0.001]

DIR is another checkout of the repository (e.g. `git worktree add` or `git archive REV |
tar -x -C DIR`). Each run measures both trees in turn (the order alternates), each in a
fresh interpreter whose hacontrol comes from that tree: `Supervisor.ensure()` of N `sleep
3600` allocations at once (cpu 1.0 or --cpu, 16 MB each, the node's detected isolation), wall time
until all are running and the CPU time that took (the measuring process: the supervisor and
its start threads; not the children), then, with --crashes, one allocation of the crash
program (64 MB, the same cpu) restarted N times without backoff (bench/measure/crash.py:
exit of one instance to the first line of the next; with a tiny --cpu that measures the
quota, the program being a Python interpreter). Prints medians per tree and the ratio this / before. Every
process started is stopped before the next measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKER = r'''
import asyncio, json, os, sys, time, uuid
from pathlib import Path
import psutil
from hacontrol.agent.spec import AllocationSpec
from hacontrol.agent.supervisor import Supervisor
from hacontrol.model.resources import Resources
from hacontrol.model.spec import RestartSpec
from hacontrol.model.states import RestartPolicy

root, n, user, crashes, crash_argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None, \
    int(sys.argv[4]), json.loads(sys.argv[5])
cores = float(sys.argv[6])

def cpu():
    t = psutil.Process().cpu_times()
    return t.user + t.system

async def main():
    sup = Supervisor(root, lambda ev: None)
    out = {"mode": sup.isolation_mode}
    pol = RestartSpec(policy=RestartPolicy.ON_FAILURE, backoff_s=0.0, backoff_max_s=0.0)
    specs = [AllocationSpec(alloc_id=f"s{i:04d}-{uuid.uuid4().hex[:6]}",
                            command=["sleep", "3600"], restart=pol, user=user,
                            resources=Resources(cpu=cores, memory_mb=16)) for i in range(n)]
    try:
        c0, t0 = cpu(), time.perf_counter()
        evs = await asyncio.gather(*(sup.ensure(s) for s in specs))
        out["start_s"], out["start_cpu_s"] = time.perf_counter() - t0, cpu() - c0
        bad = [e for e in evs if e.state != "running"]
        if bad:
            raise SystemExit(f"{len(bad)} did not start: {bad[0]}")
        await sup.stop_all()
        if crashes:
            rec = root / "crash.txt"
            always = RestartSpec(policy=RestartPolicy.ALWAYS, backoff_s=0.0, backoff_max_s=0.0,
                                 max_restarts=1_000_000, window_s=1, min_uptime_s=0)
            spec = AllocationSpec(alloc_id=f"crash-{uuid.uuid4().hex[:6]}",
                                  command=[*crash_argv, str(rec), "0.05", "0.1"],
                                  restart=always, user=user,
                                  resources=Resources(cpu=cores, memory_mb=64))
            sup = Supervisor(root, lambda ev: None)
            await sup.ensure(spec)
            while not rec.exists() or rec.read_text().count("S ") <= crashes:
                await asyncio.sleep(0.05)
            await sup.stop_all()
            lat, last = [], None
            for line in rec.read_text().splitlines():
                kind, ts, _ = line.split()
                if kind == "E":
                    last = float(ts)
                elif last is not None:
                    lat.append((float(ts) - last) * 1000)
                    last = None
            out["crash_p50_ms"] = sorted(lat)[len(lat) // 2]
    finally:
        await sup.stop_all()
    print(json.dumps(out))

asyncio.run(main())
'''


def measure(tree: Path, root: Path, n: int, user: str, crashes: int,
            cores: float = 1.0) -> dict[str, float]:
    from bench.measure.crash import CRASH_PROGRAM
    crash_py = root / "crash.py"
    crash_py.parent.mkdir(parents=True, exist_ok=True)
    crash_py.write_text(CRASH_PROGRAM)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-c", WORKER, str(root / "data"), str(n), user, str(crashes),
            json.dumps([sys.executable, "-I", "-S", str(crash_py)]), str(cores)]
    done = subprocess.run(argv, env=env, cwd=tree, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the other checkout")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--user", default="", help="run the allocations as this user")
    ap.add_argument("--crashes", type=int, default=0)
    ap.add_argument("--cpu", type=float, default=1.0,
                    help="cores of each allocation (its CFS quota with cgroups)")
    args = ap.parse_args()
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    trees = {"before": args.before.resolve(), "this": REPO}
    got: dict[str, list[dict[str, float]]] = {"before": [], "this": []}
    with tempfile.TemporaryDirectory(prefix="hac-bench-starts-") as tmp:
        for run in range(args.runs):
            order = ["before", "this"] if run % 2 == 0 else ["this", "before"]
            for name in order:
                r = measure(trees[name], Path(tmp) / f"{name}{run}", args.n, args.user,
                            args.crashes, args.cpu)
                got[name].append(r)
                print(f"run {run + 1} {name}: {r}", flush=True)
    keys = [k for k in ("start_s", "start_cpu_s", "crash_p50_ms") if k in got["this"][0]]
    print(f"\nmedians over {args.runs} runs, {args.n} allocations, isolation "
          f"{got['this'][0].get('mode')}, user {args.user or '(the agent)'}")
    for k in keys:
        b = statistics.median(r[k] for r in got["before"])
        t = statistics.median(r[k] for r in got["this"])
        print(f"  {k:14s} before {b:8.3f}  this {t:8.3f}  this/before {t / b:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
