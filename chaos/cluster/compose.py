"""The cluster as the top-level compose.yaml runs it: one container per replica and agent.

Each run is its own compose project (`hcxc-<owner pid>-<run id>`) with its own subnet, its own
loopback ports and its own env files, so it can run beside a `make compose-up` cluster and
beside other runs. Faults are what an operator could do to containers:

- kill: `docker kill` (SIGKILL to the container); start: `docker start`, data volume intact.
- pause/resume: `docker pause`/`unpause` (the cgroup freezer, every process of the member).
- partition: `docker network disconnect`/`connect`. Disconnecting a container cuts it off
  from everyone, the host's test client included (its published port goes with the
  network), so a partition is expressed as disconnecting every member outside the largest
  group. A minority of several members becomes several isolated members, and a member in
  two groups (a bridge) keeps its links only if it is in the largest one. Reconnection puts
  each replica back on its static address, which Raft peers are configured with.

No packet loss (the image has no tc). Members' `api_url` are the published ports on
127.0.0.1; `host` and `raft_addr` are the addresses inside the compose network; `data_dir`
is the path inside the container (a named volume); `log_path` receives `docker logs` at
teardown. The image must exist: `deploy/compose-test.sh prepare` builds it, and `setup`
runs that itself when the image is missing.

With `tls=True` every link runs over mutual TLS as `make compose-up` runs it: a CA and
certificates are made in the run directory, `api_url`s are https://, and `ssl_context`
(trusting that CA, with the cli certificate) is what a client on the host uses. Without it
the project runs plain HTTP (`--insecure-http`), as the chaos runs do.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from hacontrol.raft.keys import generate_secret

from .base import KILL, PARTITION, PAUSE, ClusterSpec, Member
from .cleanup import Registry, install_handlers
from .compose_files import remove_compose_files, write_compose_files
from .local import BackendUnavailable, free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
PREPARE = ROOT / "deploy" / "compose-test.sh"
PROJECT_PREFIX = "hcxc-"
NETWORK = "cluster"  # the network's name in compose.yaml
RAFT_PORT = 7000
API_PORT = 8000
DOCKER_TIMEOUT_S = 60.0


def docker(*args: str, check: bool = True, timeout: float = DOCKER_TIMEOUT_S,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def compose_command() -> list[str]:
    """`docker compose` (v2) when the CLI has it, else `docker-compose` (v1)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if docker("compose", "version", check=False, timeout=20).returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise BackendUnavailable("neither `docker compose` nor `docker-compose` is installed")


def engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return docker("info", check=False, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def used_subnets() -> set[ipaddress.IPv4Network]:
    out: set[ipaddress.IPv4Network] = set()
    ids = docker("network", "ls", "-q").stdout.split()
    if not ids:
        return out
    for net in json.loads(docker("network", "inspect", *ids).stdout):
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError):
                out.add(ipaddress.ip_network(cfg["Subnet"], strict=False))  # type: ignore[arg-type]
    return out


def pick_subnet_prefix() -> str:
    """A free 172.29.N.0/24 (N in 100..249); the default cluster uses 172.29.77."""
    used = used_subnets()
    for n in range(100, 250):
        net = ipaddress.ip_network(f"172.29.{n}.0/24")
        if not any(net.overlaps(u) for u in used):
            return f"172.29.{n}"
    raise BackendUnavailable("no free 172.29.N.0/24 subnet for the compose network")


def _ready(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v1/health/ready", timeout=2,
                                    context=context) as resp:
            return resp.status == 200
    except Exception:
        return False


def sweep_projects() -> list[str]:
    """`down -v` every project of ours whose owning process is gone; returns their names."""
    if not engine_available():
        return []
    out = docker("ps", "-a", "--filter", "label=com.docker.compose.project",
                 "--format", '{{.Label "com.docker.compose.project"}}', check=False).stdout
    swept = []
    for project in sorted(set(out.split())):
        if not project.startswith(PROJECT_PREFIX):
            continue
        try:
            pid = int(project[len(PROJECT_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if psutil.pid_exists(pid):
            continue
        _remove_project(project)
        swept.append(project)
    return swept


def _remove_project(project: str) -> None:
    """Remove a project's containers, networks and volumes by label (no compose file needed)."""
    label = f"label=com.docker.compose.project={project}"
    ids = docker("ps", "-aq", "--filter", label, check=False).stdout.split()
    if ids:
        docker("rm", "-fv", *ids, check=False)
    nets = docker("network", "ls", "-q", "--filter", label, check=False).stdout.split()
    if nets:
        docker("network", "rm", *nets, check=False)
    vols = docker("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
    if vols:
        docker("volume", "rm", "-f", *vols, check=False)


def leftovers(project: str) -> list[str]:
    """What of `project` still exists: containers, networks and volumes, by name."""
    label = f"label=com.docker.compose.project={project}"
    found = []
    for kind, args in (("container", ["ps", "-a"]), ("network", ["network", "ls"]),
                       ("volume", ["volume", "ls"])):
        names = docker(*args, "-q", "--filter", label, check=False).stdout.split()
        found += [f"{kind} {n}" for n in names]
    return found


class ComposeBackend:
    """Members as the containers of a compose project made from the top-level compose.yaml."""

    name = "compose"
    capabilities: frozenset[str] = frozenset({KILL, PAUSE, PARTITION})

    def __init__(self, image: str | None = None, tls: bool = False) -> None:
        self.image = image or os.environ.get("HACONTROL_IMAGE", "hacontrol:local")
        self.tls = tls
        self.ssl_context: ssl.SSLContext | None = None
        self.spec: ClusterSpec | None = None
        self.registry: Registry | None = None
        self.run_dir: Path | None = None
        self.project = ""
        self.network = ""
        self.subnet_prefix = ""
        self.token = ""
        self._compose: list[str] = []
        self._env: dict[str, str] = {}
        self._members: dict[str, Member] = {}
        self._ids: dict[str, str] = {}  # member name -> container id
        self._disconnected: set[str] = set()
        self._lock = threading.RLock()
        install_handlers()

    # ------------------------------------------------------------------ setup

    def setup(self, spec: ClusterSpec) -> list[Member]:
        with self._lock:
            if self.registry is not None:
                raise RuntimeError("setup() already called; use a new backend per run")
            if spec.replicas != 3:
                raise ValueError("compose.yaml defines exactly 3 replicas (c1..c3)")
            if not engine_available():
                raise BackendUnavailable("no Docker engine answers: run deploy/compose-test.sh "
                                         "prepare (it installs and starts one)")
            self._compose = compose_command()
            sweep_projects()
            self.spec = spec
            reg = self.registry = Registry()
            try:
                self._setup(spec, reg)
            except BaseException:
                self.teardown()
                raise
            return self.members()

    def _ensure_image(self) -> None:
        if docker("image", "inspect", self.image, check=False).returncode == 0:
            return
        log.info("image %s missing: building it with %s prepare", self.image, PREPARE)
        env = {**os.environ, "HACONTROL_IMAGE": self.image}
        subprocess.run(["bash", str(PREPARE), "prepare"], check=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=1800)

    def _setup(self, spec: ClusterSpec, reg: Registry) -> None:
        self._ensure_image()
        spec.token = spec.token or secrets.token_hex(16)
        spec.secret = spec.secret or generate_secret()
        self.token = spec.token
        self.project = f"{PROJECT_PREFIX}{os.getpid()}-{reg.run_id}"
        run_dir = self.run_dir = spec.workdir / f"{self.name}-{reg.run_id}"
        run_dir.mkdir(parents=True, exist_ok=False)  # secrets, env files (removed at
        # teardown), logs
        extra = "".join(f"{k}={v}\n" for k, v in spec.env.items())
        write_compose_files(run_dir, spec.secret, spec.token,
                            self._tls_files(run_dir) if self.tls else None, extra, self.image)
        self.subnet_prefix = pick_subnet_prefix()
        ports = []
        while len(ports) < spec.replicas:
            p = free_port("127.0.0.1")
            if p not in ports:
                ports.append(p)
        self._env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "HACONTROL_IMAGE": self.image,
            "HACONTROL_ENV_DIR": str(run_dir),
            "HACONTROL_SUBNET_PREFIX": self.subnet_prefix,
            "HACONTROL_RESTART": "no",  # a killed member stays down until the nemesis says
            "HACONTROL_SERVER_ARGS": " ".join(spec.server_args),
            "HACONTROL_SCHEME": "https" if self.tls else "http",
            "HACONTROL_AGENTS": str(spec.agents),
            "HACONTROL_AGENT_CPU": str(spec.agent_cpu),
            "HACONTROL_AGENT_MEMORY_MB": str(spec.agent_memory_mb),
            **{f"HACONTROL_C{i + 1}_PORT": str(p) for i, p in enumerate(ports)},
        }
        reg.add_hook(self._down)
        for i in range(spec.replicas):
            name = f"c{i + 1}"
            host = f"{self.subnet_prefix}.{11 + i}"
            scheme = "https" if self.tls else "http"
            self._members[name] = Member(name, "replica", host,
                                         f"{scheme}://127.0.0.1:{ports[i]}",
                                         f"{host}:{RAFT_PORT}", run_dir / f"{name}.log",
                                         Path("/var/lib/hacontrol"))
        self.compose("up", "-d", "--no-build", timeout=300)
        self._discover()
        self.wait_ready()

    def _tls_files(self, run_dir: Path) -> Path:
        """A CA and certificates in run_dir/tls (what the compose secrets are made of);
        `ssl_context` trusts that CA, with the cli certificate."""
        from hacontrol.tls.files import private_dir
        from hacontrol.tls.pki import create_ca, create_cert
        from hacontrol.tls.roles import Role
        d = private_dir(run_dir / "tls")
        ca = create_ca(d, "hacontrol compose CA")
        for role in Role:
            create_cert(ca, role, d, hosts=["c1", "c2", "c3"])
        ctx = ssl.create_default_context(cafile=str(ca.cert))
        ctx.load_cert_chain(str(d / "cli.pem"), str(d / "cli-key.pem"))
        self.ssl_context = ctx
        return d

    def compose(self, *args: str, timeout: float = 120.0,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*self._compose, "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=self._env, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def _discover(self) -> None:
        """Map member names to container ids, by the labels compose puts on containers."""
        label = f"label=com.docker.compose.project={self.project}"
        ids = docker("ps", "-aq", "--filter", label).stdout.split()
        agents: list[tuple[int, str, dict[str, Any]]] = []
        for c in json.loads(docker("inspect", *ids).stdout) if ids else []:
            labels = c["Config"]["Labels"]
            service = labels.get("com.docker.compose.service", "")
            nets = c["NetworkSettings"]["Networks"] or {}
            if not self.network:
                self.network = next((n for n in nets if n.endswith(f"_{NETWORK}")), "")
            if service in self._members:
                self._ids[service] = c["Id"]
                self._members[service].pid = c["State"].get("Pid") or None
            elif service == "agent":
                agents.append((int(labels.get("com.docker.compose.container-number", 0)),
                               c["Id"], c))
        assert self.run_dir is not None
        for j, (_num, cid, c) in enumerate(sorted(agents)):
            name = f"n{j + 1}"
            ip = ((c["NetworkSettings"]["Networks"] or {}).get(self.network) or {}).get(
                "IPAddress", "")
            self._ids[name] = cid
            self._members[name] = Member(name, "agent", ip, None, None,
                                         self.run_dir / f"{name}.log",
                                         Path("/var/lib/hacontrol-agent"),
                                         c["State"].get("Pid") or None)
        missing = [n for n in self._members if n not in self._ids]
        if missing or not self.network:
            raise RuntimeError(f"compose project {self.project}: no container for {missing} "
                               f"or no network (found {sorted(self._ids)})")

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until every replica answers /v1/health/ready (a leader known, caught up)."""
        deadline = time.monotonic() + timeout
        reps = [m for m in self._members.values() if m.kind == "replica"]
        while time.monotonic() < deadline:
            if all(_ready(str(m.api_url), self.ssl_context) for m in reps):
                return
            time.sleep(0.25)
        raise RuntimeError(f"compose cluster {self.project} not ready within {timeout}s")

    # -------------------------------------------------------------- lifecycle

    def members(self) -> list[Member]:
        with self._lock:
            return list(self._members.values())

    def container(self, name: str) -> str:
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(f"no member {name!r}; have {sorted(self._ids)}") from None

    def _state(self, name: str) -> dict[str, Any]:
        out = docker("inspect", "--format", "{{json .State}}", self.container(name)).stdout
        return dict(json.loads(out))

    def start(self, name: str) -> None:
        with self._lock:
            st = self._state(name)
            if st.get("Running"):
                return
            docker("start", self.container(name))
            self._members[name].pid = self._state(name).get("Pid") or None

    def kill(self, name: str) -> None:
        with self._lock:
            cid = self.container(name)
            if not self._state(name).get("Running"):
                return
            # A paused container takes SIGKILL too: the freezer lets a fatal signal through.
            docker("kill", cid)
            deadline = time.monotonic() + 20
            while self._state(name).get("Running") and time.monotonic() < deadline:
                time.sleep(0.05)
            self._members[name].pid = None

    def pause(self, name: str) -> None:
        with self._lock:
            st = self._state(name)
            if st.get("Running") and not st.get("Paused"):
                docker("pause", self.container(name))

    def resume(self, name: str) -> None:
        with self._lock:
            if self._state(name).get("Paused"):
                docker("unpause", self.container(name))

    def paused(self, name: str) -> bool:
        with self._lock:
            return bool(self._state(name).get("Paused"))

    def alive(self, name: str) -> bool:
        with self._lock:
            return bool(self._state(name).get("Running"))

    # ----------------------------------------------------------------- network

    def partition(self, groups: list[set[str]]) -> None:
        """Disconnect every member outside the largest group (the first, on a tie)."""
        with self._lock:
            keep = max(groups, key=len) if groups else set()
            cut = set(self._members) - keep
            for name in sorted(self._disconnected - cut):
                self.connect(name)
            for name in sorted(cut - self._disconnected):
                self.disconnect(name)

    def disconnect(self, name: str) -> None:
        with self._lock:
            docker("network", "disconnect", "--force", self.network, self.container(name))
            self._disconnected.add(name)

    def connect(self, name: str) -> None:
        with self._lock:
            m = self._members[name]
            args = ["network", "connect"]
            if m.kind == "replica":
                args += ["--ip", m.host, "--alias", name]
            else:
                args += ["--alias", "agent"]
            proc = docker(*args, self.network, self.container(name), check=False)
            if proc.returncode != 0 and "already exists" not in proc.stderr:
                raise RuntimeError(f"reconnecting {name}: {proc.stderr.strip()}")
            self._disconnected.discard(name)

    def power_cut(self, names: list[str]) -> None:
        raise NotImplementedError("the compose backend cannot cut the power (no FUSE mounts)")

    def stall_disk(self, name: str, on: bool = True) -> None:
        raise NotImplementedError("the compose backend cannot stall a disk (no FUSE mounts)")

    def loss(self, name: str, percent: int) -> None:
        raise NotImplementedError("the compose backend cannot drop packets")

    def heal(self) -> None:
        with self._lock:
            for name in sorted(self._disconnected):
                self.connect(name)

    # ---------------------------------------------------------------- teardown

    def save_logs(self) -> None:
        for name, m in self._members.items():
            cid = self._ids.get(name)
            if cid is None:
                continue
            with contextlib.suppress(Exception), m.log_path.open("w") as f:
                subprocess.run(["docker", "logs", "-t", cid], stdout=f,
                               stderr=subprocess.STDOUT, timeout=60, stdin=subprocess.DEVNULL)

    def _down(self) -> None:
        if not self.project or not self._compose:
            return
        with contextlib.suppress(Exception):
            for name in list(self._ids):
                self.resume(name)  # a paused container would hold `down` up
        self.save_logs()
        proc = self.compose("down", "-v", "--remove-orphans", "-t", "5", timeout=180,
                            check=False)
        if proc.returncode != 0 or leftovers(self.project):
            log.warning("compose down for %s: %s; removing by label", self.project,
                        proc.stderr.strip()[-500:])
            _remove_project(self.project)
        if self.run_dir is not None:
            with contextlib.suppress(OSError):
                remove_compose_files(self.run_dir)
        left = leftovers(self.project)
        if left:
            raise RuntimeError(f"compose project {self.project} left {left}")

    def teardown(self) -> None:
        """`down -v`, with the members' logs saved to their `log_path` first. Idempotent."""
        with self._lock:
            if self.registry is None:
                return
            errors = self.registry.teardown()  # runs _down
            if errors:
                raise RuntimeError(f"compose teardown left work undone: {errors}")
