"""Process and file chores of ``hacontrol dev``: secret files, port checks, child
process setup, log tails, and killing job processes an agent left behind."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOG_TAIL_LINES = 8
PR_SET_PDEATHSIG = 1


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


def load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def child_setup(parent_pid: int, libc: ctypes.CDLL | None) -> Callable[[], None]:
    def setup() -> None:
        # If dev itself is killed outright, children get SIGTERM instead of being
        # orphaned with job processes still running.
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


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


def iter_allocation_pid_records(data_dir: Path) -> Iterator[PidRecord]:
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
