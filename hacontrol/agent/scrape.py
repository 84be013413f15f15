"""Scraping the gauge a job scales on from each of its allocations running here.

A job whose `scaling.metric` has source `prometheus` names a gauge, a port and a path:
every `interval_s` the agent asks `http://127.0.0.1:PORT/PATH` of each of that job's
allocations running on this node and sums the samples named after the gauge (every label
set) in the answer, Prometheus' text format, read with prometheus_client's parser. The
value rides on the next sync (`report.MetricsOutbox`); the leader sums them over the job
(`scheduler/metric_scale.py`). A scrape that fails, times out or finds no such sample
reports null, which the leader takes for "unknown" (never scaling down on it).

Nothing here blocks the event loop: requests are the agent's own client's (`httpclient`),
with a timeout and a cap on the answer's size, and the parsing of all the answers of one
pass is one hop to a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hacontrol.model.spec import MetricSpec
from hacontrol.model.states import MetricSource

from .httpclient import Client, HTTPError

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0  # a scrape's deadline (or the interval, when shorter)
MAX_BYTES = 1024 * 1024  # of an answer; a longer one counts as a failed scrape
IDLE_S = 1.0  # how often the loop looks for new targets when it has none due


@dataclass(frozen=True)
class Target:
    """What to scrape of one allocation: `port` is a number, or the name of one of the
    job's named ports (resolved per allocation, `named_port`)."""

    metric: str
    port: int | str
    path: str
    interval_s: float

    @classmethod
    def of(cls, metric: MetricSpec | None) -> Target | None:
        if metric is None or metric.source != MetricSource.PROMETHEUS or metric.port is None:
            return None
        return cls(metric.name, metric.port, metric.scrape_path, metric.scrape_interval_s)

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}{self.path}"


def named_port(env: Mapping[str, str] | None, name: str) -> int | None:
    """The port an allocation was given under `name`, from the environment the agent
    started it with (`HACONTROL_PORT_<NAME>`); None when it has none."""
    raw = (env or {}).get(f"HACONTROL_PORT_{name.upper()}", "")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 65536 else None


def gauge_value(text: str, name: str) -> float | None:
    """The sum of every sample named `name` in a Prometheus text exposition; None when
    there is none, or the text does not parse."""
    # Imported at the first scrape (in the worker thread parsing it): most agents run no
    # job that scales on a gauge, and prometheus_client costs 1.6 MB of their memory.
    from prometheus_client.parser import text_string_to_metric_families

    total: float | None = None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and math.isfinite(sample.value):
                    total = (total or 0.0) + sample.value
    except Exception:  # untrusted text: whatever the parser makes of it, it is no value
        return None
    return total


def _values(bodies: Mapping[str, tuple[str | None, str]]) -> dict[str, float | None]:
    """alloc id -> (answer or None, gauge name) to alloc id -> value (in a worker thread)."""
    return {a: None if text is None else gauge_value(text, name)
            for a, (text, name) in bodies.items()}


class Scraper:
    """Keeps `values` (allocation id -> the last scraped value, None for a failed
    scrape) for the targets it is given, while `run` runs."""

    def __init__(self, running: Callable[[], set[str]],
                 env_of: Callable[[str], Mapping[str, str] | None] = lambda alloc_id: None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """`running()`: the ids of the allocations running here now (only those are
        scraped; a stopped one's value is dropped); `env_of(id)`: the environment an
        allocation was started with (for named ports)."""
        self.values: dict[str, float | None] = {}
        self._running = running
        self._env_of = env_of
        self._monotonic = monotonic
        self._targets: dict[str, Target] = {}
        self._due: dict[str, float] = {}
        # Set when targets are given: with none (most agents) the loop sleeps until then
        # instead of looking every IDLE_S.
        self._given = asyncio.Event()

    def set_targets(self, targets: Mapping[str, Target]) -> None:
        """The allocations to scrape, as the leader's assignments say (replaces all)."""
        now = self._monotonic()
        for alloc_id in [a for a in self._targets if a not in targets]:
            self._due.pop(alloc_id, None)
            self.values.pop(alloc_id, None)
        for alloc_id, target in targets.items():
            if self._targets.get(alloc_id) != target:
                self._due[alloc_id] = now  # new or changed: scrape at once
                self.values.pop(alloc_id, None)
        self._targets = dict(targets)
        if self._targets:
            self._given.set()

    def due(self) -> dict[str, Target]:
        """The targets to scrape now: due and running; forgets the values of those that
        no longer run."""
        running = self._running()
        now = self._monotonic()
        for alloc_id in [a for a in self.values if a not in running]:
            del self.values[alloc_id]
        out: dict[str, Target] = {}
        for alloc_id, target in self._targets.items():
            if self._due.get(alloc_id, now) > now:
                continue
            if alloc_id in running:
                out[alloc_id] = target
            else:  # not started yet, or restarting: look again soon, without spinning
                self._due[alloc_id] = now + min(target.interval_s, IDLE_S)
        return out

    async def scrape_once(self, session: Client) -> None:
        """One pass over the due targets, all at once."""
        targets = self.due()
        if not targets:
            return
        now = self._monotonic()
        for alloc_id, target in targets.items():
            self._due[alloc_id] = now + target.interval_s
        answers = await asyncio.gather(*(_fetch(session, t, self._port(a, t))
                                         for a, t in targets.items()))
        bodies = {a: (text, t.metric) for (a, t), text in zip(targets.items(), answers,
                                                                 strict=True)}
        values = await asyncio.to_thread(_values, bodies)
        for alloc_id, value in values.items():
            if alloc_id in self._targets:  # not dropped meanwhile
                self.values[alloc_id] = value

    def _port(self, alloc_id: str, target: Target) -> int | None:
        if isinstance(target.port, int):
            return target.port
        return named_port(self._env_of(alloc_id), target.port)

    def next_due_in(self) -> float:
        if not self._due:
            return IDLE_S
        return min(IDLE_S, max(0.0, min(self._due.values()) - self._monotonic()))

    async def run(self) -> None:
        """Scrape until cancelled."""
        async with Client() as session:
            while True:
                if not self._targets:
                    self._given.clear()
                    await self._given.wait()
                try:
                    await self.scrape_once(session)
                except Exception:  # one bad pass must not end the scraping for good
                    log.exception("scraping scaling metrics failed")
                await asyncio.sleep(max(0.05, self.next_due_in()))


async def _fetch(session: Client, target: Target, port: int | None) -> str | None:
    """The answer's text, or None (no port, refused, timed out, an error status, too
    long)."""
    if port is None:
        return None
    try:
        # A redirect is not followed: its status is not 200, a failed scrape.
        resp = await session.request("GET", target.url(port), max_bytes=MAX_BYTES,
                                     timeout_s=min(TIMEOUT_S, max(target.interval_s, 0.5)))
    except (HTTPError, ValueError):
        return None
    if resp.status != 200:
        return None
    return resp.body.decode("utf-8", errors="replace")
