"""Process identity on disk and in the OS.

A bare pid is not an identity: the kernel reuses pids. Pairing it with the
process create_time lets a later agent tell "still my process" from "someone
else who got the same number".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from hacontrol.tls.files import private_opener

PID_FILE = "pid.json"

# create_time is derived from boot time and clock ticks; allow for rounding
# when it has been through JSON and back.
_CREATE_TIME_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class PidRecord:
    pid: int
    pgid: int
    create_time: float
    command: list[str]
    # Isolation mode and cgroup directories of the process, so that a later
    # agent can still kill, freeze and account it after adopting it.
    cgroup_mode: str | None = None
    cgroups: dict[str, str] = field(default_factory=dict)


def decode_returncode(returncode: int) -> tuple[int | None, str | None]:
    """(exit_code, signal_name) from a subprocess returncode (negative = signal)."""
    if returncode >= 0:
        return returncode, None
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"SIG{-returncode}"
    return None, name


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def write_pid_record(alloc_dir: Path, record: PidRecord) -> None:
    # Write then rename so a crash mid-write never leaves a half file that a
    # later adopt would misread.
    alloc_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = alloc_dir / (PID_FILE + ".tmp")
    with open(tmp, "w", opener=private_opener) as f:
        f.write(json.dumps(asdict(record)))
    os.replace(tmp, alloc_dir / PID_FILE)


def read_pid_record(alloc_dir: Path) -> PidRecord | None:
    try:
        raw = json.loads((alloc_dir / PID_FILE).read_text())
        return PidRecord(
            pid=int(raw["pid"]),
            pgid=int(raw["pgid"]),
            create_time=float(raw["create_time"]),
            command=[str(a) for a in raw.get("command", [])],
            cgroup_mode=raw.get("cgroup_mode"),
            cgroups={str(k): str(v) for k, v in (raw.get("cgroups") or {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_pid_record(alloc_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (alloc_dir / PID_FILE).unlink()


def matches(record: PidRecord) -> psutil.Process | None:
    """The live process the record describes, or None if it is gone or the pid was reused."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > _CREATE_TIME_TOLERANCE_S:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in the process group.

    Zombies are skipped because an init that does not reap orphans (common in
    containers) would otherwise make a dead group look alive forever.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    members: list[int] = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
