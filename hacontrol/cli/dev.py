"""``hacontrol dev``: a whole local cluster (replicas and agents) in one foreground command."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import hacontrol

READY_PATH = "/v1/health/ready"
AGENT_STOP_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0
POLL_S = 0.2
LOG_TAIL_LINES = 8
PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    kind: str
    argv: list[str]
    log_path: Path
    api_url: str | None = None
    raft: str | None = None
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    reported_exit: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class DevConfig:
    data_dir: Path
    replicas: int = 3
    agents: int = 1
    api_port: int = 8100
    raft_port: int = 7100
    agent_port: int = 8200
    host: str = "127.0.0.1"
    log_level: str = "info"
    ready_timeout_s: float = 30.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DevConfig:
        return cls(
            data_dir=Path(args.data_dir).absolute(),
            replicas=args.replicas,
            agents=args.agents,
            api_port=args.api_port,
            raft_port=args.raft_port,
            agent_port=args.agent_port,
            host=args.host,
            log_level=args.log_level,
            ready_timeout_s=getattr(args, "ready_timeout", 30.0),
        )

    @property
    def connect_host(self) -> str:
        # A wildcard bind address is not something a client can dial.
        return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)

    def api_url(self, i: int) -> str:
        host = self.connect_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.api_port + i}"

    def api_bind(self, i: int) -> str:
        return f"{self.host}:{self.api_port + i}"

    def raft_addr(self, i: int) -> str:
        return f"{self.connect_host}:{self.raft_port + i}"

    def raft_bind(self, i: int) -> str:
        return f"{self.host}:{self.raft_port + i}"

    def validate(self) -> None:
        if self.replicas < 1:
            raise DevError("--replicas must be at least 1")
        for label, base, n in (
            ("--api-port", self.api_port, self.replicas),
            ("--raft-port", self.raft_port, self.replicas),
            ("--agent-port", self.agent_port, self.agents),
        ):
            if base + n > 65535:
                raise DevError(f"{label} {base} leaves no room for {n} ports")
        ports = [self.api_port + i for i in range(1, self.replicas + 1)]
        ports += [self.raft_port + i for i in range(1, self.replicas + 1)]
        ports += [self.agent_port + j for j in range(1, self.agents + 1)]
        if len(set(ports)) != len(ports):
            raise DevError("--api-port, --raft-port and --agent-port ranges overlap")


class DevError(Exception):
    """A problem that stops the dev cluster from starting."""


def ensure_secret_file(path: Path, generate: Callable[[], str]) -> tuple[str, bool]:
    """Return the value stored at ``path``, creating it (mode 0600) if absent.

    Reusing an existing value matters: replicas restarted on the same data dir must
    keep the cluster secret and token they were first started with.
    """
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return existing, False
    value = generate()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return value, True


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # Match what servers do, so a port in TIME_WAIT is not mistaken for a busy one.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _child_setup(parent_pid: int, libc: Any) -> Callable[[], None]:
    def setup() -> None:
        # If dev itself is killed outright, children get SIGTERM instead of being
        # orphaned with job processes still running.
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


# Recorded creation times may be rounded; a pid recycled within this window of the
# original's start is not a realistic risk.
CREATE_TIME_TOLERANCE_S = 0.5


@dataclass
class PidRecord:
    path: Path
    pid: int
    create_time: float
    pgid: int | None = None


def iter_alloc_pid_records(data_dir: Path) -> Iterator[PidRecord]:
    for path in sorted(data_dir.glob("n*/allocs/*/pid.json")):
        try:
            info = json.loads(path.read_text())
            pid = int(info["pid"])
            create_time = float(info["create_time"])
            pgid = int(info["pgid"]) if info.get("pgid") is not None else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid > 1:
            yield PidRecord(path, pid, create_time, pgid)


def kill_recorded_process_group(pid: int, create_time: float, pgid: int | None = None) -> bool:
    """SIGKILL the group led by ``pid`` if that pid is still the process recorded.

    Comparing the creation time guards against a recycled pid now belonging to
    something unrelated.
    """
    import psutil

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return False
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    leader = pid if pgid is None else pgid
    try:
        if leader > 1 and os.getpgid(pid) == leader and leader != os.getpgid(0):
            os.killpg(leader, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


class DevCluster:
    def __init__(
        self, cfg: DevConfig, out: IO[str] | None = None, program: list[str] | None = None
    ) -> None:
        self.cfg = cfg
        self.out = out or sys.stdout
        # What runs "server ..." and "agent ..."; replaceable so the launcher can be
        # exercised against stand-in processes.
        self.program = program or [sys.executable, "-m", "hacontrol"]
        self.servers: list[Child] = []
        self.agents: list[Child] = []
        self.token = ""
        self.stop_event = threading.Event()
        self.stop_signals = 0
        self._lock_fd: int | None = None

    # -- output ----------------------------------------------------------------

    def say(self, text: str = "") -> None:
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass

    # -- signals ---------------------------------------------------------------

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        self.stop_signals += 1
        self.stop_event.set()

    @property
    def forced(self) -> bool:
        return self.stop_signals >= 2

    def install_signal_handlers(self) -> dict[int, Any]:
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, self.request_stop)
        return previous

    # -- setup -------------------------------------------------------------------

    @property
    def children(self) -> list[Child]:
        return self.servers + self.agents

    def prepare(self) -> None:
        cfg = self.cfg
        cfg.validate()
        d = cfg.data_dir
        (d / "logs").mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(d / "dev.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevError(f"another 'hacontrol dev' is already using {d}") from None
        self.token, new_token = ensure_secret_file(d / "token", lambda: secrets.token_urlsafe(32))
        _, new_secret = ensure_secret_file(d / "secret", lambda: secrets.token_hex(32))
        if not (new_token and new_secret):
            self.say(f"hacontrol dev: reusing the token and cluster secret in {d}")
        busy = []
        for i in range(1, cfg.replicas + 1):
            busy += [p for p in (cfg.api_port + i, cfg.raft_port + i) if port_in_use(cfg.host, p)]
        for j in range(1, cfg.agents + 1):
            if port_in_use(cfg.host, cfg.agent_port + j):
                busy.append(cfg.agent_port + j)
        if busy:
            raise DevError(
                f"port(s) {', '.join(map(str, busy))} on {cfg.host} already in use; "
                "is another cluster running? (see --api-port, --raft-port, --agent-port)"
            )
        self._plan()

    def _plan(self) -> None:
        cfg = self.cfg
        d = cfg.data_dir
        base = list(self.program)
        ids = range(1, cfg.replicas + 1)
        for i in ids:
            argv = base + [
                "server",
                "--id", f"c{i}",
                "--data-dir", str(d / f"c{i}"),
                "--raft", cfg.raft_bind(i),
                "--api", cfg.api_bind(i),
            ]
            for k in ids:
                if k != i:
                    argv += ["--peer", f"c{k}={cfg.raft_addr(k)}={cfg.api_url(k)}"]
            argv += [
                "--secret-file", str(d / "secret"),
                "--token-file", str(d / "token"),
                "--log-level", cfg.log_level,
            ]
            self.servers.append(
                Child(f"c{i}", "server", argv, d / "logs" / f"c{i}.log",
                      api_url=cfg.api_url(i), raft=cfg.raft_addr(i))
            )
        controllers = ",".join(cfg.api_url(i) for i in ids)
        for j in range(1, cfg.agents + 1):
            argv = base + [
                "agent",
                "--name", f"n{j}",
                "--data-dir", str(d / f"n{j}"),
                "--controllers", controllers,
                "--token-file", str(d / "token"),
                "--port", str(cfg.agent_port + j),
                "--log-level", cfg.log_level,
            ]
            self.agents.append(
                Child(f"n{j}", "agent", argv, d / "logs" / f"n{j}.log", port=cfg.agent_port + j)
            )

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        # Children must import this very copy of hacontrol even when it is not installed.
        root = str(Path(hacontrol.__file__).resolve().parent.parent)
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in paths:
            env["PYTHONPATH"] = os.pathsep.join([root, *paths])
        return env

    def spawn(self, child: Child) -> None:
        (self.cfg.data_dir / child.name).mkdir(parents=True, exist_ok=True)
        libc = _load_libc()
        with child.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {stamp} hacontrol dev: {shlex.join(child.argv)}\n".encode())
            log.flush()
            child.proc = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._child_env(),
                # Own session: a terminal Ctrl-C reaches only dev, which then stops
                # the children in order (agents before servers).
                start_new_session=True,
                preexec_fn=_child_setup(os.getpid(), libc),
            )
        child.reported_exit = False

    def start(self) -> None:
        for child in self.servers:
            self.spawn(child)
        for child in self.agents:
            self.spawn(child)
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "token_file": str(self.cfg.data_dir / "token"),
            "replicas": [
                {"id": c.name, "pid": c.pid, "api": c.api_url, "raft": c.raft, "log": str(c.log_path)}
                for c in self.servers
            ],
            "agents": [
                {"name": c.name, "pid": c.pid, "port": c.port, "log": str(c.log_path)}
                for c in self.agents
            ],
        }
        path = self.cfg.data_dir / "dev.json"
        tmp = path.with_name(".dev.json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)

    # -- running -----------------------------------------------------------------

    def check_children(self) -> list[Child]:
        """Report children that died on their own; they are not restarted."""
        died = []
        for child in self.children:
            if child.proc is None or child.reported_exit:
                continue
            code = child.proc.poll()
            if code is None:
                continue
            child.reported_exit = True
            died.append(child)
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self.say(f"hacontrol dev: {child.kind} {child.name} (pid {child.pid}) {how}; "
                     f"log: {child.log_path}")
            for line in tail(child.log_path):
                if not line.startswith("--- "):
                    self.say(f"    {line}")
        return died

    def probe_ready(self, timeout_s: float = 1.0) -> str | None:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for child in self.servers:
            if not child.alive() or child.api_url is None:
                continue
            try:
                with opener.open(child.api_url + READY_PATH, timeout=timeout_s) as resp:
                    if resp.status == 200:
                        return child.api_url
            except (urllib.error.URLError, OSError, ValueError):
                continue
        return None

    def wait_ready(self) -> str | None:
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        while not self.stop_event.is_set():
            self.check_children()
            if not any(c.alive() for c in self.servers):
                raise DevError("every replica exited before the cluster became ready")
            url = self.probe_ready()
            if url:
                return url
            if time.monotonic() >= deadline:
                return None
            self.stop_event.wait(POLL_S)
        return None

    def leader_hint(self, url: str) -> str | None:
        req = urllib.request.Request(
            url + "/v1/status", headers={"Authorization": f"Bearer {self.token}"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=2) as resp:
                status = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None
        leader = status.get("leader") if isinstance(status, dict) else None
        return str(leader) if leader else None

    def print_banner(self, ready_url: str | None) -> None:
        cfg = self.cfg
        d = cfg.data_dir
        addrs = ",".join(c.api_url for c in self.servers if c.api_url)
        if ready_url:
            leader = self.leader_hint(ready_url)
            extra = f", leader {leader}" if leader else ""
            self.say(f"hacontrol dev: cluster ready ({_plural(len(self.servers), 'replica')}, "
                     f"{_plural(len(self.agents), 'agent')}{extra})")
        else:
            self.say(f"hacontrol dev: no replica reported ready within "
                     f"{cfg.ready_timeout_s:g}s; still running, check the logs")
        self.say()
        self.say(f"  export HACONTROL_ADDR={addrs} "
                 f"HACONTROL_TOKEN=$(cat {shlex.quote(str(d / 'token'))})")
        self.say()
        self.say("Replicas:")
        for c in self.servers:
            self.say(f"  {c.name}  pid {c.pid}  api {c.api_url}  raft {c.raft}")
        if self.agents:
            self.say("Agents:")
            for c in self.agents:
                self.say(f"  {c.name}  pid {c.pid}  port {c.port}")
        self.say(f"Logs: {d / 'logs'}")
        self.say(f"Data: {d}")
        self.say()
        self.say("Press Ctrl-C to stop.")

    def run_foreground(self) -> None:
        while not self.stop_event.is_set():
            self.check_children()
            self.stop_event.wait(0.5)

    # -- stopping ------------------------------------------------------------------

    def stop(self) -> None:
        if any(c.alive() for c in self.children):
            self.say("hacontrol dev: stopping (Ctrl-C again to kill immediately)")
        self._stop_group(self.agents, AGENT_STOP_TIMEOUT_S)
        self._stop_group(self.servers, SERVER_STOP_TIMEOUT_S)
        for rec in iter_alloc_pid_records(self.cfg.data_dir):
            if kill_recorded_process_group(rec.pid, rec.create_time, rec.pgid):
                self.say(f"hacontrol dev: killed leftover job process {rec.pid} "
                         f"(allocation {rec.path.parent.name})")
        with contextlib.suppress(OSError):
            (self.cfg.data_dir / "dev.json").unlink()
        self.say("hacontrol dev: stopped")

    def _stop_group(self, group: list[Child], timeout_s: float) -> None:
        for child in group:
            if child.alive():
                assert child.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(c.alive() for c in group) and time.monotonic() < deadline and not self.forced:
            time.sleep(POLL_S)
        for child in group:
            if child.alive():
                assert child.proc is not None
                self.say(f"hacontrol dev: {child.kind} {child.name} (pid {child.pid}) "
                         "did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
        for child in group:
            if child.proc is not None:
                try:
                    child.proc.wait(timeout=KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    self.say(f"hacontrol dev: {child.name} (pid {child.pid}) is still not gone")
            # A deliberate stop is not an unexpected death.
            child.reported_exit = True

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def run_dev(args: argparse.Namespace) -> int:
    cfg = DevConfig.from_args(args)
    cluster = DevCluster(cfg)
    previous = cluster.install_signal_handlers()
    started = False
    try:
        cluster.prepare()
        cluster.start()
        started = True
        ready_url = cluster.wait_ready()
        if cluster.stop_event.is_set():
            return 0
        cluster.print_banner(ready_url)
        cluster.run_foreground()
        return 0
    except DevError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if started:
            cluster.stop()
        cluster.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

