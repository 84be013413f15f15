#!/usr/bin/env python3
"""Backup benchmarks: snapshot save and restore times and sizes at many jobs.

    python bench/snapshot.py [--jobs 10000] [--runs 1] [--json]
    python bench/snapshot.py --compare 3    # restores with and without raft/long_apply.py
    python bench/snapshot.py --compare 3 --against DIR   # against the code in DIR

1. file     a state of JOBS jobs (one allocation each, placed on 20 nodes and running; one
            job in ten with three versions; 2 namespaces; a bootstrap token) is built in
            this process through the real state machine and packed into a snapshot file:
            its size, the state's size, and the time to encode and pack it.
2. restore  a fresh 3-replica cluster restores it (`PUT /v1/operator/snapshot`, one log
            entry): the time until the API answers, and until every replica has applied
            it; meanwhile a writer puts one small job at a time through the first replica
            and a reader reads a namespace at a time through the second, and their longest
            waits are the write and read pauses the restore caused; a term change means an
            election.
            The time one replica spends applying the entry is also measured in this
            process (the same command through `StateMachine.apply`), with its state
            decoded ahead (what a replica does) and inline.
3. save     `GET /v1/operator/snapshot` from that cluster: the time and the file's size.
4. again    a second fresh cluster restores the file saved in 3.

Every cluster's bootstrap token is the one in the state, so the same token works before
and after a restore. Clusters run with a heartbeat grace of an hour, so the restored nodes (no agent runs them)
are not marked down while the figures are taken. Every process started here is stopped by
pid, also on a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from bench.measure.clusters import ready_cluster  # noqa: E402
from bench.measure.procs import log  # noqa: E402
from hacontrol.acl.secrets import accessor_for, hash_secret  # noqa: E402
from hacontrol.state import backup  # noqa: E402
from hacontrol.state import commands as C  # noqa: E402
from hacontrol.state import snapshot as snap  # noqa: E402
from hacontrol.state.dispatch import IdempotencyTable  # noqa: E402
from hacontrol.state.machine import StateMachine  # noqa: E402
from tests.integration.harness import Cluster, http, wait_for  # noqa: E402

NODES = 20


def build_state(jobs: int, token: str) -> StateMachine:
    m = StateMachine()
    index = 0

    def do(op: str, **args: Any) -> dict[str, Any]:
        nonlocal index
        index += 1
        r = m.apply(C.Command(op, 1.7e9 + index, args).encode(), index)
        assert r["ok"], r
        return r

    # The accessor id a replica given this token bootstraps with: a write in flight across
    # the restore acts for a token the restored state knows too.
    do(C.ACL_BOOTSTRAP, accessor_id=accessor_for(hash_secret(token)),
       secret_hash=hash_secret(token), name="bootstrap")
    do(C.NS_PUT, name="team", quota={"cpu": 10_000, "memory_mb": 10**8})
    for n in range(NODES):
        do(C.NODE_REGISTER, name=f"n{n}", cpu=1000.0, memory_mb=10**7,
           address=f"http://10.0.0.{n}:8200", labels={"zone": "abc"[n % 3]}, attributes={})
    for i in range(jobs):
        ns = "team" if i % 2 else "default"
        spec = {"command": ["/usr/bin/server", "--port", str(8000 + i % 1000)],
                "count": 1, "env": {"JOB": str(i), "MODE": "prod"},
                "resources": {"cpu": 0.05, "memory_mb": 32},
                "restart": {"policy": "always"}, "health": {"type": "tcp", "port": 8000}}
        do(C.JOB_PUT, namespace=ns, name=f"svc{i}", spec=spec)
        if i % 10 == 0:
            for v in (2, 3):
                do(C.JOB_PUT, namespace=ns, name=f"svc{i}",
                   spec={**spec, "env": {**spec["env"], "V": str(v)}})
    pending = [a.id for a in m.pending_allocs()]
    for at in range(0, len(pending), 1000):
        part = pending[at:at + 1000]
        do(C.PLAN, placements=[[a, f"n{k % NODES}"] for k, a in enumerate(part, at)])
    by_node: dict[str, list[dict[str, Any]]] = {}
    for a in m.allocs.values():
        if a.node is not None and not a.terminal:
            by_node.setdefault(a.node, []).append({"id": a.id, "state": "running",
                                                   "pid": 1000 + len(by_node), "restarts": 0})
    for node, updates in by_node.items():
        for at in range(0, len(updates), 500):
            do(C.ALLOC_UPDATE, node=node, updates=updates[at:at + 500])
    return m


def pack(m: StateMachine) -> tuple[bytes, float, int]:
    t = time.perf_counter()
    state = snap.encode(m.store, IdempotencyTable())
    data = backup.pack(state, m.index, 1, backup.counts_of(msgpack.unpackb(state)),
                       created_at=time.time(), source="bench")
    return data, time.perf_counter() - t, len(state)


def apply_time(m: StateMachine, data: bytes) -> tuple[float, float]:
    """What one replica spends applying the restore entry (on its Raft thread, holding the
    apply lock), measured here on a copy of the same state: the command through
    `StateMachine.apply`, its state decoded ahead (state/prepare.py) and, as a replica
    that replays it from its journal does, inline."""
    found = backup.unpack(data)
    times = []
    for ahead in (True, False):
        cmd = C.Command(C.STATE_RESTORE, time.time(), {"state": found.body,
                                                       "index": found.index})
        if ahead:
            m.preparer.wait(found.body, 120)
        t = time.perf_counter()
        r = m.apply(cmd.encode(), m.index + 1)
        times.append(time.perf_counter() - t)
        assert r["ok"], r
    return times[0], times[1]


class Writer:
    """Puts one small job at a time through the first replica and reads a namespace at a
    time through the second (linearizable reads); keeps each wait."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.waits: list[float] = []
        self.read_waits: list[float] = []
        self.failed = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True),
                        threading.Thread(target=self.read, daemon=True)]

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            t = time.perf_counter()
            try:
                resp = self.c.write("PUT", f"/v1/jobs/default/probe{i}",
                                    {"command": ["true"], "count": 0}, timeout=30)
                if resp.status != 200:
                    self.failed += 1
                    log(f"write failed: {resp.status} {resp.body}")
            except AssertionError:
                self.failed += 1
            self.waits.append(time.perf_counter() - t)

    def read(self) -> None:
        replica = self.c.replicas[1]
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                resp = self.c.api("GET", "/v1/namespaces/default", replica=replica,
                                  timeout=30)
                if resp.status != 200:
                    self.failed += 1
                    log(f"read failed: {resp.status} {resp.body}")
            except OSError:
                self.failed += 1
            self.read_waits.append(time.perf_counter() - t)

    def __enter__(self) -> Writer:
        for thread in self.threads:
            thread.start()
        time.sleep(0.5)  # a baseline of waits before the restore
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def applied_everywhere(c: Cluster, index: int) -> bool:
    sts = [c.status(r) for r in c.replicas]
    return all(st is not None and st["applied_index"] >= index for st in sts)


def restore(c: Cluster, data: bytes, token: str) -> dict[str, Any]:
    term = c.status(c.leader())["term"]  # type: ignore[index]
    with Writer(c) as writer:
        t = time.perf_counter()
        retries = polls = 0
        while True:  # as the CLI does: a 503 is retried with the same key
            resp = http("PUT", f"{c.replicas[0].api}/v1/operator/snapshot", data,
                        token=token, headers={"Content-Type": "application/octet-stream",
                                              "Idempotency-Key": "bench-restore"},
                        timeout=120)
            first = time.perf_counter() - t
            # ... and a 202 is waited on through its receipt, on the same replica.
            while resp.status == 202 and time.perf_counter() - t < 180:
                polls += 1
                resp = http("GET", c.replicas[0].api + resp.body["poll"], timeout=30)
            if resp.status != 503 or time.perf_counter() - t > 60:
                break
            retries += 1
            time.sleep(0.25)
        answered = time.perf_counter() - t
        assert resp.status == 200, resp
        wait_for(lambda: applied_everywhere(c, resp.body["index"]), 120,
                 what="the restore applied on every replica")
        everywhere = time.perf_counter() - t
    return {"answered_s": answered, "first_answer_s": first, "polls": polls,
            "retries": retries, "applied_everywhere_s": everywhere,
            "longest_write_pause_s": max(writer.waits),
            "longest_read_pause_s": max(writer.read_waits),
            "median_write_s": statistics.median(writer.waits),
            "failed_writes": writer.failed,
            "term_changes": c.status(c.leader())["term"] - term}  # type: ignore[index]


def settled(c: Cluster) -> bool:
    """The same leader and term over one second."""
    before = c.status(c.leader())
    time.sleep(1.0)
    after = c.status(c.leader())
    return before is not None and after is not None and before["term"] == after["term"]


def save(c: Cluster, token: str) -> tuple[bytes, float, int]:
    """The file, the time to get it, and how many elections happened meanwhile."""
    lead = c.leader()
    term = c.status(lead)["term"]  # type: ignore[index]
    t = time.perf_counter()
    resp = http_raw(f"{lead.api}/v1/operator/snapshot", token)
    took = time.perf_counter() - t
    return resp, took, c.status(c.leader())["term"] - term  # type: ignore[index]


def http_raw(url: str, token: str) -> bytes:
    import urllib.request
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        data: bytes = resp.read()
    return data


def one_run(jobs: int, root: Path) -> dict[str, Any]:
    token = "bench-" + "0" * 26
    t = time.perf_counter()
    m = build_state(jobs, token)
    log(f"built a state of {jobs} jobs, {len(m.allocs)} allocations in "
        f"{time.perf_counter() - t:.1f} s")
    data, pack_s, state_bytes = pack(m)
    out: dict[str, Any] = {"jobs": jobs, "allocations": len(m.allocs),
                           "state_bytes": state_bytes, "file_bytes": len(data),
                           "pack_s": pack_s}
    out["prepared_apply_s"], out["apply_s"] = apply_time(m, data)
    args = ["--heartbeat-grace", "3600", "--max-jobs", str(2 * jobs + 1000)]
    first = ready_cluster(root / "a", extra_server_args=args, token=token)
    try:
        out["restore"] = restore(first, data, token)
        log(f"restore: {out['restore']}")
        wait_for(lambda: settled(first), 60, what="one leader for a second after the restore")
        saved, out["save_s"], out["save_elections"] = save(first, token)
        out["saved_file_bytes"] = len(saved)
        assert backup.unpack(saved).counts["jobs"] >= jobs  # and the writer's probes
        log(f"save: {out['save_s']:.2f} s, {len(saved)} bytes")
    finally:
        first.stop()
    second = ready_cluster(root / "b", extra_server_args=args, id_prefix="r", token=token)
    try:
        out["restore_saved"] = restore(second, saved, token)
        log(f"restore of the saved file: {out['restore_saved']}")
    finally:
        second.stop()
    return out


# What the A/B comparison turns off: the heartbeat before a large entry and the grace
# after a long apply (raft/long_apply.py).
WITHOUT_LONG_APPLY = ["--raft-heartbeat-before-bytes", "0", "--raft-long-apply-grace", "0"]
COMPARED = ("elections", "answered_s", "applied_everywhere_s", "longest_write_pause_s",
            "longest_read_pause_s")


def started_in(tree: Path | None, root: Path, extra: list[str], token: str) -> Cluster:
    """A ready cluster whose replicas run the code in `tree` (None: this tree): they are
    started with `python -m hacontrol` from there, which puts it first on their path."""
    if tree is None:
        return ready_cluster(root, extra_server_args=extra, token=token)
    here = os.getcwd()
    os.chdir(tree)
    try:
        return ready_cluster(root, extra_server_args=extra, token=token)
    finally:
        os.chdir(here)


def compare(jobs: int, rounds: int, root: Path, against: Path | None = None
            ) -> dict[str, Any]:
    """Restores of one file onto fresh clusters, before and after, alternating which goes
    first in each round (the machine's load drifts). Before: this code without the
    long-apply handling, or (`against`) the code in another tree, e.g. an older commit's
    `git archive`."""
    token = "bench-" + "0" * 26
    m = build_state(jobs, token)
    data, _, _ = pack(m)
    args = ["--heartbeat-grace", "3600", "--max-jobs", str(2 * jobs + 1000)]
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for r in range(rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for name in order:
            before = name == "before"
            extra = args + (WITHOUT_LONG_APPLY if before and against is None else [])
            c = started_in(against if before else None, root / f"{name}{r}", extra, token)
            try:
                x = restore(c, data, token)
            finally:
                c.stop()
            x["elections"] = x["term_changes"]
            log(f"round {r} {name}: {x}")
            runs[name].append(x)
    med = {name: {k: statistics.median(x[k] for x in xs) for k in COMPARED}
           for name, xs in runs.items()}
    return {"jobs": jobs, "rounds": rounds, "runs": runs, "median": med,
            "before": str(against) if against is not None else "without long-apply"}


def print_compare(out: dict[str, Any]) -> None:
    print(f"restore of {out['jobs']} jobs, {out['rounds']} rounds, medians "
          f"(before: {out['before']}):")
    med = out["median"]
    for k in COMPARED:
        b, a = med["before"][k], med["after"][k]
        ratio = f"{a / b:.2f}" if b else "-"
        print(f"  {k:22} before {b:8.2f}  after {a:8.2f}  after/before {ratio}")
    for name in ("before", "after"):
        print(f"  {name} elections per run: {[x['elections'] for x in out['runs'][name]]}")
        for k in ("longest_write_pause_s", "longest_read_pause_s"):
            print(f"  {name} {k} per run: {[round(x[k], 2) for x in out['runs'][name]]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--compare", type=int, default=0, metavar="ROUNDS",
                   help="only restores, with and without the long-apply handling, "
                        "ROUNDS times each")
    p.add_argument("--against", type=Path, default=None, metavar="DIR",
                   help="with --compare: before is the code in DIR (e.g. an older commit "
                        "unpacked by git archive) instead of this code without long-apply")
    a = p.parse_args()
    if a.compare:
        root = Path(tempfile.mkdtemp(prefix="hacontrol-bench-snapshot-"))
        try:
            out = compare(a.jobs, a.compare, root, a.against)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if a.json:
            print(json.dumps(out, indent=2))
        else:
            print_compare(out)
        return
    results = []
    for run in range(a.runs):
        root = Path(tempfile.mkdtemp(prefix="hacontrol-bench-snapshot-"))
        try:
            results.append(one_run(a.jobs, root / str(run)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    if a.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['jobs']} jobs, {r['allocations']} allocations: state "
              f"{r['state_bytes'] / 1e6:.1f} MB, file {r['file_bytes'] / 1e6:.2f} MB "
              f"(packed in {r['pack_s']:.2f} s); one replica applies the restore entry in "
              f"{r['prepared_apply_s'] * 1000:.0f} ms once its state is decoded ahead, "
              f"{r['apply_s']:.2f} s decoding it inline")
        for name in ("restore", "restore_saved"):
            x = r[name]
            print(f"  {name:14} answered {x['answered_s']:.2f} s, applied everywhere "
                  f"{x['applied_everywhere_s']:.2f} s, longest write pause "
                  f"{x['longest_write_pause_s']:.2f} s, longest read pause "
                  f"{x['longest_read_pause_s']:.2f} s (median write "
                  f"{x['median_write_s'] * 1000:.0f} ms), failed writes "
                  f"{x['failed_writes']}, elections {x['term_changes']}, 503s {x['retries']}, "
                  f"first answer {x['first_answer_s']:.2f} s ({x['polls']} polls)")
        print(f"  save           {r['save_s']:.2f} s, {r['saved_file_bytes'] / 1e6:.2f} MB, "
              f"elections {r['save_elections']}")


if __name__ == "__main__":
    main()
