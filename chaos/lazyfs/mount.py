"""One power-loss mount as a process of its own: mount, cut the power, remount, unmount."""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .store import STALL

FSNAME = "hacontrol-powerloss"
REPO = Path(__file__).resolve().parents[2]
MOUNT_TIMEOUT_S = 15.0


def unavailable() -> str | None:
    """Why power-loss mounts cannot work on this machine, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "FUSE mounts need Linux"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        return "not root and no fusermount3 (apt-get install -y fuse3)"
    if ctypes.util.find_library("fuse3") is None:
        return "libfuse3 not found (apt-get install -y fuse3 libfuse3-3)"
    try:
        import mfusepy  # type: ignore[import-untyped]  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy not importable ({exc}); pip install mfusepy"
    return None


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 1)


def detach(path: Path) -> None:
    """Lazily unmount `path` (a dead mount answers every access with ENOTCONN)."""
    if not is_mounted(path):
        return
    argv = (["umount", "-l", str(path)] if os.geteuid() == 0
            else ["fusermount3", "-u", "-z", str(path)])
    subprocess.run(argv, capture_output=True, check=False, timeout=20)


def sweep_dead_mounts() -> list[str]:
    """Detach power-loss mounts whose process is gone (left by a run killed hard)."""
    removed: list[str] = []
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return removed
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or parts[0] != FSNAME:
            continue
        try:
            os.stat(parts[1])
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                detach(Path(parts[1]))
                removed.append(f"mount {parts[1]}")
    return removed


class PowerLossMount:
    """`mountpoint` served by `python -m chaos.lazyfs backing mountpoint` in its own process.

    `power_cut()` SIGKILLs that process: whatever it held unsynced is gone, and the kernel
    drops its own dirty pages of the mount. Call it after SIGKILLing the processes using the
    mount (a real power cut stops them too). `mount()` then serves the backing directory
    again, which holds exactly what was synced.
    """

    def __init__(self, backing: Path, mountpoint: Path, log_path: Path,
                 python: str = sys.executable) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.log_path = log_path
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def mount(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        detach(self.mountpoint)
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "chaos.lazyfs", str(self.backing), str(self.mountpoint)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not is_mounted(self.mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"power-loss mount of {self.mountpoint} exited with "
                                   f"{self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.power_cut()
                raise RuntimeError(f"{self.mountpoint} not mounted within {MOUNT_TIMEOUT_S}s")
            time.sleep(0.02)

    def stall(self, on: bool = True) -> None:
        """Stall the disk (fsync and fdatasync wait; reads and writes go on) or lift it.

        A power cut during a stall loses whatever the stalled syncs were to make durable.
        """
        flag = self.backing / STALL
        if on:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def power_cut(self) -> None:
        """Lose everything unsynced: SIGKILL the filesystem and detach its dead mount."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)
            self.proc = None
            self.cuts += 1
        detach(self.mountpoint)
        self.stall(False)  # the disk comes back working

    def unmount(self) -> None:
        """A clean shutdown: everything is synced, then the mount goes away."""
        if self.proc is None:
            detach(self.mountpoint)
            return
        argv = (["umount", str(self.mountpoint)] if os.geteuid() == 0
                else ["fusermount3", "-u", str(self.mountpoint)])
        done = subprocess.run(argv, capture_output=True, check=False, timeout=20)
        try:
            if done.returncode != 0:
                raise subprocess.TimeoutExpired(argv, 0)
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            detach(self.mountpoint)
        self.proc = None
