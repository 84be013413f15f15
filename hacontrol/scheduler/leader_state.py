"""What only the leader remembers: never replicated, and empty again with every term.

A new leader learns heartbeats, metrics and agent details afresh from the agents' next
syncs; nothing a previous term (of this replica or another) left behind is trusted.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from hacontrol.model.states import AllocState
from hacontrol.observe.history import MetricsHistory

from .autoscale import LowSince

JobKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class PushedValue:
    """A value of a job's external scaling metric, as pushed through the API."""

    metric: str
    value: float
    at: float  # monotonic time this leader received it


@dataclass
class LeaderState:
    """The leader's memory for one term."""

    term: int
    since: float  # monotonic time at which this replica learned it leads `term`
    announced: bool = False  # the leader loop has logged and recorded the election
    heartbeats: dict[str, float] = field(default_factory=dict)  # node -> monotonic time
    # allocation id -> the last metrics its agent reported (cpu_percent, rss_bytes, ...)
    alloc_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    # node -> (its allocation ids, what `measured` made of them), dropped when its reports
    # change (`metrics_changed`)
    measured_memo: dict[str, tuple[list[str], dict[str, Any]]] = field(default_factory=dict)
    # and the last minutes of them, for charts (bounded: see observe/history.py)
    alloc_history: MetricsHistory = field(default_factory=MetricsHistory)
    node_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> agent details
    unplaced: dict[str, str] = field(default_factory=dict)  # allocation id -> why pending
    last_scaled: dict[JobKey, float] = field(default_factory=dict)  # autoscaler, wall time
    # Metric scaling: the latest pushed value of each job's external metric (a new leader
    # has none until the next push: no value means no change), since when each job's
    # metric has asked for fewer allocations, and the latest decision's reason (shown with
    # the job).
    pushed: dict[JobKey, PushedValue] = field(default_factory=dict)
    scale_low: dict[JobKey, LowSince] = field(default_factory=dict)
    scale_notes: dict[JobKey, str] = field(default_factory=dict)
    # node -> {request number: whether its connection is still open}: syncs in flight
    in_flight: dict[str, dict[int, Callable[[], bool]]] = field(default_factory=dict)
    probing: set[str] = field(default_factory=set)  # nodes whose health probe is under way
    probe_failed: dict[str, float] = field(default_factory=dict)  # node -> monotonic time
    # node -> monotonic time until which it counts as heard from: its agent said it is
    # restarting (a rolling upgrade) and will be back by then (`restart_announced`)
    restarting: dict[str, float] = field(default_factory=dict)
    _requests: itertools.count[int] = field(default_factory=itertools.count)

    def record_heartbeat(self, node: str, now: float | None = None) -> None:
        self.heartbeats[node] = time.monotonic() if now is None else now

    def restart_announced(self, node: str, for_s: float, now: float | None = None) -> None:
        self.restarting[node] = (time.monotonic() if now is None else now) + for_s

    def contact(self, now: float) -> dict[str, float]:
        """Each node's last contact for the liveness verdicts: a node whose agent announced
        a restart counts as heard from until the time it gave."""
        if not self.restarting:
            return self.heartbeats
        for node, until in list(self.restarting.items()):
            if until < now:
                del self.restarting[node]
        merged = dict(self.heartbeats)
        for node, until in self.restarting.items():
            merged[node] = max(merged.get(node, until), until)
        return merged

    def sync_started(self, node: str, is_open: Callable[[], bool],
                     now: float | None = None) -> int:
        """A sync request from `node` arrived (a heartbeat); returns its number for
        `sync_ended`."""
        self.record_heartbeat(node, now)
        n = next(self._requests)
        self.in_flight.setdefault(node, {})[n] = is_open
        return n

    def sync_ended(self, node: str, n: int, now: float | None = None) -> None:
        """The request is answered (or failed): the node was heard from until now, unless
        its connection closed under it (its agent is gone, not slow)."""
        requests = self.in_flight.get(node, {})
        is_open = requests.pop(n, None)
        if not requests:
            self.in_flight.pop(node, None)
        if is_open is not None and is_open():
            self.record_heartbeat(node, now)

    def syncing(self) -> Syncing:
        """Nodes with a sync request in flight on a connection that is still open (a view:
        each membership test looks at that node's requests only)."""
        return Syncing(self.in_flight)


    def note_scaling(self, notes: dict[JobKey, tuple[LowSince | None, str]] | None) -> None:
        """Remember the metric scaling decisions of a round (`Decisions.metric_notes`: every
        running job that scales on a metric, or None), and forget what was kept for other
        jobs (stopped, or no longer scaling on a metric): the memory stays bounded."""
        if notes is None:
            return
        for kept in (self.pushed, self.scale_low, self.scale_notes):
            for key in [k for k in kept if k not in notes]:
                del kept[key]
        for key, (low, reason) in notes.items():
            self.scale_notes[key] = reason
            if low is None:
                self.scale_low.pop(key, None)
            else:
                self.scale_low[key] = low

    def metrics_changed(self, node: str) -> None:
        """`node`'s agent changed what alloc_metrics holds for its allocations."""
        self.measured_memo.pop(node, None)

    def measured(self, node: str, alloc_ids: list[str]) -> dict[str, Any]:
        """What `alloc_ids` (the node's allocations) use, as their agent last reported it.
        Kept until the node's next change of reports or another list of allocations: a
        listing of 5,000 nodes summed 100,000 reports each time, a quarter of a busy
        leader's CPU while a dashboard polled it."""
        hit = self.measured_memo.get(node)
        # The same list, or an equal one: every applied entry rebuilds the listing's rows,
        # and comparing 20 ids costs a fortieth of summing their reports.
        if hit is not None and (hit[0] is alloc_ids or hit[0] == alloc_ids):
            return hit[1]
        metrics = self.alloc_metrics
        reports = [r for r in (metrics.get(i) for i in alloc_ids) if r]
        cpu = sum(float(r.get("cpu_percent") or 0.0) for r in reports) / 100.0
        rss = sum(int(r.get("rss_bytes") or 0) for r in reports)
        out = {"cpu": round(cpu, 3), "memory_mb": rss // (1024 * 1024),
               "reporting": len(reports)}
        self.measured_memo[node] = (alloc_ids, out)
        return out

    def last_heartbeat(self, node: str) -> float | None:
        """Wall-clock time of the node's last heartbeat, as this leader saw it."""
        seen = self.heartbeats.get(node)
        return None if seen is None else time.time() - (time.monotonic() - seen)

    def pending_reason(self, alloc_id: str, state: str, node: str | None) -> str | None:
        """Why a pending, unplaced allocation waits (None for anything else)."""
        if state == AllocState.PENDING and node is None:
            return self.unplaced.get(alloc_id)
        return None


class Syncing(Collection[str]):
    def __init__(self, in_flight: dict[str, dict[int, Callable[[], bool]]]) -> None:
        self._in_flight = in_flight

    def __contains__(self, node: object) -> bool:
        requests = self._in_flight.get(node) if isinstance(node, str) else None
        return requests is not None and any(is_open() for is_open in list(requests.values()))

    def __iter__(self) -> Iterator[str]:
        return (n for n in list(self._in_flight) if n in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


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
