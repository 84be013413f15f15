"""What ``hacontrol dev`` does when a replica or an agent it started dies: report it, then
restart it after a backoff (or leave it down with ``--no-restart``).

The decisions are pure (`restart_delay`, `Supervision.due`); dev.py does the spawning.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hacontrol.cli.devprocess import tail

# A child that keeps dying is restarted less and less often: 0.5 s, 1 s, 2 s... up to 30 s;
# one that ran this long before dying starts the count again.
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
STABLE_S = 10.0


def restart_delay(failures: int) -> float:
    """The wait before restarting a child that died `failures` times in a row (>= 1)."""
    return float(min(FIRST_DELAY_S * 2 ** max(failures - 1, 0), MAX_DELAY_S))


@dataclass
class Child:
    name: str
    kind: str
    argv: list[str]
    log_path: Path
    api_url: str | None = None
    raft: str | None = None
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    reported_exit: bool = False
    started_at: float = 0.0  # monotonic
    failures: int = 0  # deaths in a row, each within STABLE_S of its start
    restarts: int = 0
    restart_at: float | None = None  # monotonic; None: not waiting to restart

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def death(child: Child) -> str:
    code = child.proc.poll() if child.proc is not None else None
    if code is None:
        return "is gone"
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


class Supervision:
    """Reports children that died on their own and, when `restart`, says when each is due
    to start again."""

    def __init__(self, say: Callable[[str], None], restart: bool) -> None:
        self.say = say
        self.restart = False  # off until the cluster first came up (see `enable`)
        self.wanted = restart

    def enable(self) -> None:
        # Before the cluster first became ready a death is a start-up failure to show,
        # not something to retry forever.
        self.restart = self.wanted

    def check(self, children: list[Child], now: float) -> list[Child]:
        """The children that died since the last check, each reported once."""
        died = []
        for child in children:
            if child.proc is None or child.reported_exit or child.proc.poll() is None:
                continue
            child.reported_exit = True
            died.append(child)
            if self.restart:
                child.failures = child.failures + 1 if now - child.started_at < STABLE_S else 1
                delay = restart_delay(child.failures)
                child.restart_at = now + delay
                then = f"restarting in {delay:g}s"
            else:
                then = "left down (--no-restart)" if self.wanted is False else "not restarted"
            self.say(f"hacontrol dev: {child.kind} {child.name} (pid {child.pid}) "
                     f"{death(child)}; {then}; log: {child.log_path}")
            for line in tail(child.log_path):
                if not line.startswith("--- "):
                    self.say(f"    {line}")
        return died

    def due(self, children: list[Child], now: float) -> list[Child]:
        """The children whose restart time has come."""
        out = [c for c in children if c.restart_at is not None and c.restart_at <= now]
        for child in out:
            child.restart_at = None
            child.restarts += 1
        return out
