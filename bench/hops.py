"""What one hand-off between two processes costs here, on one CPU and across two.

    python bench/hops.py [--n 3000] [--cluster] [--runs 4] [--ops 600]

A single-client request is a chain of hand-offs: the client to the leader's event loop,
the loop to the Raft thread, the Raft thread to the followers and back, and back to the
loop and the client. Each wakes a thread that was waiting in poll. This measures the
floor of one such hop: two Python processes send 100 bytes back and forth over loopback
TCP, each waiting in `poll` as pysyncobj's threads do, with a 1 ms pause between round
trips (as between a client's requests). `free` leaves placement to the kernel, `same`
pins both processes to CPU 0, `split` one to CPU 0 and the other to CPU 1, so that every
hop wakes an idle CPU.

`--cluster` also starts a 3-replica cluster and measures single-client GET and job PUT
p50 with the replicas as the kernel places them (`free`) and with the leader's threads on
CPU 0 and the followers' on CPU 1 (`pinned`, which keeps the leader's event loop and Raft
thread on one CPU), alternating, `--runs` times each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _nodelay(s: socket.socket) -> None:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)


def _echo(srv: socket.socket, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    conn, _ = srv.accept()
    _nodelay(conn)
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    while True:
        poller.poll(1000)
        data = conn.recv(65536)
        if not data:
            os._exit(0)
        conn.sendall(data)


def round_trips(n: int, cpus: tuple[int, int] | None) -> list[float]:
    """`n` round trips of 100 bytes in ms; `cpus`: (this process's, the echo's) or None."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    pid = os.fork()
    if pid == 0:
        try:
            _echo(srv, cpus[1] if cpus else None)
        finally:
            os._exit(1)
    before = os.sched_getaffinity(0)
    try:
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[0]})
        s = socket.create_connection(srv.getsockname())
        _nodelay(s)
        poller = select.poll()
        poller.register(s.fileno(), select.POLLIN)
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            s.sendall(b"x" * 100)
            got = 0
            while got < 100:
                poller.poll(1000)
                got += len(s.recv(65536))
            out.append((time.perf_counter_ns() - t0) / 1e6)
            time.sleep(0.001)
        s.close()
    finally:
        os.sched_setaffinity(0, before)
        os.waitpid(pid, 0)
        srv.close()
    return out


def _pin(pid: int, cpus: set[int]) -> None:
    import psutil

    for t in psutil.Process(pid).threads():
        try:
            os.sched_setaffinity(t.id, cpus)
        except OSError:
            pass  # a thread that ended meanwhile


def cluster_p50s(runs: int, ops: int) -> dict[tuple[str, str], list[float]]:
    from bench.compare.controlplane import HacKv
    from bench.measure import http_load
    from bench.measure.clusters import ready_cluster

    every = set(range(os.cpu_count() or 1))
    out: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        c = ready_cluster(Path(tmp) / "c")
        try:
            kv = HacKv(c)
            kv.prepare(1)
            lead = c.leader()
            followers = [r for r in c.replicas if r is not lead]

            def free() -> None:
                for r in c.replicas:
                    _pin(r.proc.pid, every)

            def pinned() -> None:
                _pin(lead.proc.pid, {0})
                for r in followers:
                    _pin(r.proc.pid, {1})
            modes = {"free": free, "pinned": pinned}
            for run in range(runs):
                for mode in (["free", "pinned"] if run % 2 == 0 else ["pinned", "free"]):
                    modes[mode]()
                    for kind, make in (("get", kv.get), ("job PUT", kv.put)):
                        res = asyncio.run(http_load.latency(lead.api, make, ops))
                        out.setdefault((mode, kind), []).append(res["p50_ms"])
            free()
        finally:
            c.stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--cluster", action="store_true")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--ops", type=int, default=600)
    a = p.parse_args()
    if (os.cpu_count() or 1) < 2:
        print("one CPU: nothing to compare")
        return 1
    print("round trip between two processes, 100 bytes, ms")
    for name, cpus in (("free", None), ("same", (0, 0)), ("split", (0, 1))):
        rtt = sorted(round_trips(a.n, cpus))
        print(f"  {name:6s} p50 {statistics.median(rtt):.3f}  p90 {rtt[int(len(rtt) * 0.9)]:.3f}")
    if a.cluster:
        print(f"single-client p50, ms (median of {a.runs} runs of {a.ops})")
        for (mode, kind), values in sorted(cluster_p50s(a.runs, a.ops).items()):
            print(f"  {kind:8s} {mode:7s} {statistics.median(values):.3f}  "
                  f"runs {', '.join(f'{v:.3f}' for v in values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
