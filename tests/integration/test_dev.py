"""`hacontrol dev`: a whole cluster in one command, stopped cleanly, restarted with its state."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from .harness import free_ports, http, pid_alive, wait_for


def port_base(n: int) -> int:
    """A base port such that base+1..base+n are free now."""
    for _ in range(50):
        base = random.randrange(20000, 40000)
        wanted = set(range(base + 1, base + n + 1))
        if wanted.isdisjoint(_used_ports()):
            return base
    return free_ports(1)[0]


def _used_ports() -> set[int]:
    return {c.laddr.port for c in psutil.net_connections("tcp") if c.laddr}


def start_dev(data: Path, api: int, raft: int, agent: int) -> subprocess.Popen[bytes]:
    log = open(data.parent / "dev.out", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "hacontrol", "dev", "--data-dir", str(data), "--replicas", "3",
         "--agents", "1", "--api-port", str(api), "--raft-port", str(raft),
         "--agent-port", str(agent)], stdout=log, stderr=subprocess.STDOUT)


def stop_dev(proc: subprocess.Popen[bytes], state: dict) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for child in state.get("replicas", []) + state.get("agents", []):  # belt and braces
        if child.get("pid") and pid_alive(child["pid"]):
            os.kill(child["pid"], signal.SIGKILL)


def test_dev_runs_a_cluster_and_stops_without_orphans(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    api, raft, agent = port_base(3), port_base(3), port_base(1)
    proc = start_dev(data, api, raft, agent)
    state: dict = {}
    job_pid = None
    try:
        state = wait_for(lambda: json.loads((data / "dev.json").read_text()), 30,
                         what="dev.json")
        token = (data / "token").read_text().strip()
        assert (data / "secret").stat().st_mode & 0o077 == 0
        url = f"http://127.0.0.1:{api + 1}"
        wait_for(lambda: http("GET", f"{url}/v1/health/ready").status == 200, 60,
                 what="dev cluster ready")
        # dev's own readiness probe and leader question found the cluster too.
        def banner() -> str | None:
            text = (tmp_path / "dev.out").read_text()
            return text if "cluster ready" in text else None
        assert "(3 replicas, 1 agent, leader c" in wait_for(banner, 30, what="dev banner")
        job_file = tmp_path / "web.yaml"
        job_file.write_text("command: [sleep, '600']\ncount: 1\nresources: {cpu: 0.1}\n")
        env = {**os.environ, "HACONTROL_ADDR": url, "HACONTROL_TOKEN": token}
        out = subprocess.run([sys.executable, "-m", "hacontrol", "job", "run", str(job_file),
                              "--name", "web"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr

        def running_pid() -> int | None:
            allocs = http("GET", f"{url}/v1/allocations", token=token).body["allocations"]
            pids = [a["pid"] for a in allocs if a["state"] == "running"]
            return pids[0] if pids and pid_alive(pids[0]) else None
        job_pid = wait_for(running_pid, 30, what="job running")
        # The agents start once the cluster is ready; dev.json lists them from then on.
        state = json.loads((data / "dev.json").read_text())
        pids = [c["pid"] for c in state["replicas"] + state["agents"]]
        # The agent joined with an introduction token of its own, never the management
        # token: its command line names no token file, and its node credential is private.
        started = (data / "logs" / "n1.log").read_text().splitlines()[0]
        assert "--intro-token-file" in started and "--token-file" not in started, started
        assert (data / "intro" / "n1").stat().st_mode & 0o777 == 0o600
        assert (data / "n1" / "node-credential").stat().st_mode & 0o777 == 0o600
        assert token not in (data / "n1" / "node-credential").read_text()
        assert all(pid_alive(p) for p in pids)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for p in pids + [job_pid]:
            assert not pid_alive(p), f"pid {p} survived hacontrol dev"

        # Same data dir: same token, and the job is back and running again.
        proc = start_dev(data, api, raft, agent)
        state = wait_for(lambda: json.loads((data / "dev.json").read_text()), 30,
                         what="dev.json after restart")
        assert (data / "token").read_text().strip() == token
        wait_for(lambda: http("GET", f"{url}/v1/health/ready").status == 200, 60,
                 what="dev cluster ready after restart")
        job = http("GET", f"{url}/v1/jobs/default/web", token=token)
        assert job.status == 200 and job.body["job"]["count"] == 1
        job_pid = wait_for(running_pid, 30, what="job running after restart")
    finally:
        stop_dev(proc, state)
        if job_pid and pid_alive(job_pid):
            os.kill(job_pid, signal.SIGKILL)
            raise AssertionError("job process survived")
