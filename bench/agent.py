#!/usr/bin/env python3
"""Node agent benchmarks, each figure next to supervisord's on the same program, same run.

    python bench/agent.py [--runs N] [--instances 200] [--quick] [--json]

Per run (the order of the two sides alternates between runs):

1. crash -> restart  a Python program that records its start time as its first action,
                     sleeps a random 0.15-0.35 s, records its exit time and exits with
                     code 1; restarted without backoff. Latency = start of the replacement
                     minus exit of the previous instance, both written by the programs.
2. start N           hacontrol: PUT of a job with count N (sleep 3600) until the API lists
                     N allocations "running"; and Supervisor.ensure() for N specs in this
                     process, until all returned running. supervisord: N programs
                     configured with autostart=false, startAllProcesses over XML-RPC until
                     all are RUNNING.
3. idle              with the N instances running: RSS of the agent / supervisord process
                     and its CPU use over a quiet window (100 % = one core).

supervisord is installed, when missing, into the bench cache's venv outside the repository
(~/.cache/hacontrol-bench, bench/peers/supervisord.py), as for
`python -m bench.compare`. Every process started here is stopped by pid, also on Ctrl-C,
SIGTERM or failure; the temporary directories are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.measure.clusters import cluster_in  # noqa: E402
from bench.measure.crash import (  # noqa: E402
    CRASH_PROGRAM,
    crash_argv,
    crash_latencies,
    starts_recorded,
)
from bench.measure.procs import (  # noqa: E402
    Reaper,
    descendants,
    idle_usage,
    kill_leftovers,
    log,
)
from bench.measure.table import pct  # noqa: E402
from bench.peers import supervisord  # noqa: E402
from bench.peers.base import PeerStatus, default_cache  # noqa: E402
from hacontrol.agent.spec import AllocationEvent, AllocationSpec  # noqa: E402
from hacontrol.agent.supervisor import Supervisor  # noqa: E402
from hacontrol.model.resources import Resources  # noqa: E402
from hacontrol.model.spec import RestartSpec  # noqa: E402
from hacontrol.model.states import RestartPolicy  # noqa: E402
from tests.integration.harness import Cluster, wait_for  # noqa: E402

NS = "default"
POLL_S = 0.05


@dataclass
class Settings:
    runs: int
    instances: int
    crashes: int
    idle_s: float
    settle_s: float
    instance_cpu: float = 1.0


# Figures of one run; keys are shared by both sides ("hac" and "sup").
Figures = dict[str, float]


@dataclass
class RunResult:
    hac: Figures = field(default_factory=dict)
    sup: Figures = field(default_factory=dict)
    crash_ms: dict[str, list[float]] = field(default_factory=lambda: {"hac": [], "sup": []})


def ensure_supervisor_installed() -> PeerStatus:
    peer = supervisord.find(default_cache(), True, log)
    if not peer.available:
        raise SystemExit(f"supervisord unavailable: {peer.missing}")
    return peer


# -------------------------------------------------------------- supervisord


def sup_many(peer: PeerStatus, root: Path, n: int, s: Settings, reaper: Reaper) -> Figures:
    programs = textwrap.dedent(f"""\
        [program:s]
        command=sleep 3600
        process_name=%(program_name)s_%(process_num)04d
        numprocs={n}
        autostart=false
        autorestart=true
        startsecs=0
        redirect_stderr=true
        stdout_logfile={root}/logs/%(program_name)s_%(process_num)04d.log
    """)
    out: Figures = {}
    assert peer.exe is not None
    with supervisord.supervisord_in(peer.exe, root, programs, reaper) as sd:
        time.sleep(s.settle_s)
        rss0, _ = idle_usage(sd.pid, 0.0)
        out["rss0_mb"] = rss0
        t0 = time.perf_counter()
        sd.rpc().supervisor.startAllProcesses(False)
        wait_for(lambda: sd.states().count("RUNNING") == n, 120, interval=POLL_S,
                 what=f"{n} supervisord programs RUNNING")
        out["start_s"] = time.perf_counter() - t0
        out["ensure_s"] = out["start_s"]
        time.sleep(s.settle_s)
        out["rss_mb"], out["idle_cpu_pct"] = idle_usage(sd.pid, s.idle_s)
    return out


# ---------------------------------------------------------------- hacontrol


def restart_always() -> dict[str, Any]:
    return {"policy": "always", "backoff_s": 0, "backoff_max_s": 0,
            "max_restarts": 1_000_000, "window_s": 1, "min_uptime_s": 0}


def running_allocs(cluster: Cluster, job: str) -> list[dict[str, Any]]:
    return [a for a in cluster.allocs(job, replica=cluster.leader())
            if a["state"] == "running" and a.get("desired", "run") == "run"]


def delete_job(cluster: Cluster, job: str, agent_pid: int) -> None:
    assert cluster.write("DELETE", f"/v1/jobs/{NS}/{job}").status == 200
    wait_for(lambda: cluster.api("GET", f"/v1/jobs/{NS}/{job}").status == 404, 60,
             interval=0.1, what=f"job {job} removed")
    wait_for(lambda: not descendants(agent_pid), 60, interval=0.1,
             what=f"processes of {job} gone")


def hac_cluster_side(root: Path, crash_py: Path, s: Settings) -> tuple[Figures, list[float]]:
    n = s.instances
    out: Figures = {}
    with cluster_in(root / "cluster") as cluster:
        agent = cluster.start_agent("n1", cpu=max(200.0, n * s.instance_cpu + 2),
                                    memory_mb=max(100_000, n * 64 + 1024))

        def registered() -> bool:
            nodes = cluster.api("GET", "/v1/nodes", replica=cluster.leader()).body["nodes"]
            return any(nd["name"] == "n1" for nd in nodes)
        wait_for(registered, 30, what="agent registered")
        time.sleep(s.settle_s)
        out["rss0_mb"], _ = idle_usage(agent.pid, 0.0)

        # 1. crash -> restart, restarted by the agent on its own
        record = root / "crash.txt"
        body = {"command": crash_argv(crash_py, record),
                "count": 1, "resources": {"cpu": s.instance_cpu, "memory_mb": 64},
                "restart": restart_always()}
        assert cluster.write("PUT", f"/v1/jobs/{NS}/crash", body).status == 200
        wait_for(lambda: starts_recorded(record) > s.crashes, 30 + s.crashes, interval=0.1,
                 what=f"{s.crashes} agent restarts")
        crash = crash_latencies(record)[:s.crashes]
        delete_job(cluster, "crash", agent.pid)

        # 2. N instances: submit -> all running according to the API
        time.sleep(s.settle_s)
        body = {"command": ["sleep", "3600"], "count": n,
                "resources": {"cpu": s.instance_cpu, "memory_mb": 16},
                "restart": {"policy": "on-failure", "backoff_s": 0, "backoff_max_s": 0}}
        lead = cluster.leader()
        t0 = time.perf_counter()
        assert cluster.write("PUT", f"/v1/jobs/{NS}/many", body, replica=lead).status == 200
        wait_for(lambda: len(running_allocs(cluster, "many")) == n, 300, interval=POLL_S,
                 what=f"{n} allocations running")
        out["start_s"] = time.perf_counter() - t0
        live = [p for p in descendants(agent.pid) if p.name() == "sleep"]
        if len(live) != n:
            log(f"warning: the API lists {n} running, the agent has {len(live)} sleep children")

        # 3. idle with N instances
        time.sleep(s.settle_s)
        out["rss_mb"], out["idle_cpu_pct"] = idle_usage(agent.pid, s.idle_s)
        delete_job(cluster, "many", agent.pid)
    return out, crash


async def _ensure_many(root: Path, n: int, cpu: float) -> float:
    def on_event(_ev: AllocationEvent) -> None:
        pass

    sup = Supervisor(root, on_event)
    policy = RestartSpec(policy=RestartPolicy.ON_FAILURE, backoff_s=0.0, backoff_max_s=0.0)
    specs = [AllocationSpec(alloc_id=f"b{i:04d}-{uuid.uuid4().hex[:8]}", command=["sleep", "3600"],
                      restart=policy, resources=Resources(cpu=cpu, memory_mb=16))
             for i in range(n)]
    children: list[psutil.Process] = []
    try:
        t0 = time.perf_counter()
        events = await asyncio.gather(*(sup.ensure(spec) for spec in specs))
        dt = time.perf_counter() - t0
        bad = [ev for ev in events if ev.state != "running"]
        if bad:
            raise RuntimeError(f"{len(bad)} of {n} did not start: {bad[0]}")
        return dt
    finally:
        children = descendants(os.getpid())
        await sup.stop_all()
        kill_leftovers(children)


def hac_ensure(root: Path, n: int, cpu: float) -> float:
    return asyncio.run(_ensure_many(root / "supervisor", n, cpu))


# ---------------------------------------------------------------------- runs


def one_run(s: Settings, run: int, root: Path, crash_py: Path, peer: PeerStatus,
            reaper: Reaper) -> RunResult:
    res = RunResult()

    def hac() -> None:
        log(f"run {run}: hacontrol Supervisor.ensure x{s.instances} (in-process)")
        ensure_s = hac_ensure(root / "hac", s.instances, s.instance_cpu)
        log(f"run {run}: hacontrol cluster + agent (crashes, {s.instances} instances, idle)")
        figs, crash = hac_cluster_side(root / "hac", crash_py, s)
        figs["ensure_s"] = ensure_s
        res.hac, res.crash_ms["hac"] = figs, crash

    def sup() -> None:
        log(f"run {run}: supervisord crashes")
        res.crash_ms["sup"] = supervisord.crash(peer, root / "sup-crash", crash_py,
                                                s.crashes, reaper)
        log(f"run {run}: supervisord {s.instances} programs, idle")
        res.sup = sup_many(peer, root / "sup-many", s.instances, s, reaper)

    for step in ((hac, sup) if run % 2 else (sup, hac)):
        step()
    for side in ("hac", "sup"):
        lat = res.crash_ms[side]
        figs = res.hac if side == "hac" else res.sup
        figs["crash_p50_ms"] = statistics.median(lat)
        figs["crash_p99_ms"] = pct(lat, 0.99)
    log(f"run {run}: hacontrol {fmt_figs(res.hac)}")
    log(f"run {run}: supervisord {fmt_figs(res.sup)}")
    return res


def fmt_figs(f: Figures) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in sorted(f.items()))


ROWS: list[tuple[str, str, str]] = [
    # key, label, format
    ("crash_p50_ms", "crash -> restart p50 (ms)", ".1f"),
    ("crash_p99_ms", "crash -> restart p99 (ms)", ".1f"),
    ("start_s", "start {n}: submit -> all running (s)", ".2f"),
    ("ensure_s", "start {n}: Supervisor.ensure only (s)", ".2f"),
    ("rss_mb", "RSS with {n} running (MB)", ".1f"),
    ("idle_cpu_pct", "idle CPU with {n} running (%)", ".2f"),
    ("rss0_mb", "RSS before starting them (MB)", ".1f"),
]

NOTES = {
    "start_s": "hacontrol: PUT job -> API lists all running; supervisord: startAllProcesses "
               "-> all RUNNING",
    "ensure_s": "hacontrol: Supervisor.ensure() x N in-process; supervisord: same figure "
                "as the row above",
    "rss0_mb": "hacontrol: agent registered, no allocation; supervisord: N programs "
               "configured, none started",
}


def summarize(results: list[RunResult], s: Settings) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for key, _, _ in ROWS:
        hac = [r.hac[key] for r in results if key in r.hac]
        sup = [r.sup[key] for r in results if key in r.sup]
        mh = statistics.median(hac) if hac else None
        ms = statistics.median(sup) if sup else None
        figures[key] = {"hacontrol": mh, "supervisord": ms,
                        "ratio": (mh / ms) if mh is not None and ms else None,
                        "runs": {"hacontrol": hac, "supervisord": sup}}
    pooled = {side: [x for r in results for x in r.crash_ms[side]] for side in ("hac", "sup")}
    return {
        "settings": vars(s),
        "figures": figures,
        "crash_all_trials_ms": {
            name: {"n": len(xs), "p50": statistics.median(xs), "p99": pct(xs, 0.99),
                   "min": min(xs), "max": max(xs)}
            for name, xs in (("hacontrol", pooled["hac"]), ("supervisord", pooled["sup"]))
            if xs},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_table(sm: dict[str, Any]) -> None:
    n = sm["settings"]["instances"]
    rows = [("figure", "hacontrol", "supervisord", "ratio")]
    for key, label, spec in ROWS:
        f = sm["figures"][key]
        rows.append((label.format(n=n), fmt(f["hacontrol"], spec), fmt(f["supervisord"], spec),
                     fmt(f["ratio"], ".2f")))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j])
                        for j, c in enumerate(r)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print(f"medians over {sm['settings']['runs']} run(s); ratio = hacontrol / supervisord; "
          f"CPU 100 % = one core ({sm['machine']['cpus']} cpus)")
    for key, label, spec in ROWS:
        runs = sm["figures"][key]["runs"]
        h = " ".join(fmt(x, spec) for x in runs["hacontrol"])
        u = " ".join(fmt(x, spec) for x in runs["supervisord"])
        print(f"  {label.format(n=n)}: per run hacontrol [{h}] supervisord [{u}]")
    for key, note in NOTES.items():
        print(f"  note {key}: {note}")
    for name, st in sm["crash_all_trials_ms"].items():
        print(f"  crash -> restart, all {st['n']} trials, {name}: p50 {st['p50']:.1f} "
              f"p99 {st['p99']:.1f} min {st['min']:.1f} max {st['max']:.1f} ms")


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        s = Settings(runs=1, instances=min(args.instances, 20), crashes=8, idle_s=3.0,
                     settle_s=0.5)
    else:
        s = Settings(runs=args.runs, instances=args.instances, crashes=40, idle_s=10.0,
                     settle_s=2.0)
    if args.crashes is not None:
        s.crashes = args.crashes
    s.instance_cpu = args.instance_cpu
    if args.idle_seconds is not None:
        s.idle_s = args.idle_seconds
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--crashes", type=int, default=None, help="restarts measured per side/run")
    ap.add_argument("--idle-seconds", type=float, default=None)
    ap.add_argument("--instance-cpu", type=float, default=1.0,
                    help="cpu (cores) of each hacontrol instance, i.e. its CFS quota; a tiny "
                         "quota throttles the start of the instances")
    ap.add_argument("--quick", action="store_true", help="1 run, 20 instances, < 60 s")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    s = settings_from(args)
    peer = ensure_supervisor_installed()
    reaper = Reaper()

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="hac-bench-agent-"))
    results: list[RunResult] = []
    try:
        crash_py = tmp / "crash.py"
        crash_py.write_text(CRASH_PROGRAM)
        for run in range(1, s.runs + 1):
            results.append(one_run(s, run, tmp / f"run{run}", crash_py, peer, reaper))
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    finally:
        reaper.stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sm = summarize(results, s)
    if args.json:
        print(json.dumps(sm, indent=2))
    else:
        print_table(sm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
