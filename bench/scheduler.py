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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.measure.scale import NS, EventLog, MachineLoad, SimAgents, log, soak  # noqa: E402
from tests.integration.harness import Cluster, Proc, Replica, wait_for  # noqa: E402

TARGET_REPLACEMENT_S = 5.0
SLEEP_CMD = ["sleep", "3600"]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


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
    sim_wait_s: float | None = None  # the simulated agents' long poll (None: the leader's)
    full_sync: bool = False  # simulated agents ask for full answers (as before deltas)
    sim_procs: int = 1  # simagent processes sharing the nodes
    sim_backoff_max_s: float = 2.0  # see simagent.py --backoff-max-s
    sim_ramp_s: float = 10.0  # the simulated nodes start over this long
    # Which replica the jobs are submitted to. Which replica leads is chance, and a job PUT
    # to a leader whose event loop also answers 1,000 nodes' syncs took 16-24 s for 200
    # jobs against 2.5-3.1 s through a follower (which forwards it): a fixed role keeps
    # runs comparable.
    submit_to: str = "follower"


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
    load: dict[str, Any] = field(default_factory=dict)  # the machine over the window
    # All placed / running as the log's events time them (wall clock of the leader's
    # commands; the polls above see them up to a poll later)
    placed_events_s: float | None = None
    running_events_s: float | None = None
    sim: dict[str, Any] = field(default_factory=dict)
    sim_soak: dict[str, Any] = field(default_factory=dict)
    nodes_down: int = 0
    nodes_marked_down: int = 0  # node_down events from the first submission to the end
    lost: int = 0
    plans: dict[str, Any] = field(default_factory=dict)
    # Raft term (as the watching follower saw it) before and after the window, and the
    # leader at the end: a change means an election during the measurement.
    term_before: int | None = None
    term_after: int | None = None
    leader_after: str | None = None
    soak: dict[str, Any] = field(default_factory=dict)
    not_ready: str | None = None  # why the run stopped before submitting anything


# ---------------------------------------------------------------- processes


class Run:
    """One cluster and the helper processes of one measurement; everything stopped by pid."""

    def __init__(self, root: Path) -> None:
        self.cluster = Cluster(root)
        self.sim: SimAgents | None = None
        self.profilers: list[subprocess.Popen[bytes]] = []
        self.orphan_pgids: set[int] = set()

    def start(self) -> Cluster:
        self.cluster.start()
        self.cluster.leader(30)
        return self.cluster

    def start_sim(self, s: Settings) -> SimAgents:
        self.sim = SimAgents(self.cluster, s.nodes, s.sim_procs, s.sim_wait_s, s.full_sync,
                             s.sim_backoff_max_s, s.sim_ramp_s)
        self.sim.start()
        return self.sim

    def stop_sim(self) -> dict[str, Any]:
        sim, self.sim = self.sim, None
        return sim.stop() if sim is not None else {}

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


def put_job(cluster: Cluster, name: str, count: int, command: list[str],
            replica: Replica | None = None) -> None:
    body = {"command": command, "count": count,
            "resources": {"cpu": 0.1, "memory_mb": 64}}
    resp = cluster.write("PUT", f"/v1/jobs/{NS}/{name}", body, timeout=60, replica=replica)
    if resp.status != 200:
        raise RuntimeError(f"PUT job {name}: {resp.status} {resp.body}")


def ready_nodes(cluster: Cluster, replica: Replica) -> int:
    resp = cluster.api("GET", "/v1/nodes?stale=true", replica=replica, timeout=30)
    return sum(1 for n in resp.body["nodes"] if n["status"] == "ready")


def count_allocs(cluster: Cluster, replica: Replica) -> tuple[int, int, int]:
    """(placed, running, lost) among the allocations that should run, from the jobs' counts
    (`GET /v1/jobs`: one row per job; listing 100,000 allocations instead cost the follower
    about a second of CPU per poll, on the cores the leader places with, and made "all
    placed" known only to within seconds). Placed: pending with a node (not `queued`),
    starting, running, paused or exited."""
    resp = cluster.api("GET", f"/v1/jobs?stale=true&namespace={NS}", replica=replica,
                       timeout=60)
    if resp.status != 200:
        raise RuntimeError(f"GET jobs: {resp.status}")
    placed = running = lost = 0
    for job in resp.body["jobs"]:
        c = job["counts"]
        placed += (c["pending"] - c["queued"] + c["starting"] + c["running"] + c["paused"]
                   + c["exited"])
        running += c["running"]
        lost += c["lost"]
    return placed, running, lost


def check_allocs(cluster: Cluster, replica: Replica, total: int) -> None:
    """The allocations themselves agree with the counts: `total` run, each on a node."""
    resp = cluster.api("GET", "/v1/allocations?stale=true", replica=replica, timeout=60)
    if resp.status != 200:
        raise RuntimeError(f"GET allocations: {resp.status}")
    running = [a for a in resp.body["allocations"]
               if a["desired"] == "run" and a["state"] == "running" and a["node"] is not None]
    if len(running) != total:
        raise RuntimeError(f"the counts said all {total} run, the allocations {len(running)}")


def measure_placement(run: Run, s: Settings) -> PlacementResult:
    cluster = run.start()
    leader = cluster.leader()
    watcher = next(r for r in cluster.live() if r is not leader)  # stale reads off the leader
    total = s.jobs * s.per_job
    res = PlacementResult(instances=total, nodes=s.nodes)
    events = EventLog(cluster, watcher, time.time(), total)
    events.poll()
    events.start()  # from the nodes' first registration: a node marked down counts
    sim = run.start_sim(s)
    try:
        shown = [time.monotonic()]

        def all_ready() -> bool:
            n = ready_nodes(cluster, watcher) if sim.alive() else 0
            if time.monotonic() - shown[0] >= 30:
                shown[0] = time.monotonic()
                log(f"placement: {n} of {s.nodes} simulated nodes ready")
            return n >= s.nodes
        ramp = MachineLoad({r.id: r.proc.pid for r in cluster.live()}
                           | {f"simagent-{i + 1}": p.pid for i, p in enumerate(sim.popens)})
        try:
            wait_for(all_ready, 600, 1.0, what=f"{s.nodes} simulated nodes ready")
        except AssertionError as exc:
            # What the ramp-up saw is the finding: elections, nodes marked down meanwhile.
            log(f"placement: {exc}")
            res.timed_out = True
            res.not_ready = str(exc)
            res.load = ramp.end()
            res.cpu_percent = res.load["cpu_percent"]
            res.term_before = 1
            res.term_after = (cluster.status(watcher) or {}).get("term")
            return _finish(res, run, events, None)
        submitter = leader if s.submit_to == "leader" else next(
            r for r in cluster.live() if r is not leader and r is not watcher)
        log(f"placement: {s.nodes} simulated nodes ready ({sim.procs} simagent process(es)); "
            f"submitting {s.jobs} jobs x {s.per_job} to {submitter.id} ({s.submit_to})")
        pids = {f"{r.id}{' (leader)' if r is leader else ''}": r.proc.pid
                for r in cluster.live()}
        for i, sp in enumerate(sim.popens):
            pids[f"simagent-{i + 1}"] = sp.pid
        if s.profile is not None:
            s.profile.mkdir(parents=True, exist_ok=True)
            n = len(list(s.profile.glob("leader-*.txt"))) + 1
            run.start_profiler(leader.proc.pid, s.profile / f"leader-{n}.txt")
            run.start_profiler(sim.popens[0].pid, s.profile / f"simagent-{n}.txt")
        res.term_before = (cluster.status(watcher) or {}).get("term")
        load = MachineLoad(pids)
        t0 = time.monotonic()
        wall0 = events.origin = time.time()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: put_job(cluster, f"bench-{i:03d}", s.per_job, SLEEP_CMD,
                                            submitter),
                          range(s.jobs)))
        res.submit_s = time.monotonic() - t0
        log(f"placement: submitted in {res.submit_s:.2f}s")
        poll_until_running(cluster, watcher, sim, s, res, t0)
        run.stop_profilers()
        res.load = load.end()
        res.cpu_percent = res.load["cpu_percent"]
        if events.placed_at is not None:
            res.placed_events_s = round(events.placed_at - wall0, 2)
        if events.running_at is not None:
            res.running_events_s = round(events.running_at - wall0, 2)
        if s.soak_s > 0:
            res.sim = sim.snapshot()  # the placement phase's statistics; the soak's apart
            soak_load = MachineLoad(pids)
            if s.profile is not None:  # the leader while it only answers heartbeats and reads
                run.start_profiler(leader.proc.pid, s.profile / f"leader-soak-{n}.txt")
            res.soak = soak(cluster, s.soak_s, events)
            run.stop_profilers()
            res.soak["load"] = soak_load.end()
        st = cluster.status(watcher) or {}
        res.term_after, res.leader_after = st.get("term"), st.get("leader")
        nodes = cluster.api("GET", "/v1/nodes?stale=true", replica=watcher, timeout=60).body
        res.nodes_down = sum(1 for n in nodes["nodes"] if n["status"] != "ready")
    finally:
        events.stop()
    return _finish(res, run, events, wall0)


def _finish(res: PlacementResult, run: Run, events: EventLog, wall0: float | None
            ) -> PlacementResult:
    events.stop()
    res.plans = events.summary()
    res.nodes_marked_down = len(events.downs)
    last = run.stop_sim()
    if res.soak:
        res.sim_soak = last
    else:
        res.sim = last
    for k in ("last_seen_wall", "last_running_acked_wall"):
        if res.sim.get(k):
            at = res.sim.pop(k)
            if wall0 is not None:
                res.sim[k.replace("_wall", "_s")] = round(at - wall0, 2)
    return res


def poll_until_running(cluster: Cluster, watcher: Replica, sim: SimAgents, s: Settings,
                       res: PlacementResult, t0: float) -> None:
    """Poll a follower's allocations until all run (or the timeout), filling in `res`.

    The poll reads the jobs' counts (`count_allocs`); the pause between polls still grows
    with the poll's duration, so that at most a third of the follower's time goes to them.
    Once the counts say all run, the allocations themselves are checked once.
    """
    total = res.instances
    last_log = 0.0
    while True:
        if not sim.alive():
            raise RuntimeError("a simagent exited early; see simagent-*.log")
        p0 = time.monotonic()
        try:
            placed, running, lost = count_allocs(cluster, watcher)
        except OSError as exc:
            log(f"placement: poll failed: {exc!r}")
            time.sleep(s.poll_s)
            continue
        el = time.monotonic() - t0  # the moment the answer arrived
        took = time.monotonic() - p0
        res.progress.append((round(el, 2), placed, running))
        res.lost = max(res.lost, lost)
        if res.placed_s is None and placed >= total:
            res.placed_s = el
            res.placements_per_s = total / el
            log(f"placement: all {total} placed after {el:.2f}s")
        if running >= total:
            res.running_s = el
            log(f"placement: all {total} running after {el:.2f}s")
            check_allocs(cluster, watcher, total)
            return
        if el > s.placement_timeout:
            res.timed_out = True
            log(f"placement: gave up after {el:.0f}s: {placed} placed, {running} running")
            return
        if el - last_log >= 10:
            last_log = el
            log(f"placement: {el:.0f}s: {placed} placed, {running} running, {lost} lost "
                f"(poll took {took:.2f}s)")
        time.sleep(max(s.poll_s, 2 * took))


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
    # The moment the last simulated node saw its last assignment: all were placed by then,
    # without a poll's delay (the log's events can be dropped from its ring under this load).
    seen = [(x.get("sim") or {}).get("last_seen_s") for x in runs]
    by_agents = [x["instances"] / t if t else None for x, t in zip(runs, seen, strict=True)]
    print(f"  {'placements/s as the agents saw':32} "
          f"{fmt(median([v for v in by_agents if v]), 0):>9}   "
          + " ".join(fmt(v, 0) for v in by_agents))
    print(f"  {'all placed / running by the log (s)':32} {'':>9}   "
          + " ".join(f"{fmt(x['placed_events_s'], 1)}/{fmt(x['running_events_s'], 1)}"
                     for x in runs))
    for i, x in enumerate(runs):
        print_run(i, x)
    secs = " ".join(fmt(t["seconds"]) for t in r.get("trials", []))
    verdict = ("-" if r.get("median_s") is None else
               "ok" if r["median_s"] < TARGET_REPLACEMENT_S else "MISSED")
    print(f"\nkill -9 agent -> 4 running elsewhere: median {fmt(r.get('median_s'))} s "
          f"(target < {TARGET_REPLACEMENT_S:g} s: {verdict}); min {fmt(r.get('min_s'))}, "
          f"max {fmt(r.get('max_s'))}; trials {secs}; missed {r.get('missed')}")
    print(f"  of which until the node was marked down: median "
          f"{fmt(r.get('median_node_down_s'))} s")


def print_run(i: int, x: dict[str, Any]) -> None:
    sim = x["sim"]
    ld = x.get("load") or {}
    print(f"  run {i + 1}: cpu% {x['cpu_percent']}; machine busy "
          f"{ld.get('machine_busy_percent')}% of {ld.get('cores')} cores (others "
          f"{ld.get('others_percent')}%, load {ld.get('loadavg_before')} -> "
          f"{ld.get('loadavg_after')})")
    print(f"         nodes marked down {x['nodes_marked_down']}, not ready at the end "
          f"{x['nodes_down']}, lost {x['lost']}; raft term {x['term_before']} -> "
          f"{x['term_after']}, leader at the end {x['leader_after']}"
          + (" TIMED OUT" if x["timed_out"] else "")
          + (f" ({x['not_ready']})" if x.get("not_ready") else ""))
    print(f"         simagent ({sim.get('processes')} process(es)): syncs {sim.get('syncs')}, "
          f"p50/p99 {sim.get('sync_p50_ms')}/{sim.get('sync_p99_ms')} ms, answers "
          f"{sim.get('answer_bytes_mean')} B mean, {sim.get('max_answer_bytes')} B max, "
          f"longest answer->next request {sim.get('max_between_syncs_s')} s, errors "
          f"{sim.get('errors')}")
    pl = x["plans"]
    if pl.get("count"):
        print(f"         plans: {pl['count']} (sizes {pl['sizes']}), median interval "
              f"{pl['median_interval_s']} s, first at {pl['first_s']} s, last at "
              f"{pl['last_s']} s; agents saw their last assignment at "
              f"{sim.get('last_seen_s')} s, last 'running' acked at "
              f"{sim.get('last_running_acked_s')} s")
    so = x.get("soak")
    if so:
        ss = x.get("sim_soak") or {}
        sl = so.get("load") or {}
        print(f"  soak {so['seconds']:.0f} s: reads {so['reads']} p50/p99/max "
              f"{so['read_p50_ms']}/{so['read_p99_ms']}/{so['read_max_ms']} ms, errors "
              f"{so['read_errors']}; nodes marked down {so['nodes_marked_down']}, not ready "
              f"at the end {so['nodes_not_ready_at_end']}")
        for route, q in so["routes"].items():
            print(f"         {route:40} p50/p99/max {q['p50_ms']}/{q['p99_ms']}/"
                  f"{q['max_ms']} ms ({q['reads']} reads, {q['answer_bytes']} B)")
        print(f"         heartbeats: {ss.get('syncs')} syncs, {ss.get('idle_answers')} "
              f"without change at {ss.get('idle_answer_bytes_mean')} B each, "
              f"{ss.get('answer_bytes')} B in all; longest answer->next request "
              f"{ss.get('max_between_syncs_s')} s; errors {ss.get('errors')}")
        print(f"         cpu% {sl.get('cpu_percent')}; machine busy "
              f"{sl.get('machine_busy_percent')}% (others {sl.get('others_percent')}%)")


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
                   help="the simulated agents' long poll (default: as the leader asks, "
                        "as agents do)")
    p.add_argument("--sim-procs", type=int, dest="sim_procs",
                   help="simagent processes sharing the nodes (default: one per 1,000 "
                        "nodes)")
    p.add_argument("--sim-backoff-max-s", type=float, default=2.0, dest="sim_backoff_max_s",
                   help="simulated agents retry failed syncs with a doubling, jittered pause "
                        "up to this (default 2, as the agent does; 0: a fixed 0.1 s)")
    p.add_argument("--sim-ramp-s", type=float, default=10.0, dest="sim_ramp_s",
                   help="the simulated nodes start over this many seconds (default 10)")
    p.add_argument("--full-sync", action="store_true", dest="full_sync",
                   help="simulated agents ask for full answers (the protocol before deltas)")
    p.add_argument("--submit-to", choices=("follower", "leader"), default="follower",
                   dest="submit_to", help="the replica the jobs are submitted to "
                   "(default: a follower, not the one polled for counts)")
    args = p.parse_args()
    if args.scale:
        args.skip_replacement = True
        jobs, nodes, soak_s = (200, 1000, 60.0) if args.quick else (1000, 5000, 600.0)
        args.jobs, args.nodes = args.jobs or jobs, args.nodes or nodes
        args.soak_s = soak_s if args.soak_s is None else args.soak_s
        args.runs = 1
    s = Settings(runs=1 if args.quick else args.runs,
                 jobs=args.jobs or (10 if args.quick else 100),
                 per_job=args.per_job or 100,
                 nodes=args.nodes or (50 if args.quick else 200),
                 poll_s=args.poll_s, placement_timeout=args.timeout,
                 trials=args.trials or (2 if args.quick else 5), profile=args.profile,
                 soak_s=args.soak_s or 0.0, sim_wait_s=args.sim_wait_s,
                 full_sync=args.full_sync)
    s.sim_procs = args.sim_procs or max(1, -(-s.nodes // 1000))
    s.sim_backoff_max_s, s.sim_ramp_s = args.sim_backoff_max_s, args.sim_ramp_s
    s.submit_to = args.submit_to

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
