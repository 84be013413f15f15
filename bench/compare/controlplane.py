"""Control plane rows: hacontrol's API against etcd, same client, same workload.

Per system: one fresh 3-replica cluster for latency and throughput, then fresh ones for
failover. Writes: hacontrol `PUT /v1/jobs/default/kv-<client>` (a job of `count: 0`, a new
command each time) and `POST .../scale` (`count: 0`: a replicated, fsynced log entry that
applies as "unchanged"); etcd `/v3/kv/put` of the same key with the same bytes as value.
Reads: hacontrol `GET /v1/jobs/default/kv-<client>` (linearizable by default); etcd
`/v3/kv/range` with `serializable: false`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import http_load
from bench.measure.clusters import ready_cluster
from bench.measure.http_load import Request
from bench.measure.procs import Reaper, cpu_meter, log
from bench.measure.table import HACONTROL, Row, RowSpec, median
from bench.peers import etcd
from bench.peers.base import PeerStatus
from tests.integration.harness import Cluster, wait_for

NS = "default"
ETCD_DEFAULT = "etcd"
ETCD_TUNED = (50, 250)  # heartbeat, election timeout (ms)

SPECS = [
    RowSpec("writes_put", "writes/s, {c} clients", "ops/s", "higher", ".0f",
            "hacontrol: job PUT"),
    RowSpec("writes_scale", "writes/s, {c} clients", "ops/s", "higher", ".0f",
            "hacontrol: scale"),
    RowSpec("write_p50_put", "write p50, 1 client", "ms", "lower", ".2f",
            "hacontrol: job PUT"),
    RowSpec("write_p50_scale", "write p50, 1 client", "ms", "lower", ".2f",
            "hacontrol: scale"),
    RowSpec("reads", "linearizable reads/s, {c} clients", "ops/s", "higher", ".0f"),
    RowSpec("read_p50", "linearizable read p50, 1 client", "ms", "lower", ".2f"),
    # The machine's two cores are shared by the three servers and the load generator, so
    # throughput is a matter of CPU per operation: these rows show it without the noise
    # of what else the machine runs (the servers' processes, all three, per success).
    RowSpec("cpu_put", "server CPU per write, {c} clients", "ms", "lower", ".2f",
            "hacontrol: job PUT"),
    RowSpec("cpu_scale", "server CPU per write, {c} clients", "ms", "lower", ".2f",
            "hacontrol: scale"),
    RowSpec("cpu_read", "server CPU per linearizable read, {c} clients", "ms", "lower",
            ".2f"),
    RowSpec("failover_default", "kill -9 leader -> next write, etcd default 100/1000 ms",
            "ms", "lower", ".0f"),
    RowSpec("failover_tuned", "kill -9 leader -> next write, etcd tuned 50/250 ms", "ms",
            "lower", ".0f"),
]


@dataclass
class CpSettings:
    clients: int
    seconds: float
    warmup: float
    latency_ops: int
    failover_trials: int


def job_body(n: int) -> bytes:
    return json.dumps({"command": ["sleep", str(n)], "count": 0}).encode()


def make_rows(clients: int) -> dict[str, Row]:
    rows = {}
    for s in SPECS:
        rows[s.key] = Row(RowSpec(s.key, s.label.format(c=clients), s.unit, s.better, s.spec,
                                  s.note))
    return rows


# ------------------------------------------------------------------ hacontrol


class HacKv:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.auth = {"Authorization": f"Bearer {cluster.token}"}
        self.json = {**self.auth, "Content-Type": "application/json"}
        self.trial = 0

    def put(self, w: int, n: int) -> Request:
        return Request("PUT", f"/v1/jobs/{NS}/kv-{w}", job_body(n), self.json)

    def scale(self, w: int, n: int) -> Request:
        return Request("POST", f"/v1/jobs/{NS}/kv-{w}/scale", b'{"count": 0}', self.json)

    def get(self, w: int, n: int) -> Request:
        return Request("GET", f"/v1/jobs/{NS}/kv-{w}", None, self.auth)

    def failover_put(self, w: int, n: int) -> Request:
        return Request("PUT", f"/v1/jobs/{NS}/fo-{n % 8}", job_body(n),
                       {**self.json, "Idempotency-Key": f"fo-{self.trial}-{w}-{n}"})

    def prepare(self, clients: int) -> None:
        for w in range(clients):
            assert self.cluster.write("PUT", f"/v1/jobs/{NS}/kv-{w}",
                                      json.loads(job_body(0))).status == 200


def hac_failover(root: Path, trials: int, out: list[float | None]) -> None:
    cluster = ready_cluster(root / "fo0")
    rebuilt = 0
    try:
        kv = HacKv(cluster)
        for t in range(trials):
            kv.trial = t
            lead = cluster.leader()
            bases = [lead.api] + [r.api for r in cluster.replicas if r is not lead]
            assert lead.proc.popen is not None
            dt = asyncio.run(http_load.failover(bases, kv.failover_put, lead.proc.popen.kill))
            lead.proc.popen.wait(10)
            out.append(None if dt is None else dt * 1000)
            log(f"  hacontrol failover {t + 1}: "
                f"{'no ack' if dt is None else f'{dt * 1000:.0f} ms'} (killed {lead.id})")
            lead.proc.start()
            try:
                cluster.wait_ready(timeout=60)
                cluster.leader(timeout=30)
            except AssertionError as exc:  # e.g. a replica marked itself unhealthy
                log(f"  hacontrol not ready after trial {t + 1} ({exc}); fresh cluster")
                cluster.stop()
                rebuilt += 1
                cluster = ready_cluster(root / f"fo{rebuilt}")
                kv = HacKv(cluster)
            time.sleep(0.5)  # let the restarted replica catch up and the links settle
    finally:
        cluster.stop()


@contextmanager
def profiling(profiler: Callable[[int, str], Callable[[], None]] | None, pid: int,
              name: str) -> Iterator[None]:
    stop = profiler(pid, name) if profiler else None
    try:
        yield
    finally:
        if stop:
            stop()


def cpu_per_op(tp: dict[str, Any], which: int) -> float | None:
    """ms of CPU per successful operation: `which` 0 the servers, 1 the load generator."""
    if not tp.get("meter") or not tp.get("ok"):
        return None
    return float(tp["meter"][which]) / tp["ok"] * 1000


def summary(tp: dict[str, dict[str, Any]], lat: dict[str, dict[str, Any]]) -> str:
    def one(k: str) -> str:
        server, client = cpu_per_op(tp[k], 0), cpu_per_op(tp[k], 1)
        cpu = (f", CPU/op servers {server:.2f} ms, load generator {client:.2f} ms"
               if server is not None and client is not None else "")
        errors = f" errors {tp[k]['errors']}" if tp[k]["errors"] else ""
        return f"{k} {tp[k]['ops_per_s']:.0f}/s p50 {lat[k]['p50_ms']:.2f} ms{cpu}{errors}"
    return "; ".join(one(k) for k in tp)


def run_hacontrol(root: Path, s: CpSettings, rows: dict[str, Row],
                  profiler: Callable[[int, str], Callable[[], None]] | None) -> None:
    log("control plane: hacontrol (3 replicas)")
    cluster = ready_cluster(root / "load")
    try:
        kv = HacKv(cluster)
        kv.prepare(s.clients)
        lead = cluster.leader().api
        lat = {k: asyncio.run(http_load.latency(lead, m, s.latency_ops))
               for k, m in (("put", kv.put), ("scale", kv.scale), ("get", kv.get))}
        meter = cpu_meter([r.proc.pid for r in cluster.replicas])
        with profiling(profiler, cluster.leader().proc.pid, "leader-load"):
            tp = {k: asyncio.run(http_load.throughput(lead, m, s.clients, s.seconds, s.warmup,
                                                      meter=meter))
                  for k, m in (("put", kv.put), ("scale", kv.scale), ("get", kv.get))}
        log("  hacontrol: " + summary(tp, lat))
    finally:
        cluster.stop()
    rows["cpu_put"].add(HACONTROL, cpu_per_op(tp["put"], 0))
    rows["cpu_scale"].add(HACONTROL, cpu_per_op(tp["scale"], 0))
    rows["cpu_read"].add(HACONTROL, cpu_per_op(tp["get"], 0))
    rows["writes_put"].add(HACONTROL, tp["put"]["ops_per_s"])
    rows["writes_scale"].add(HACONTROL, tp["scale"]["ops_per_s"])
    rows["reads"].add(HACONTROL, tp["get"]["ops_per_s"])
    rows["write_p50_put"].add(HACONTROL, lat["put"]["p50_ms"])
    rows["write_p50_scale"].add(HACONTROL, lat["scale"]["p50_ms"])
    rows["read_p50"].add(HACONTROL, lat["get"]["p50_ms"])
    fo: list[float | None] = []
    hac_failover(root, s.failover_trials, fo)
    m = median(fo)
    rows["failover_default"].add(HACONTROL, m)
    rows["failover_tuned"].add(HACONTROL, m)


# ----------------------------------------------------------------------- etcd


def etcd_kv(w: int, n: int) -> Request:
    return etcd.put_request(f"kv-{w}", job_body(n))


def etcd_get(w: int, n: int) -> Request:
    return etcd.range_request(f"kv-{w}")


def etcd_failover(cl: etcd.EtcdCluster, trials: int, tag: str) -> list[float | None]:
    out: list[float | None] = []
    for t in range(trials):
        lead = cl.leader()
        bases = cl.urls_leader_first()

        def fo_put(w: int, n: int, t: int = t) -> Request:
            return etcd.put_request(f"fo-{n % 8}", job_body(n * 1000 + t))
        dt = asyncio.run(http_load.failover(bases, fo_put, functools.partial(cl.kill9, lead)))
        out.append(None if dt is None else dt * 1000)
        log(f"  etcd {tag} failover {t + 1}: "
            f"{'no ack' if dt is None else f'{dt * 1000:.0f} ms'} (killed {lead})")
        cl.restart(lead)
        time.sleep(0.5)
    return out


def run_etcd(peer: PeerStatus, root: Path, s: CpSettings, rows: dict[str, Row],
             reaper: Reaper) -> None:
    assert peer.exe is not None
    log("control plane: etcd (3 members, default timeouts, fsync on)")
    cl = etcd.EtcdCluster(peer.exe, root / "load", reaper)
    try:
        cl.start()
        lead = cl.urls_leader_first()[0]
        # every key the readers read exists
        asyncio.run(http_load.send_all(lead, [etcd_kv(w, 0) for w in range(s.clients)]))
        lat = {k: asyncio.run(http_load.latency(lead, m, s.latency_ops))
               for k, m in (("put", etcd_kv), ("get", etcd_get))}
        meter = cpu_meter(list(cl.pids.values()))
        tp = {k: asyncio.run(http_load.throughput(lead, m, s.clients, s.seconds, s.warmup,
                                                  meter=meter))
              for k, m in (("put", etcd_kv), ("get", etcd_get))}
        log("  etcd: " + summary(tp, lat))
    finally:
        cl.stop()
    for key in ("cpu_put", "cpu_scale"):
        rows[key].add(ETCD_DEFAULT, cpu_per_op(tp["put"], 0))
    rows["cpu_read"].add(ETCD_DEFAULT, cpu_per_op(tp["get"], 0))
    for key in ("writes_put", "writes_scale"):
        rows[key].add(ETCD_DEFAULT, tp["put"]["ops_per_s"])
    for key in ("write_p50_put", "write_p50_scale"):
        rows[key].add(ETCD_DEFAULT, lat["put"]["p50_ms"])
    rows["reads"].add(ETCD_DEFAULT, tp["get"]["ops_per_s"])
    rows["read_p50"].add(ETCD_DEFAULT, lat["get"]["p50_ms"])
    for key, tuning in (("failover_default", None), ("failover_tuned", ETCD_TUNED)):
        cl = etcd.EtcdCluster(peer.exe, root / key, reaper,
                              *(tuning if tuning else (None, None)))
        try:
            cl.start()
            wait_for(cl.all_healthy, 30, what="etcd healthy")
            fo = etcd_failover(cl, s.failover_trials, "tuned" if tuning else "default")
        finally:
            cl.stop()
        rows[key].add(ETCD_DEFAULT, median(fo))
