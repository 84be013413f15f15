"""The agent's malloc arenas: one, unless the operator says otherwise.

glibc gives each thread that allocates concurrently a malloc arena of its own, up to eight
per core, and keeps what each arena once held. The agent's start threads each left one
behind: with 200 processes running the agent held 27.4 MB with glibc's default, 27.1-27.3
with two arenas and 27.1 with one (supervisord 27.5; `bench.compare --only agents --quick
--runs 3`, three runs each). Its threads spend their time in system calls, not in malloc
(Python's own allocator serves most objects from memory it maps itself): starting 1,000
took 2.74-3.11 s with one arena against 2.72-2.94 s without the limit, within the noise.

glibc reads `MALLOC_ARENA_MAX` once, when the process starts; `mallopt` would need ctypes,
whose import costs about as much memory as it saves. So `hacontrol agent`, started without
the variable, executes itself again at once with it set (same process id, same arguments,
a few tens of milliseconds before anything else is done), and then removes it from its
environment again so that the allocations' processes do not inherit it. An operator's own
`MALLOC_ARENA_MAX` is left alone, in the agent and in what it starts.
"""

from __future__ import annotations

import os
import sys

ARENAS = "1"
_VAR = "MALLOC_ARENA_MAX"
# Set only across the one exec: tells the new image that the arena limit is ours.
_MARK = "HACONTROL_AGENT_ARENAS"


def limit_arenas() -> None:
    """Return in the process that goes on; replace it once when the limit is not set."""
    if os.environ.pop(_MARK, None) is not None:
        os.environ.pop(_VAR, None)  # ours: read by glibc already, not for the children
        return
    if _VAR in os.environ or not sys.platform.startswith("linux"):
        return
    argv = list(getattr(sys, "orig_argv", []))
    if not argv or not sys.executable:
        return
    env = {**os.environ, _VAR: ARENAS, _MARK: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:
        return  # glibc's default arenas, then
