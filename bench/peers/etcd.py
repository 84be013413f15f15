"""etcd (Debian's etcd-server): three members on loopback, driven through its v3 JSON
gateway (`/v3/kv/put`, `/v3/kv/range`) by the same aiohttp client as hacontrol's API.

fsync stays on (etcd's default); the heartbeat and election timeouts are etcd's defaults
(100 ms / 1000 ms) unless tuned ones are given.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

from bench.measure.http_load import Request
from bench.measure.procs import Reaper
from bench.peers.base import Log, PeerStatus, apt_peer
from tests.integration.harness import free_ports, wait_for

JSON = {"Content-Type": "application/json"}


def find(install: bool, log: Log) -> PeerStatus:
    return apt_peer("etcd", "etcd-server", "etcd", install, log)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def put_request(key: str, value: bytes) -> Request:
    body = json.dumps({"key": b64(key.encode()), "value": b64(value)}).encode()
    return Request("POST", "/v3/kv/put", body, JSON)


def range_request(key: str) -> Request:
    # serializable false: a linearizable read (etcd's ReadIndex round), as hacontrol's GET
    body = json.dumps({"key": b64(key.encode()), "serializable": False}).encode()
    return Request("POST", "/v3/kv/range", body, JSON)


def _post(url: str, body: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=JSON,
                                 method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out: dict[str, Any] = json.loads(resp.read())
        return out


class EtcdCluster:
    """Three etcd members as children of this process, data under `root`."""

    def __init__(self, exe: Path, root: Path, reaper: Reaper,
                 heartbeat_ms: int | None = None, election_ms: int | None = None) -> None:
        self.exe, self.root, self.reaper = exe, root, reaper
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(6)
        self.names = ["e1", "e2", "e3"]
        self.client = {n: ports[2 * i] for i, n in enumerate(self.names)}
        self.peer = {n: ports[2 * i + 1] for i, n in enumerate(self.names)}
        self.tuning: list[str] = []
        if heartbeat_ms is not None and election_ms is not None:
            self.tuning = [f"--heartbeat-interval={heartbeat_ms}",
                           f"--election-timeout={election_ms}"]
        self.pids: dict[str, int] = {}
        self.killed: dict[str, int] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.client[name]}"

    def argv(self, name: str, state: str) -> list[str]:
        cluster = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        return [str(self.exe), f"--name={name}", f"--data-dir={self.root / name}",
                f"--listen-client-urls={self.url(name)}",
                f"--advertise-client-urls={self.url(name)}",
                f"--listen-peer-urls=http://127.0.0.1:{self.peer[name]}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer[name]}",
                f"--initial-cluster={cluster}", f"--initial-cluster-state={state}",
                "--initial-cluster-token=hacontrol-bench", "--logger=zap",
                "--log-outputs=stderr", *self.tuning]

    def start_member(self, name: str, state: str = "new") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        popen = self.reaper.spawn(f"etcd {name}", self.argv(name, state),
                                  self.root / f"{name}.log", env=env)
        self.pids[name] = popen.pid

    def start(self) -> None:
        for n in self.names:
            self.start_member(n)
        wait_for(self.all_healthy, 60, interval=0.1, what="etcd members healthy")
        self.leader()

    def stop(self) -> None:
        for n in list(self.pids):
            self.reaper.stop(self.pids.pop(n))
        for n in list(self.killed):
            self.reaper.stop(self.killed.pop(n))

    def status(self, name: str) -> dict[str, Any] | None:
        try:
            return _post(self.url(name) + "/v3/maintenance/status", {})
        except (OSError, ValueError):
            return None

    def all_healthy(self) -> bool:
        for n in self.pids:
            try:
                with urllib.request.urlopen(self.url(n) + "/health", timeout=2) as resp:
                    if json.loads(resp.read()).get("health") not in ("true", True):
                        return False
            except (OSError, ValueError):
                return False
        return True

    def leader(self, timeout: float = 30.0) -> str:
        """The member name that its own status reports as the leader."""
        def find() -> str | None:
            for n in self.pids:
                st = self.status(n)
                if st and st.get("leader") and st["leader"] == st["header"]["member_id"]:
                    return n
            return None
        return str(wait_for(find, timeout, interval=0.05, what="an etcd leader"))

    def urls_leader_first(self) -> list[str]:
        lead = self.leader()
        return [self.url(lead)] + [self.url(n) for n in self.names if n != lead]

    def kill9(self, name: str) -> None:
        """SIGKILL only (it runs on the client's event loop at the moment measured from);
        `restart` reaps the member."""
        self.killed[name] = self.pids.pop(name)
        os.kill(self.killed[name], signal.SIGKILL)

    def restart(self, name: str) -> None:
        self.reaper.stop(self.killed.pop(name))
        self.start_member(name, "existing")
        wait_for(self.all_healthy, 60, interval=0.05, what=f"etcd {name} back")
        self.leader()
