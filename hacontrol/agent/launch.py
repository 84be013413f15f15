"""Starting an allocation's process: a fork and a /bin/sh exec, confined before it runs.

The child is forked by `subprocess`'s C code, which also starts its session, sets its
groups, gid, uid and umask and restores the default signal dispositions, then execs
/bin/sh with a short gate script that waits for one line on its stdin (a pipe). While it
waits, the agent (still root) moves its pid into the allocation's cgroups and sets its
rlimits with prlimit(2); then it writes the line, and the gate execs the command with
stdin on /dev/null. Nothing of the command runs before it is confined, as with the exec
wrapper, but a start costs a fork and a shell exec (about 1 ms) instead of starting a
Python interpreter (about 20 ms of CPU each, which made 1,000 starts take 20 s of CPU).

Allocations that inherit listening sockets still go through the Python exec wrapper
(`execwrap`): their sockets must be moved to fds 3.. and LISTEN_PID set to the command's
own pid, and the shell cannot name descriptors above 9.

Everything here blocks (fork, writes to cgroupfs): the caller runs it in a thread so the
agent's event loop, which carries its heartbeats, never waits on a start.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# `read` gets the agent's go-ahead (EOF without it: the start was abandoned, exit quietly);
# stdin then becomes /dev/null as the allocation expects; `exec` replaces the shell, so the
# command keeps the pid (and process group) that the agent confined.
GATE_SCRIPT = 'read -r _ || exit 125; exec </dev/null; exec "$@"'
GATE_NAME = "hacontrol-start"
SHELL = "/bin/sh"


class StartError(Exception):
    """The process could not be started; `stage` says where (cgroup, rlimit, exec...)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class StartRequest:
    command: list[str]
    env: dict[str, str]
    cwd: str | None
    uid: int | None
    gid: int | None
    groups: list[int] | None
    umask: int | None
    cgroup_procs: list[str]
    rlimits: list[tuple[str, int, int]]


def find_program(program: str, path: str, cwd: str | None) -> str | None:
    """Where `program` is, searched as exec would (PATH unless it has a slash); None when
    it is missing or not executable. Checked before the fork so that a typo is a failed
    start with a clear message, not a crash loop of the shell's exit code 127."""
    if "/" in program:
        full = program if os.path.isabs(program) else os.path.join(cwd or os.getcwd(), program)
        return full if _executable(full) else None
    return shutil.which(program, path=path)


def _executable(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def start(req: StartRequest, stdout: IO[bytes], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start `req.command` confined; StartError if it cannot. Blocking: call in a thread."""
    program = req.command[0]
    if find_program(program, req.env.get("PATH") or os.defpath, req.cwd) is None:
        raise StartError("exec", f"cannot exec {program!r}: not found or not executable")
    gate_r, gate_w = os.pipe()
    try:
        try:
            proc = subprocess.Popen(
                [SHELL, "-c", GATE_SCRIPT, GATE_NAME, *req.command],
                stdin=gate_r, stdout=stdout, stderr=stderr, env=req.env, cwd=req.cwd,
                start_new_session=True, close_fds=True, restore_signals=True,
                user=req.uid, group=req.gid, extra_groups=req.groups,
                umask=-1 if req.umask is None else req.umask)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise StartError("start", f"cannot start {program!r}: {exc}") from None
        finally:
            os.close(gate_r)
        try:
            _confine(proc.pid, req)
            os.write(gate_w, b"go\n")
        except StartError:
            _abandon(proc)
            raise
        except OSError as exc:  # the gate pipe: the shell died before it was let go
            _abandon(proc)
            raise StartError("start", f"cannot start {program!r}: {exc}") from None
    finally:
        os.close(gate_w)
    return proc


def _confine(pid: int, req: StartRequest) -> None:
    try:
        for procs in req.cgroup_procs:
            Path(procs).write_text(str(pid))
    except OSError as exc:
        raise StartError("cgroup", f"cannot join cgroup: {exc}") from None
    try:
        for name, soft, hard in req.rlimits:
            resource.prlimit(pid, getattr(resource, name), (soft, hard))
    except (OSError, ValueError, AttributeError) as exc:
        raise StartError("rlimit", f"cannot set rlimit: {exc}") from None


def _abandon(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a child that never got past the gate."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
