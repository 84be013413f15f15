"""Process harness for the raft integration tests: real processes, real sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hacontrol.raft.keys import generate_secret
from tests.integration.harness import free_ports

T = TypeVar("T")

HELPER = Path(__file__).with_name("kv_node.py")
# One fixed secret so attack tests can encrypt frames; clusters may override it.
SECRET = generate_secret()


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``fn`` until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})")


@dataclass
class Node:
    node_id: str
    raft_port: int
    http_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def raft_addr(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    root: Path
    size: int = 3
    compaction_min_entries: int = 5000
    env: dict[str, str] = field(default_factory=dict)
    secret: str = SECRET
    # Per-node secrets (by index) overriding `secret`, for rotation tests.
    node_secrets: dict[int, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            nid = f"n{i}"
            self.nodes.append(
                Node(
                    node_id=nid,
                    raft_port=ports[2 * i],
                    http_port=ports[2 * i + 1],
                    data_dir=self.root / nid,
                    log_path=self.root / f"{nid}.log",
                )
            )

    # ---- processes ----------------------------------------------------------

    def start(self, i: int) -> None:
        node = self.nodes[i]
        assert not node.alive(), f"{node.node_id} already running"
        cmd = [
            sys.executable,
            str(HELPER),
            "--node-id", node.node_id,
            "--raft", node.raft_addr,
            "--data-dir", str(node.data_dir),
            "--http-port", str(node.http_port),
            "--compaction-min-entries", str(self.compaction_min_entries),
        ]  # fmt: skip
        for other in self.nodes:
            if other is not node:
                cmd += ["--peer", other.raft_addr]
        secret = self.node_secrets.get(i, self.secret)
        env = dict(os.environ, HC_RAFT_SECRET=secret, **self.env)
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def start_all(self) -> None:
        for i in range(self.size):
            self.start(i)
        for i in range(self.size):
            self.wait_http(i)

    def wait_http(self, i: int, timeout: float = 15.0) -> None:
        def up() -> bool:
            if not self.nodes[i].alive():
                raise AssertionError(f"{self.nodes[i].node_id} exited:\n{self.log(i)}")
            return self.status(i) is not None

        wait_for(up, timeout, f"{self.nodes[i].node_id} http")

    def signal(self, i: int, sig: int) -> None:
        os.kill(self.nodes[i].pid, sig)

    def kill(self, i: int) -> None:
        node = self.nodes[i]
        if node.alive():
            assert node.proc is not None
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=10)

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                try:
                    os.kill(node.proc.pid, signal.SIGCONT)
                    os.kill(node.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                node.proc.wait(timeout=10)

    def log(self, i: int) -> str:
        try:
            return self.nodes[i].log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    # ---- control interface ----------------------------------------------------

    def _http(self, i: int, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        url = f"http://127.0.0.1:{self.nodes[i].http_port}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            return self._http(i, "GET", "/status", timeout=2.0)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return None

    def submit(self, i: int, timeout: float = 5.0, retry: bool = True, **cmd: Any) -> Any:
        body = dict(cmd, timeout=timeout, retry=retry)
        return self._http(i, "POST", "/submit", body, timeout=timeout + 5)

    def set(self, i: int, key: str, value: Any, timeout: float = 5.0) -> Any:
        return self.submit(i, timeout=timeout, op="set", k=key, v=value)

    def read(self, i: int, barrier: bool = True) -> Any:
        return self._http(i, "GET", "/read?barrier=1" if barrier else "/read")

    def compact(self, i: int) -> None:
        self._http(i, "POST", "/compact", {})

    def leader(self, among: list[int] | None = None, timeout: float = 10.0) -> int:
        """Index of the node every live member agrees is leader."""
        among = [i for i in (among or range(self.size)) if self.nodes[i].alive()]
        addr_to_idx = {n.raft_addr: i for i, n in enumerate(self.nodes)}

        def agreed() -> int | None:
            sts = [self.status(i) for i in among]
            if any(s is None for s in sts):
                return None
            leaders = {s["leader"] for s in sts if s is not None}
            if len(leaders) != 1:
                return None
            (addr,) = leaders
            idx = addr_to_idx.get(addr)
            if idx is None or idx not in among:
                return None
            st = sts[among.index(idx)]
            if st is None or st["role"] != "leader":
                return None
            return idx + 1  # truthy even for node 0

        return wait_for(agreed, timeout, "an agreed leader") - 1
