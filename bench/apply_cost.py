#!/usr/bin/env python3
"""CPU of applying job PUTs in the state machine, this tree against another, alternating.

    python bench/apply_cost.py [--base DIR] [--runs 8] [--writes 6000] [--profile]

Every replica applies every entry, so a microsecond saved here is saved three times per
write. A fresh interpreter per tree and run imports `hacontrol` from that tree, registers
64 jobs, then applies `--writes` job PUTs as the API proposes them under load: each a new
version of one of the 64 jobs (`sleep N`, count 0, every section spelled out as
`JobSpec.to_dict` writes it), with an idempotency key, 8 to a `GROUP` entry as the write
grouper makes them. It reports the process CPU time per PUT of the fastest fifth of the
applies (the machine is shared: the fastest is the least disturbed); the parent prints
each tree's median over the runs and the ratio. `--profile` prints this tree's cProfile
of the last fifth instead.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKER = r'''
import sys, time, uuid
sys.path.insert(0, sys.argv[1])
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.model.spec_parse import parse_job_spec

writes, profile = int(sys.argv[2]), sys.argv[3] == "1"
m = StateMachine()
index = 0


def apply(raw):
    global index
    index += 1
    return m.apply(raw, index)


def put(w, n):
    spec = parse_job_spec({"command": ["sleep", str(n)], "count": 0})
    return C.Command(C.JOB_PUT, time.time(), {"namespace": "default", "name": f"kv-{w}",
                     "spec": spec.to_dict()}, idem=uuid.uuid4().hex).encode()


apply(C.Command(C.NS_PUT, time.time(), {"name": "default"}).encode())
for w in range(64):
    apply(put(w, 0))
raws = [put(i % 64, i + 1) for i in range(writes)]
groups = [C.encode_group(time.time(), raws[i:i + 8], 2) for i in range(0, writes, 8)]
fifth = len(groups) // 5
per_put = []
for k in range(5):
    part = groups[k * fifth:(k + 1) * fifth]
    if profile and k == 4:
        import cProfile, pstats
        pr = cProfile.Profile()
        pr.enable()
    t0 = time.process_time()
    for g in part:
        res = apply(g)
    per_put.append((time.process_time() - t0) / (len(part) * 8) * 1e6)
    if not (res["ok"] and all(r["ok"] for r in res["results"])):
        raise SystemExit(f"a PUT was refused: {res}")
if profile:
    pr.disable()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
print(min(per_put))
'''


def measure(tree: Path, writes: int, profile: bool = False) -> float:
    out = subprocess.run([sys.executable, "-c", WORKER, str(tree), str(writes),
                          "1" if profile else "0"], capture_output=True, text=True, check=True)
    if profile:
        print(out.stdout)
    return float(out.stdout.split()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--base", type=Path, help="another checkout to compare with")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--writes", type=int, default=6000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.profile:
        measure(REPO, args.writes, profile=True)
        return 0
    trees = [REPO] + ([args.base.resolve()] if args.base else [])
    got: dict[Path, list[float]] = {t: [] for t in trees}
    for run in range(args.runs):
        for tree in trees if run % 2 == 0 else trees[::-1]:
            got[tree].append(measure(tree, args.writes))
    for tree, xs in got.items():
        print(f"{str(tree):<40} {statistics.median(xs):7.1f} us CPU per job PUT applied  "
              f"(runs: {' '.join(f'{x:.0f}' for x in xs)})")
    if args.base:
        print(f"this / base: {statistics.median(got[REPO]) / statistics.median(got[trees[1]]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
