#!/usr/bin/env python3
"""Controller benchmarks: failover time, API write latency, API write throughput.

    python bench/controllers.py [--runs N] [--quick] [--json] [--tls]

Each run starts a fresh 3-replica cluster (separate processes on 127.0.0.1, data in a
temporary directory) and measures, in this order:

1. latency     one client, sequential PUT /v1/jobs over one keep-alive connection, to the
               leader and then via a follower: p50/p99 in ms.
2. throughput  64 concurrent keep-alive clients writing to the leader for ~10 s: writes/s,
               plus the CPU each process used meanwhile.
3. failover    kill -9 of the leader while clients hammer writes (retrying across replicas);
               time from the kill to the first 200 for a request sent after the kill.
               The killed replica is restarted and the cluster waits until ready between
               trials.
4. raw raft    bench/raft_raw.py after the cluster is stopped: commits/s of the replica with
               the same pysyncobj tuning and a trivial counter, ~1000 commands in flight.

Durability: every figure above runs with fsync on (the default). Each run also measures
1 (leader) and 2 on a cluster of the same build started with the test-only
--unsafe-no-fsync, and the disk's own floor: p50/p99 of a 4 KiB write plus fdatasync in
the same directory. Group commit should keep fsync-on throughput at >= 80 % of fsync-off.

With --tls every cluster runs with mutual TLS (the API over HTTPS, clients trusting the
cluster's CA and showing a cli certificate); connections are kept alive as without it, so
the figures show TLS's steady-state cost, plus the handshakes of reconnecting in failover.

Medians over the runs are printed at the end (the machine is shared and noisy). Every
process started here is stopped by pid (or by the process group created for it), also on
Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from bench.durability import (  # noqa: E402
    durability_rows,
    measure_fsync_floor,
    summarize_durability,
)
from bench.measure.clusters import ready_cluster  # noqa: E402
from bench.measure.http_load import Request, throughput  # noqa: E402
from bench.measure.table import pct  # noqa: E402
from tests.integration.harness import Cluster, Replica, wait_for  # noqa: E402
from tests.integration.harness import http as harness_http  # noqa: E402

RAFT_RAW = Path(__file__).resolve().parent / "raft_raw.py"
NS = "default"
TARGET_FAILOVER_MS = 500.0
TARGET_P50_MS = 5.0
TARGET_RAW_RATIO = 0.5
ALLOW_ENV = "HACONTROL_ALLOW_PLANTED_FAULTS"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def job_body(n: int) -> bytes:
    # count 0: nothing to place, so this is a pure replicated write; the command changes
    # every time so that each write really changes the job.
    return json.dumps({"command": ["sleep", str(n)], "count": 0}).encode()


@dataclass
class Settings:
    runs: int
    latency_writes: int
    tp_clients: int
    tp_seconds: float
    failover_trials: int
    raw_count: int
    raw_timeout: float
    tls: bool = False


@dataclass
class RunResult:
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    failover_ms: list[float] = field(default_factory=list)
    failover_misses: int = 0
    unhealthy: list[str] = field(default_factory=list)
    raw: dict[str, float] = field(default_factory=dict)
    # The same build with --unsafe-no-fsync, and the disk's fdatasync floor.
    latency_nofsync: dict[str, float] = field(default_factory=dict)
    throughput_nofsync: dict[str, Any] = field(default_factory=dict)
    fsync_floor: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------ latency


def measure_latency(cluster: Cluster, target: Replica, n: int, tag: str,
                    token: str | None = None) -> dict[str, float]:
    """Sequential writes over one persistent HTTP/1.1 connection, with `token` (default:
    the cluster's management token)."""
    conn: http.client.HTTPConnection
    if cluster.client_tls is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", target.api_port, timeout=10,
                                           context=cluster.client_tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", target.api_port, timeout=10)
    headers = {"Authorization": f"Bearer {token or cluster.token}",
               "Content-Type": "application/json", "Connection": "keep-alive"}
    lat: list[float] = []
    errors = 0
    try:
        for i in range(n + 20):  # the first 20 warm up the connection and the code paths
            body = job_body(i)
            t0 = time.perf_counter()
            conn.request("PUT", f"/v1/jobs/{NS}/lat-{tag}", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 200:
                errors += 1
                continue
            if i >= 20:
                lat.append(dt * 1000)
    finally:
        conn.close()
    if not lat:
        raise RuntimeError(f"latency via {tag}: no write succeeded")
    return {"p50_ms": pct(lat, 0.50), "p90_ms": pct(lat, 0.90), "p99_ms": pct(lat, 0.99),
            "max_ms": max(lat), "n": len(lat), "errors": errors}


# --------------------------------------------------------------- throughput


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def measure_throughput(cluster: Cluster, target: Replica, clients: int,
                             seconds: float, warmup: float = 1.0,
                             token: str | None = None) -> dict[str, Any]:
    """Job PUTs by `clients` keep-alive clients (`http_load.throughput`), with the CPU use
    of every replica and of this client over the measured window; `token` as for
    `measure_latency`."""
    headers = {"Authorization": f"Bearer {token or cluster.token}",
               "Content-Type": "application/json"}

    def make(w: int, n: int) -> Request:
        return Request("PUT", f"/v1/jobs/{NS}/tp-{w}", job_body(n), headers)

    pids = {r.id: r.proc.pid for r in cluster.live()}

    def cpu_meter() -> Callable[[float], dict[str, float]]:
        cpu0 = {rid: cpu_seconds(pid) for rid, pid in pids.items()}
        me0 = time.process_time()

        def close(elapsed: float) -> dict[str, float]:
            cpu = {(f"{rid} (leader)" if rid == target.id else rid):
                   round(100 * (cpu_seconds(pid) - cpu0[rid]) / elapsed, 1)
                   for rid, pid in pids.items()}
            cpu["bench client"] = round(100 * (time.process_time() - me0) / elapsed, 1)
            return cpu
        return close

    out = await throughput(target.api, make, clients, seconds, warmup,
                           ssl=cluster.client_tls, meter=cpu_meter)
    return {"writes_per_s": out["ops_per_s"], "ok": out["ok"], "errors": out["errors"],
            "p50_ms": out["p50_ms"], "p99_ms": out["p99_ms"], "cpu_percent": out["meter"],
            "clients": out["clients"], "seconds": out["seconds"]}


# ----------------------------------------------------------------- failover


async def failover_trial(cluster: Cluster, trial: int, hammer: int = 3,
                         warmup: float = 0.3, limit: float = 20.0) -> float | None:
    """Kill -9 the leader under write load; seconds to the first 200 sent after the kill."""
    lead = await asyncio.to_thread(cluster.leader)
    reps = [lead] + [r for r in cluster.replicas if r is not lead]
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    kill_at: float | None = None
    first_ack: float | None = None
    acked_before_kill = 0
    done = asyncio.Event()

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal first_ack, acked_before_kill
        i = w  # worker w starts on replica w: one of them on the leader
        n = 0
        key: str | None = None
        while not done.is_set():
            r = reps[i % len(reps)]
            if key is None:
                key, n = uuid.uuid4().hex, n + 1
            sent = time.perf_counter()
            try:
                async with session.put(f"{r.api}/v1/jobs/{NS}/fo-{trial}-{w}", data=job_body(n),
                                       headers={**headers, "Idempotency-Key": key},
                                       timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                i += 1  # that replica is gone or unreachable: try the next one
                await asyncio.sleep(0.001)
                continue
            now = time.perf_counter()
            if status == 200:
                key = None
                if kill_at is None:
                    acked_before_kill += 1
                elif sent >= kill_at and first_ack is None:
                    first_ack = now
                    done.set()
            elif status == 503:
                i += 1  # not applied or outcome unknown: same key, next replica
            else:
                raise RuntimeError(f"failover write got HTTP {status}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=0, ssl=cluster.client_tls or True)) as session:
        tasks = [asyncio.create_task(worker(w, session)) for w in range(hammer)]
        try:
            await asyncio.sleep(warmup)
            # On a busy machine (or with TLS handshakes to make) the first write may take
            # longer than the warm-up: wait for one, within reason, before killing.
            settle = time.perf_counter() + 10.0
            while acked_before_kill == 0 and time.perf_counter() < settle:
                await asyncio.sleep(0.01)
            if acked_before_kill == 0:
                raise RuntimeError("no write acknowledged before the kill")
            assert lead.proc.popen is not None
            kill_at = time.perf_counter()
            lead.proc.popen.kill()
            await asyncio.to_thread(lead.proc.popen.wait, 10)
            try:
                await asyncio.wait_for(done.wait(), limit)
            except TimeoutError:
                pass
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            done.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return None if first_ack is None else first_ack - kill_at


def http_get_status(url: str, cluster: Cluster) -> int:
    try:
        return harness_http("GET", url, timeout=2, context=cluster.client_tls).status
    except OSError:
        return 0


def unhealthy(cluster: Cluster) -> list[str]:
    """Replicas that report themselves unhealthy, with the reason from their log."""
    out = []
    for r in cluster.live():
        st = cluster.status(r)
        if st is not None and not st.get("healthy", True):
            lines = [ln for ln in r.proc.log.read_text(errors="replace").splitlines()
                     if "CRITICAL" in ln or "ERROR" in ln]
            out.append(f"{r.id}: {lines[-1] if lines else 'unhealthy'}")
    return out


def run_failover(new_cluster: Callable[[], Cluster], trials: int,
                 res: RunResult) -> None:
    """Trials on one cluster; a fresh one when a replica turns unhealthy (never ready)."""
    cluster = new_cluster()
    try:
        for t in range(trials):
            lead = cluster.leader()
            dt = asyncio.run(failover_trial(cluster, t))
            if dt is None:
                res.failover_misses += 1
                log(f"  failover trial {t + 1}: no acknowledged write within the limit")
            else:
                res.failover_ms.append(dt * 1000)
                log(f"  failover trial {t + 1}: {dt * 1000:.0f} ms (killed {lead.id})")
            lead.proc.start()
            bad: list[str] = []

            def settled(c: Cluster = cluster) -> bool:
                # Ready everywhere, or some replica says it is unhealthy (which is sticky).
                nonlocal bad
                bad = unhealthy(c)
                return bool(bad) or all(
                    http_get_status(f"{r.api}/v1/health/ready", c) == 200 for r in c.live())

            try:
                wait_for(settled, 60, what="all replicas ready")
                if not bad:
                    cluster.leader(timeout=30)
            except AssertionError:
                bad = unhealthy(cluster)
            if bad or not all(http_get_status(f"{r.api}/v1/health/ready", cluster) == 200
                              for r in cluster.live()):
                if not bad:
                    log(f"  {lead.id} did not come back after the restart; last log lines:\n"
                        + lead.proc.log.read_text(errors="replace")[-3000:])
                    raise RuntimeError(f"{lead.id} not ready after its restart")
                log(f"  unhealthy after trial {t + 1}: {bad}; continuing on a fresh cluster")
                res.unhealthy.append(f"failover trial {t + 1}: " + "; ".join(bad))
                cluster.stop()
                cluster = new_cluster()
            time.sleep(0.5)  # let the restarted replica catch up and the links settle
    finally:
        cluster.stop()


# ----------------------------------------------------------------- raw raft


def run_raw(count: int, tmp: Path, timeout: float) -> dict[str, float]:
    """bench/raft_raw.py in its own process group (its nodes are stopped with it)."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    cmd = [sys.executable, str(RAFT_RAW), "--count", str(count)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=REPO, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _stop_group(proc)
    text = out.decode(errors="replace")
    start = text.find("{")
    if proc.returncode != 0 or start < 0:
        raise RuntimeError(f"raft_raw.py failed (rc {proc.returncode}): "
                           f"{err.decode(errors='replace')[-2000:]}")
    return json.loads(text[start:])


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    pgid = proc.pid  # start_new_session: the group id is the child's pid
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # its own cleanup stops its three nodes
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(pgid, signal.SIGKILL)  # whatever of that group is left
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(10)


# --------------------------------------------------------------------- runs


@contextmanager
def cluster_in(tmp: Path, tls: bool = False, unsafe_no_fsync: bool = False
               ) -> Iterator[Cluster]:
    cluster = Cluster(tmp, tls=tls,
                      extra_server_args=["--unsafe-no-fsync"] * unsafe_no_fsync)
    before = os.environ.get(ALLOW_ENV)
    if unsafe_no_fsync:
        os.environ[ALLOW_ENV] = "1"  # the switch is test-only; the replicas inherit this
    try:
        cluster.start(wait=False)
        cluster.wait_ready(timeout=60)
        cluster.leader(timeout=30)
        yield cluster
    finally:
        cluster.stop()
        if before is None:
            os.environ.pop(ALLOW_ENV, None)
        else:
            os.environ[ALLOW_ENV] = before


def one_run(s: Settings, run: int, root: Path) -> RunResult:
    res = RunResult()
    tmp = root / f"run{run}"
    res.fsync_floor = measure_fsync_floor(tmp / "floor")
    log(f"  disk: 4 KiB write + fdatasync p50/p99 {res.fsync_floor['p50_ms']:.2f}/"
        f"{res.fsync_floor['p99_ms']:.2f} ms")
    with cluster_in(tmp / "load", s.tls) as cluster:
        lead = cluster.leader()
        res.latency["leader"] = measure_latency(cluster, lead, s.latency_writes, "leader")
        follower = cluster.followers()[0]
        res.latency["follower"] = measure_latency(cluster, follower, s.latency_writes,
                                                  "follower")
        log(f"  latency p50/p99 ms: leader {res.latency['leader']['p50_ms']:.2f}/"
            f"{res.latency['leader']['p99_ms']:.2f}, via follower "
            f"{res.latency['follower']['p50_ms']:.2f}/{res.latency['follower']['p99_ms']:.2f}")
        lead = cluster.leader()
        res.throughput = asyncio.run(measure_throughput(cluster, lead, s.tp_clients,
                                                        s.tp_seconds))
        log(f"  throughput: {res.throughput['writes_per_s']:.0f} writes/s, "
            f"errors {res.throughput['errors']}, cpu% {res.throughput['cpu_percent']}")
        bad = unhealthy(cluster)
        if bad:
            log(f"  unhealthy after the throughput load: {bad}")
            res.unhealthy.append("after throughput: " + "; ".join(bad))
    with cluster_in(tmp / "nofsync", s.tls, unsafe_no_fsync=True) as cluster:
        lead = cluster.leader()
        res.latency_nofsync = measure_latency(cluster, lead, s.latency_writes, "nofsync")
        lead = cluster.leader()
        res.throughput_nofsync = asyncio.run(measure_throughput(cluster, lead, s.tp_clients,
                                                                s.tp_seconds))
        log(f"  --unsafe-no-fsync: leader p50/p99 {res.latency_nofsync['p50_ms']:.2f}/"
            f"{res.latency_nofsync['p99_ms']:.2f} ms, "
            f"{res.throughput_nofsync['writes_per_s']:.0f} writes/s")
    # Failover on a fresh cluster: one that the load left unhealthy would never be ready.
    n = iter(range(1000))

    def new_cluster() -> Cluster:
        return ready_cluster(tmp / f"failover{next(n)}", tls=s.tls)

    run_failover(new_cluster, s.failover_trials, res)
    raw_tmp = tmp / "raw"
    raw_tmp.mkdir(parents=True, exist_ok=True)
    res.raw = run_raw(s.raw_count, raw_tmp, s.raw_timeout)
    log(f"  raw raft: {res.raw.get('raw_commits_per_s', 0):.0f} commits/s "
        f"(through LogBridge {res.raw.get('bridge_commits_per_s', 0):.0f}/s)")
    return res


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(results: list[RunResult], s: Settings) -> dict[str, Any]:
    fo_all = [x for r in results for x in r.failover_ms]
    fo_meds = [statistics.median(r.failover_ms) for r in results if r.failover_ms]
    api = [r.throughput["writes_per_s"] for r in results]
    raw = [r.raw["raw_commits_per_s"] for r in results if "raw_commits_per_s" in r.raw]
    bridge = [r.raw["bridge_commits_per_s"] for r in results if "bridge_commits_per_s" in r.raw]
    ratios = [r.throughput["writes_per_s"] / r.raw["raw_commits_per_s"] for r in results
              if r.raw.get("raw_commits_per_s")]
    summary: dict[str, Any] = {
        "settings": s.__dict__,
        "failover_ms": {"median_of_run_medians": med(fo_meds),
                        "median_all_trials": med(fo_all),
                        "min": min(fo_all) if fo_all else None,
                        "max": max(fo_all) if fo_all else None,
                        "trials": len(fo_all),
                        "misses": sum(r.failover_misses for r in results),
                        "target_ms": TARGET_FAILOVER_MS},
        "latency_ms": {
            via: {k: med([r.latency[via][k] for r in results]) for k in ("p50_ms", "p99_ms")}
            for via in ("leader", "follower")},
        "throughput": {"api_writes_per_s": med(api), "raw_commits_per_s": med(raw),
                       "bridge_commits_per_s": med(bridge),
                       "api_over_raw": med(ratios), "target_ratio": TARGET_RAW_RATIO},
        "runs": [r.__dict__ for r in results],
    }
    summary["latency_ms"]["target_p50_ms"] = TARGET_P50_MS
    summary["durability"] = summarize_durability(results)
    return summary


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(sm: dict[str, Any]) -> None:
    fo, lat, tp = sm["failover_ms"], sm["latency_ms"], sm["throughput"]
    runs = sm["runs"]
    per_run = {
        "fo": " ".join(fmt(med(r["failover_ms"]), ".0f") for r in runs),
        "l50": " ".join(fmt(r["latency"]["leader"]["p50_ms"], ".2f") for r in runs),
        "l99": " ".join(fmt(r["latency"]["leader"]["p99_ms"], ".2f") for r in runs),
        "f50": " ".join(fmt(r["latency"]["follower"]["p50_ms"], ".2f") for r in runs),
        "f99": " ".join(fmt(r["latency"]["follower"]["p99_ms"], ".2f") for r in runs),
        "api": " ".join(fmt(r["throughput"]["writes_per_s"], ".0f") for r in runs),
        "raw": " ".join(fmt(r["raw"].get("raw_commits_per_s"), ".0f") for r in runs),
        "br": " ".join(fmt(r["raw"].get("bridge_commits_per_s"), ".0f") for r in runs),
    }
    rows = [
        ("failover kill -> next ack (ms)", fmt(fo["median_of_run_medians"], ".0f"),
         per_run["fo"], f"< {TARGET_FAILOVER_MS:.0f}"),
        ("  all trials: median / min / max",
         f"{fmt(fo['median_all_trials'], '.0f')} / {fmt(fo['min'], '.0f')} / "
         f"{fmt(fo['max'], '.0f')}", f"{fo['trials']} trials, {fo['misses']} missed", ""),
        ("write latency, leader p50 (ms)", fmt(lat["leader"]["p50_ms"], ".2f"), per_run["l50"],
         f"< {TARGET_P50_MS:.0f}"),
        ("write latency, leader p99 (ms)", fmt(lat["leader"]["p99_ms"], ".2f"), per_run["l99"],
         ""),
        ("write latency, follower p50 (ms)", fmt(lat["follower"]["p50_ms"], ".2f"),
         per_run["f50"], f"< {TARGET_P50_MS:.0f}"),
        ("write latency, follower p99 (ms)", fmt(lat["follower"]["p99_ms"], ".2f"),
         per_run["f99"], ""),
        (f"API writes/s ({sm['settings']['tp_clients']} clients)",
         fmt(tp["api_writes_per_s"], ".0f"), per_run["api"], ">= raw/2"),
        ("raw raft commits/s (raft_raw.py)", fmt(tp["raw_commits_per_s"], ".0f"),
         per_run["raw"], ""),
        ("  same through LogBridge", fmt(tp["bridge_commits_per_s"], ".0f"), per_run["br"], ""),
        ("API / raw", fmt(tp["api_over_raw"], ".2f"), "", f">= {TARGET_RAW_RATIO}"),
        *durability_rows(sm),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows + [("", "median")])
    w2 = max(len(r[2]) for r in rows + [("", "", "per run")])
    print(f"{'figure':<{w0}}  {'median':>{w1}}  {'per run':<{w2}}  target")
    print("-" * (w0 + w1 + w2 + 14))
    for a, b, c, d in rows:
        print(f"{a:<{w0}}  {b:>{w1}}  {c:<{w2}}  {d}")
    events = [(i, e) for i, r in enumerate(runs) for e in r["unhealthy"]]
    if events:
        print("\nReplicas that marked themselves unhealthy (not ready until restarted):")
        for i, e in events:
            print(f"  run {i + 1}, {e}")
    cpu = [r["throughput"]["cpu_percent"] for r in runs]
    print("\nCPU % of one core during the throughput window, per run:")
    for i, c in enumerate(cpu):
        print(f"  run {i + 1}: " + ", ".join(f"{k} {v}" for k, v in c.items()))


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        s = Settings(runs=1, latency_writes=100, tp_clients=64, tp_seconds=3.0,
                     failover_trials=2, raw_count=3000, raw_timeout=60)
    else:
        s = Settings(runs=args.runs, latency_writes=500, tp_clients=64, tp_seconds=10.0,
                     failover_trials=10, raw_count=20000, raw_timeout=300)
    s.tls = bool(args.tls)
    for name in ("runs", "latency_writes", "tp_clients", "tp_seconds", "failover_trials",
                 "raw_count"):
        value = getattr(args, name, None)
        if value is not None and not (name == "runs" and args.quick):
            setattr(s, name, value)
    return s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="repeat everything N times (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke version: 1 run, 2 failover trials, short loads (< 60 s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--latency-writes", type=int, dest="latency_writes")
    p.add_argument("--clients", type=int, dest="tp_clients")
    p.add_argument("--seconds", type=float, dest="tp_seconds")
    p.add_argument("--failover-trials", type=int, dest="failover_trials")
    p.add_argument("--raw-count", type=int, dest="raw_count")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument("--tls", action="store_true",
                   help="run the clusters with mutual TLS (the API over HTTPS)")
    args = p.parse_args()
    s = settings_from(args)

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    root = Path(tempfile.mkdtemp(prefix="hacontrol-bench-"))
    log(f"{s.runs} run(s), data and logs in {root}")
    results: list[RunResult] = []
    t0 = time.monotonic()
    keep = args.keep
    try:
        for run in range(s.runs):
            log(f"run {run + 1}/{s.runs}")
            results.append(one_run(s, run, root))
    except Exception:
        keep = True  # the replicas' logs are the evidence
        raise
    finally:
        if keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    sm = summarize(results, s)
    sm["wall_seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(sm, indent=1, default=str))
    else:
        print_table(sm)
        print(f"\n{s.runs} run(s) in {sm['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
