"""Starting a process born in its cgroups: the start thread joins them, spawns, goes back.

In cgroup v1 a single thread may sit in a cgroup of its own (each hierarchy's ``tasks``
file), and a child starts in the cgroups of the thread that forks it. So the start thread
writes "0" (itself) into the allocation's ``tasks`` files, spawns the command with
`subprocess` (vfork and exec, from C), and writes "0" back into the ``tasks`` files of the
cgroups it came from. The command is confined before its first instruction, as behind the
start gate (`launch`), but the start is one vfork and one exec: no shell waiting for a
go-ahead, no `cat` for the environment, no polling of /proc until the command runs
(`subprocess` returns once the exec succeeded, or raises why it failed), and the kernel
moves the thread without the global lock a ``cgroup.procs`` write takes (moving the
calling thread needs no thread-group stability; that lock cost an RCU grace period).
Measured here, 100 sequential starts into fresh cgroups: 5.4 ms each (median) against
22.9 ms through the gate; 9.7 against 25.8 ms with a change of user.

A change of user goes through util-linux's setpriv and the user's gate shell, as behind
the start gate (`launch.with_identity`): the job's environment reaches only the user's
shell, through its stdin, never a process that runs as root. Without setpriv (or with
variable names a shell cannot export) `subprocess` changes the identity in the child right
before the exec of the command, which gets the environment; it then forks instead of
vfork (1.4x the CPU per start here, more for a larger agent).

Not for: cgroup v2 (a thread cannot leave its process's domain cgroup there), rlimit mode
(rlimits are per process, set through the gate with prlimit), a pids limit (the thread
would count against it while the command starts), inherited sockets (renumbered by the
exec wrapper). `usable` says which.

Blocking: runs in a start thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from hacontrol.agent.cgroups import CGROUP_ROOT, MODE_V1, parse_proc_cgroup
from hacontrol.agent.launch import (
    SAFE_ENV,
    SETPRIV,
    ExecWatch,
    StartError,
    StartRequest,
    abandon,
    export_script,
    find_program,
    shell_safe_env,
    with_identity,
    write_all,
)

log = logging.getLogger(__name__)

TASKS = "tasks"


def usable(mode: str | None, has_rlimits: bool, has_fds: bool, pids_limit: bool) -> bool:
    """Whether a start can be direct (see the module's docstring); `mode` None: no cgroup."""
    if has_rlimits or has_fds or pids_limit:
        return False
    return mode in (None, MODE_V1)


def home_tasks(root: Path = CGROUP_ROOT) -> dict[str, str]:
    """controller -> the ``tasks`` file of the calling thread's cgroup in that hierarchy."""
    with open("/proc/thread-self/cgroup") as f:
        own = parse_proc_cgroup(f.read())
    out: dict[str, str] = {}
    for controller, path in own.items():
        if not controller or controller.startswith("name="):
            continue
        mount = root / controller
        where = mount / path.lstrip("/")
        # Inside a cgroup namespace the path may not exist under our mount: the mount root
        # is then our own cgroup (as for the allocations' parent, cgroups._nested).
        out[controller] = str((where if where.is_dir() else mount) / TASKS)
    return out


def _write_self(tasks_file: str) -> None:
    fd = os.open(tasks_file, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)


_thread = threading.local()


def _home() -> dict[str, str]:
    """home_tasks() of the calling thread, read once per start thread: it goes back there
    after every start, and nothing else moves a single thread of the agent."""
    home: dict[str, str] | None = getattr(_thread, "home", None)
    if home is None:
        home = _thread.home = home_tasks()
    return home


@contextlib.contextmanager
def joined(cgroups: dict[str, Path]) -> Iterator[None]:
    """The calling thread in `cgroups` (controller -> directory) for the block's duration."""
    if not cgroups:
        yield
        return
    home = _home()
    entered: list[str] = []
    try:
        for controller, directory in cgroups.items():
            _write_self(str(directory / TASKS))
            entered.append(controller)
    except OSError as exc:
        _leave(home, entered)
        raise StartError("cgroup", f"cannot join cgroup: {exc}") from None
    try:
        yield
    finally:
        _leave(home, entered)


def _leave(home: dict[str, str], entered: list[str]) -> None:
    for controller in entered:
        target = home.get(controller)
        if target is None:
            continue
        try:
            _write_self(target)
        except OSError:
            # Left in an allocation's cgroup, this thread would be charged there and
            # listed among its processes (its pids exclude the agent's, see
            # AllocationCgroup.pids), and the cgroup could not be removed.
            log.error("a start thread could not return to %s", target, exc_info=True)


def start(req: StartRequest, cgroups: dict[str, Path], stdout: IO[bytes],
          stderr: IO[bytes]) -> tuple[subprocess.Popen[bytes], ExecWatch | None]:
    """Start `req.command` in `cgroups` (v1 directories); StartError if it cannot.

    Without a change of user the command itself runs on return (the exec succeeded) and
    the watch is None. With one, setpriv becomes the user and execs the user's gate
    (`launch.USER_GATE_SCRIPT`), which takes the job's environment from its stdin: the
    `ExecWatch` tells when the command runs, as for the gate."""
    program = req.command[0]
    ids = _change(req)
    # subprocess reports a failed exec of the command itself (not found, not executable)
    # as an OSError, which `_popen` turns into a failed start: no search of PATH first.
    if ids == (None, None, None):
        return _popen(req, cgroups, req.command, req.env, subprocess.DEVNULL, stdout,
                      stderr, ids), None
    changed = StartRequest(req.command, req.env, req.cwd, ids[0], ids[1], ids[2], req.umask,
                           [], [])
    if SETPRIV is None or not shell_safe_env(req.env):
        # subprocess changes the identity right before the exec (a fork, not a vfork):
        # the environment goes to that exec only.
        return _popen(req, cgroups, req.command, req.env, subprocess.DEVNULL, stdout,
                      stderr, ids), None
    # Behind setpriv and the user's shell a missing program would be exit status 127 of
    # a started process, a crash loop: looked for first.
    if find_program(program, req.env.get("PATH") or os.defpath, req.cwd) is None:
        raise StartError("exec", f"cannot exec {program!r}: not found or not executable")
    # setpriv keeps vfork (a fork copies the agent's page tables: 1.4x the CPU per start).
    argv, _ = with_identity(changed, SETPRIV)
    env_r, env_w = os.pipe()
    try:
        try:
            proc = _popen(req, cgroups, argv, SAFE_ENV, env_r, stdout, stderr,
                          (None, None, None))
        finally:
            os.close(env_r)
        try:
            write_all(env_w, export_script(req.env))
        except OSError as exc:  # the gate died before it read it
            abandon(proc)
            raise StartError("start", f"cannot start {program!r}: {exc}") from None
    finally:
        os.close(env_w)
    return proc, ExecWatch(proc.pid, [argv, argv[argv.index("--") + 1:]], req.command)


def _popen(req: StartRequest, cgroups: dict[str, Path], argv: list[str],
           env: dict[str, str], stdin: int, stdout: IO[bytes], stderr: IO[bytes],
           ids: tuple[int | None, int | None, list[int] | None]
           ) -> subprocess.Popen[bytes]:
    program = req.command[0]
    with joined(cgroups):
        try:
            return subprocess.Popen(
                argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=req.cwd,
                start_new_session=True, close_fds=True, restore_signals=True,
                umask=-1 if req.umask is None else req.umask,
                user=ids[0], group=ids[1], extra_groups=ids[2])
        except OSError as exc:
            if req.cwd is not None and exc.filename == req.cwd:  # its chdir failed
                raise StartError("start", f"cannot start {program!r}: {exc}") from None
            raise StartError("exec", f"cannot exec {program!r}: {exc.strerror}") from None
        except (ValueError, subprocess.SubprocessError) as exc:
            raise StartError("start", f"cannot start {program!r}: {exc}") from None


def _change(req: StartRequest) -> tuple[int | None, int | None, list[int] | None]:
    """The identity arguments for subprocess: None for what the agent already is. Asking
    for any makes subprocess fork() the agent instead of vfork(), a copy of its page
    tables per start (a root agent running jobs as root changes nothing)."""
    uid = None if req.uid is None or req.uid == os.geteuid() == os.getuid() else req.uid
    gid = None if req.gid is None or req.gid == os.getegid() == os.getgid() else req.gid
    groups = req.groups
    # The primary group grants what a supplementary one of the same id would: root's
    # group list [0] is no change for a root agent without supplementary groups.
    egid = os.getegid()
    if groups is not None and uid is None and gid is None \
            and set(groups) | {egid} == set(os.getgroups()) | {egid}:
        groups = None
    return uid, gid, groups
