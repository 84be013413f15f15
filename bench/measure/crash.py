"""The crash program every process supervisor restarts, and reading its own records.

It appends its start time as its first action, sleeps a random 0.15-0.35 s, appends its
exit time and exits with code 1. Restart latency = the replacement's start minus the
previous instance's exit, both written by the programs themselves, so every supervisor is
timed by the same clock in the same way (its interpreter start-up included).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

CRASH_DELAY = (0.15, 0.35)

CRASH_PROGRAM = textwrap.dedent("""\
    import time
    t = time.time()
    import os, random, sys
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"S %.6f %d\\n" % (t, os.getpid()))
    time.sleep(random.uniform(float(sys.argv[2]), float(sys.argv[3])))
    os.write(fd, b"E %.6f %d\\n" % (time.time(), os.getpid()))
    os._exit(1)
""")


def crash_argv(crash_py: Path, record: Path) -> list[str]:
    return [sys.executable, "-I", "-S", str(crash_py), str(record), str(CRASH_DELAY[0]),
            str(CRASH_DELAY[1])]


def crash_latencies(path: Path) -> list[float]:
    """Exit of one instance -> start of the next, in ms, from the programs' own records."""
    out: list[float] = []
    last_exit: float | None = None
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        kind, ts = parts[0], float(parts[1])
        if kind == "E":
            last_exit = ts
        elif kind == "S" and last_exit is not None:
            out.append((ts - last_exit) * 1000.0)
            last_exit = None
    return out


def starts_recorded(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith("S "))
