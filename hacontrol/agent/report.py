"""What the agent sends about its allocations: the JSON of reports and metrics.

Shared by the sync loop (:mod:`hacontrol.agent.main`) and the agent's HTTP
API (:mod:`hacontrol.agent.http`); the keys are a wire format the controllers
read and must not change.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from hacontrol.agent.metrics import AllocationMetrics
from hacontrol.agent.spec import AllocationEvent
from hacontrol.model.messages import SCALING_METRIC_KEY

# Reports are capped so one chatty failure cannot bloat the log of the cluster.
MAX_MESSAGE = 2000


def event_report(ev: AllocationEvent) -> dict[str, Any]:
    return {
        "id": ev.alloc_id,
        "state": ev.state,
        "pid": ev.pid,
        "restarts": ev.restarts,
        "exit_code": ev.exit_code,
        "signal": ev.signal,
        "message": ev.message[:MAX_MESSAGE],
        "ts": ev.ts,
        "health": ev.health,
        "reason": ev.reason,
    }


def metrics_report(m: AllocationMetrics) -> dict[str, Any]:
    # Spelled out rather than dataclasses.asdict, which deep-copies every field.
    return {
        "pid": m.pid,
        "processes": m.processes,
        "cpu_percent": m.cpu_percent,
        "rss_bytes": m.rss_bytes,
        "threads": m.threads,
        "open_files": m.open_files,
        "io_read_bytes": m.io_read_bytes,
        "io_write_bytes": m.io_write_bytes,
        "ts": m.ts,
    }


# An allocation without a scraped scaling value (not scraped, or no metric to scrape).
_NONE_SCRAPED = object()


class MetricsOutbox:
    """The metrics the controllers have not been told yet: each sync carries only those.

    The leader keeps every allocation's last metrics and updates them with what a sync
    carries, so unchanged ones need not travel again, as long as the same leader got
    them: ``epoch`` names who is told (the link's leader address and term), and a new
    one is told everything. The sampler replaces an allocation's metrics object only
    when its values change, so "changed" is a test of identity. An allocation's scraped
    scaling value (``scraped``, :mod:`hacontrol.agent.scrape`) travels in the same
    entry, under ``SCALING_METRIC_KEY``, and a change of it sends the entry again (the
    leader replaces an allocation's entry whole).

    Use: ``sent = outbox.pending(metrics, epoch, scraped)``, put ``sent`` in the sync, and
    call ``outbox.delivered(epoch)`` with the epoch after the answer (a new leader there
    was told only part).
    """

    def __init__(self) -> None:
        self._epoch: Hashable = None
        self._told: dict[str, tuple[AllocationMetrics | None, object]] = {}
        self._in_flight: dict[str, tuple[AllocationMetrics | None, object]] = {}

    def pending(
        self, current: Mapping[str, AllocationMetrics], epoch: Hashable,
        scraped: Mapping[str, float | None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        if epoch != self._epoch:
            self._epoch = epoch
            self._told = {}
        scraped = scraped or {}
        told = self._told
        for alloc_id in [a for a in told if a not in current and a not in scraped]:
            del told[alloc_id]
        now = {a: (current.get(a), scraped.get(a, _NONE_SCRAPED))
               for a in (current.keys() | scraped.keys())}
        self._in_flight = {a: v for a, v in now.items() if not _same(told.get(a), v)}
        return {a: _entry(*v) for a, v in self._in_flight.items()}

    def delivered(self, epoch: Hashable) -> None:
        """The sync that carried the last pending() reached ``epoch``'s leader."""
        if epoch == self._epoch:
            self._told.update(self._in_flight)
        self._in_flight = {}


def _same(told: tuple[AllocationMetrics | None, object] | None,
          now: tuple[AllocationMetrics | None, object]) -> bool:
    return told is not None and told[0] is now[0] and told[1] == now[1]


def _entry(m: AllocationMetrics | None, scraped: object) -> dict[str, Any]:
    out = metrics_report(m) if m is not None else {}
    if scraped is not _NONE_SCRAPED:
        out[SCALING_METRIC_KEY] = scraped
    return out
