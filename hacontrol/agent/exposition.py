"""The agent's `/metrics` page, rendered with prometheus_client.

A module of its own so that the library is imported at the first scrape (`agent/http.py`):
an agent that no Prometheus scrapes never holds it (1.6 MB of its resident memory).
The series are the controllers' allocation series (`observe/metrics.py`), labelled by
allocation only (the agent knows no jobs), and this process's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from hacontrol.observe.metrics import CONTENT_TYPE, allocation_families, new_registry

from .metrics import AllocationMetrics
from .report import metrics_report


class Sampled(Protocol):
    """What the page reads of the allocations running here."""

    def allocations(self) -> Mapping[str, object]: ...
    def active(self, alloc_id: str) -> bool: ...
    def metrics(self) -> dict[str, AllocationMetrics]: ...


class Exposition:
    def __init__(self, local: Sampled) -> None:
        self.registry = new_registry()
        self.registry.register(_AgentCollector(local))

    def render(self) -> tuple[bytes, str]:
        """(the page, its content type)."""
        return generate_latest(self.registry), CONTENT_TYPE


class _AgentCollector:
    """The agent's gauges, read from its supervisor at scrape time."""

    def __init__(self, local: Sampled) -> None:
        self.local = local

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        s = self.local
        yield GaugeMetricFamily("hacontrol_agent_allocations",
                                "allocations this agent supervises",
                                value=sum(1 for a in s.allocations() if s.active(a)))
        try:
            samples = s.metrics()
        except Exception:  # a sampler failure must not fail the scrape
            samples = {}
        yield from allocation_families(
            (({"allocation": alloc_id}, metrics_report(m))
             for alloc_id, m in sorted(samples.items())), ("allocation",))
