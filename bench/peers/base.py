"""Finding (and installing) the peers we compare against, outside the repository.

Peers live in a cache directory (default ~/.cache/hacontrol-bench, or
$HACONTROL_BENCH_CACHE): a venv for the pip ones (supervisor, circus), an npm prefix for
pm2; etcd comes from Debian's `etcd-server` package. A peer that is not there and cannot
be installed is reported as missing with the reason, and its columns stay empty: nothing
is ever faked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Log = Callable[[str], None]


def default_cache() -> Path:
    env = os.environ.get("HACONTROL_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hacontrol-bench"


@dataclass(frozen=True)
class PeerStatus:
    name: str
    exe: Path | None = None  # the program to run (daemon or CLI)
    version: str | None = None
    missing: str | None = None  # why it is not available

    @property
    def available(self) -> bool:
        return self.missing is None and self.exe is not None

    def describe(self) -> str:
        if self.available:
            return f"{self.name} {self.version or '?'} ({self.exe})"
        return f"{self.name}: missing ({self.missing})"


def _run(argv: list[str], log: Log, timeout: float = 600) -> bool:
    log("installing: " + " ".join(argv))
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"  failed: {exc}")
        return False
    if done.returncode != 0:
        log(f"  failed (rc {done.returncode}): {done.stdout.decode(errors='replace')[-800:]}")
    return done.returncode == 0


def pip_peer(name: str, package: str, exe_name: str, cache: Path, install: bool,
             log: Log) -> PeerStatus:
    """A Python tool in the cache's own venv (never in the project's environment)."""
    venv = cache / "venv"
    exe = venv / "bin" / exe_name
    if not exe.exists() and install:
        if not (venv / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(venv)], log)
        if (venv / "bin" / "python").exists():
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", package], log)
    if not exe.exists():
        how = "install failed" if install else "not installed and --no-install given"
        return PeerStatus(name, missing=f"{exe} absent: {how}")
    try:
        out = subprocess.run([str(venv / "bin" / "python"), "-c",
                              f"import importlib.metadata as m; print(m.version({package!r}))"],
                             capture_output=True, text=True, timeout=60)
        version = out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        version = None
    return PeerStatus(name, exe=exe, version=version)


def npm_peer(name: str, package: str, cache: Path, install: bool, log: Log) -> PeerStatus:
    """A Node tool under the cache's npm prefix, run by the machine's own node."""
    prefix = cache / "npm"
    exe = prefix / "bin" / package
    node = shutil.which("node")
    if node is None:
        return PeerStatus(name, missing="node not found (Debian: apt-get install nodejs npm)")
    if not exe.exists() and install:
        npm = shutil.which("npm")
        if npm is None:
            return PeerStatus(name, missing="npm not found (Debian: apt-get install npm)")
        _run([npm, "install", "-g", "--prefix", str(prefix), package], log)
    if not exe.exists():
        how = "install failed" if install else "not installed and --no-install given"
        return PeerStatus(name, missing=f"{exe} absent: {how}")
    # Read the version from package.json: `pm2 --version` would spawn a daemon.
    version = None
    meta = prefix / "lib" / "node_modules" / package / "package.json"
    try:
        version = json.loads(meta.read_text()).get("version")
    except (OSError, ValueError):
        pass
    return PeerStatus(name, exe=exe, version=version)


def apt_peer(name: str, package: str, exe_name: str, install: bool, log: Log) -> PeerStatus:
    """A Debian package's program; installed with apt-get only as root with apt-get there."""
    exe = shutil.which(exe_name)
    if exe is None and install:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return PeerStatus(name, missing=f"{exe_name} not found; not root or no apt-get "
                                            f"(apt-get install {package})")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "-q", package]
        if subprocess.run(argv, capture_output=True, env=env).returncode != 0:
            _run(["apt-get", "update", "-q"], log)
            _run(argv, log)
        exe = shutil.which(exe_name)
    if exe is None:
        how = "install failed" if install else "not installed and --no-install given"
        return PeerStatus(name, missing=f"{exe_name} not on PATH: {how}")
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
        first = out.stdout.splitlines()[0] if out.stdout else ""
        version = first.split()[-1] if first else None
    except (OSError, subprocess.TimeoutExpired):
        version = None
    return PeerStatus(name, exe=Path(exe), version=version)
