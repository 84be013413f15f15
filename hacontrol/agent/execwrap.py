"""Exec wrapper: prepares the child in place, then execs the allocation's command.

Run as ``python -I -S execwrap.py <config-json> <command...>``: it imports the
standard library only (so ``-S`` and no package path are needed, keeping its
start-up cheap) and never forks, so the allocation's command keeps the wrapper's pid.
That is what makes ``LISTEN_PID`` correct and lets the wrapper join the cgroups
before anything of the allocation can fork.

Order matters: cgroups are joined and rlimits set while still root, inherited
sockets are moved to fds 3.. , then groups/gid/uid are dropped and the umask
set, and finally the command is exec'd. Any failure is written to the error
pipe (closed on exec, so EOF means success) and the wrapper exits with 127.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import sys
from typing import Any, NoReturn

EXIT_WRAPPER_FAILED = 127
FIRST_LISTEN_FD = 3


def _fail(err_fd: int, stage: str, exc: BaseException) -> NoReturn:
    msg = json.dumps({"stage": stage, "error": str(exc)}).encode()
    try:
        os.write(err_fd, msg)
    finally:
        os._exit(EXIT_WRAPPER_FAILED)


def _place_fds(sources: list[int], err_fd: int) -> int:
    """Move ``sources`` to 3, 4, ... (inheritable); returns the relocated err fd."""
    high = FIRST_LISTEN_FD + len(sources) + max(sources + [err_fd]) + 1
    # Park everything above the target range first so that no dup2 can clobber
    # a source (or the error pipe) still to be moved.
    err = fcntl.fcntl(err_fd, fcntl.F_DUPFD_CLOEXEC, high)
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, high) for fd in sources]
    for fd in set(sources + [err_fd]):
        os.close(fd)
    for i, fd in enumerate(parked):
        os.dup2(fd, FIRST_LISTEN_FD + i, inheritable=True)
        os.close(fd)
    return err


def run(config: dict[str, Any], command: list[str]) -> NoReturn:
    err_fd = int(config["err_fd"])
    # Inherited (pass_fds) means inheritable; it must close on exec, which is
    # how the supervisor learns that the exec succeeded.
    os.set_inheritable(err_fd, False)
    env = dict(os.environ)
    if config.get("env_fd") is not None:
        # The job's environment arrives on a file descriptor, not in ours: this process
        # runs as root until the identity step, and a job's LD_PRELOAD (read by the
        # loader before any of this code) must never reach it.
        env_fd = int(config["env_fd"])
        try:
            with os.fdopen(env_fd, "rb") as f:
                env = {str(k): str(v) for k, v in json.loads(f.read()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            _fail(err_fd, "env", exc)
    try:
        for path in config.get("cgroup_procs", []):
            with open(path, "w") as f:
                f.write(str(os.getpid()))
    except OSError as exc:
        _fail(err_fd, "cgroup", exc)
    try:
        for name, soft, hard in config.get("rlimits", []):
            resource.setrlimit(getattr(resource, name), (soft, hard))
    except (OSError, ValueError, AttributeError) as exc:
        _fail(err_fd, "rlimit", exc)
    fds: list[int] = [int(x) for x in config.get("fds", [])]
    if fds:
        try:
            err_fd = _place_fds(fds, err_fd)
        except OSError as exc:
            _fail(err_fd, "fds", exc)
        env["LISTEN_FDS"] = str(len(fds))
        env["LISTEN_FDNAMES"] = ":".join(config.get("fd_names", []))
        env["LISTEN_PID"] = str(os.getpid())
    try:
        if config.get("groups") is not None:
            os.setgroups([int(g) for g in config["groups"]])
        if config.get("gid") is not None:
            os.setgid(int(config["gid"]))
        if config.get("uid") is not None:
            os.setuid(int(config["uid"]))
    except OSError as exc:
        _fail(err_fd, "identity", exc)
    if config.get("umask") is not None:
        os.umask(int(config["umask"]))
    # The interpreter ignores SIGPIPE and SIGXFSZ; ignored dispositions survive
    # exec, and the command must start with the defaults.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        _fail(err_fd, "exec", OSError(exc.errno, f"cannot exec {command[0]!r}: {exc.strerror}"))


def main() -> NoReturn:
    if len(sys.argv) < 3:
        sys.stderr.write("usage: execwrap.py CONFIG-JSON COMMAND...\n")
        os._exit(2)
    run(json.loads(sys.argv[1]), sys.argv[2:])


if __name__ == "__main__":
    main()
