"""What a running agent process loads: its link and its own API work without aiohttp
(the controllers' HTTP library, a third of the agent's memory when it was loaded)."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from hacontrol.acl.secrets import controller_credential

from .harness import Cluster, free_ports, pid_alive, wait_for

# aiohttp and the libraries only it brings (each ships compiled modules here, which show
# in the process's memory maps once imported).
CONTROLLER_ONLY = ("aiohttp", "multidict", "yarl", "frozenlist", "propcache", "aiosignal")


def mapped_packages(pid: int) -> set[str]:
    """The site-packages packages whose files the process has mapped (its compiled
    modules, read from /proc/PID/maps)."""
    out = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        path = fields[5] if len(fields) == 6 else ""
        if "-packages/" in path:
            out.add(path.split("-packages/", 1)[1].split("/", 1)[0])
    return out


def get_text(url: str, token: str) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read().decode()


def test_the_agent_runs_and_serves_without_aiohttp(cluster: Cluster) -> None:
    port = free_ports(1)[0]
    agent = cluster.start_agent("n1", port=port)
    job = {"command": [sys.executable, "-c",
                       "import time; print('hello from the job', flush=True); "
                       "time.sleep(600)"],
           "count": 1, "resources": {"cpu": 0.1, "memory_mb": 16}}
    assert cluster.write("PUT", "/v1/jobs/default/lean", job).status == 200

    def running() -> dict | None:
        allocs = [a for a in cluster.allocs("lean") if a["state"] == "running"]
        return allocs[0] if allocs and pid_alive(allocs[0]["pid"]) else None
    alloc = wait_for(running, 30, what="the allocation running (the agent's link works)")
    # The agent's own API, through a controller (its aiohttp client) and directly.
    leader = cluster.leader()
    wait_for(lambda: "hello from the job" in get_text(
        f"{leader.api}/v1/allocations/{alloc['id']}/logs?tail=5", cluster.token)[1], 15,
        what="the allocation's log, fetched from its agent by a controller")
    status, metrics = get_text(f"http://127.0.0.1:{port}/metrics",
                               controller_credential(cluster.secret))
    assert status == 200 and "hacontrol_agent_allocations 1.0" in metrics

    loaded = mapped_packages(agent.pid)
    assert not loaded & set(CONTROLLER_ONLY), sorted(loaded)
    # The check sees such a library where it is loaded: in a controller replica.
    assert "aiohttp" in mapped_packages(leader.proc.pid)
