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
import re
import resource
import signal
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# `read` gets the agent's go-ahead (EOF without it: the start was abandoned, exit quietly);
# stdin then becomes /dev/null as the allocation expects; `exec` replaces the shell, so the
# command keeps the pid (and process group) that the agent confined.
# The root gate: wait for the go-ahead, then exec setpriv (which becomes the user and
# execs the user gate) or, when the identity does not change, be the user gate itself.
ROOT_GATE_SCRIPT = 'read -r _ || exit 125; exec "$@"'
# The user gate: take the job's environment from the rest of the pipe (`export` lines the
# agent wrote, quoted), put stdin on /dev/null and exec the command. The stages before it
# run with a fixed, minimal environment: a job's LD_PRELOAD, BASH_ENV or SHELLOPTS must
# never reach a process that still runs as root.
# (`cat` reads the inherited pipe; sourcing /dev/stdin would reopen it, which the user may
# not do on a pipe root created, and an agent without CAP_CHOWN cannot hand it over.)
USER_GATE_SCRIPT = 'eval "$(cat)"; exec </dev/null; exec "$@"'
GATE_SCRIPT = 'read -r _ || exit 125; eval "$(cat)"; exec </dev/null; exec "$@"'
SAFE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
GATE_NAME = "hacontrol-start"
EXEC_TIMEOUT_S = 2.0
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
    return _search(program, path)


def _search(program: str, path: str) -> str | None:
    """The first executable `program` in the directories of `path`, as execvp looks (an
    empty entry is the current directory). shutil.which does this too, but importing
    shutil brings zlib, bz2 and lzma: 0.4 MB the agent would keep for its whole life."""
    for directory in path.split(os.pathsep):
        full = os.path.join(directory or os.curdir, program)
        if _executable(full):
            return full
    return None


def _executable(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


# Identity is dropped by util-linux's setpriv as the last step before the command when it
# is there: asking subprocess for user/group makes it fork() the agent instead of
# vfork(), which measured 11-19 ms per start against 2.4-4.2 ms (a 90 MB agent, 200 starts).
SETPRIV = _search("setpriv", os.environ.get("PATH") or os.defpath)


def start(req: StartRequest, stdout: IO[bytes], stderr: IO[bytes]
          ) -> tuple[subprocess.Popen[bytes], ExecWatch]:
    """Start `req.command` confined; StartError if it cannot. Blocking: call in a thread.

    Returns once the gate is let go, with an `ExecWatch` that tells when the command
    itself runs. That wait is left to the caller: under a small CPU quota the last exec
    can take tens of milliseconds, which a start thread would spend idle."""
    program = req.command[0]
    if find_program(program, req.env.get("PATH") or os.defpath, req.cwd) is None:
        raise StartError("exec", f"cannot exec {program!r}: not found or not executable")
    command, (uid, gid, groups) = with_identity(req, SETPRIV)
    gate_r, gate_w = os.pipe()
    try:
        try:
            proc = subprocess.Popen(
                [SHELL, "-c", _gate_script(command, req), GATE_NAME, *command],
                stdin=gate_r, stdout=stdout, stderr=stderr, env=SAFE_ENV, cwd=req.cwd,
                start_new_session=True, close_fds=True, restore_signals=True,
                umask=-1 if req.umask is None else req.umask,
                user=uid, group=gid, extra_groups=groups)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise StartError("start", f"cannot start {program!r}: {exc}") from None
        finally:
            os.close(gate_r)
        try:
            _confine(proc.pid, req)
            write_all(gate_w, b"go\n" + export_script(req.env))
            os.close(gate_w)
            gate_w = -1
        except StartError:
            abandon(proc)
            raise
        except OSError as exc:  # the gate pipe: the shell died before it was let go
            abandon(proc)
            raise StartError("start", f"cannot start {program!r}: {exc}") from None
    finally:
        if gate_w >= 0:
            os.close(gate_w)
    steps = [[SHELL, "-c", _gate_script(command, req), GATE_NAME, *command], command]
    if command != req.command:  # setpriv, then the shell it runs as the user
        steps.append([SHELL, "-c", USER_GATE_SCRIPT, GATE_NAME, *req.command])
    return proc, ExecWatch(proc.pid, steps, req.command)


Ids = tuple[int | None, int | None, list[int] | None]


def shell_safe_env(env: dict[str, str]) -> bool:
    """Whether every variable name can be exported by a shell (else: the exec wrapper)."""
    return all(NAME_RE.fullmatch(k) for k in env)


def export_script(env: dict[str, str]) -> bytes:
    """`export NAME='value'` lines that recreate `env` exactly in a POSIX shell (a single
    quote inside a value becomes '\\''; nothing else is special between single quotes)."""
    lines = [f"export {k}='" + v.replace("'", "'\\''") + "'\n" for k, v in env.items()]
    return "".join(lines).encode()


def _gate_script(command: list[str], req: StartRequest) -> str:
    return ROOT_GATE_SCRIPT if command != req.command else GATE_SCRIPT


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def with_identity(req: StartRequest, setpriv: str | None) -> tuple[list[str], Ids]:
    """The argv after the gate, and the identity arguments for subprocess: setpriv in the
    argv when there is one (keeps vfork), else subprocess's own user/group/extra_groups."""
    if req.uid is None and req.gid is None and req.groups is None:
        return list(req.command), (None, None, None)
    if setpriv is None:
        return list(req.command), (req.uid, req.gid, req.groups)
    argv = [setpriv]
    if req.groups is not None:
        argv.append(f"--groups={','.join(str(g) for g in req.groups)}" if req.groups
                    else "--clear-groups")
    if req.gid is not None:
        argv.append(f"--regid={req.gid}")
    if req.uid is not None:
        argv.append(f"--reuid={req.uid}")
    # setpriv keeps its effective capabilities until its own exec, so that exec would be
    # judged as root's (a file only root may execute would run). Its exec is a shell,
    # which the kernel starts without capabilities; the shell's exec of the command is
    # then judged as the user's, as it would be after subprocess's own setreuid.
    return [*argv, "--", SHELL, "-c", USER_GATE_SCRIPT, GATE_NAME, *req.command], \
        (None, None, None)


class ExecWatch:
    """Tells when a let-go gate runs the command itself: "running" then means the command
    and its identity, as it did with the exec wrapper's close-on-exec pipe.

    Until its last exec the process shows the gate's argv (then setpriv's). One that ends
    first could not exec the command: a zombie keeps the name of the program it last
    ran (comm), so the gate's or setpriv's name there means the command never ran (the
    shell wrote why to stderr.log). Nothing is reaped here: that is the watcher's job.
    """

    def __init__(self, pid: int, before: list[list[str]], wanted: list[str]) -> None:
        self.pid = pid
        self.wanted = wanted
        self._stale = [("\0".join(argv) + "\0").encode() for argv in before if argv != wanted]
        self._stale_names = {_comm_of(argv[0]) for argv in before if argv != wanted}
        self._stale_names.discard(_comm_of(wanted[0]))

    def ran(self) -> bool:
        """True once the command runs (or ran and ended); False while the gate still
        works; StartError if the process ended before it got to the command."""
        line = _read(f"/proc/{self.pid}/cmdline")
        if line:
            return line not in self._stale  # exec'd: argv differs from every step before
        # Empty while an exec swaps the program in, and in a zombie: only an ended
        # process is judged, by the name of the program it last ran.
        name, state = _stat_comm_state(_read(f"/proc/{self.pid}/stat"))
        if state not in (b"Z", b"X", None):
            return False
        if name in self._stale_names:
            raise StartError("exec", f"cannot exec {self.wanted[0]!r}: it ended before it "
                                     f"ran (see stderr.log)")
        return True


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _comm_of(program: str) -> bytes:
    """The name the kernel records for a process that exec'd `program` (15 bytes max)."""
    return os.path.basename(program).encode()[:15]


def _stat_comm_state(stat_line: bytes) -> tuple[bytes | None, bytes | None]:
    """(comm, state) from /proc/PID/stat; (None, None) when it could not be read."""
    start, end = stat_line.find(b"("), stat_line.rfind(b")")
    if not 0 <= start < end or len(stat_line) < end + 3:
        return None, None
    return stat_line[start + 1:end], stat_line[end + 2:end + 3]


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


def abandon(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap a child that never got past the gate."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
