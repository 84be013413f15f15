#!/usr/bin/env python3
"""Scheduler benchmarks: placement throughput at scale, and kill-to-replacement time.

    python bench/scheduler.py [--runs N] [--quick] [--json]

1. placement   a fresh 3-replica cluster and one `bench/simagent.py` process hosting many
               simulated nodes (default 200, cpu 8, memory 32000 MB each) that report
               "running" for every assignment without starting anything. Jobs totalling
               10,000 instances (100 jobs x 100, cpu 0.1, memory 64 MB each) are submitted;
               the figures are the time from the first submission until the API shows every
               instance placed on a node, and until every one is "running".
               placements/s = instances / time to all placed.
2. replacement a fresh 3-replica cluster, two real agents. A 4-instance `sleep` job runs on
               the one agent; that agent gets kill -9; the figure is the time from the kill
               until the API shows 4 instances running on the other agent. The killed agent
               is restarted and the next trial kills the agent that now holds the job.

Medians over the runs (placement) and over the trials (replacement) are printed at the end.
Every process started here is stopped by pid, also on Ctrl-C, SIGTERM or a failure;
instances left behind by a killed agent are killed through their process group.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from tests.integration.harness import Cluster, Proc, Replica, wait_for  # noqa: E402

SIMAGENT = Path(__file__).resolve().parent / "simagent.py"
NS = "default"
TARGET_REPLACEMENT_S = 5.0
SLEEP_CMD = ["sleep", "3600"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system


@dataclass
class Settings:
    runs: int
    jobs: int
    per_job: int
    nodes: int
    poll_s: float
    placement_timeout: float
    trials: int
    profile: Path | None = None
    soak_s: float = 0.0  # after placement: nodes keep heartbeating this long
    sim_wait_s: float = 1.0  # the simulated agents' long poll
    full_sync: bool = False  # simulated agents ask for full answers (as before deltas)


@dataclass
class PlacementResult:
    instances: int
    nodes: int
    submit_s: float | None = None
    placed_s: float | None = None
    running_s: float | None = None
    placements_per_s: float | None = None
    timed_out: bool = False
    progress: list[tuple[float, int, int]] = field(default_factory=list)
    cpu_percent: dict[str, float] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    nodes_down: int = 0
    lost: int = 0
    plans: dict[str, Any] = field(default_factory=dict)
    # Raft term (as the watching follower saw it) before and after the window, and the
    # leader at the end: a change means an election during the measurement.
    term_before: int | None = None
    term_after: int | None = None
    leader_after: str | None = None
    soak: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- processes


class Run:
    """One cluster and the helper processes of one measurement; everything stopped by pid."""

    def __init__(self, root: Path) -> None:
        self.cluster = Cluster(root)
        self.sim: subprocess.Popen[bytes] | None = None
        self.profilers: list[subprocess.Popen[bytes]] = []
        self.orphan_pgids: set[int] = set()

    def start(self) -> Cluster:
        self.cluster.start()
        self.cluster.leader(30)
        return self.cluster

    def start_sim(self, nodes: int, wait_s: float = 1.0,
                  full: bool = False) -> subprocess.Popen[bytes]:
        c = self.cluster
        argv = [sys.executable, str(SIMAGENT), "--controllers",
                ",".join(r.api for r in c.replicas), "--token-file", str(c.root / "token"),
                "--nodes", str(nodes), "--wait-s", str(wait_s),
                "--stagger-s", str(min(0.005, 10.0 / max(nodes, 1)))]
        if full:
            argv.append("--full")
        err = open(c.root / "simagent.log", "ab")
        self.sim = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err,
                                    stdin=subprocess.DEVNULL)
        err.close()
        return self.sim

    def stop_sim(self) -> dict[str, Any]:
        sim, self.sim = self.sim, None
        if sim is None or sim.poll() is not None:
            return {}
        sim.send_signal(signal.SIGTERM)
        try:
            out, _ = sim.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(10)
            return {}
        try:
            return json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {}

    def start_profiler(self, pid: int, out: Path) -> None:
        """py-spy (if installed next to this Python) sampling `pid` into collapsed stacks."""
        exe = Path(sys.executable).parent / "py-spy"
        if not exe.exists():
            log("--profile: py-spy not found next to the Python in use; not profiling")
            return
        argv = [str(exe), "record", "--pid", str(pid), "--format", "raw", "--rate", "50",
                "--output", str(out), "--nonblocking"]
        err = open(out.with_suffix(".log"), "ab")
        self.profilers.append(subprocess.Popen(argv, stdout=err, stderr=err,
                                               stdin=subprocess.DEVNULL))
        err.close()

    def stop_profilers(self) -> None:
        for prof in self.profilers:
            if prof.poll() is None:
                prof.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    prof.wait(30)
                except subprocess.TimeoutExpired:
                    prof.kill()
                    prof.wait(10)
        self.profilers.clear()

    def kill_orphans(self) -> None:
        """Instances a kill -9'd agent left behind: each leads its own process group."""
        for pgid in sorted(self.orphan_pgids):
            try:
                proc = psutil.Process(pgid)
                if proc.cmdline() != SLEEP_CMD:
                    continue  # not ours (pid reused)
                os.killpg(pgid, signal.SIGKILL)
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass
        self.orphan_pgids.clear()

    def stop(self) -> None:
        try:
            self.stop_profilers()
            self.stop_sim()
        finally:
            try:
                self.cluster.stop()
            finally:
                self.kill_orphans()


# ---------------------------------------------------------------- placement


def put_job(cluster: Cluster, name: str, count: int, command: list[str]) -> None:
    body = {"command": command, "count": count,
            "resources": {"cpu": 0.1, "memory_mb": 64}}
    resp = cluster.write("PUT", f"/v1/jobs/{NS}/{name}", body, timeout=60)
    if resp.status != 200:
        raise RuntimeError(f"PUT job {name}: {resp.status} {resp.body}")


def ready_nodes(cluster: Cluster, replica: Replica) -> int:
    resp = cluster.api("GET", "/v1/nodes?stale=true", replica=replica, timeout=30)
    return sum(1 for n in resp.body["nodes"] if n["status"] == "ready")


def count_allocs(cluster: Cluster, replica: Replica) -> tuple[int, int, int]:
    """(placed, running, lost) among the allocations that should run."""
    resp = cluster.api("GET", "/v1/allocations?stale=true", replica=replica, timeout=60)
    if resp.status != 200:
        raise RuntimeError(f"GET allocations: {resp.status}")
    placed = running = lost = 0
    for a in resp.body["allocations"]:
        if a["state"] == "lost":
            lost += 1
        if a["desired"] != "run":
            continue
        if a["node"] is not None and a["state"] not in ("lost", "failed", "stopped"):
            placed += 1
        if a["state"] == "running":
            running += 1
    return placed, running, lost


class PlanLog:
    """The leader's placement plans as the log recorded them (`allocs_placed` events).

    Read every 0.2 s by a thread of its own during the run: the state machine keeps only
    the latest events, and 10,000 "running" events would push the plans out.
    """

    def __init__(self, cluster: Cluster, replica: Replica, wall0: float) -> None:
        self.cluster, self.replica, self.wall0 = cluster, replica, wall0
        self.last = "0"
        self.plans: list[tuple[float, int, int]] = []
        self.truncated = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        try:
            self.poll()
        except (OSError, KeyError, ValueError):
            pass

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.poll()
            except (OSError, KeyError, ValueError):
                pass

    def poll(self) -> None:
        # Unfiltered: the server caps an answer at 1000 events before applying a type filter,
        # so only the last event of an answer tells where the next one must start.
        while True:
            resp = self.cluster.api("GET", f"/v1/events?follow=false&index={self.last}",
                                    replica=self.replica, timeout=30)
            if resp.status != 200:
                return
            evs = resp.body["events"]
            if self.last != "0" and int(self.last.split(".")[0]) < resp.body["oldest_index"] - 1:
                self.truncated = True
            for e in evs:
                self.last = e["id"]
                if e["type"] == "allocs_placed" and e["ts"] >= self.wall0:
                    self.plans.append((e["ts"], e["index"], len(e.get("placements") or [])))
            if len(evs) < 1000:
                return

    def summary(self) -> dict[str, Any]:
        plans = self.plans
        if not plans:
            return {}
        gaps = [b[0] - a[0] for a, b in zip(plans, plans[1:], strict=False)]
        idx = [b[1] - a[1] for a, b in zip(plans, plans[1:], strict=False)]
        return {"count": len(plans), "sizes": [p[2] for p in plans],
                "first_s": round(plans[0][0] - self.wall0, 2),
                "last_s": round(plans[-1][0] - self.wall0, 2),
                "median_interval_s": round(statistics.median(gaps), 3) if gaps else None,
                "median_entries_between": statistics.median(idx) if idx else None,
                "intervals_s": [round(g, 2) for g in gaps], "maybe_incomplete": self.truncated}


def measure_placement(run: Run, s: Settings) -> PlacementResult:
    cluster = run.start()
    leader = cluster.leader()
    watcher = next(r for r in cluster.live() if r is not leader)  # stale reads off the leader
    total = s.jobs * s.per_job
    res = PlacementResult(instances=total, nodes=s.nodes)
    sim = run.start_sim(s.nodes, s.sim_wait_s, s.full_sync)
    wait_for(lambda: sim.poll() is None and ready_nodes(cluster, watcher) >= s.nodes, 300,
             0.5, what=f"{s.nodes} simulated nodes ready")
    log(f"placement: {s.nodes} simulated nodes ready; submitting {s.jobs} jobs x {s.per_job}")
    pids = {f"{r.id}{' (leader)' if r is leader else ''}": r.proc.pid for r in cluster.live()}
    pids["simagent"] = sim.pid
    if s.profile is not None:
        s.profile.mkdir(parents=True, exist_ok=True)
        n = len(list(s.profile.glob("leader-*.txt"))) + 1
        run.start_profiler(leader.proc.pid, s.profile / f"leader-{n}.txt")
        run.start_profiler(sim.pid, s.profile / f"simagent-{n}.txt")
    res.term_before = (cluster.status(watcher) or {}).get("term")
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    me0 = time.process_time()
    t0 = time.monotonic()
    wall0 = time.time()
    planlog = PlanLog(cluster, watcher, wall0)
    planlog.poll()
    planlog.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: put_job(cluster, f"bench-{i:03d}", s.per_job, SLEEP_CMD),
                          range(s.jobs)))
        res.submit_s = time.monotonic() - t0
        log(f"placement: submitted in {res.submit_s:.2f}s")
        last_log = 0.0
        while True:
            el = time.monotonic() - t0
            if sim.poll() is not None:
                raise RuntimeError("simagent exited early; see simagent.log")
            try:
                placed, running, lost = count_allocs(cluster, watcher)
            except OSError as exc:
                log(f"placement: poll failed: {exc!r}")
                time.sleep(s.poll_s)
                continue
            el = time.monotonic() - t0  # the moment the answer arrived
            res.progress.append((round(el, 2), placed, running))
            res.lost = max(res.lost, lost)
            if res.placed_s is None and placed >= total:
                res.placed_s = el
                res.placements_per_s = total / el
                log(f"placement: all {total} placed after {el:.2f}s")
            if running >= total:
                res.running_s = el
                log(f"placement: all {total} running after {el:.2f}s")
                break
            if el > s.placement_timeout:
                res.timed_out = True
                log(f"placement: gave up after {el:.0f}s: {placed} placed, {running} running")
                break
            if el - last_log >= 10:
                last_log = el
                log(f"placement: {el:.0f}s: {placed} placed, {running} running, {lost} lost")
            time.sleep(s.poll_s)
        elapsed = time.monotonic() - t0
        run.stop_profilers()
        if s.soak_s > 0:
            res.soak = soak(cluster, s.soak_s)
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
        res.cpu_percent = {k: round(100 * (cpu1[k] - cpu0[k]) / elapsed, 1) for k in pids}
        res.cpu_percent["bench client"] = round(100 * (time.process_time() - me0) / elapsed, 1)
        st = cluster.status(watcher) or {}
        res.term_after, res.leader_after = st.get("term"), st.get("leader")
        nodes = cluster.api("GET", "/v1/nodes?stale=true", replica=watcher, timeout=30).body
        res.nodes_down = sum(1 for n in nodes["nodes"] if n["status"] != "ready")
    finally:
        planlog.stop()
    res.plans = planlog.summary()
    res.sim = run.stop_sim()
    for k in ("last_seen_wall", "last_running_acked_wall"):
        if res.sim.get(k):
            res.sim[k.replace("_wall", "_s")] = round(res.sim.pop(k) - wall0, 2)
    return res


def soak(cluster: Cluster, seconds: float) -> dict[str, Any]:
    """Nodes keep heartbeating for `seconds` while a client reads a job (linearizable) on
    the leader back to back; the figures: read latencies and nodes marked down."""
    leader = cluster.leader()
    log(f"soak: {seconds:.0f}s of heartbeats with API reads on {leader.id}")
    lat: list[float] = []
    errors = 0
    t_end = time.monotonic() + seconds
    next_log = time.monotonic() + 30
    while time.monotonic() < t_end:
        t0 = time.monotonic()
        try:
            resp = cluster.api("GET", f"/v1/jobs/{NS}/bench-000", replica=leader, timeout=10)
            ok = resp.status == 200
        except OSError:
            ok = False
        if ok:
            lat.append((time.monotonic() - t0) * 1000)
        else:
            errors += 1
        if time.monotonic() >= next_log:
            next_log += 30
            log(f"soak: {len(lat)} reads, p99 {_q(lat, 0.99)} ms")
        time.sleep(0.05)
    marked = 0
    for r in cluster.replicas:
        try:
            marked += r.proc.log.read_text(errors="replace").count("missed heartbeats")
        except OSError:
            pass
    body = cluster.api("GET", "/v1/nodes?stale=true", replica=leader, timeout=60).body
    return {"seconds": seconds, "reads": len(lat), "read_errors": errors,
            "read_p50_ms": _q(lat, 0.5), "read_p99_ms": _q(lat, 0.99),
            "read_max_ms": round(max(lat), 1) if lat else None,
            "nodes_not_ready": sum(1 for n in body["nodes"] if n["status"] != "ready"),
            "marked_down_in_logs": marked}


def _q(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    return round(ys[min(len(ys) - 1, int(p * len(ys)))], 1)


# -------------------------------------------------------------- replacement


def running_on(cluster: Cluster, job: str, node: str, leader: Replica
               ) -> list[dict[str, Any]]:
    # stale reads on the leader: as fresh as it gets there, and no no-op through the log
    # (a no-op would wake the agents' long polls and make their heartbeats artificially fresh)
    resp = cluster.api("GET", f"/v1/allocations?job={job}&stale=true",
                       replica=leader, timeout=5)
    if resp.status != 200:
        raise RuntimeError(f"GET allocations: {resp.status}")
    allocs = resp.body["allocations"]
    return [a for a in allocs if a["desired"] == "run" and a["state"] == "running"
            and a["node"] == node]


def node_status(cluster: Cluster, name: str, leader: Replica) -> str | None:
    resp = cluster.api("GET", f"/v1/nodes/{name}?stale=true", replica=leader, timeout=5)
    return resp.body["node"]["status"] if resp.status == 200 else None


def measure_replacement(run: Run, trials: int) -> dict[str, Any]:
    cluster = run.start()
    lead = cluster.leader()
    job = "replace"
    agents: dict[str, Proc] = {"n1": cluster.start_agent("n1")}
    wait_for(lambda: node_status(cluster, "n1", lead) == "ready", 30, what="n1 ready")
    put_job(cluster, job, 4, SLEEP_CMD)
    wait_for(lambda: len(running_on(cluster, job, "n1", lead)) == 4, 60, 0.1,
             what="4 instances running on n1")
    agents["n2"] = cluster.start_agent("n2")
    wait_for(lambda: node_status(cluster, "n2", lead) == "ready", 30, what="n2 ready")
    holder, other = "n1", "n2"
    out: dict[str, Any] = {"trials": [], "missed": 0}
    for trial in range(trials):
        victims = running_on(cluster, job, holder, lead)
        for a in victims:
            if a.get("pid"):
                run.orphan_pgids.add(int(a["pid"]))
        t0 = time.monotonic()
        agents[holder].kill9()
        down_s = None
        got = None
        deadline = t0 + 30
        while time.monotonic() < deadline:
            try:
                if down_s is None and node_status(cluster, holder, lead) == "down":
                    down_s = time.monotonic() - t0
                if len(running_on(cluster, job, other, lead)) >= 4:
                    got = time.monotonic() - t0
                    break
            except (OSError, AssertionError):
                pass
            time.sleep(0.02)
        run.kill_orphans()
        if got is None:
            out["missed"] += 1
            log(f"replacement trial {trial + 1}: no 4 instances on {other} within 30s")
            break
        out["trials"].append({"killed": holder, "seconds": round(got, 3),
                              "node_down_s": None if down_s is None else round(down_s, 3)})
        log(f"replacement trial {trial + 1}: {got:.2f}s (node marked down after "
            f"{down_s if down_s is None else round(down_s, 2)}s)")
        if trial + 1 < trials:
            cluster.start_agent(holder)  # comes back empty: its instances were replaced
            wait_for(lambda h=holder: node_status(cluster, h, lead) == "ready", 30,  # type: ignore[misc]
                     what=f"{holder} ready again")
            holder, other = other, holder
    secs = [t["seconds"] for t in out["trials"]]
    out["median_s"] = median(secs)
    out["min_s"] = min(secs) if secs else None
    out["max_s"] = max(secs) if secs else None
    downs = [t["node_down_s"] for t in out["trials"] if t["node_down_s"] is not None]
    out["median_node_down_s"] = median(downs)
    return out


# ------------------------------------------------------------------- report


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summarise(placements: list[PlacementResult], repl: dict[str, Any]) -> dict[str, Any]:
    ok = [p for p in placements if not p.timed_out]
    return {
        "placement": {
            "instances": placements[0].instances if placements else None,
            "nodes": placements[0].nodes if placements else None,
            "median_placements_per_s": median([p.placements_per_s for p in ok
                                               if p.placements_per_s]),
            "median_placed_s": median([p.placed_s for p in ok if p.placed_s is not None]),
            "median_running_s": median([p.running_s for p in ok if p.running_s is not None]),
            "timed_out_runs": len(placements) - len(ok),
            "runs": [p.__dict__ for p in placements],
        },
        "replacement": {**repl, "target_s": TARGET_REPLACEMENT_S},
    }


def print_table(summary: dict[str, Any]) -> None:
    p = summary["placement"]
    r = summary["replacement"]
    runs = p["runs"]
    print(f"\nplacement: {p['instances']} instances on {p['nodes']} simulated nodes "
          f"({len(runs)} run(s))")
    print(f"  {'':32} {'median':>9}   runs")
    rows = [("placements/s", "median_placements_per_s", "placements_per_s", 0),
            ("time to all placed (s)", "median_placed_s", "placed_s", 1),
            ("time to all running (s)", "median_running_s", "running_s", 1)]
    for label, mk, rk, d in rows:
        vals = " ".join(fmt(x[rk], d) for x in runs)
        print(f"  {label:32} {fmt(p[mk], d):>9}   {vals}")
    print(f"  {'submission of all jobs (s)':32} {'':>9}   "
          + " ".join(fmt(x['submit_s'], 1) for x in runs))
    for i, x in enumerate(runs):
        sim = x["sim"]
        print(f"  run {i + 1}: cpu% {x['cpu_percent']}; nodes down {x['nodes_down']}, lost "
              f"{x['lost']}; simagent syncs {sim.get('syncs')}, sync p50/p99 "
              f"{sim.get('sync_p50_ms')}/{sim.get('sync_p99_ms')} ms, longest heartbeat gap "
              f"{sim.get('max_heartbeat_gap_s')} s, errors {sim.get('errors')}; raft term "
              f"{x['term_before']} -> {x['term_after']}, leader at the end {x['leader_after']}"
              + (" TIMED OUT" if x["timed_out"] else ""))
        if x.get("soak"):
            print(f"         soak: {x['soak']}")
        pl = x["plans"]
        if pl:
            print(f"         plans: {pl['count']} (sizes {pl['sizes']}), median interval "
                  f"{pl['median_interval_s']} s, first at {pl['first_s']} s, last at "
                  f"{pl['last_s']} s; agents saw their last assignment at "
                  f"{sim.get('last_seen_s')} s, last 'running' acked at "
                  f"{sim.get('last_running_acked_s')} s")
    secs = " ".join(fmt(t["seconds"]) for t in r.get("trials", []))
    verdict = ("-" if r.get("median_s") is None else
               "ok" if r["median_s"] < TARGET_REPLACEMENT_S else "MISSED")
    print(f"\nkill -9 agent -> 4 running elsewhere: median {fmt(r.get('median_s'))} s "
          f"(target < {TARGET_REPLACEMENT_S:g} s: {verdict}); min {fmt(r.get('min_s'))}, "
          f"max {fmt(r.get('max_s'))}; trials {secs}; missed {r.get('missed')}")
    print(f"  of which until the node was marked down: median "
          f"{fmt(r.get('median_node_down_s'))} s")


# --------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="placement runs (default 3)")
    p.add_argument("--quick", action="store_true",
                   help="smoke version: 1,000 instances on 50 nodes, 1 run, 2 trials, < 60 s")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--jobs", type=int)
    p.add_argument("--per-job", type=int, dest="per_job")
    p.add_argument("--nodes", type=int)
    p.add_argument("--trials", type=int, help="kill-to-replacement trials (default 5)")
    p.add_argument("--poll-s", type=float, default=0.5, dest="poll_s",
                   help="allocation polling interval during placement (default 0.5)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="give up a placement run after this many seconds (default 900)")
    p.add_argument("--skip-placement", action="store_true")
    p.add_argument("--skip-replacement", action="store_true")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="sample the leader and the simagent with py-spy during placement; "
                        "collapsed stacks go to DIR")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    p.add_argument("--scale", action="store_true",
                   help="the issue's scale target: 100,000 instances on 5,000 simulated nodes, "
                        "then 10 minutes of heartbeats with API reads (with --quick: "
                        "20,000 on 1,000 nodes, 60 s); 1 run, no replacement trials")
    p.add_argument("--soak-s", type=float, dest="soak_s",
                   help="after placement, keep the nodes heartbeating this long while "
                        "reading the API (default 0; 600 with --scale)")
    p.add_argument("--sim-wait-s", type=float, dest="sim_wait_s",
                   help="the simulated agents' long poll (default 1.0; 10 with --scale)")
    p.add_argument("--full-sync", action="store_true", dest="full_sync",
                   help="simulated agents ask for full answers (the protocol before deltas)")
    args = p.parse_args()
    if args.scale:
        args.skip_replacement = True
        jobs, nodes, soak_s = (200, 1000, 60.0) if args.quick else (1000, 5000, 600.0)
        args.jobs, args.nodes = args.jobs or jobs, args.nodes or nodes
        args.soak_s = soak_s if args.soak_s is None else args.soak_s
        args.sim_wait_s = args.sim_wait_s or 10.0
        args.runs = 1
    s = Settings(runs=1 if args.quick else args.runs,
                 jobs=args.jobs or (10 if args.quick else 100),
                 per_job=args.per_job or 100,
                 nodes=args.nodes or (50 if args.quick else 200),
                 poll_s=args.poll_s, placement_timeout=args.timeout,
                 trials=args.trials or (2 if args.quick else 5), profile=args.profile,
                 soak_s=args.soak_s or 0.0, sim_wait_s=args.sim_wait_s or 1.0,
                 full_sync=args.full_sync)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="hacontrol-bench-sched-"))
    placements: list[PlacementResult] = []
    repl: dict[str, Any] = {}
    try:
        if not args.skip_placement:
            for i in range(s.runs):
                log(f"placement run {i + 1}/{s.runs}")
                run = Run(tmp / f"place-{i + 1}")
                try:
                    placements.append(measure_placement(run, s))
                finally:
                    run.stop()
        if not args.skip_replacement:
            log(f"replacement: {s.trials} trials")
            run = Run(tmp / "replace")
            try:
                repl = measure_replacement(run, s.trials)
            finally:
                run.stop()
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    summary = summarise(placements, repl)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print_table(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
