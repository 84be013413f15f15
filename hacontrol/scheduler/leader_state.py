"""What only the leader remembers: never replicated, and empty again with every term.

A new leader learns heartbeats, metrics and agent details afresh from the agents' next
syncs; nothing a previous term (of this replica or another) left behind is trusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hacontrol.model.states import AllocState

JobKey = tuple[str, str]  # (namespace, name)


@dataclass
class LeaderState:
    """The leader's memory for one term."""

    term: int
    since: float  # monotonic time at which this replica learned it leads `term`
    announced: bool = False  # the leader loop has logged and recorded the election
    heartbeats: dict[str, float] = field(default_factory=dict)  # node -> monotonic time
    # allocation id -> the last metrics its agent reported (cpu_percent, rss_bytes, ...)
    alloc_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    node_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> agent details
    unplaced: dict[str, str] = field(default_factory=dict)  # allocation id -> why pending
    last_scaled: dict[JobKey, float] = field(default_factory=dict)  # autoscaler, wall time

    def record_heartbeat(self, node: str, now: float | None = None) -> None:
        self.heartbeats[node] = time.monotonic() if now is None else now

    def last_heartbeat(self, node: str) -> float | None:
        """Wall-clock time of the node's last heartbeat, as this leader saw it."""
        seen = self.heartbeats.get(node)
        return None if seen is None else time.time() - (time.monotonic() - seen)

    def pending_reason(self, alloc_id: str, state: str, node: str | None) -> str | None:
        """Why a pending, unplaced allocation waits (None for anything else)."""
        if state == AllocState.PENDING and node is None:
            return self.unplaced.get(alloc_id)
        return None


class Leadership:
    """Holds this replica's `LeaderState` while it leads: a fresh one for each term it
    leads, none while it does not.

    `leading_term` tells the term this replica leads now, or None. The state is created by
    whoever asks first in a term (the leader loop or an agent's sync), so a heartbeat that
    arrives before the loop's next step is not lost.
    """

    def __init__(self, leading_term: Callable[[], int | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._leading_term = leading_term
        self._clock = clock
        self._state: LeaderState | None = None

    def current(self) -> LeaderState | None:
        term = self._leading_term()
        if term is None:
            self._state = None
        elif self._state is None or self._state.term != term:
            self._state = LeaderState(term=term, since=self._clock())
        return self._state
