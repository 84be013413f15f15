"""A real cluster for tests: replicas and agents as OS processes on loopback.

Every process is started by this harness and stopped by it, by pid, even when a test fails.
Waiting is always polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from hacontrol.raft.keys import generate_secret

T = TypeVar("T")


def skip_or_fail(reason: str) -> None:
    """Skip a test whose host lacks something, or fail under HACONTROL_TEST_ALL=1 (CI)."""
    import pytest

    if os.environ.get("HACONTROL_TEST_ALL") == "1":
        pytest.fail(f"HACONTROL_TEST_ALL=1 but {reason}")
    pytest.skip(reason)


def require_netns() -> None:
    from chaos.cluster.netns import BackendUnavailable, check_tools
    try:
        check_tools()
    except BackendUnavailable as exc:
        skip_or_fail(str(exc))


@contextlib.contextmanager
def silenced(port_a: int, port_b: int) -> Any:
    """Drop every loopback TCP packet between local ports `port_a` and `port_b`, both ways,
    while the block runs: one connection's path goes silent, as under a partition or a power
    cut, while its sockets stay open. nftables in a table of this test's own, deleted on
    the way out; needs root and `nft` (skipped without them, failed under
    HACONTROL_TEST_ALL=1)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("nft") is None:
        skip_or_fail("dropping packets needs root and nft")
    table = f"hacontrol_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    def nft(*args: str) -> None:
        subprocess.run(["nft", *args], check=True, capture_output=True, timeout=10)

    nft("add", "table", "inet", table)
    try:
        nft("add", "chain", "inet", table, "input",
            "{ type filter hook input priority -10 ; policy accept ; }")
        for a, b in ((port_a, port_b), (port_b, port_a)):
            nft("add", "rule", "inet", table, "input", "iifname", "lo", "tcp", "sport",
                str(a), "tcp", "dport", str(b), "drop")
        yield
    finally:
        nft("delete", "table", "inet", table)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(pred: Callable[[], T], timeout: float = 15.0, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll `pred` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # the thing polled may not be up yet
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


def http(method: str, url: str, body: Any = None, token: str | None = None,
         headers: dict[str, str] | None = None, timeout: float = 10.0,
         context: ssl.SSLContext | None = None) -> Response:
    data = None if body is None else (body if isinstance(body, bytes) else
                                      json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            raw = resp.read()
            return Response(resp.status, json.loads(raw) if raw else None, dict(resp.headers))
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Response(err.code, parsed, dict(err.headers))


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        out = open(self.log, "ab")
        self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        out.close()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


@dataclass
class Replica:
    id: str
    raft_port: int
    api_port: int
    proc: Proc
    scheme: str = "http"

    @property
    def api(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.api_port}"


@dataclass
class Cluster:
    root: Path
    size: int = 3
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    secret: str = field(default_factory=generate_secret)
    replicas: list[Replica] = field(default_factory=list)
    agents: dict[str, Proc] = field(default_factory=dict)
    extra_server_args: list[str] = field(default_factory=list)
    # False: the replicas get no token to bootstrap with (the cluster starts locked).
    configured_token: bool = True
    # Mutual TLS everywhere (a CA and server, agent and cli certificates under root/tls);
    # False runs plain HTTP with --insecure-http.
    tls: bool = False
    # Replica ids are this followed by 1, 2, ...
    id_prefix: str = "c"

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name, value in (("token", self.token), ("secret", self.secret)):
            (self.root / name).write_text(value)
            os.chmod(self.root / name, 0o600)  # daemons refuse secrets others can read
        if self.tls:
            from hacontrol.tls.pki import create_ca, create_cert
            from hacontrol.tls.roles import Role
            d = self.root / "tls"
            d.mkdir(exist_ok=True)
            ca = create_ca(d)
            for role in Role:
                create_cert(ca, role, d)
        ports = free_ports(2 * self.size)
        for i in range(self.size):
            rid = f"{self.id_prefix}{i + 1}"
            self.replicas.append(Replica(rid, ports[2 * i], ports[2 * i + 1], None,  # type: ignore[arg-type]
                                         "https" if self.tls else "http"))
        for r in self.replicas:
            peers = []
            for o in self.replicas:
                if o is not r:
                    peers += ["--peer", f"{o.id}=127.0.0.1:{o.raft_port}={o.api}"]
            argv = [sys.executable, "-m", "hacontrol", "server", "--id", r.id,
                    "--data-dir", str(self.root / r.id),
                    "--raft", f"127.0.0.1:{r.raft_port}",
                    "--api", f"127.0.0.1:{r.api_port}", *peers,
                    "--secret-file", str(self.root / "secret"),
                    *(["--token-file", str(self.root / "token")] if self.configured_token
                      else []),
                    *self.tls_args("server"),
                    *self.extra_server_args]
            r.proc = Proc(r.id, argv, self.root / f"{r.id}.log")

    def tls_args(self, role: str) -> list[str]:
        """The TLS flags of a daemon of `role` ("server" or "agent")."""
        if not self.tls:
            return ["--insecure-http"] if role == "server" else []
        d = self.root / "tls"
        return ["--tls-ca", str(d / "ca.pem"), "--tls-cert", str(d / f"{role}.pem"),
                "--tls-key", str(d / f"{role}-key.pem")]

    @property
    def client_tls(self) -> ssl.SSLContext | None:
        """A client context trusting the cluster's CA, with the cli certificate."""
        if not self.tls:
            return None
        d = self.root / "tls"
        ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
        ctx.load_cert_chain(str(d / "cli.pem"), str(d / "cli-key.pem"))
        return ctx

    # -------------------------------------------------------------- lifecycle

    def start(self, wait: bool = True) -> Cluster:
        for r in self.replicas:
            r.proc.start()
        if wait:
            self.wait_ready()
        return self

    def start_agent(self, name: str, cpu: float = 4.0, memory_mb: int = 4096,
                    labels: dict[str, str] | None = None, port: int | None = None,
                    default_user: str | None = "root",
                    intro_token_file: Path | None = None) -> Proc:
        """Start (or restart) an agent; it joins with `intro_token_file` when given, else
        introduces itself with the cluster's management token. `default_user` None leaves
        the agent's own default (nobody as root). Tests' jobs run the test interpreter and
        write to pytest's temporary directories, which only root may reach here, so by
        default they keep running as root."""
        credential = (["--intro-token-file", str(intro_token_file)] if intro_token_file
                      else ["--token-file", str(self.root / "token")])
        argv = [sys.executable, "-m", "hacontrol", "agent", "--name", name,
                "--data-dir", str(self.root / name),
                "--controllers", ",".join(r.api for r in self.replicas),
                *credential, *self.tls_args("agent"),
                "--cpu", str(cpu), "--memory-mb", str(memory_mb),
                "--port", str(port if port is not None else free_ports(1)[0])]
        for k, v in (labels or {}).items():
            argv += ["--label", f"{k}={v}"]
        if default_user is not None and os.geteuid() == 0:
            argv += ["--default-user", default_user]
        proc = self.agents.get(name) or Proc(name, argv, self.root / f"{name}.log")
        proc.start()
        self.agents[name] = proc
        return proc

    def stop(self) -> None:
        for a in self.agents.values():
            a.stop()
        # An agent killed during the test leaves the cgroups of its allocations (its
        # processes are stopped by pid); its data dir goes with the test, so no agent
        # would ever sweep them.
        from hacontrol.agent.supervisor import sweep_leftovers
        for name in self.agents:
            sweep_leftovers(self.root / name)
        for r in self.replicas:
            if r.proc.popen is not None:
                with contextlib.suppress(ProcessLookupError, OSError):
                    r.proc.resume()
            r.proc.stop()

    def logs(self) -> str:
        out = []
        for p in [r.proc for r in self.replicas] + list(self.agents.values()):
            if p.log.exists():
                out.append(f"----- {p.name} -----\n" + p.log.read_text()[-4000:])
        return "\n".join(out)

    # ---------------------------------------------------------------- queries

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.proc.alive()]

    def status(self, r: Replica) -> dict[str, Any] | None:
        try:
            resp = http("GET", f"{r.api}/v1/status", token=self.token, timeout=2,
                        context=self.client_tls)
        except OSError:
            return None
        return resp.body if resp.status == 200 else None

    def leader(self, timeout: float = 15.0) -> Replica:
        """The replica that a majority of the live ones agree is leader, and which says so."""
        def find() -> Replica | None:
            votes: dict[str, int] = {}
            for r in self.live():
                st = self.status(r)
                if st and st["leader"]:
                    votes[st["leader"]] = votes.get(st["leader"], 0) + 1
            for rid, n in votes.items():
                cand = next((r for r in self.live() if r.id == rid), None)
                if cand and n > len(self.replicas) // 2:
                    st = self.status(cand)
                    if st and st["role"] == "leader":
                        return cand
            return None
        return wait_for(find, timeout, what="a leader")

    def followers(self) -> list[Replica]:
        lead = self.leader()
        return [r for r in self.live() if r is not lead]

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            return all(http("GET", f"{r.api}/v1/health/ready", timeout=2,
                            context=self.client_tls).status == 200
                       for r in self.live())
        wait_for(ready, timeout, what="all replicas ready")

    def api(self, method: str, path: str, body: Any = None, replica: Replica | None = None,
            idem: str | None = None, timeout: float = 10.0) -> Response:
        r = replica or self.live()[0]
        headers = {"Idempotency-Key": idem} if idem else None
        return http(method, f"{r.api}{path}", body, token=self.token, headers=headers,
                    timeout=timeout, context=self.client_tls)

    def write(self, method: str, path: str, body: Any = None, timeout: float = 20.0,
              replica: Replica | None = None) -> Response:
        """A write retried across replicas with one idempotency key until acknowledged."""
        key = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        last: Response | None = None
        while time.monotonic() < deadline:
            for r in ([replica] if replica else self.live()):
                try:
                    last = self.api(method, path, body, replica=r, idem=key, timeout=5)
                except OSError:
                    continue
                if last.status < 500:
                    return last
            time.sleep(0.05)
        raise AssertionError(f"write {method} {path} not acknowledged: {last}")

    def allocs(self, job: str | None = None, replica: Replica | None = None) -> list[dict]:
        q = f"?job={job}" if job else ""
        resp = self.api("GET", f"/v1/allocations{q}", replica=replica)
        assert resp.status == 200, resp
        return resp.body["allocations"]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
