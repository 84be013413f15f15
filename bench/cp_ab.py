"""A/B of the control plane's write and read figures: this tree against another checkout
of hacontrol (say, main before a change), with etcd in the same invocation.

    python -m bench.cp_ab --base /path/to/other/checkout [--runs 3] [--seconds 4]

Each run measures etcd, the base tree and this tree, in an order that rotates from run to
run, on the same workloads as `bench.compare --only cp` (`bench/compare/controlplane.py`:
64 clients writing job PUTs, scales, linearizable GETs; one client's p50), skipping
failover. The base tree's replicas run from its own directory (`python -m hacontrol` with
it as working directory and PYTHONPATH), the client and harness are this tree's. Prints
each figure's median per system (`cpu`: ms of CPU that the three server processes used
per successful operation, steadier than throughput on a loaded machine; `client`: the
same for the load generator, this process, which shares the two cores) and this tree's
ratio to the base and to etcd, with every run's values. The machine is shared: read ratios of one invocation only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


from bench.compare.controlplane import HacKv, cpu_per_op, etcd_get, etcd_kv  # noqa: E402
from bench.measure import http_load  # noqa: E402
from bench.measure.clusters import ready_cluster  # noqa: E402
from bench.measure.http_load import Make  # noqa: E402
from bench.measure.procs import Reaper, cpu_meter, log  # noqa: E402
from bench.peers import etcd  # noqa: E402

FIGURES = ("put/s", "scale/s", "get/s", "put p50", "scale p50", "get p50",
           "put cpu", "scale cpu", "get cpu", "put client", "scale client", "get client")


@contextmanager
def source_tree(tree: Path) -> Iterator[None]:
    """Replicas started meanwhile import hacontrol from `tree`."""
    cwd, pp = os.getcwd(), os.environ.get("PYTHONPATH")
    os.chdir(tree)
    os.environ["PYTHONPATH"] = str(tree)
    try:
        yield
    finally:
        os.chdir(cwd)
        if pp is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pp


def measure(base: str, makes: dict[str, Make], clients: int, seconds: float,
            latency_ops: int, pids: list[int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, m in makes.items():
        out[f"{k} p50"] = asyncio.run(http_load.latency(base, m, latency_ops))["p50_ms"]
    for k, m in makes.items():
        tp = asyncio.run(http_load.throughput(base, m, clients, seconds, 1.0,
                                              meter=cpu_meter(pids)))
        out[f"{k}/s"] = tp["ops_per_s"]
        # ms of server CPU (all three replicas or members) per successful operation
        # No success in the window: no figure per operation (0, as the rows are medians).
        out[f"{k} cpu"] = cpu_per_op(tp, 0) or 0.0
        out[f"{k} client"] = cpu_per_op(tp, 1) or 0.0
        if tp["errors"]:
            log(f"  errors {k}: {tp['errors']}")
    return out


def tree_secret(tree: Path) -> str:
    """A cluster secret of the kind `tree` generates (its key format may predate ours)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-m", "hacontrol.raft.gensecret"], cwd=tree,
                          env=env, check=True, capture_output=True, text=True).stdout.strip()


def run_hac(tree: Path, root: Path, a: argparse.Namespace) -> dict[str, float]:
    with source_tree(tree):
        cluster = ready_cluster(root, secret=tree_secret(tree))
    try:
        kv = HacKv(cluster)
        kv.prepare(a.clients)
        return measure(cluster.leader().api, {"put": kv.put, "scale": kv.scale, "get": kv.get},
                       a.clients, a.seconds, a.latency_ops,
                       [r.proc.pid for r in cluster.replicas])
    finally:
        cluster.stop()


def run_etcd(exe: Path, root: Path, reaper: Reaper, a: argparse.Namespace) -> dict[str, float]:
    cl = etcd.EtcdCluster(exe, root, reaper)
    try:
        cl.start()
        lead = cl.urls_leader_first()[0]
        asyncio.run(http_load.send_all(lead, [etcd_kv(w, 0) for w in range(a.clients)]))
        out = measure(lead, {"put": etcd_kv, "get": etcd_get}, a.clients, a.seconds,
                      a.latency_ops, list(cl.pids.values()))
        for f in ("/s", " p50", " cpu", " client"):
            out[f"scale{f}"] = out[f"put{f}"]
        return out
    finally:
        cl.stop()


def one_round(systems: dict[str, Callable[[Path], dict[str, float]]], r: int, tmp: Path,
              runs: dict[str, list[dict[str, float]]]) -> None:
    """Round `r`: every system once, in an order rotated by `r`, each in a fresh directory
    under `tmp`; appends each result to `runs[name]`."""
    names = list(systems)
    for name in names[r % len(names):] + names[:r % len(names)]:
        log(f"run {r + 1}: {name}")
        res = systems[name](tmp / f"{name}-{r}")
        log(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()))
        runs[name].append(res)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="the other checkout")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--latency-ops", type=int, default=200)
    ap.add_argument("--no-etcd", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    reaper = Reaper()
    peer = None if a.no_etcd else etcd.find(False, log)
    if peer is not None and not peer.available:
        log("etcd: " + peer.describe())
        peer = None
    systems: dict[str, Callable[[Path], dict[str, float]]] = {
        "base": lambda root: run_hac(a.base.resolve(), root, a),
        "this": lambda root: run_hac(REPO, root, a),
    }
    if peer is not None and peer.exe is not None:
        exe = peer.exe
        systems["etcd"] = lambda root: run_etcd(exe, root, reaper, a)
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in systems}
    names = list(systems)
    try:
        with tempfile.TemporaryDirectory(prefix="cp-ab-") as tmp:
            for r in range(a.runs):
                one_round(systems, r, Path(tmp), runs)
    finally:
        reaper.stop_all()
    med = {n: {f: statistics.median(x[f] for x in rs) for f in FIGURES} for n, rs in runs.items()}
    if a.json:
        print(json.dumps({"median": med, "runs": runs}, indent=1))
        return 0
    print(f"{'figure':<10}" + "".join(f"{n:>10}" for n in names) + "  this/base  this/etcd")
    for f in FIGURES:
        row = f"{f:<10}" + "".join(f"{med[n][f]:>10.2f}" for n in names)
        row += f"  {ratio(med['this'][f], med['base'][f]):>9}"
        if "etcd" in med:
            row += f"  {ratio(med['this'][f], med['etcd'][f]):>9}"
        print(row)
    for n in names:
        print(f"{n} runs: " + "; ".join(", ".join(f"{k} {v:.1f}" for k, v in x.items())
                                        for x in runs[n]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
