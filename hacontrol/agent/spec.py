"""Data types shared by the node agent's local supervisor and its callers."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

POLICY_ALWAYS = "always"
POLICY_ON_FAILURE = "on-failure"
POLICY_NEVER = "never"
POLICIES = frozenset({POLICY_ALWAYS, POLICY_ON_FAILURE, POLICY_NEVER})

STATE_STARTING = "starting"
STATE_RUNNING = "running"
# The process ended; a restart may be pending, or the task completed for good.
STATE_EXITED = "exited"
# The restart policy gave up, or the process could not be started at all.
STATE_FAILED = "failed"
# Ended because someone asked for it; never restarted afterwards.
STATE_STOPPED = "stopped"
STATES = frozenset({STATE_STARTING, STATE_RUNNING, STATE_EXITED, STATE_FAILED, STATE_STOPPED})


@dataclass(frozen=True)
class RestartPolicy:
    policy: str = POLICY_ON_FAILURE
    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.1
    backoff_max_s: float = 10.0
    min_uptime_s: float = 5.0

    def __post_init__(self) -> None:
        # Reject bad policies at construction so the supervisor never has to
        # guess what an unknown policy name or negative delay was meant to be.
        if self.policy not in POLICIES:
            raise ValueError(f"unknown restart policy {self.policy!r}")
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        for name in ("window_s", "backoff_s", "backoff_max_s", "min_uptime_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


def parse_signal(name: str) -> signal.Signals:
    """Accept "SIGTERM", "TERM" or "15"."""
    text = name.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text))
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise ValueError(f"unknown signal {name!r}") from None


@dataclass(frozen=True)
class TaskSpec:
    alloc_id: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_signal: str = "SIGTERM"
    stop_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.alloc_id or "/" in self.alloc_id or self.alloc_id in (".", ".."):
            # The id names a directory under data_dir; it must not escape it.
            raise ValueError(f"invalid alloc_id {self.alloc_id!r}")
        if not self.command:
            raise ValueError("command must not be empty")
        if self.stop_timeout_s < 0:
            raise ValueError("stop_timeout_s must be >= 0")
        parse_signal(self.stop_signal)


@dataclass(frozen=True)
class TaskEvent:
    alloc_id: str
    state: str
    pid: int | None
    restarts: int
    exit_code: int | None
    signal: str | None
    ts: float
    message: str = ""
