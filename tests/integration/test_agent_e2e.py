"""Agents running real OS processes for a real 3-replica cluster."""

from __future__ import annotations

import os
import uuid

import psutil

from .harness import Cluster, pid_alive, wait_for


def job(marker: str, count: int = 1, **extra: object) -> dict:
    # The marker in argv lets the test find exactly the processes it caused.
    return {"command": ["sleep", "600"],
            "env": {"MARKER": marker}, "count": count,
            "resources": {"cpu": 0.1, "memory_mb": 16},
            "restart": {"policy": "on-failure", "backoff_s": 0.0, "backoff_max_s": 0.0},
            "stop": {"signal": "SIGTERM", "timeout_s": 2.0}, **extra}


def processes_with(marker: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("MARKER") == marker and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def running(c: Cluster, name: str, n: int) -> list[dict] | None:
    allocs = [a for a in c.allocs(name) if a["state"] == "running" and a["desired"] == "run"]
    return allocs if len(allocs) == n and all(pid_alive(a["pid"]) for a in allocs) else None


def test_agent_runs_restarts_and_stops_a_real_process(cluster: Cluster) -> None:
    marker = uuid.uuid4().hex
    cluster.start_agent("n1")
    assert cluster.write("PUT", "/v1/jobs/default/web", job(marker)).status == 200
    (alloc,) = wait_for(lambda: running(cluster, "web", 1), 20, what="allocation running")
    assert alloc["node"] == "n1"
    proc = psutil.Process(alloc["pid"])
    assert proc.cmdline()[0] == "sleep"
    assert os.getpgid(proc.pid) == proc.pid  # its own process group
    assert proc.environ()["HACONTROL_ALLOC_ID"] == alloc["id"]

    # Crash it: the agent notices and restarts it, and the cluster records the restart.
    proc.kill()
    restarted = wait_for(lambda: [a for a in (running(cluster, "web", 1) or [])
                                  if a["pid"] != alloc["pid"] and a["restarts"] >= 1],
                         20, what="restart after crash")
    assert restarted[0]["id"] == alloc["id"]
    assert len(processes_with(marker)) == 1

    # Stop the job: the process goes, then the job itself.
    new_pid = restarted[0]["pid"]
    assert cluster.write("DELETE", "/v1/jobs/default/web").status == 200
    wait_for(lambda: not pid_alive(new_pid), 20, what="process stopped")
    wait_for(lambda: cluster.api("GET", "/v1/jobs/default/web").status == 404, 20,
             what="job removed")
    assert processes_with(marker) == []


def test_processes_keep_running_across_leader_failover(cluster: Cluster) -> None:
    marker = uuid.uuid4().hex
    cluster.start_agent("n1")
    cluster.write("PUT", "/v1/jobs/default/web", job(marker, count=2))
    before = wait_for(lambda: running(cluster, "web", 2), 20, what="two running")
    pids = sorted(a["pid"] for a in before)
    cluster.leader().proc.kill9()
    new_leader = cluster.leader()
    assert all(pid_alive(p) for p in pids)
    # The new leader picks up where the old one stopped: scale up is placed and started.
    assert cluster.write("POST", "/v1/jobs/default/web/scale", {"count": 3}).status == 200
    after = wait_for(lambda: running(cluster, "web", 3), 20, what="three running")
    assert set(pids) <= {a["pid"] for a in after}
    assert len(processes_with(marker)) == 3
    assert new_leader.proc.alive()


def test_agent_restart_readopts_without_duplicates(cluster: Cluster) -> None:
    marker = uuid.uuid4().hex
    agent = cluster.start_agent("n1")
    cluster.write("PUT", "/v1/jobs/default/web", job(marker, count=2))
    before = wait_for(lambda: running(cluster, "web", 2), 20, what="two running")
    agent.kill9()
    assert all(pid_alive(a["pid"]) for a in before)
    cluster.start_agent("n1")
    # Still supervised after re-adoption: a crash is restarted, no duplicate appears.
    victim = psutil.Process(before[0]["pid"])
    wait_for(lambda: len(processes_with(marker)) == 2, 10, what="processes kept")
    # Give the new agent a sync with the leader before testing supervision.
    wait_for(lambda: running(cluster, "web", 2), 20, what="still two running")
    victim.kill()
    wait_for(lambda: [a for a in (running(cluster, "web", 2) or [])
                      if a["id"] == before[0]["id"] and a["pid"] != victim.pid], 20,
             what="re-adopted process restarted")
    assert len(processes_with(marker)) == 2


def test_dead_node_work_moves_to_another_node(cluster: Cluster) -> None:
    marker = uuid.uuid4().hex
    a1 = cluster.start_agent("n1", cpu=1.0)
    cluster.write("PUT", "/v1/jobs/default/web", job(marker, count=2))
    wait_for(lambda: running(cluster, "web", 2), 20, what="running on n1")
    cluster.start_agent("n2", cpu=1.0)
    wait_for(lambda: len(cluster.api("GET", "/v1/nodes").body["nodes"]) == 2, 10,
             what="second node registered")
    orphans = processes_with(marker)
    a1.kill9()
    try:
        moved = wait_for(lambda: [a for a in (running(cluster, "web", 2) or [])
                                  if a["node"] == "n2"] or None, 30, what="replacements on n2")
        assert len(moved) == 2
        nodes = {n["name"]: n["status"] for n in cluster.api("GET", "/v1/nodes").body["nodes"]}
        assert nodes == {"n1": "down", "n2": "ready"}
        assert len(processes_with(marker)) == 4  # n1's processes outlived their agent
        # n1 comes back: its old instances were replaced, so its agent stops them.
        cluster.start_agent("n1", cpu=1.0)
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                 for p in orphans), 20, what="n1's replaced processes stopped")
        assert {a["pid"] for a in running(cluster, "web", 2) or []} == {a["pid"] for a in moved}
    finally:
        for p in orphans:
            if p.is_running():
                p.kill()
