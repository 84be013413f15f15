"""The Prometheus metrics of a controller replica and of an agent, with prometheus_client.

Every process (and every app in a test process) owns its registry: nothing goes into the
library's global default registry, so two replicas built in one test do not clash. Names
follow the Prometheus conventions: base units in the name (`_seconds`, `_bytes`), `_total`
on counters, and labels of bounded cardinality only (a route's pattern, never its path).

Measured cost (bench/metrics_overhead.py): the request middleware adds 8-10 µs to a
request; the library adds 1.2-1.6 MB to a running agent's resident memory, so the agent
imports it at its first scrape only (agent/exposition.py; docs/deploy.md, "Metrics").
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# Latency buckets: a request answered from memory takes about a millisecond, a write
# waits for an fsynced quorum (5-50 ms), a long poll may hold 30 s.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# One command applies in tens of microseconds; a plan of a hundred placements in a few ms.
APPLY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                 0.005, 0.01, 0.025, 0.1)
# The classic text format, which every Prometheus reads (our names need none of 1.0.0's
# escaping; prometheus_client's CONTENT_TYPE_LATEST moved to 1.0.0 in 0.22).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# What an agent reports of one allocation -> (metric name, kind, help, scale to base unit).
ALLOCATION_SERIES: tuple[tuple[str, str, str, str, float], ...] = (
    ("cpu_percent", "hacontrol_allocation_cpu_ratio", "gauge",
     "CPU used by the allocation's processes, as a fraction of one core", 0.01),
    ("rss_bytes", "hacontrol_allocation_resident_memory_bytes", "gauge",
     "resident memory of the allocation's processes", 1.0),
    ("threads", "hacontrol_allocation_threads", "gauge",
     "threads of the allocation's processes", 1.0),
    ("open_files", "hacontrol_allocation_open_fds", "gauge",
     "open file descriptors of the allocation's processes", 1.0),
    ("io_read_bytes", "hacontrol_allocation_io_read_bytes", "counter",
     "bytes read by the allocation's live processes (a process that exits takes its "
     "count along: a reset)", 1.0),
    ("io_write_bytes", "hacontrol_allocation_io_write_bytes", "counter",
     "bytes written by the allocation's live processes", 1.0),
)


def new_registry() -> CollectorRegistry:
    """A registry of its own, with this process's CPU, memory and file descriptors."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def allocation_families(reports: Iterable[tuple[Mapping[str, str], Mapping[str, Any]]],
                        label_names: tuple[str, ...]) -> Iterator[Metric]:
    """The per-allocation series for (labels, report) pairs, one family per metric."""
    families: list[tuple[str, float, GaugeMetricFamily | CounterMetricFamily]] = []
    for key, name, kind, help_, scale in ALLOCATION_SERIES:
        family: GaugeMetricFamily | CounterMetricFamily = (
            CounterMetricFamily(name, help_, labels=label_names) if kind == "counter"
            else GaugeMetricFamily(name, help_, labels=label_names))
        families.append((key, scale, family))
    for labels, report in reports:
        values = [labels.get(n, "") for n in label_names]
        for key, scale, family in families:
            v = report.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                family.add_metric(values, v * scale)
    for _, _, family in families:
        yield family


class GcFigures(Protocol):
    """What `hacontrol.raft.collector.Collector` counts."""

    full_collections: int
    sweeps: int
    swept_unreachable: int


class GcFamilies:
    """The garbage collector's policy (`hacontrol.raft.collector`), at scrape time: how
    much is frozen and how much the sweeps found unreachable among it, the cost of freezing
    that an operator watches for."""

    def __init__(self, collector: GcFigures) -> None:
        self._collector = collector

    def collect(self) -> Iterator[Metric]:
        c = self._collector
        yield GaugeMetricFamily("hacontrol_gc_frozen_objects",
                                "objects the collector froze (never walked again; freed by "
                                "their reference counts, or by a sweep)",
                                value=gc.get_freeze_count())
        yield CounterMetricFamily("hacontrol_gc_full_collections",
                                  "full collections after which the survivors were frozen",
                                  value=c.full_collections)
        yield CounterMetricFamily("hacontrol_gc_sweeps", "sweeps of the frozen objects",
                                  value=c.sweeps)
        yield CounterMetricFamily("hacontrol_gc_sweep_unreachable",
                                  "unreachable objects the sweeps freed (cycles that freezing "
                                  "had kept)", value=c.swept_unreachable)


class ServerMetrics:
    """The instruments of one controller replica: the API, the log and the scheduler
    observe into them; `/metrics` renders `registry` (with the state's gauges added by
    the API at scrape time)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self._request_children: dict[tuple[str, str, int], Histogram] = {}
        r = self.registry
        self.requests = Histogram(
            "hacontrol_http_request_duration_seconds",
            "API requests by route pattern, method and status code, until the answer "
            "(or the end of a stream)", ("route", "method", "code"),
            buckets=REQUEST_BUCKETS, registry=r)
        self.commit = Histogram(
            "hacontrol_raft_commit_duration_seconds",
            "from proposing a command to its result applied on this replica (quorum "
            "fsync included)", buckets=COMMIT_BUCKETS, registry=r)
        self.apply = Histogram(
            "hacontrol_raft_apply_duration_seconds",
            "time the state machine takes to apply one log entry", buckets=APPLY_BUCKETS,
            registry=r)
        self.placement = Histogram(
            "hacontrol_scheduler_placement_duration_seconds",
            "a scheduling round that places allocations: from reading the state to the "
            "plan applied", buckets=COMMIT_BUCKETS, registry=r)
        self.placed = Counter(
            "hacontrol_scheduler_placements", "allocations placed by this replica's plans",
            registry=r)
        self.plans_rejected = Counter(
            "hacontrol_scheduler_placements_rejected",
            "placements of a plan refused on apply (the state moved under the plan)",
            registry=r)

    def watch_gc(self, collector: GcFigures) -> None:
        """Export `collector`'s figures (`GcFamilies`) with the others."""
        self.registry.register(GcFamilies(collector))

    def observe_request(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method if method in METHODS else "other", code)
        child = self._request_children.get(key)
        if child is None:
            # labels() costs ~5x the observation itself (a lock and a key built from the
            # strings each time); the label sets are bounded, so their children are kept.
            child = self._request_children[key] = self.requests.labels(
                key[0], key[1], str(code))
        child.observe(seconds)


class TimedMachine:
    """A state machine that records how long each apply takes (the Raft replica applies
    through it; reads of the state go to the machine itself)."""

    def __init__(self, machine: Any, histogram: Histogram) -> None:
        self.machine = machine
        self.histogram = histogram

    def apply(self, command: bytes, index: int) -> Any:
        start = time.perf_counter()
        try:
            return self.machine.apply(command, index)
        finally:
            self.histogram.observe(time.perf_counter() - start)

    def snapshot(self) -> bytes:
        return bytes(self.machine.snapshot())

    def ready_to_apply(self, raw: bytes, index: int, wake: Any = None) -> bool:
        return bool(self.machine.ready_to_apply(raw, index, wake))

    def preparing(self) -> bool:
        return bool(self.machine.preparing())

    def prepare_restore(self, body: bytes, done: Any = None) -> None:
        self.machine.prepare_restore(body, done)

    def prepared_by(self, peer: str, key: str) -> None:
        self.machine.prepared_by(peer, key)

    def restore(self, data: bytes) -> None:
        self.machine.restore(data)

    @property
    def broken(self) -> str | None:
        """The machine's fail-stop verdict (the replica's health reads it)."""
        value = getattr(self.machine, "broken", None)
        return None if value is None else str(value)
