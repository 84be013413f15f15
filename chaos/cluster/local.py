"""Replicas and agents as plain processes on distinct loopback addresses (127.0.0.2, .3, ...).

Needs no privileges, so it runs anywhere; the price is that it can only kill, pause and (with
FUSE, see chaos.lazyfs) cut the power: there is no network of its own to cut.
`ProcessBackend` holds what every process-based backend shares (starting, killing, pausing,
power cuts, bookkeeping); `NetnsBackend` builds on it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from hacontrol.agent.supervisor import sweep_leftovers
from hacontrol.raft.keys import generate_secret

from ..lazyfs.mount import PowerLossMount, unavailable
from .base import KILL, MEMBERSHIP, PAUSE, POWER, ClusterSpec, Member
from .cleanup import STOP_GRACE_S, Registry, install_handlers


class BackendUnavailable(RuntimeError):
    """The machine lacks what the backend needs (a tool, root); the message says what."""


@dataclass
class _Proc:
    member: Member
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None
    paused: bool = False


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ProcessBackend:
    """Members as OS processes this object starts; subclasses decide where they live.

    Every public method takes one lock, so a nemesis thread and a workload thread may call
    in concurrently.
    """

    name = "process"
    capabilities: frozenset[str] = frozenset({KILL, PAUSE, POWER, MEMBERSHIP})

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self.spec: ClusterSpec | None = None
        self.registry: Registry | None = None
        self.run_dir: Path | None = None
        self.token = ""
        self._procs: dict[str, _Proc] = {}
        self._retired: dict[str, _Proc] = {}  # removed from the cluster (see `retire`)
        self._next_index = 0  # the address index of the next member added after setup
        self._mounts: dict[str, PowerLossMount] = {}  # replica -> its power-loss mount
        self._lock = threading.RLock()
        install_handlers()

    # ------------------------------------------------------------ subclass hooks

    def _prepare(self, spec: ClusterSpec, reg: Registry) -> None:
        """Create whatever network the members need."""

    def _address(self, index: int) -> str:
        raise NotImplementedError

    def _ports(self, host: str) -> tuple[int, int]:
        """(raft, api) ports for a replica bound to `host`."""
        raise NotImplementedError

    def _wrap(self, member: Member, argv: list[str]) -> list[str]:
        """The command that runs `argv` where `member` lives."""
        return argv

    def _agent_port(self, host: str) -> int:
        """The port of an agent's own HTTP API.

        The agent listens on, and advertises, 127.0.0.1 (it has no option to advertise
        another address), so the port is chosen free there.
        """
        return free_port("127.0.0.1")

    # ------------------------------------------------------------------ setup

    def setup(self, spec: ClusterSpec) -> list[Member]:
        """Start every member under `spec.workdir/<backend>-<run id>` (see `run_dir`).

        An empty `spec.token` or `spec.secret` is filled in with a fresh random one, so the
        caller reads the token from the spec (or from `self.token`) afterwards.
        """
        with self._lock:
            if self.registry is not None:
                raise RuntimeError("setup() already called; use a new backend per run")
            self.spec = spec
            reg = self.registry = Registry()
            try:
                self._setup(spec, reg)
            except BaseException:
                self.teardown()
                raise
            return self.members()

    def _setup(self, spec: ClusterSpec, reg: Registry) -> None:
        spec.token = spec.token or secrets.token_hex(16)
        spec.secret = spec.secret or generate_secret()
        self.token = spec.token
        run_dir = self.run_dir = spec.workdir / f"{self.name}-{reg.run_id}"
        run_dir.mkdir(parents=True, exist_ok=False)
        for fname, value in (("token", spec.token), ("secret", spec.secret)):
            path = run_dir / fname
            path.touch(mode=0o600)
            path.write_text(value)
        self._prepare(spec, reg)
        replicas: list[Member] = []
        for i in range(spec.replicas):
            host = self._address(i)
            raft_port, api_port = self._ports(host)
            name = f"c{i + 1}"
            replicas.append(Member(name, "replica", host, f"http://{host}:{api_port}",
                                   f"{host}:{raft_port}", run_dir / f"{name}.log",
                                   run_dir / name))
        for m in replicas:
            peers: list[str] = []
            for o in replicas:
                if o is not m:
                    peers += ["--peer", f"{o.name}={o.raft_addr}={o.api_url}"]
            self._procs[m.name] = _Proc(m, self._server_argv(m, peers))
        controllers = ",".join(str(m.api_url) for m in replicas)
        for j in range(spec.agents):
            name = f"n{j + 1}"
            m = Member(name, "agent", self._address(spec.replicas + j), None, None,
                       run_dir / f"{name}.log", run_dir / name)
            argv = [self.python, "-m", "hacontrol", "agent", "--name", name,
                    "--data-dir", str(m.data_dir), "--controllers", controllers,
                    "--token-file", str(run_dir / "token"), "--cpu", str(spec.agent_cpu),
                    "--memory-mb", str(spec.agent_memory_mb),
                    "--port", str(self._agent_port(m.host)), "--bind", m.host]
            self._procs[name] = _Proc(m, argv)
        self._next_index = spec.replicas + spec.agents
        reg.add_hook(self._reap)
        if spec.power_loss_fs:
            reason = unavailable()
            if reason:
                raise BackendUnavailable(f"power-loss mounts unavailable: {reason}")
            for m in replicas:
                self._add_mount(m)
            reg.add_hook(self._unmount_all)
        for name in self._procs:
            self.start(name)

    def _server_argv(self, m: Member, membership: list[str]) -> list[str]:
        """`hacontrol server` for replica `m`; `membership`: its --peer or --join flags."""
        assert self.spec is not None and self.run_dir is not None and m.api_url is not None
        return [self.python, "-m", "hacontrol", "server", "--id", m.name,
                "--data-dir", str(m.data_dir), "--raft", str(m.raft_addr),
                "--api", m.api_url.removeprefix("http://"), *membership,
                "--secret-file", str(self.run_dir / "secret"),
                "--token-file", str(self.run_dir / "token"), "--insecure-http",
                *self.spec.server_args]

    def _add_mount(self, m: Member) -> None:
        assert self.run_dir is not None
        # The disk lives beside the data dir; the mount is the data dir itself.
        self._mounts[m.name] = PowerLossMount(self.run_dir / "disks" / m.name, m.data_dir,
                                              self.run_dir / f"{m.name}.fs.log")

    # ------------------------------------------------------------- membership

    def _attach(self, name: str, index: int) -> None:
        """Give a member added after setup its place on the network (netns: a namespace)."""

    def add_replica(self, join: list[str]) -> Member:
        """Start a new replica, `c<N>` with N past every replica ever started, at a new
        address, with `--join` to the API URLs in `join` (it asks the cluster to add it)."""
        with self._lock:
            assert self.spec is not None and self.run_dir is not None
            taken = [int(n[1:]) for n in [*self._procs, *self._retired]
                     if n.startswith("c") and n[1:].isdigit()]
            name = f"c{max(taken, default=0) + 1}"
            index = self._next_index
            self._next_index += 1
            self._attach(name, index)
            host = self._address(index)
            raft_port, api_port = self._ports(host)
            m = Member(name, "replica", host, f"http://{host}:{api_port}",
                       f"{host}:{raft_port}", self.run_dir / f"{name}.log",
                       self.run_dir / name)
            self._procs[name] = _Proc(m, self._server_argv(m, ["--join", ",".join(join)]))
            if self.spec.power_loss_fs:
                self._add_mount(m)
            self.start(name)
            return m

    def retire(self, name: str) -> None:
        """SIGKILL a removed replica and stop tracking it (see `retired`)."""
        with self._lock:
            self.kill(name)
            self._retired[name] = self._procs.pop(name)

    def retired(self) -> list[Member]:
        """Replicas removed from the cluster: no longer members, never restarted."""
        with self._lock:
            return [p.member for p in self._retired.values()]

    # -------------------------------------------------------------- lifecycle

    def members(self) -> list[Member]:
        with self._lock:
            return [p.member for p in self._procs.values()]

    def member(self, name: str) -> Member:
        return self._proc(name).member

    def _proc(self, name: str) -> _Proc:
        try:
            return self._procs[name]
        except KeyError:
            raise KeyError(f"no member {name!r}; have {sorted(self._procs)}") from None

    def start(self, name: str) -> None:
        """Start the member if it is not running (a no-op if it is), keeping its data dir."""
        with self._lock:
            p = self._proc(name)
            if p.popen is not None and p.popen.poll() is None:
                return
            assert self.spec is not None and self.registry is not None
            self._power_on(name)
            p.member.data_dir.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env}
            with p.member.log_path.open("ab") as log:
                # Own session: a Ctrl-C in the terminal reaches only us, and we stop the
                # members in order instead of them dying mid-write on their own.
                p.popen = subprocess.Popen(self._wrap(p.member, p.argv), stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, start_new_session=True)
            p.paused = False
            p.member.pid = p.popen.pid
            self.registry.add_pid(p.popen.pid)

    def kill(self, name: str) -> None:
        with self._lock:
            p = self._proc(name)
            if p.popen is None or p.popen.poll() is not None:
                return
            self._adopt_descendants(p.popen.pid)
            p.popen.kill()
            p.popen.wait(10)
            p.paused = False
            if self.registry is not None:
                self.registry.drop_pid(p.popen.pid)

    # ----------------------------------------------------------- power cuts

    def _power_on(self, name: str) -> None:
        mount = self._mounts.get(name)
        if mount is None or mount.proc is not None:
            return
        assert self.registry is not None
        mount.mount()
        assert mount.pid is not None
        self.registry.add_pid(mount.pid)

    def power_cut(self, names: list[str]) -> None:
        """SIGKILL the replicas, then their filesystems (all at once, as one power cut),
        then serve their disks again as synced: readable, the replicas still down.

        The filesystems die before the replicas are reaped: a replica inside an fsync its
        (stalled) disk has not answered cannot die until the FUSE connection is gone.
        """
        with self._lock:
            missing = [n for n in names if n not in self._mounts]
            if missing:
                raise RuntimeError(f"no power-loss mount for {missing}: set up with "
                                   "ClusterSpec(power_loss_fs=True)")
            dying = []
            for name in names:
                p = self._proc(name)
                if p.popen is not None and p.popen.poll() is None:
                    self._adopt_descendants(p.popen.pid)
                    p.popen.kill()
                    dying.append(p)
            for name in names:
                mount = self._mounts[name]
                pid = mount.pid
                mount.power_cut()
                if pid is not None and self.registry is not None:
                    self.registry.drop_pid(pid)
            for p in dying:
                assert p.popen is not None
                p.popen.wait(10)
                p.paused = False
                if self.registry is not None:
                    self.registry.drop_pid(p.popen.pid)
            for name in names:
                self._power_on(name)

    def stall_disk(self, name: str, on: bool = True) -> None:
        """Make the replica's fsyncs wait (reads and writes go on) until lifted or cut."""
        with self._lock:
            mount = self._mounts.get(name)
            if mount is None:
                raise RuntimeError(f"no power-loss mount for {name!r}")
            mount.stall(on)

    def power_cuts(self) -> dict[str, int]:
        with self._lock:
            return {name: m.cuts for name, m in self._mounts.items()}

    def _stop_mounted(self) -> None:
        """Stop replicas on power-loss mounts before their filesystems (which the registry
        would stop at the same time), so they shut down cleanly on a live disk."""
        for mount in self._mounts.values():
            mount.stall(False)
        for name, mount in self._mounts.items():
            p = self._procs.get(name) or self._retired[name]
            if p.popen is not None and p.popen.poll() is None:
                if p.paused:
                    os.kill(p.popen.pid, signal.SIGCONT)
                p.popen.terminate()
                try:
                    p.popen.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    p.popen.kill()
                    p.popen.wait(10)
            pid = mount.pid
            with contextlib.suppress(Exception):
                mount.unmount()
            if pid is not None and self.registry is not None:
                self.registry.drop_pid(pid)

    def _unmount_all(self) -> None:
        # Teardown has stopped every process, filesystems included: detach what is left.
        for mount in self._mounts.values():
            mount.power_cut()

    def _adopt_descendants(self, pid: int) -> None:
        """Register an agent's task processes: they outlive its kill, but not our teardown."""
        if self.registry is None:
            return
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(pid).children(recursive=True):
                self.registry.add_pid(child.pid)

    def pause(self, name: str) -> None:
        with self._lock:
            p = self._proc(name)
            if p.popen is not None and p.popen.poll() is None:
                os.kill(p.popen.pid, signal.SIGSTOP)
                p.paused = True

    def resume(self, name: str) -> None:
        with self._lock:
            p = self._proc(name)
            if p.popen is not None and p.popen.poll() is None:
                os.kill(p.popen.pid, signal.SIGCONT)
            p.paused = False

    def paused(self, name: str) -> bool:
        with self._lock:
            return self._proc(name).paused and self.alive(name)

    def alive(self, name: str) -> bool:
        with self._lock:
            p = self._proc(name)
            return p.popen is not None and p.popen.poll() is None

    # ----------------------------------------------------------------- network

    def partition(self, groups: list[set[str]]) -> None:
        raise NotImplementedError(f"the {self.name} backend cannot partition the network")

    def loss(self, name: str, percent: int) -> None:
        raise NotImplementedError(f"the {self.name} backend cannot drop packets")

    def heal(self) -> None:
        """Nothing to heal: this backend never touches the network."""

    # ---------------------------------------------------------------- teardown

    def _reap(self) -> None:
        for p in self._procs.values():
            if p.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(1)

    def teardown(self) -> None:
        with self._lock:
            if self.registry is None:
                return
            for p in self._procs.values():
                if p.popen is not None and p.popen.poll() is None:
                    self._adopt_descendants(p.popen.pid)
            self._stop_mounted()
            errors = self.registry.teardown()
            # Agents killed by the nemesis leave their allocations' cgroups behind, and
            # their data dirs go with the run: sweep them, or each run leaves hundreds.
            for p in self._procs.values():
                if p.member.kind == "agent":
                    sweep_leftovers(p.member.data_dir)
            if errors:
                raise RuntimeError(f"{self.name} teardown left work undone: {errors}")


class LocalBackend(ProcessBackend):
    """Members on 127.0.0.2, 127.0.0.3, ...; capabilities: kill, pause, power cuts and
    membership changes.

    Each member binds its own loopback address, so logs and peer lists look like a real
    multi-host cluster, and ports are chosen free per address.
    """

    name = "local"
    capabilities = frozenset({KILL, PAUSE, POWER, MEMBERSHIP})

    def _address(self, index: int) -> str:
        if not sys.platform.startswith("linux"):
            return "127.0.0.1"  # only Linux routes all of 127/8 to loopback out of the box
        return f"127.0.0.{index + 2}"

    def _ports(self, host: str) -> tuple[int, int]:
        raft = free_port(host)
        api = free_port(host)
        while api == raft:
            api = free_port(host)
        return raft, api
