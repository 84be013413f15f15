#!/usr/bin/env python3
"""Failover alone, and elections under load: A/B between source trees in one invocation.

    python bench/failover.py [--trials N] [--rounds R] [--tree DIR ...] [--etcd]
    python bench/failover.py --soak SECONDS [--clients 64] [--tree DIR ...]

Failover: the kill -9 measure of `bench.compare` (open-loop writes every 5 ms to every
replica in turn; time from the kill to the first acknowledged write sent after it), on a
3-replica cluster per tree and round. With several `--tree`s (each a checkout of this
repository; the replicas run `python -m hacontrol` from it) the trees alternate, in turn
first and last, and the medians and their ratio to the first tree are printed.

Soak: a 3-replica cluster under full write load (`--clients` keep-alive clients on the
leader) for SECONDS; every replica's Raft term is sampled each second. Every election,
spurious or not, raises the term: the count printed is the term's rise on the replicas,
and the leader changes seen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.compare.controlplane import ETCD_TUNED, HacKv, etcd_failover, hac_failover  # noqa: E402
from bench.measure import http_load  # noqa: E402
from bench.measure.clusters import ready_cluster  # noqa: E402
from bench.measure.procs import Reaper, log  # noqa: E402
from bench.peers import etcd  # noqa: E402
from tests.integration.harness import wait_for  # noqa: E402

ETCD = Path("etcd (tuned 50/250 ms)")


@contextmanager
def in_tree(tree: Path) -> Iterator[None]:
    """Replicas started meanwhile import `hacontrol` from `tree` (`-m` puts the working
    directory first on their path)."""
    before = Path.cwd()
    os.chdir(tree)
    try:
        yield
    finally:
        os.chdir(before)


def etcd_trials(exe: Path, trials: int, root: Path, out: list[float | None]) -> None:
    reaper = Reaper()
    cl = etcd.EtcdCluster(exe, root, reaper, *ETCD_TUNED)
    try:
        cl.start()
        wait_for(cl.all_healthy, 30, what="etcd healthy")
        out += etcd_failover(cl, trials, "tuned")
    finally:
        cl.stop()
        reaper.stop_all()


def ab_failover(trees: list[Path], rounds: int, trials: int, root: Path,
                etcd_exe: Path | None) -> None:
    sides = trees + ([ETCD] if etcd_exe else [])
    got: dict[Path, list[float | None]] = {t: [] for t in sides}
    for rnd in range(rounds):
        order = sides if rnd % 2 == 0 else list(reversed(sides))
        for n, tree in enumerate(order):
            log(f"round {rnd + 1}/{rounds}: {tree}")
            if tree == ETCD:
                assert etcd_exe is not None
                etcd_trials(etcd_exe, trials, root / f"r{rnd}-{n}", got[tree])
                continue
            with in_tree(tree):
                hac_failover(root / f"r{rnd}-{n}", trials, got[tree])
    base: float | None = None
    print(f"{'tree':<40} {'median ms':>9} {'p90 ms':>7} {'trials':>6} {'missed':>6} "
          f"{'ratio':>6}")
    for tree in sides:
        ok = sorted(x for x in got[tree] if x is not None)
        med = statistics.median(ok) if ok else None
        p90 = ok[min(len(ok) - 1, int(0.9 * len(ok)))] if ok else None
        if base is None:
            base = med
        ratio = f"{med / base:.2f}" if med and base else "-"
        print(f"{str(tree):<40} {med or 0:>9.0f} {p90 or 0:>7.0f} {len(ok):>6} "
              f"{len(got[tree]) - len(ok):>6} {ratio:>6}")
        print("  per trial: " + " ".join("-" if x is None else f"{x:.0f}" for x in got[tree]))


def soak(tree: Path, seconds: float, clients: int, root: Path) -> dict[str, Any]:
    with in_tree(tree):
        cluster = ready_cluster(root / "soak")
    try:
        kv = HacKv(cluster)
        kv.prepare(clients)
        lead = cluster.leader()
        terms: dict[str, int] = {}
        first: dict[str, int] = {}
        leaders: list[str] = []
        rises: list[str] = []  # when a replica's term rose: to find it in the kept logs
        stop = threading.Event()
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.wait(1.0):
                for r in cluster.live():
                    st = cluster.status(r)
                    if not st:
                        continue
                    first.setdefault(r.id, st["term"])
                    if st["term"] > terms.get(r.id, st["term"]):
                        rises.append(f"{r.id} term {st['term']} at {time.monotonic() - t0:.0f} s "
                                     f"({time.strftime('%H:%M:%S')}), {st['role']}")
                    terms[r.id] = st["term"]
                    if st["role"] == "leader" and (not leaders or leaders[-1] != r.id):
                        leaders.append(r.id)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            out = asyncio.run(http_load.throughput(lead.api, kv.put, clients, seconds, 1.0))
        finally:
            stop.set()
            sampler.join()
        rise = max(terms[k] - first[k] for k in terms) if terms else -1
        res = {"tree": str(tree), "seconds": seconds, "writes_per_s": round(out["ops_per_s"]),
               "errors": out["errors"], "term_rise": rise, "leaders": leaders,
               "rises": rises}
        print(res)
        return res
    finally:
        cluster.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", type=Path,
                   help="a checkout to run the replicas from (repeatable; default: this one)")
    p.add_argument("--trials", type=int, default=5, help="kills per cluster (default 5)")
    p.add_argument("--rounds", type=int, default=2, help="alternations (default 2)")
    p.add_argument("--soak", type=float, metavar="SECONDS",
                   help="count elections under write load instead")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--etcd", action="store_true",
                   help="alternate etcd (3 members, tuned 50/250 ms) with the trees")
    p.add_argument("--keep", action="store_true", help="keep the replicas' data and logs")
    args = p.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    root = Path(tempfile.mkdtemp(prefix="hacontrol-failover-"))
    try:
        if args.soak:
            for tree in trees:
                soak(tree, args.soak, args.clients, root / tree.name)
        else:
            exe = None
            if args.etcd:
                peer = etcd.find(False, log)
                if peer.exe is None:
                    log(f"etcd: {peer.missing}; skipped")
                exe = peer.exe
            ab_failover(trees, args.rounds, args.trials, root, exe)
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
