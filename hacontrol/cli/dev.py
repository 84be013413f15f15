"""``hacontrol dev``: a whole local cluster (replicas and agents) in one foreground command."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

import hacontrol
from hacontrol.cli.devjoin import (
    IntroError,
    ensure_dev_secrets,
    intro_path,
    write_intro_tokens,
)
from hacontrol.cli.devprocess import (
    child_setup,
    iter_allocation_pid_records,
    kill_recorded_process_group,
    load_libc,
    port_in_use,
)
from hacontrol.cli.devsupervise import Child, Supervision
from hacontrol.cli.devtls import DevPKI, ensure_dev_pki
from hacontrol.cli.transport import HttpTransport, Request, TransportError
from hacontrol.tls.files import private_dir, private_opener
from hacontrol.tls.roles import Role

READY_PATH = "/v1/health/ready"
AGENT_STOP_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0
POLL_S = 0.2

# What signal.signal() takes and gives back.
SignalHandler = Callable[[int, FrameType | None], object] | int | None


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
    log_format: str = "text"
    ready_timeout_s: float = 30.0
    tls: bool = False
    restart: bool = True  # restart a replica or agent that dies (--no-restart: leave it)

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
            log_format=getattr(args, "log_format", "text"),
            ready_timeout_s=getattr(args, "ready_timeout", 30.0),
            tls=bool(getattr(args, "tls", False)),
            restart=not getattr(args, "no_restart", False),
        )

    @property
    def connect_host(self) -> str:
        # A wildcard bind address is not something a client can dial.
        return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)

    def api_url(self, i: int) -> str:
        host = self.connect_host
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.api_port + i}"

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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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
        self.pki: DevPKI | None = None
        # The cluster is local to this machine: no proxy may stand in between.
        self.transport = HttpTransport(use_env_proxy=False)
        self.supervision = Supervision(self.say, cfg.restart)

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

    def install_signal_handlers(self) -> dict[signal.Signals, SignalHandler]:
        previous: dict[signal.Signals, SignalHandler] = {}
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
        private_dir(d)
        private_dir(d / "logs")
        self._lock_fd = os.open(d / "dev.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevError(f"another 'hacontrol dev' is already using {d}") from None
        self.token = ensure_dev_secrets(d, self.say)
        if cfg.tls:
            self.pki, _ = ensure_dev_pki(d, [cfg.connect_host])
            self.transport = HttpTransport(use_env_proxy=False, tls=self.pki.client())
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
                "--log-level", cfg.log_level, "--log-format", cfg.log_format,
                *(self.pki.flags(Role.SERVER) if self.pki else ["--insecure-http"]),
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
                "--intro-token-file", str(intro_path(d, f"n{j}")),
                "--port", str(cfg.agent_port + j),
                "--log-level", cfg.log_level, "--log-format", cfg.log_format,
                *(self.pki.flags(Role.AGENT) if self.pki else []),
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
        private_dir(self.cfg.data_dir / child.name)
        libc = load_libc()
        with open(child.log_path, "ab", opener=private_opener) as log:
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
                preexec_fn=child_setup(os.getpid(), libc),
            )
        child.reported_exit = False
        child.started_at = time.monotonic()

    def start(self) -> None:
        for child in self.servers:
            self.spawn(child)
        self._write_state()

    def start_agents(self, api_url: str) -> None:
        """Start the agents once the cluster is ready, each with its own introduction
        token: no agent ever holds the management token."""
        try:
            write_intro_tokens(self.transport, api_url, self.token, self.cfg.data_dir,
                               [c.name for c in self.agents])
        except IntroError as exc:
            raise DevError(str(exc)) from None
        for child in self.agents:
            self.spawn(child)
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "token_file": str(self.cfg.data_dir / "token"),
            "replicas": [
                {"id": c.name, "pid": c.pid, "api": c.api_url, "raft": c.raft, "log": str(c.log_path),
                 "restarts": c.restarts}
                for c in self.servers
            ],
            "agents": [
                {"name": c.name, "pid": c.pid, "port": c.port, "log": str(c.log_path),
                 "restarts": c.restarts}
                for c in self.agents
            ],
        }
        path = self.cfg.data_dir / "dev.json"
        tmp = path.with_name(".dev.json.tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)

    # -- running -----------------------------------------------------------------

    def check_children(self) -> list[Child]:
        """Report children that died on their own (restarted later by `restart_due`)."""
        return self.supervision.check(self.children, time.monotonic())

    def restart_due(self) -> None:
        due = self.supervision.due(self.children, time.monotonic())
        for child in due:
            if self.stop_event.is_set():
                return
            try:
                self.spawn(child)
            except OSError as exc:
                self.say(f"hacontrol dev: could not restart {child.kind} {child.name}: {exc}")
                child.reported_exit = False  # reported again, and retried, at the next check
                continue
            self.say(f"hacontrol dev: restarted {child.kind} {child.name} (pid {child.pid}, "
                     f"restart {child.restarts})")
        if due:
            self._write_state()

    def probe_ready(self, timeout_s: float = 1.0) -> str | None:
        for child in self.servers:
            if not child.alive() or child.api_url is None:
                continue
            request = Request("GET", child.api_url + READY_PATH, timeout_s=timeout_s)
            try:
                if self.transport.handle_request(request).status == 200:
                    return child.api_url
            except TransportError:
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
        request = Request("GET", url + "/v1/status",
                          {"Authorization": f"Bearer {self.token}"}, timeout_s=2)
        try:
            response = self.transport.handle_request(request)
            status = json.loads(response.body) if response.status == 200 else None
        except (TransportError, ValueError):
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
                     f"{cfg.ready_timeout_s:g}s; agents not started, check the logs")
        self.say()
        self.say(f"  export HACONTROL_ADDR={addrs} "
                 f"HACONTROL_TOKEN=$(cat {shlex.quote(str(d / 'token'))})")
        if self.pki is not None:
            self.say("  export " + " ".join(f"{k}={shlex.quote(v)}"
                                             for k, v in self.pki.env().items()))
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
        self.supervision.enable()
        while not self.stop_event.is_set():
            self.check_children()
            self.restart_due()
            self.stop_event.wait(POLL_S)

    # -- stopping ------------------------------------------------------------------

    def stop(self) -> None:
        if any(c.alive() for c in self.children):
            self.say("hacontrol dev: stopping (Ctrl-C again to kill immediately)")
        self._stop_group(self.agents, AGENT_STOP_TIMEOUT_S)
        self._stop_group(self.servers, SERVER_STOP_TIMEOUT_S)
        for rec in iter_allocation_pid_records(self.cfg.data_dir):
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
        if ready_url:
            cluster.start_agents(ready_url)
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

