"""Process identity on disk and in the OS.

A bare pid is not an identity: the kernel reuses pids. Pairing it with the
process create_time lets a later agent tell "still my process" from "someone
else who got the same number".

Read from /proc directly (one read of /proc/<pid>/stat per check), not through a psutil
object. create_time is computed as psutil computes it (start in clock ticks since boot,
plus /proc/stat's boot time), so pid records written by earlier agents, which used psutil,
still match.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from hacontrol.agent.metrics import CLOCK_TICKS, GONE, STAT_START, STAT_STATE, read_small
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


def _stat_tail(pid: int | str) -> bytes | None:
    """/proc/<pid>/stat after the command (which may hold spaces and parentheses); None
    when the process is gone."""
    try:
        data = read_small(f"/proc/{pid}/stat")
    except OSError:
        return None
    return data[data.rfind(b")") + 2 :]


def _stat_fields(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command; None when it is gone."""
    tail = _stat_tail(pid)
    fields = tail.split() if tail is not None else []
    return fields if len(fields) > STAT_START else None


def boot_time() -> float:
    """When the system booted, in seconds since the epoch (/proc/stat's btime). Read each
    time, as psutil does: the kernel derives it from the wall clock, which may be set."""
    with open("/proc/stat", "rb", buffering=0) as f:
        data = f.read()  # to the end: past a line per CPU, larger than one page
    at = data.find(b"\nbtime ")
    if at < 0:
        raise OSError("no btime in /proc/stat")
    return float(data[at + 7 : data.index(b"\n", at + 7)])


def _started(fields: list[bytes]) -> float:
    return int(fields[STAT_START]) / CLOCK_TICKS + boot_time()


def create_time(pid: int) -> float | None:
    """When `pid` started, in seconds since the epoch; None when it is gone."""
    fields = _stat_fields(pid)
    return _started(fields) if fields is not None else None


def same_process(pid: int, ctime: float, zombie: bool = False) -> bool:
    """Whether `pid` is still the process that started at `ctime`, and is not a zombie
    (`zombie`: a zombie counts, for a watcher that will reap it)."""
    fields = _stat_fields(pid)
    if fields is None or (fields[STAT_STATE] in GONE and not zombie):
        return False
    return abs(_started(fields) - ctime) <= _CREATE_TIME_TOLERANCE_S


def is_live(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[STAT_STATE] not in GONE


def write_pid_record(alloc_dir: Path, record: PidRecord) -> None:
    # Write then rename so a crash mid-write never leaves a half file that a
    # later adopt would misread.
    alloc_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = alloc_dir / (PID_FILE + ".tmp")
    # Spelled out rather than dataclasses.asdict (a deep copy): written at every start.
    data = {"pid": record.pid, "pgid": record.pgid, "create_time": record.create_time,
            "command": record.command, "cgroup_mode": record.cgroup_mode,
            "cgroups": record.cgroups}
    with open(tmp, "w", opener=private_opener) as f:
        f.write(json.dumps(data))
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


def matches(record: PidRecord) -> bool:
    """Whether the process the record describes still runs (False: gone, or pid reused)."""
    return same_process(record.pid, record.create_time)


def _state_and_group(pid: int | str) -> tuple[bytes, int] | None:
    """(state, process group) from /proc/<pid>/stat; None when it is gone."""
    tail = _stat_tail(pid)
    if tail is None:
        return None
    try:
        state, _, group = tail.split(maxsplit=3)[:3]
        return state, int(group)
    except ValueError:
        return None


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in the process group.

    Zombies are skipped because an init that does not reap orphans (common in
    containers) would otherwise make a dead group look alive forever.
    """
    if not _group_exists(pgid):
        return []
    # One read of /proc/<pid>/stat per process (state and group are both there), not a
    # psutil object and /proc/<pid>/status each.
    members: list[int] = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _state_and_group(name)
            if found is not None and found[0] not in GONE and found[1] == pgid:
                members.append(int(name))
    return members


def group_alive(pgid: int) -> bool:
    """Whether a live process is left in the group. Stops poll this on the event loop:
    the usual answers (no such group; its leader still runs) cost a syscall or two, the
    whole process table is read only when the leader is gone and others may remain."""
    if not _group_exists(pgid):
        return False
    leader = _state_and_group(pgid)
    if leader is not None and leader[0] not in GONE and leader[1] == pgid:
        return True
    return bool(group_members(pgid))


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
