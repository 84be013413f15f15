"""Agent rows: hacontrol's node agent against supervisord, circus and PM2.

hacontrol runs as a real 3-replica cluster plus one agent (tests/integration/harness.py),
driven through its HTTP API only: the crash program as a job with `restart: always` and no
backoff (the agent restarts it on its own), then `sleep 3600` with count 200 (submit ->
the API lists 200 running; then the agent's RSS and CPU over a quiet window), then with
count 1,000 on the same agent. Each peer runs the same programs under its own daemon.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure.clusters import cluster_in
from bench.measure.crash import crash_argv, crash_latencies, starts_recorded
from bench.measure.procs import descendants, log
from bench.measure.table import BASELINE, HACONTROL, Row, RowSpec, median
from bench.peers.daemon import Figures, ManySettings, measure_many
from tests.integration.harness import Cluster, wait_for

NS = "default"

SPECS = [
    RowSpec("crash_p50", "crash -> restart p50", "ms", "lower", ".1f"),
    RowSpec("start_small", "start {small}: submit -> all running", "s", "lower", ".2f"),
    RowSpec("start_large", "start {large}: submit -> all running", "s", "lower", ".2f"),
    RowSpec("rss", "daemon RSS, {small} running", "MB", "lower", ".1f"),
    RowSpec("idle_cpu", "daemon idle CPU, {small} running", "% core", "lower", ".2f"),
]


@dataclass
class AgentSettings:
    crashes: int
    small: int
    large: int
    settle_s: float
    idle_s: float
    limit_s: float  # per start measurement; past it the figure is reported as a timeout
    # cores per hacontrol instance (its CFS quota; a tiny one throttles the exec wrapper's
    # start, see bench/README.md)
    instance_cpu: float = 1.0


def make_rows(s: AgentSettings) -> dict[str, Row]:
    return {x.key: Row(RowSpec(x.key, x.label.format(small=s.small, large=s.large), x.unit,
                               x.better, x.spec, x.note)) for x in SPECS}


def brief(crash_ms: list[float], small: Figures, large: Figures) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3g}"
    return (f"crash p50 {f(median(crash_ms))} ms; start small {f(small.get('start_s'))} s, "
            f"RSS {f(small.get('rss_mb'))} MB, idle CPU {f(small.get('idle_cpu_pct'))} %; "
            f"start large {f(large.get('start_s'))} s (- = timed out or not reached)")


def record(rows: dict[str, Row], system: str, crash_ms: list[float], small: Figures,
           large: Figures) -> None:
    rows["crash_p50"].add(system, median(crash_ms))
    rows["start_small"].add(system, small.get("start_s"))
    rows["start_large"].add(system, large.get("start_s"))
    rows["rss"].add(system, small.get("rss_mb"))
    rows["idle_cpu"].add(system, small.get("idle_cpu_pct"))


# ------------------------------------------------------------------ hacontrol


def _running(cluster: Cluster, job: str) -> int:
    """Instances of `job` running as the control plane knows them. Read from the job list's
    counts, not from the job's 1,000 allocations: polled every 50 ms, rendering those cost
    the leader about a second of CPU over a start of 1,000, taken from the very start
    being timed. (Each measured job is new: all its allocations are of its first version
    and desired to run.)"""
    resp = cluster.api("GET", f"/v1/jobs?namespace={NS}", replica=cluster.leader())
    assert resp.status == 200, resp
    found = [j for j in resp.body["jobs"] if j["name"] == job]
    return int(found[0]["counts"].get("running", 0)) if found else 0


def _delete(cluster: Cluster, job: str, agent_pid: int, timeout: float) -> None:
    assert cluster.write("DELETE", f"/v1/jobs/{NS}/{job}").status == 200
    wait_for(lambda: cluster.api("GET", f"/v1/jobs/{NS}/{job}").status == 404, timeout,
             interval=0.1, what=f"job {job} removed")
    wait_for(lambda: not descendants(agent_pid), timeout, interval=0.1,
             what=f"processes of {job} gone")


def _submit_many(cluster: Cluster, agent_pid: int, job: str, s: AgentSettings,
                 n: int, idle: bool) -> Figures:
    body = {"command": ["sleep", "3600"], "count": n,
            "resources": {"cpu": s.instance_cpu, "memory_mb": 16},
            "restart": {"policy": "on-failure", "backoff_s": 0, "backoff_max_s": 0}}
    lead = cluster.leader()

    def trigger() -> None:
        assert cluster.write("PUT", f"/v1/jobs/{NS}/{job}", body, replica=lead).status == 200
    ms = ManySettings(n, s.settle_s, s.idle_s if idle else 0.0, s.limit_s)
    return measure_many(agent_pid, trigger, lambda: _running(cluster, job) >= n, ms)


def hacontrol_side(root: Path, crash_py: Path, s: AgentSettings,
                   profiler: Callable[[int, str], Callable[[], None]] | None
                   ) -> tuple[list[float], Figures, Figures]:
    with cluster_in(root / "cluster") as cluster:
        agent = cluster.start_agent("n1", cpu=max(64.0, (s.large + 8) * s.instance_cpu),
                                    memory_mb=max(100_000, (s.large + 64) * 16))
        wait_for(lambda: any(nd["name"] == "n1" for nd in cluster.api(
            "GET", "/v1/nodes", replica=cluster.leader()).body["nodes"]), 30,
            what="agent registered")
        rec = root / "crash.txt"
        body = {"command": crash_argv(crash_py, rec), "count": 1,
                "resources": {"cpu": s.instance_cpu, "memory_mb": 64},
                "restart": {"policy": "always", "backoff_s": 0, "backoff_max_s": 0,
                            "max_restarts": 1_000_000, "window_s": 1, "min_uptime_s": 0}}
        assert cluster.write("PUT", f"/v1/jobs/{NS}/crash", body).status == 200
        wait_for(lambda: starts_recorded(rec) > s.crashes, 30 + 3 * s.crashes, interval=0.1,
                 what=f"{s.crashes} agent restarts")
        crash = crash_latencies(rec)[:s.crashes]
        _delete(cluster, "crash", agent.pid, 60)
        stop_prof = profiler(agent.pid, "agent-start-idle") if profiler else None
        try:
            small = _submit_many(cluster, agent.pid, "small", s, s.small, idle=True)
        finally:
            if stop_prof:
                stop_prof()
        if small.get("start_s") is not None:
            _delete(cluster, "small", agent.pid, max(60.0, s.limit_s))
            large = _submit_many(cluster, agent.pid, "large", s, s.large, idle=False)
        else:
            large = {"start_s": None}
        return crash, small, large


def run_hacontrol(root: Path, crash_py: Path, s: AgentSettings, rows: dict[str, Row],
                  profiler: Callable[[int, str], Callable[[], None]] | None,
                  tree: Path | None = None) -> None:
    """`tree`: another checkout whose hacontrol runs the cluster and the agent instead of
    this one's (recorded as BASELINE)."""
    name = HACONTROL if tree is None else BASELINE
    log(f"agents: {name} (cluster + agent; {s.crashes} crashes, {s.small}, {s.large})")
    t0 = time.monotonic()
    with code_from(tree):
        crash, small, large = hacontrol_side(root, crash_py, s, profiler)
    log(f"  {name}: {brief(crash, small, large)} ({time.monotonic() - t0:.0f} s)")
    record(rows, name, crash, small, large)


@contextlib.contextmanager
def code_from(tree: Path | None) -> Iterator[None]:
    """Replicas and agents started meanwhile (`python -m hacontrol`, which puts the
    working directory first on its path) run `tree`'s hacontrol."""
    if tree is None:
        yield
        return
    cwd, path = os.getcwd(), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    os.chdir(tree)
    try:
        yield
    finally:
        os.chdir(cwd)
        if path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = path


# ----------------------------------------------------------------------- peers


def run_peer(name: str, module: Any, peer: Any, root: Path, crash_py: Path,
             s: AgentSettings, rows: dict[str, Row], reaper: Any) -> None:
    log(f"agents: {name}")
    t0 = time.monotonic()
    crash = module.crash(peer, root / "crash", crash_py, s.crashes, reaper)
    small = module.many(peer, root / "small", ManySettings(s.small, s.settle_s, s.idle_s,
                                                           s.limit_s), reaper)
    large = module.many(peer, root / "large", ManySettings(s.large, s.settle_s, 0.0,
                                                           s.limit_s), reaper)
    log(f"  {name}: {brief(crash, small, large)} ({time.monotonic() - t0:.0f} s)")
    record(rows, name, crash, small, large)

