"""The last minutes of each allocation's CPU and memory, as the leader received them.

Agents sample every allocation every second (every 10 s at most while nothing changes) and
send its metrics only when they changed (`agent/sampler.py`, `agent/report.py`). The
leader appends each report it gets to that allocation's series, stamped with its own wall
clock on arrival (the agent's sample time is on the agent's boot clock, which means
nothing here). A series is therefore a step function: a value holds until the next point,
and the last one holds until now.

Bounded memory: a series shows the points of the last `WINDOW_S` seconds (plus the one
before them, which gives the value at the start of the window), never more than
`MAX_POINTS` (the window at one point a second, the agents' fastest), and stores at most an
eighth more until it is trimmed in one batch. The three columns are `array('d')`s of 8-byte
numbers: at most 675 x 24 B = 16.2 KB per allocation (measured with tracemalloc, 1000 full
series: 15.5 KiB each, arrays included); an allocation whose use does not change holds a
few points. A series goes when its allocation ends or leaves its node's syncs.

Kept in the leader's memory for its term (`scheduler/leader_state.py`): lost when
leadership moves. A new leader starts empty, and its first sync from each agent carries
every allocation's current metrics (a new leader is told everything), so charts restart
from that point.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 600.0
MAX_POINTS = 600


def _column() -> array[float]:
    return array("d")


@dataclass
class _Series:
    node: str
    t: array[float] = field(default_factory=_column)
    cpu: array[float] = field(default_factory=_column)  # NaN: not reported
    rss: array[float] = field(default_factory=_column)

    def drop_first(self, n: int) -> None:
        for col in (self.t, self.cpu, self.rss):
            del col[:n]


def _number(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")


def _value(v: float, as_int: bool) -> float | int | None:
    if v != v:  # NaN
        return None
    return int(v) if as_int else v


class MetricsHistory:
    """Each allocation's recent (time, cpu_percent, rss_bytes) points."""

    def __init__(self, window_s: float = WINDOW_S, max_points: int = MAX_POINTS) -> None:
        self.window_s = window_s
        self.max_points = max_points
        self._slack = max(1, max_points // 8)
        self._series: dict[str, _Series] = {}
        self._by_node: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._series)

    def record(self, node: str, alloc_id: str, metrics: Mapping[str, Any], now: float) -> None:
        """A report of `alloc_id`'s metrics (as the agent sends them) arrived at `now`."""
        s = self._series.get(alloc_id)
        if s is None or s.node != node:
            if s is not None:
                self.forget(alloc_id)
            s = self._series[alloc_id] = _Series(node)
            self._by_node.setdefault(node, set()).add(alloc_id)
        if s.t and now < s.t[-1]:
            now = s.t[-1]  # the wall clock stepped back: keep the series in order
        s.t.append(now)
        s.cpu.append(_number(metrics.get("cpu_percent")))
        s.rss.append(_number(metrics.get("rss_bytes")))
        # Trimmed in batches of an eighth: dropping one point per report would move the
        # whole series each time (measured on full series: 4.5 us a report, 2.8 in batches).
        if len(s.t) >= self.max_points + self._slack or now - s.t[0] > self.window_s + 60:
            # Keep one point before the window: it is the value when the window starts.
            old = bisect.bisect_left(s.t, now - self.window_s) - 1
            excess = max(old, len(s.t) - self.max_points)
            if excess > 0:
                s.drop_first(excess)

    def forget(self, alloc_id: str) -> None:
        s = self._series.pop(alloc_id, None)
        if s is not None:
            ids = self._by_node.get(s.node)
            if ids is not None:
                ids.discard(alloc_id)
                if not ids:
                    del self._by_node[s.node]

    def keep_only(self, node: str, live: Collection[str]) -> None:
        """Forget the series of `node`'s allocations that are not in `live` (they ended, or
        were collected)."""
        for alloc_id in [a for a in self._by_node.get(node, ()) if a not in live]:
            self.forget(alloc_id)

    def points(self, alloc_id: str, since: float | None = None) -> list[dict[str, Any]]:
        """The points after `since` (all of them without it), oldest first."""
        s = self._series.get(alloc_id)
        if s is None:
            return []
        # Points past the window wait for the next batch trim: never shown.
        first = max(bisect.bisect_left(s.t, s.t[-1] - self.window_s) - 1, 0,
                    len(s.t) - self.max_points)
        start = first if since is None else max(first, bisect.bisect_right(s.t, since))
        return [{"t": s.t[i], "cpu_percent": _value(s.cpu[i], False),
                 "rss_bytes": _value(s.rss[i], True)} for i in range(start, len(s.t))]

    def bytes_used(self) -> int:
        """The arrays' payload, for the documented bound (8 bytes a number)."""
        return sum(3 * 8 * len(s.t) for s in self._series.values())
