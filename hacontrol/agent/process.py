"""One process group of an allocation: starting it, watching it, signalling it.

Plain mechanics with no policy: the allocation runner decides when to start,
stop or restart; this module only knows how.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hacontrol.agent import direct, execwrap, launch, procinfo
from hacontrol.agent.cgroups import AllocationCgroup
from hacontrol.agent.spec import AllocationSpec
from hacontrol.tls.files import private_opener

log = logging.getLogger(__name__)

STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"

WRAPPER = str(Path(execwrap.__file__).resolve())

# Starts run in these threads, at most six at a time: a burst of a thousand queues here
# instead of crowding the event loop (and the heartbeat it carries). A start waits (vfork,
# the cgroup move's RCU grace period, the exec, a user database) with the GIL released, so
# more than one pays, but since starts spawn directly (hacontrol.agent.direct) their CPU is
# the bound: starting 200 alone with 8 / 4 / 2 threads took 0.61 / 0.58 / 0.69 s, 1,000
# took 3.3 / 3.3 / 3.5 s (bench/agent_starts.py, medians of 3-5, 2 cores). Each thread keeps
# a malloc arena: with 200 running the agent's RSS was 28.9 / 28.5 / 28.4 MB. In a real
# agent beside its cluster, four made 1,000 starts slower (`bench.compare --only agents`:
# 3.25-3.47 s against 2.87-2.98 s with eight); six were as fast as eight (2.8 s, two runs
# each) and keep two arenas fewer.
_STARTER = ThreadPoolExecutor(max_workers=6, thread_name_prefix="hacontrol-start")

ExitStatus = tuple[int | None, str | None]


class LaunchFailed(Exception):
    """The process could not be started; the message says why, for the report."""


@dataclass(frozen=True)
class Identity:
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None


def resolve_identity(user: str | None, group: str | None, euid: int) -> Identity:
    """uid/gid/supplementary groups for the child; ValueError if not possible.

    Names or numbers are accepted. Changing identity needs root; a non-root
    agent may only "change" to its own ids.
    """
    if user is None and group is None:
        return Identity()
    uid: int | None = None
    gid: int | None = None
    groups: list[int] | None = None
    if user is not None:
        try:
            pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, OverflowError):
            raise ValueError(f"unknown user {user!r}") from None
        uid, gid = pw.pw_uid, pw.pw_gid
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"unknown group {group!r}") from None
    if uid is not None and gid is not None:
        groups = sorted(set(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)))
    elif gid is not None:
        groups = [gid]
    if euid != 0:
        if (uid is None or uid == euid) and (gid is None or gid == os.getegid()):
            return Identity()
        raise ValueError("user/group can only be set when the agent runs as root")
    return Identity(uid, gid, groups)


def wrapper_argv(config: dict[str, Any], command: list[str]) -> list[str]:
    """The argv that runs `command` through the exec wrapper with `config` (cgroups,
    rlimits, identity, umask, fds: see `execwrap`)."""
    return [sys.executable, "-I", "-S", WRAPPER, json.dumps(config), *command]


def shell_command(spec: AllocationSpec) -> list[str]:
    """The argv to exec: /bin/sh -c only when the spec asks for a shell."""
    if not spec.shell:
        return list(spec.command)
    # Like subprocess with shell=True: further items become $0, $1, ...
    return ["/bin/sh", "-c", spec.command[0], *spec.command[1:]]


def env_file(env: dict[str, str]) -> int:
    """An anonymous file (memfd) holding `env` as JSON, read by the exec wrapper: a job's
    environment never becomes the environment of a process that runs as root."""
    fd = os.memfd_create("hacontrol-env", os.MFD_CLOEXEC)
    os.write(fd, json.dumps(env).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def child_env(spec: AllocationSpec) -> dict[str, str]:
    env = dict(spec.env)
    env.setdefault("PATH", os.environ.get("PATH") or os.defpath)
    return env


# ---------------------------------------------------------------- handles


class Handle(Protocol):
    """A running process group being watched."""

    pid: int
    pgid: int
    done: asyncio.Future[ExitStatus]
    adopted: bool
    cg: AllocationCgroup | None

    def close(self) -> None: ...


class _PidfdWatch:
    """A process watched through a pidfd on the event loop; `done` once it has exited.

    A pidfd becomes readable when its process has exited, zombie or not, whoever its
    parent is (some container inits never reap), and it names that process only, so a
    recycled pid cannot pass for it. No thread per process (asyncio's threaded child
    watcher started one per child: 1,000 threads for 1,000 allocations) and no polling
    (adopted processes were checked 20 times a second each).
    """

    def _watch(self, pid: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[ExitStatus] = self._loop.create_future()
        self._pidfd: int | None = os.pidfd_open(pid)
        self._loop.add_reader(self._pidfd, self._on_readable)

    def _reap(self, pidfd: int) -> ExitStatus | None:
        """The exit status once the process has exited; None on a spurious wake-up."""
        raise NotImplementedError

    def _on_readable(self) -> None:
        if self._pidfd is None:
            return
        status = self._reap(self._pidfd)
        if status is None:
            return
        self.close()
        if not self.done.done():
            self.done.set_result(status)

    def close(self) -> None:
        """Stop watching (the process keeps running when it has not exited: detach)."""
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class ChildHandle(_PidfdWatch):
    """A process we spawned, reaped through its pidfd."""

    adopted = False

    def __init__(self, proc: subprocess.Popen[bytes], cg: AllocationCgroup | None) -> None:
        # The Popen is let go (0.5 KB a process, held for its whole run). Marked collected
        # first: Popen's __del__ queues a child without a returncode for a waitpid() at the
        # next Popen, which could reap a later process that reuses the pid. The pidfd
        # reaps this one.
        proc.returncode = 0
        self.pid = proc.pid
        # start_new_session makes the child the leader of its own group.
        self.pgid = proc.pid
        self.cg = cg
        self._watch(proc.pid)

    def _reap(self, pidfd: int) -> ExitStatus | None:
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: the status is lost
            code = 0
        else:
            if info is None:
                return None  # not exited yet
            code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        return procinfo.decode_returncode(code)


class AdoptedHandle(_PidfdWatch):
    """A process left behind by an earlier agent (not our child, as a rule)."""

    adopted = True

    def __init__(self, pid: int, ctime: float, pgid: int, cg: AllocationCgroup | None) -> None:
        self.pid = pid
        self.pgid = pgid
        self.cg = cg
        try:
            self._watch(pid)
            # Opened after the record was checked: make sure it is still that process.
            # One that exited since is still watched: the pidfd reports it at once, and
            # reaps it if it is the agent's own child.
            gone = not procinfo.same_process(pid, ctime, zombie=True)
        except ProcessLookupError:
            self._pidfd = None
            gone = True
        if gone:
            self.close()
            self.done.set_result((None, None))

    def _reap(self, pidfd: int) -> ExitStatus | None:
        # Our own child still (adopted by the agent that detached it): reap it. The exit
        # status of anyone else's is not ours to collect.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        return None, None


# ---------------------------------------------------------------- launching


@dataclass
class LaunchConfig:
    """What the prestart hooks contribute to the start's set-up."""

    cg: AllocationCgroup | None = None
    # Makes the allocation's cgroup, in the start thread (one hop per start, not two);
    # `cg` is then set to what it made. Its OSError is a failed start.
    new_cg: Callable[[], AllocationCgroup] | None = None
    rlimits: list[tuple[str, int, int]] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    fd_names: list[str] = field(default_factory=list)
    record_pid: bool = False  # write pid.json (for adoption after a restart) once started


async def spawn(spec: AllocationSpec, alloc_dir: Path, config: LaunchConfig) -> ChildHandle:
    """Start the allocation's command, confined (cgroups, rlimits, identity) before it
    runs; LaunchFailed if it cannot. The fork and the cgroup writes happen in a worker
    thread: the event loop keeps serving heartbeats while hundreds of starts run."""
    command = shell_command(spec)
    proc, watch = await asyncio.get_running_loop().run_in_executor(
        _STARTER, _start_blocking, spec, command, alloc_dir, config)
    if watch is not None:
        try:
            await _until_exec(watch)
        except launch.StartError as exc:
            await asyncio.to_thread(proc.wait)  # a zombie by now: reaped at once
            procinfo.remove_pid_record(alloc_dir)
            raise LaunchFailed(str(exc)) from None
    return ChildHandle(proc, config.cg)


async def _until_exec(watch: launch.ExecWatch) -> None:
    """Wait, on the event loop and without a thread, until the command itself runs: under
    a small CPU quota the gate's last exec can take tens of milliseconds, which a start
    thread would otherwise spend idle (the next start waiting behind it)."""
    deadline = time.monotonic() + launch.EXEC_TIMEOUT_S
    pause = 0.0002
    while not watch.ran():
        if time.monotonic() > deadline:
            return  # slow, not failed: the watcher reports whatever it does next
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.005)


Started = tuple[subprocess.Popen[bytes], launch.ExecWatch | None]


def _start_blocking(spec: AllocationSpec, command: list[str], alloc_dir: Path,
                    config: LaunchConfig) -> Started:
    # Looked up here, not on the event loop: the user and group databases are files
    # (0.2 ms per start here, a thousand starts' worth of heartbeat delay on the loop).
    try:
        ident = resolve_identity(spec.user, spec.group, os.geteuid())
    except ValueError as exc:
        raise LaunchFailed(f"cannot start {command[0]!r}: {exc}") from None
    if config.new_cg is not None:
        try:
            config.cg = config.new_cg()
        except OSError as exc:
            raise LaunchFailed(f"cannot create cgroup: {exc}") from None
        created: AllocationCgroup | None = config.cg
    else:
        created = None
    try:
        proc, watch = _start_in(spec, command, ident, alloc_dir, config)
    except BaseException:
        if created is not None:
            created.remove()  # empty: nothing ever ran in it
            config.cg = None
        raise
    if config.cg is not None:
        # Only now: see cgroups.cpu_limit (a start under its quota crawls).
        try:
            config.cg.limit_cpu(spec.resources)
        except OSError as exc:
            # Never run without the limit asked for.
            config.cg.kill()
            proc.wait()
            raise LaunchFailed(f"cannot limit the cpu of {command[0]!r}: {exc}") from None
    if config.record_pid:
        _record(spec, alloc_dir, proc.pid, config.cg)
    return proc, watch


def _start_in(spec: AllocationSpec, command: list[str], ident: Identity,
              alloc_dir: Path, config: LaunchConfig) -> Started:
    try:
        alloc_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (
            open(alloc_dir / STDOUT_LOG, "ab", opener=private_opener) as out,
            open(alloc_dir / STDERR_LOG, "ab", opener=private_opener) as err,
        ):
            cg = config.cg
            res = spec.resources
            if direct.usable(cg.mode if cg is not None else None, bool(config.rlimits),
                             bool(config.fds), res is not None and res.pids is not None):
                return _start_direct(spec, command, ident, config, out, err)
            if config.fds or not launch.shell_safe_env(dict(spec.env)):
                # The wrapper has exec'd when it returns.
                return _start_wrapped(spec, command, ident, config, out, err), None
            return _start_gated(spec, command, ident, config, out, err)
    except OSError as exc:
        raise LaunchFailed(f"cannot start {command[0]!r}: {exc}") from None


def _start_direct(spec: AllocationSpec, command: list[str], ident: Identity,
                  config: LaunchConfig, out: Any, err: Any) -> Started:
    req = launch.StartRequest(
        command=command, env=child_env(spec), cwd=spec.cwd, uid=ident.uid,
        gid=ident.gid, groups=ident.groups, umask=spec.umask, cgroup_procs=[], rlimits=[])
    try:
        return direct.start(req, dict(config.cg.paths) if config.cg is not None else {},
                            out, err)
    except launch.StartError as exc:
        raise LaunchFailed(str(exc) if exc.stage in ("exec", "start")
                           else f"cannot start {command[0]!r}: {exc}") from None


def _start_gated(spec: AllocationSpec, command: list[str], ident: Identity,
                 config: LaunchConfig, out: Any, err: Any
                 ) -> tuple[subprocess.Popen[bytes], launch.ExecWatch]:
    req = launch.StartRequest(
        command=command, env=child_env(spec), cwd=spec.cwd, uid=ident.uid,
        gid=ident.gid, groups=ident.groups, umask=spec.umask,
        cgroup_procs=config.cg.procs_files() if config.cg is not None else [],
        rlimits=list(config.rlimits))
    try:
        return launch.start(req, out, err)
    except launch.StartError as exc:
        raise LaunchFailed(str(exc) if exc.stage == "exec"
                           else f"cannot start {command[0]!r}: {exc}") from None


def _record(spec: AllocationSpec, alloc_dir: Path, pid: int,
            cg: AllocationCgroup | None) -> None:
    ctime = procinfo.create_time(pid)
    if ctime is None:
        return  # gone already: nothing to adopt
    try:
        procinfo.write_pid_record(alloc_dir, procinfo.PidRecord(
            pid, pid, ctime, list(spec.command), cgroup_mode=cg.mode if cg else None,
            cgroups=cg.record() if cg else {}))
    except OSError:
        log.warning("cannot write pid.json for %s", spec.alloc_id, exc_info=True)


def _start_wrapped(spec: AllocationSpec, command: list[str], ident: Identity,
                   config: LaunchConfig, out: Any, err: Any) -> subprocess.Popen[bytes]:
    """Through the Python exec wrapper: inherited sockets need renumbering and LISTEN_PID
    (see `launch`)."""
    err_r, err_w = os.pipe()
    wrapper_config: dict[str, Any] = {
        "err_fd": err_w,
        "cgroup_procs": config.cg.procs_files() if config.cg is not None else [],
        "rlimits": config.rlimits,
        "uid": ident.uid,
        "gid": ident.gid,
        "groups": ident.groups,
        "umask": spec.umask,
        "fds": config.fds,
        "fd_names": config.fd_names,
    }
    env_fd = env_file(child_env(spec))
    wrapper_config["env_fd"] = env_fd
    try:
        try:
            proc = subprocess.Popen(
                wrapper_argv(wrapper_config, command), stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, env=launch.SAFE_ENV, cwd=spec.cwd,
                start_new_session=True, pass_fds=[err_w, env_fd, *config.fds])
        finally:
            os.close(err_w)
            os.close(env_fd)
        # EOF without data: the wrapper exec'd the command (the pipe is
        # close-on-exec), so the pid now runs the allocation's command itself.
        failure = _read_all(err_r)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise LaunchFailed(f"cannot start {command[0]!r}: {exc}") from None
    finally:
        os.close(err_r)
    if failure:
        proc.wait()
        raise LaunchFailed(_wrapper_error(failure, command[0]))
    return proc


# ---------------------------------------------------------------- signalling


def live(pids: list[int]) -> list[int]:
    """The pids that exist and are not zombies."""
    return [pid for pid in pids if procinfo.is_live(pid)]


def alive(handle: Handle) -> bool:
    """Whether any member of the group or of its cgroup still runs."""
    if procinfo.group_alive(handle.pgid):
        return True
    return handle.cg is not None and bool(live(handle.cg.pids()))


def may_signal(handle: Handle) -> bool:
    """Guard against signalling a recycled pgid.

    Until the leader is reaped its pid (= the pgid) cannot be reused, and
    after that the kernel keeps the group id reserved while any member
    lives; only an empty group is unsafe to signal.
    """
    if not handle.done.done():
        return True
    return procinfo.group_alive(handle.pgid)


def signal_all(handle: Handle, sig: signal.Signals) -> None:
    """The group, plus cgroup members that left it (setsid and the like)."""
    if may_signal(handle):
        procinfo.signal_group(handle.pgid, sig)
    if handle.cg is not None:
        for pid in handle.cg.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _wrapper_error(raw: bytes, program: str) -> str:
    try:
        info = json.loads(raw)
        stage, error = str(info["stage"]), str(info["error"])
    except (ValueError, KeyError, TypeError):
        return f"cannot start {program!r}: {raw[:200]!r}"
    if stage == "exec":
        return error
    return f"cannot start {program!r}: {stage}: {error}"
