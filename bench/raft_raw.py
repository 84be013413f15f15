"""Raw Raft throughput and latency with hacontrol's tuning.

    python bench/raft_raw.py [--no-group-commit] [--via-follower] [--count N]
                             [--unsafe-no-fsync] [--journal file|mmap]

Starts 3 replica processes on 127.0.0.1 (journal and dump on disk). The one
that should drive the load (the leader, or a follower with --via-follower)
measures: commits/s with ~1000 commands in flight through Replica.submit and
through LogBridge.submit, and sequential (sync) latency p50/p99 for both.

Durability is on (every acknowledged entry fdatasync'ed on a majority) unless
--unsafe-no-fsync; --journal mmap swaps our append-only journal for pysyncobj's mmap
journal, msync'ed at the same points, to compare the two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# Every bench process must share it, hence a constant; never reuse it outside the bench.
SECRET = "hcraft2.5bba5a9fb9cd3b45c1afdc13d2fd5f0e.e6614c2b68f32f6e7038b5edb6de887d3d2c0b184408c7ee7dbd6e070c2d774f"


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def apply(self, command: bytes, index: int) -> Any:
        self.n += 1
        return self.n

    def snapshot(self) -> bytes:
        return str(self.n).encode()

    def restore(self, data: bytes) -> None:
        self.n = int(data)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


def run_load(replica: Any, count: int, in_flight: int) -> dict[str, float]:
    from hacontrol.raft import LogBridge

    payload = os.urandom(100)
    out: dict[str, float] = {}

    # Raw: Replica.submit with a window of in-flight commands.
    sem = threading.Semaphore(in_flight)
    done = threading.Event()
    failures = [0]
    remaining = [count]
    lock = threading.Lock()

    def cb(res: Any, err: int) -> None:
        if err:
            failures[0] += 1
        sem.release()
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    t0 = time.monotonic()
    for _ in range(count):
        sem.acquire()
        replica.submit(payload, cb)
    done.wait(120)
    out["raw_commits_per_s"] = count / (time.monotonic() - t0)
    out["raw_failures"] = failures[0]

    lat = []
    for _ in range(500):
        ev = threading.Event()
        t = time.perf_counter()
        replica.submit(payload, lambda r, e, ev=ev: ev.set())
        ev.wait(5)
        lat.append(time.perf_counter() - t)
    out["raw_sync_p50_ms"] = pct(lat, 0.5)
    out["raw_sync_p99_ms"] = pct(lat, 0.99)

    async def via_bridge() -> None:
        bridge = LogBridge(replica, max_in_flight=in_flight)
        t0 = time.monotonic()
        results = await asyncio.gather(
            *(bridge.submit(payload, 30) for _ in range(count)), return_exceptions=True
        )
        out["bridge_commits_per_s"] = count / (time.monotonic() - t0)
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        out["bridge_failures"] = len(errors)
        if errors:
            out["bridge_failure_kinds"] = sorted(set(errors))  # type: ignore[assignment]
        lat = []
        for _ in range(500):
            t = time.perf_counter()
            await bridge.submit(payload, 5)
            lat.append(time.perf_counter() - t)
        out["bridge_sync_p50_ms"] = pct(lat, 0.5)
        out["bridge_sync_p99_ms"] = pct(lat, 0.99)
        t0 = time.monotonic()
        await asyncio.gather(*(bridge.barrier(b"noop", 10) for _ in range(5000)))
        out["barrier_reads_per_s"] = 5000 / (time.monotonic() - t0)

    asyncio.run(via_bridge())
    return out


def node_main(args: argparse.Namespace) -> None:
    from hacontrol.raft import RaftTuning, Replica, ReplicaConfig
    from hacontrol.raft.config import Durability, JournalKind

    tuning = RaftTuning(group_commit=not args.no_group_commit)
    replica = Replica(
        ReplicaConfig(args.id, args.raft, args.peer, Path(args.data), SECRET, tuning,
                      durability=Durability.choose(unsafe_no_fsync=args.unsafe_no_fsync),
                      journal_kind=JournalKind(args.journal)), Counter()
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = replica.status()
        if st.leader and st.ready:
            break
        time.sleep(0.05)
    st = replica.status()
    driver = (st.role == "follower") if args.via_follower else (st.role == "leader")
    if driver:
        # Exactly one driver: via a follower, the lowest non-leader address.
        if args.via_follower:
            others = sorted(a for a in [args.raft, *args.peer] if a != st.leader)
            driver = others[0] == args.raft
    if driver:
        res = run_load(replica, args.count, args.in_flight)
        Path(args.result).write_text(json.dumps(res))
    signal.sigwait({signal.SIGTERM})
    replica.destroy()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--node", action="store_true")
    p.add_argument("--id")
    p.add_argument("--raft")
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--data")
    p.add_argument("--result")
    p.add_argument("--no-group-commit", action="store_true")
    p.add_argument("--via-follower", action="store_true")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--in-flight", type=int, default=1000)
    p.add_argument("--unsafe-no-fsync", action="store_true")
    p.add_argument("--journal", choices=("file", "mmap"), default="file")
    args = p.parse_args()
    if args.node:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        node_main(args)
        return
    root = Path(tempfile.mkdtemp(prefix="raftbench"))
    socks = [socket.socket() for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    addrs = [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    for s in socks:
        s.close()
    result = root / "result.json"
    procs = []
    for i, a in enumerate(addrs):
        cmd = [sys.executable, __file__, "--node", "--id", f"n{i}", "--raft", a,
               "--data", str(root / f"n{i}"), "--result", str(result),
               "--count", str(args.count), "--in-flight", str(args.in_flight)]  # fmt: skip
        cmd += [x for b in addrs if b != a for x in ("--peer", b)]
        cmd += ["--no-group-commit"] * args.no_group_commit + ["--via-follower"] * args.via_follower
        cmd += ["--unsafe-no-fsync"] * args.unsafe_no_fsync + ["--journal", args.journal]
        procs.append(subprocess.Popen(cmd))
    try:
        deadline = time.monotonic() + 300
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        print(json.dumps(json.loads(result.read_text()), indent=1))
    finally:
        for pr in procs:
            pr.send_signal(signal.SIGTERM)
        for pr in procs:
            try:
                pr.wait(10)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait()


if __name__ == "__main__":
    main()
