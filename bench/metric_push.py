#!/usr/bin/env python3
"""What a pushed metric value costs: the leader-memory push route next to a replicated
write of the same size, at a steady rate, on one 3-replica cluster, in the same run.

    python bench/metric_push.py [--rate 10] [--seconds 10] [--rounds 2] [--burst 300]

"Replicated" is what a push would cost as a log entry: `POST .../scale` with the job's
current count (a `job_scale` that changes nothing but still goes through Raft: proposed,
fsynced on a majority, applied on every replica, journaled). Each round runs both
at `--rate` per second for `--seconds` (alternating which goes first) and reads:
client latency (p50, p99), CPU seconds the three replicas used (user + system, from
/proc), how much their data directories grew, and how many log entries it took; "idle"
is the same time with no requests (the replicas' own heartbeats and upkeep). Then
`--burst` back-to-back requests of each from one client (requests per second). Medians
over the rounds, and the replicated write's ratio to the push. On a shared machine the
replicas' own idle use (ticks, polls) varies more than 10 requests a second cost: read
the CPU column against the idle row of the same run, and expect noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.measure.clusters import cluster_in  # noqa: E402
from tests.integration.harness import Cluster, Replica, http  # noqa: E402

JOB = {"command": ["sleep", "600"], "count": 1, "resources": {"cpu": 0.1, "memory_mb": 16},
       "scaling": {"min": 1, "max": 1, "target_per_instance": 10,
                   "metric": {"name": "queue_length", "source": "external"}}}


def cpu_s(c: Cluster) -> float:
    total = 0.0
    for r in c.replicas:
        t = psutil.Process(r.proc.pid).cpu_times()
        total += t.user + t.system
    return total


def disk_bytes(c: Cluster) -> int:
    return sum(f.stat().st_size for r in c.replicas for f in (c.root / r.id).rglob("*")
               if f.is_file())


def commit_index(c: Cluster, lead: Replica) -> int:
    st = c.status(lead)
    assert st is not None
    return int(st["commit_index"])


def one(c: Cluster, lead: list[Replica], kind: str, i: int) -> float:
    """One request to the leader (`lead[0]`, looked up again when leadership moved)."""
    start = time.perf_counter()
    for _ in range(5):
        base = f"{lead[0].api}/v1/jobs/default/q"
        if kind == "push":
            resp = http("PUT", f"{base}/metrics/queue_length", {"value": i % 50},
                        token=c.token)
        else:
            resp = http("POST", f"{base}/scale", {"count": 1}, token=c.token,
                        headers={"Idempotency-Key": f"bench-{time.time_ns()}"})
        if resp.status == 200:
            return time.perf_counter() - start
        lead[0] = c.leader()  # a 307 or a 503: the leader changed under the load
    raise AssertionError(f"{kind} kept failing: {resp}")


def steady(c: Cluster, lead: list[Replica], kind: str, rate: float, seconds: float
           ) -> dict[str, Any]:
    n = int(rate * seconds)
    cpu0, disk0, idx0 = cpu_s(c), disk_bytes(c), commit_index(c, lead[0])
    lat = [0.0]
    t0 = time.monotonic()
    for i in range(n if kind != "idle" else 0):
        wait = t0 + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        lat.append(one(c, lead, kind, i))
    time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
    lat = sorted(lat[1:] or lat)
    return {"p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
            "cpu_pct": 100 * (cpu_s(c) - cpu0) / seconds,
            "disk_per_req": (disk_bytes(c) - disk0) / n,
            "entries_per_req": (commit_index(c, lead[0]) - idx0) / n}


def burst(c: Cluster, lead: list[Replica], kind: str, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        one(c, lead, kind, i)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--burst", type=int, default=300)
    args = p.parse_args()
    kinds = ["idle", "push", "replicated"]
    with tempfile.TemporaryDirectory(prefix="hacontrol-push-bench-") as tmp, \
            cluster_in(Path(tmp) / "c") as c:
        assert c.write("PUT", "/v1/jobs/default/q", JOB).status == 200
        lead = [c.leader()]
        time.sleep(args.seconds)  # let start-up work (bootstrap, first snapshot) settle
        res: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
        for rnd in range(args.rounds):
            for kind in kinds[rnd % 3:] + kinds[:rnd % 3]:
                row = steady(c, lead, kind, args.rate, args.seconds)
                row["burst_per_s"] = (burst(c, lead, kind, args.burst) if kind != "idle"
                                      else 0.0)
                for k, v in row.items():
                    res[kind].setdefault(k, []).append(v)
                print(f"round {rnd + 1} {kind:10s} " + "  ".join(
                    f"{k} {v:.2f}" for k, v in row.items()), file=sys.stderr, flush=True)
        med = {k: {m: statistics.median(v) for m, v in res[k].items()} for k in kinds}
        print(f"\nmedians of {args.rounds} rounds, 3 replicas, requests to the leader, "
              f"{args.rate:g}/s for {args.seconds:g}s, then {args.burst} back to back")
        print(f"{'':12s}{'p50 ms':>9s}{'p99 ms':>9s}{'cpu % (3 repl.)':>17s}"
              f"{'disk B/req':>12s}{'log entries/req':>17s}{'burst req/s':>13s}")
        for k in kinds:
            m = med[k]
            print(f"{k:12s}{m['p50_ms']:9.2f}{m['p99_ms']:9.2f}{m['cpu_pct']:17.1f}"
                  f"{m['disk_per_req']:12.0f}{m['entries_per_req']:17.2f}"
                  f"{m['burst_per_s']:13.0f}")
        a, b = med["push"], med["replicated"]
        print(f"replicated / push: p50 x{b['p50_ms'] / a['p50_ms']:.1f}, cpu "
              f"x{b['cpu_pct'] / max(a['cpu_pct'], 1e-9):.1f}, burst "
              f"x{b['burst_per_s'] / a['burst_per_s']:.2f}")


if __name__ == "__main__":
    main()
