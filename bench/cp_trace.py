"""Where one write's and one read's wall time goes: a latency breakdown, not CPU.

    python -m bench.cp_trace [-n 200] [--kinds put,scale,get] [--keep DIR] [--tree DIR]

Starts a 3-replica cluster whose replicas load `bench/cp_trace_hooks.py` (timestamps at
each step of a request's path, one clock for all processes), sends `n` sequential job
PUTs, scales and linearizable GETs from one client to the leader (as the control-plane
rows' "p50, 1 client" do), then lines the records of all three replicas up against each
request's send and receive time. Prints per kind: the client's p50, the median time from
the client's send to the first occurrence of each step (L = leader, F1/F2 = followers;
loop = the event loop thread, raft = pysyncobj's tick thread, sync = the leader's journal
sync thread), and the full record of the request whose latency is the median.

The hooks add about a microsecond per record; the figures are for reading where the time
goes, not for comparing with the peers (use bench.compare or bench.cp_ab for that).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402

from bench.compare.controlplane import HacKv  # noqa: E402
from bench.measure.clusters import ready_cluster  # noqa: E402
from bench.measure.http_load import Make  # noqa: E402

Event = tuple[int, str, str, str]  # ns, role, thread, label
# Records of these labels happen all the time; they are shown in the full record only.
NOISE = ("poll.", "tick.start", "tick.end", "on_tick.", "read_step.")


async def sequential(base: str, make: Make, n: int, warm: int = 20
                     ) -> list[tuple[int, int, int]]:
    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for i in range(n + warm):
            req = make(0, i)
            t0 = time.monotonic_ns()
            async with session.request(req.method, base + req.path, data=req.body,
                                       headers=dict(req.headers)) as resp:
                await resp.read()
                status = resp.status
            t1 = time.monotonic_ns()
            if i >= warm:
                out.append((t0, t1, status))
    return out


def thread_role(name: str) -> str:
    if name == "MainThread":
        return "loop"
    if "_autoTickThread" in name:
        return "raft"
    if name == "raft-journal-sync":
        return "sync"
    return name


def load(trace_dir: Path, roles: dict[int, str]) -> list[Event]:
    events: list[Event] = []
    for f in trace_dir.glob("*.trace"):
        role = roles.get(int(f.stem))
        if role is None:
            continue
        for line in f.read_text().splitlines():
            t, th, label = line.split("\t")
            events.append((int(t), role, thread_role(th), label))
    events.sort()
    return events


def breakdown(kind: str, ops: list[tuple[int, int, int]], events: list[Event]) -> None:
    import bisect
    times = [e[0] for e in events]
    lat = sorted(((t1 - t0) / 1e6, t0, t1) for t0, t1, st in ops if st == 200)
    bad = sum(1 for *_, st in ops if st != 200)
    print(f"\n== {kind}: {len(lat)} ok, {bad} failed; client p50 "
          f"{statistics.median(x[0] for x in lat):.3f} ms, p90 {lat[int(len(lat) * .9)][0]:.3f}")
    firsts: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for _ms, t0, t1 in lat:
        seen: set[tuple[str, str, str]] = set()
        for e in events[bisect.bisect_left(times, t0):bisect.bisect_right(times, t1)]:
            key = (e[1], e[2], e[3])
            if key in seen or e[3].startswith(NOISE):
                continue
            seen.add(key)
            firsts[key].append((e[0] - t0) / 1e6)
    rows = sorted((statistics.median(v), len(v), k) for k, v in firsts.items()
                  if len(v) >= len(lat) // 2)
    print(f"{'median ms':>9} {'in %':>5}  step (first occurrence after the client's send)")
    for med, count, (role, th, label) in rows:
        print(f"{med:9.3f} {100 * count // len(lat):5d}  {role:<3}{th:<5}{label}")
    ms, t0, t1 = lat[len(lat) // 2]
    print(f"-- the median request ({ms:.3f} ms), every record:")
    for e in events[bisect.bisect_left(times, t0):bisect.bisect_right(times, t1)]:
        print(f"{(e[0] - t0) / 1e6:9.3f}  {e[1]:<3}{e[2]:<5}{e[3]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--kinds", default="put,scale,get")
    ap.add_argument("--keep", type=Path, help="keep the cluster and trace files here")
    ap.add_argument("--tree", type=Path, default=REPO,
                    help="run the replicas from this checkout (default: this one)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cp-trace-") as tmp:
        root = a.keep or Path(tmp)
        trace_dir = root / "trace"
        trace_dir.mkdir(parents=True, exist_ok=True)
        tree = a.tree.resolve()
        os.environ["HACONTROL_TRACE_DIR"] = str(trace_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "bench" / "trace_hooks"), str(tree)])
        cwd = os.getcwd()
        os.chdir(tree)  # `python -m hacontrol` imports from its working directory first
        try:
            cluster = ready_cluster(root.resolve() / "cluster")
        finally:
            os.chdir(cwd)
            del os.environ["HACONTROL_TRACE_DIR"]
            del os.environ["PYTHONPATH"]
        try:
            kv = HacKv(cluster)
            kv.prepare(1)
            makes = {"put": kv.put, "scale": kv.scale, "get": kv.get}
            results = {}
            for k in a.kinds.split(","):
                # Asked again per kind: the leader may have changed meanwhile.
                lead = cluster.leader()
                roles = {lead.proc.pid: "L"}
                followers = [r for r in cluster.replicas if r is not lead]
                for i, r in enumerate(followers, 1):
                    roles[r.proc.pid] = f"F{i}"
                results[k] = (roles, asyncio.run(sequential(lead.api, makes[k], a.n)))
                if cluster.leader() is not lead:
                    print(f"{k}: the leader changed during the run", file=sys.stderr)
            time.sleep(0.8)  # the hooks flush every 0.3 s
        finally:
            cluster.stop()
        for kind, (roles, ops) in results.items():
            breakdown(kind, ops, load(trace_dir, roles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
