"""What Python leaves of the control-plane targets on this machine: floors, with etcd.

    python -m bench.floors [--runs 3] [--seconds 3] [--latency-ops 500]

The targets of `make bench-compare` ask for job writes at 1.5x etcd's rate, linearizable
reads at 2x, and single-client p50s at most etcd's. Each run measures, with the same load
generator (`bench/measure/http_load.py`, 64 keep-alive clients, one client for p50):

- `floor`: a bare aiohttp server on uvloop (what the controllers run) with no work at all:
  it answers a job GET and a job PUT with the bytes a real controller answers them with,
  without authentication, Raft, state or validation. Nothing built on aiohttp can serve
  more requests per second than this on this machine, nor answer one client sooner.
- `raft`: one command through three replicas (`bench/raft_raw.py`: hacontrol's tuning and
  fsync, proposed in-process, no HTTP, no state machine), one at a time: the p50 of the
  consensus round alone.
- etcd (3 members, Debian's `etcd-server`) and hacontrol, as `bench.cp_ab` runs them.

It prints medians and, for each target, how much of it the floor itself takes: a floor
below the target means no Python HTTP stack meets it here, whatever the server does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.compare.controlplane import HacKv, job_body  # noqa: E402
from bench.cp_ab import measure, one_round, run_etcd, run_hac  # noqa: E402
from bench.measure.clusters import ready_cluster  # noqa: E402
from bench.measure.http_load import Request  # noqa: E402
from bench.measure.procs import Reaper, log  # noqa: E402
from bench.peers import etcd  # noqa: E402

# The floor server: two routes answering fixed bytes (argv: port, GET answer file, PUT
# answer file). It reads the PUT body, as any server must.
FLOOR_SERVER = r'''
import sys
import uvloop
from aiohttp import web
get_body, put_body = open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
async def get(request):
    return web.Response(body=get_body, content_type="application/json")
async def put(request):
    await request.read()
    return web.Response(body=put_body, content_type="application/json")
app = web.Application()
app.router.add_get("/v1/jobs/{ns}/{name}", get)
app.router.add_put("/v1/jobs/{ns}/{name}", put)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
'''
FIGURES = ("put/s", "get/s", "put p50", "get p50", "put cpu", "get cpu")


async def _answer(base: str, req: Request) -> bytes:
    import aiohttp
    async with aiohttp.ClientSession() as s, s.request(
            req.method, base + req.path, data=req.body, headers=dict(req.headers)) as resp:
        assert resp.status == 200, resp.status
        return await resp.read()


def real_answers(root: Path) -> tuple[bytes, bytes]:
    """A controller's answers to one job GET and one job PUT (the floor sends the same)."""
    cluster = ready_cluster(root)
    try:
        kv = HacKv(cluster)
        kv.prepare(1)
        api = cluster.leader().api
        put = asyncio.run(_answer(api, kv.put(0, 1)))
        get = asyncio.run(_answer(api, kv.get(0, 1)))
        return get, put
    finally:
        cluster.stop()


def run_floor(root: Path, answers: tuple[bytes, bytes], reaper: Reaper,
              a: argparse.Namespace) -> dict[str, float]:
    root.mkdir(parents=True)
    (root / "get").write_bytes(answers[0])
    (root / "put").write_bytes(answers[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = reaper.spawn("floor", [sys.executable, "-c", FLOOR_SERVER, str(port),
                                  str(root / "get"), str(root / "put")], root / "floor.log")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, proc, 20.0)
        kv = _FloorKv()
        return measure(base, {"put": kv.put, "get": kv.get}, a.clients, a.seconds,
                       a.latency_ops, [proc.pid])
    finally:
        reaper.stop(proc.pid)


def _wait_up(base: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(_answer(base, _FloorKv().get(0, 0)))
            return
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"floor server not up at {base}") from None
            time.sleep(0.05)


class _FloorKv:
    """The requests `HacKv` sends, with the same headers (the floor ignores the token)."""

    headers = {"Authorization": "Bearer floor", "Content-Type": "application/json"}

    def put(self, w: int, n: int) -> Request:
        return Request("PUT", f"/v1/jobs/default/kv-{w}", job_body(n), self.headers)

    def get(self, w: int, n: int) -> Request:
        return Request("GET", f"/v1/jobs/default/kv-{w}", None, self.headers)


def raft_p50(count: int) -> float:
    """The p50 of one command committed through three replicas, nothing else (ms)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "raft_raw.py"), "--count",
                          str(count)], capture_output=True, text=True, timeout=600,
                         check=True).stdout
    return float(json.loads(out[out.index("{"):])["raw_sync_p50_ms"])


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--latency-ops", type=int, default=500)
    ap.add_argument("--raft-count", type=int, default=5000)
    a = ap.parse_args()
    reaper = Reaper()
    peer = etcd.find(False, log)
    if not peer.available or peer.exe is None:
        log("etcd: " + peer.describe() + "; the floors mean little without it")
    runs: dict[str, list[dict[str, float]]] = {"etcd": [], "floor": [], "hacontrol": []}
    raft: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="floors-") as tmp:
            answers = real_answers(Path(tmp) / "answers")
            systems: dict[str, Callable[[Path], dict[str, float]]] = {
                "floor": lambda root: run_floor(root, answers, reaper, a),
                "hacontrol": lambda root: run_hac(REPO, root, a),
            }
            if peer.available and peer.exe is not None:
                exe = peer.exe
                systems["etcd"] = lambda root: run_etcd(exe, root, reaper, a)
            for r in range(a.runs):
                one_round(systems, r, Path(tmp), runs)
                log(f"run {r + 1}: raft alone")
                raft.append(raft_p50(a.raft_count))
                log(f"  raft sync p50 {raft[-1]:.2f} ms")
    finally:
        reaper.stop_all()
    med = {n: {f: statistics.median(x[f] for x in rs) for f in FIGURES if f in rs[0]}
           for n, rs in runs.items() if rs}
    print(f"{'figure':<10}" + "".join(f"{n:>11}" for n in med))
    for f in FIGURES:
        print(f"{f:<10}" + "".join(f"{med[n].get(f, 0):>11.2f}" for n in med))
    print(f"raft p50  {statistics.median(raft):>11.2f}  (one command through 3 replicas, "
          f"no HTTP; runs: {', '.join(f'{x:.2f}' for x in raft)})")
    if "etcd" in med:
        e, fl = med["etcd"], med["floor"]
        print(f"floor reads/s / etcd: {fl['get/s'] / e['get/s']:.2f} (target 2x)")
        print(f"floor writes/s / etcd: {fl['put/s'] / e['put/s']:.2f} (target 1.5x)")
        print(f"floor read p50 / etcd: {fl['get p50'] / e['get p50']:.2f} (target <= 1)")
        print(f"floor write p50 + raft p50 / etcd write p50: "
              f"{(fl['put p50'] + statistics.median(raft)) / e['put p50']:.2f} (target <= 1)")
    for n, rs in runs.items():
        print(f"{n} runs: " + "; ".join(", ".join(f"{k} {v:.2f}" for k, v in x.items())
                                        for x in rs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
