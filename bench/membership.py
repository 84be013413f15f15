"""Membership changes of a cluster holding many jobs, under continuous client writes.

    .venv/bin/python -m bench.membership [--jobs 10000] [--runs 1]

Fills a 3-replica cluster with `--jobs` jobs, then, with 3 clients writing without pause
(each write retried with its Idempotency-Key after a 503 or a lost connection, as the CLI
does), joins c4 and c5, removes a follower and then the leader. Prints for each change how
long it took, and the longest write pause seen meanwhile; for the joins also how long the
new replica took to catch up (snapshot plus log) as the leader measured it, and the size of
the snapshot it received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.measure.clusters import ready_cluster
from tests.integration.harness import Cluster
from tests.integration.membership_load import Load, new_replica, remove, wait_member_ready

JOB = {"command": ["sleep", "600"], "count": 0, "resources": {"cpu": 0.1, "memory_mb": 16}}


async def fill(c: Cluster, jobs: int, concurrency: int = 4) -> float:
    """PUT `jobs` jobs; seconds taken."""
    lead = c.leader()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    headers = {"Authorization": f"Bearer {c.token}"}

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            for _ in range(100):
                try:
                    async with session.put(f"{lead.api}/v1/jobs/default/fill-{i}", json=JOB,
                                           headers={**headers, "Idempotency-Key": f"fill-{i}"}
                                           ) as resp:
                        await resp.read()
                        if resp.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"job {i} not written")

    t0 = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.monotonic() - t0


def caught_up_s(c: Cluster, rid: str) -> float | None:
    text = (c.root / f"{rid}.log").read_text()
    m = re.search(r"caught up after ([0-9.]+) s", text)
    return float(m.group(1)) if m else None


def one_run(jobs: int) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="hacontrol-bench-membership-"))
    c = ready_cluster(root / "cluster", extra_server_args=["--max-jobs", str(jobs + 1000)])
    rows: list[dict[str, Any]] = []
    try:
        filled = fill_s = asyncio.run(fill(c, jobs))
        print(f"filled {jobs} jobs in {fill_s:.1f} s", flush=True)
        dumps = {r.id: (c.root / r.id / "raft.dump").stat().st_size
                 for r in c.replicas if (c.root / r.id / "raft.dump").exists()}
        with Load(c) as load:
            time.sleep(1.0)
            # The same figure over a window without any change: what the load alone costs.
            t0 = time.monotonic()
            time.sleep(5.0)
            t1 = time.monotonic()
            rows.append({"change": "none (baseline, 5 s)", "seconds": round(t1 - t0, 2),
                         "pause_ms": round(load.pause_in(t0, t1) * 1000),
                         "writes_per_s": round(load.count_between(t0, t1) / (t1 - t0), 1)})
            for rid in ("c4", "c5"):
                t0 = time.monotonic()
                r = new_replica(c, rid, c.live()[:2])
                wait_member_ready(c, r, timeout=300)
                t1 = time.monotonic()
                dump = c.root / rid / "raft.dump"
                rows.append({"change": f"join {rid}", "seconds": round(t1 - t0, 2),
                             "catch_up_s": caught_up_s(c, rid),
                             "snapshot_bytes": dump.stat().st_size if dump.exists() else None,
                             "pause_ms": round(load.pause_in(t0, t1) * 1000)})
            lead = c.leader()
            follower = next(r for r in c.followers() if r.id in ("c1", "c2", "c3"))
            for victim in (follower, lead):
                t0 = time.monotonic()
                resp = remove(c, victim.id)
                t1 = time.monotonic()
                assert resp.status == 200, resp
                victim.proc.stop()
                rows.append({"change": f"remove {victim.id}"
                             + (" (leader)" if victim is lead else ""),
                             "seconds": round(t1 - t0, 2),
                             "pause_ms": round(load.pause_in(t0, t1) * 1000)})
            time.sleep(1.0)
        rows.append({"change": "load", "acks": len(load.acks), "retries": load.retries,
                     "failures": len(load.failures), "fill_s": round(filled, 1),
                     "leader_dump_bytes": max(dumps.values(), default=None)})
    finally:
        c.stop()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    for run in range(args.runs):
        rows = one_run(args.jobs)
        print(f"run {run + 1}:")
        for row in rows:
            print("  " + json.dumps(row))


if __name__ == "__main__":
    main()
