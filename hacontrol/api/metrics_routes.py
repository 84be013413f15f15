"""`GET /metrics`: the replica's Prometheus metrics, and the middleware that times requests.

The instruments (`observe/metrics.py`) record as things happen; the state's gauges (jobs,
nodes, allocations and their resource use) are read at scrape time by one collector, so a
scrape costs one pass over the state and nothing between scrapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from hacontrol.observe.metrics import CONTENT_TYPE, ServerMetrics, allocation_families
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state.machine import StateMachine

from .backend import Cluster, Store
from .errors import Handler
from .openapi import Operation, documented
from .request import CLUSTER, LEADERSHIP, STORE

METRICS = web.AppKey[ServerMetrics]("metrics")
MIB = 1024 * 1024
# `job_name`, not `job`: Prometheus gives every target a `job` label of its own, and would
# rename ours to `exported_job`.
ALLOC_LABELS = ("allocation", "namespace", "job_name", "node")


def metrics_middleware(metrics: ServerMetrics) -> Middleware:
    """Times every request by its route's pattern (never the raw path: the label set stays
    bounded whatever clients send), method and status code. Outermost, so it sees the code
    the error middleware chose."""

    @web.middleware
    async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        code = 500
        try:
            resp = await handler(request)
            code = resp.status
            return resp
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics.observe_request(route, request.method, code, time.perf_counter() - start)
    return timed


class StateCollector:
    """The gauges read from this replica's state and Raft status at scrape time."""

    def __init__(self, store: Store, cluster: Cluster, leadership: Leadership) -> None:
        self.store, self.cluster, self.leadership = store, cluster, leadership

    def describe(self) -> list[Metric]:
        return []  # read at scrape time: registering must not read the state

    def collect(self) -> Iterator[Metric]:
        st = self.cluster.status()
        for name, value, help_ in (
                ("hacontrol_raft_term", st["term"], "current Raft term"),
                ("hacontrol_raft_commit_index", st["commit_index"], "Raft commit index"),
                ("hacontrol_raft_applied_index", st["applied_index"], "last applied index"),
                ("hacontrol_raft_leader", 1 if st["role"] == "leader" else 0,
                 "1 on the leader"),
                ("hacontrol_healthy", 1 if st["healthy"] else 0, "replica health")):
            yield GaugeMetricFamily(name, help_, value=value)
        leader = self.leadership.current()
        yield GaugeMetricFamily(
            "hacontrol_scheduler_pending_allocations",
            "allocations the scheduler could not place yet (on the leader; 0 elsewhere)",
            value=len(leader.unplaced) if leader is not None else 0)
        reported = dict(leader.alloc_metrics) if leader is not None else {}
        # Under the apply lock only what reads the state; the allocation series (the bulk
        # of a scrape) are built after it is released.
        families, rows = self.store.read_local(
            lambda m: (list(_state_families(m)), _allocation_labels(m, reported)))
        yield from families
        yield from allocation_families(rows, ALLOC_LABELS)


def _state_families(m: StateMachine) -> Iterator[Metric]:
    by_state: dict[str, int] = {}
    for alloc in m.allocs.values():
        by_state[alloc.state] = by_state.get(alloc.state, 0) + 1
    yield GaugeMetricFamily("hacontrol_jobs", "jobs known", value=len(m.jobs))
    yield GaugeMetricFamily("hacontrol_nodes_ready", "nodes ready",
                            value=sum(1 for n in m.nodes.values() if n.status == "ready"))
    allocs = GaugeMetricFamily("hacontrol_allocations", "allocations by state",
                               labels=("state",))
    for state, count in sorted(by_state.items()):
        allocs.add_metric((str(state),), count)
    yield allocs
    node = ("node",)
    cap_cpu = GaugeMetricFamily("hacontrol_node_cpu_capacity_cores",
                                "CPU cores the node offers", labels=node)
    used_cpu = GaugeMetricFamily("hacontrol_node_cpu_allocated_cores",
                                 "CPU cores its allocations reserve", labels=node)
    cap_mem = GaugeMetricFamily("hacontrol_node_memory_capacity_bytes",
                                "memory the node offers", labels=node)
    used_mem = GaugeMetricFamily("hacontrol_node_memory_allocated_bytes",
                                 "memory its allocations reserve", labels=node)
    ready = GaugeMetricFamily("hacontrol_node_ready", "1 when the node is ready",
                              labels=node)
    draining = GaugeMetricFamily("hacontrol_node_draining", "1 while the node drains",
                                 labels=node)
    for name, n in sorted(m.nodes.items()):
        free_cpu, free_mem = m.node_free(n)
        cap_cpu.add_metric((name,), n.capacity.cpu)
        used_cpu.add_metric((name,), max(0.0, n.capacity.cpu - free_cpu))
        cap_mem.add_metric((name,), n.capacity.memory_mb * MIB)
        used_mem.add_metric((name,), max(0, n.capacity.memory_mb - free_mem) * MIB)
        ready.add_metric((name,), 1 if n.status == "ready" else 0)
        draining.add_metric((name,), 1 if n.drain else 0)
    yield from (cap_cpu, used_cpu, cap_mem, used_mem, ready, draining)


def _allocation_labels(m: StateMachine, reported: dict[str, dict[str, Any]]
                       ) -> list[tuple[dict[str, str], dict[str, Any]]]:
    rows = []
    for alloc_id, report in sorted(reported.items()):
        a = m.allocs.get(alloc_id)
        labels = {"allocation": alloc_id}
        if a is not None:
            labels |= {"namespace": a.namespace, "job_name": a.job, "node": a.node or ""}
        rows.append((labels, report))
    return rows


@documented(Operation("Prometheus metrics of this replica", "status", media="text/plain",
                      errors=(401, 403)))
async def metrics(request: web.Request) -> web.Response:
    # Off the event loop: a scrape of thousands of allocations takes a few hundred ms
    # (bench/metrics_overhead.py), which heartbeats and requests should not wait behind.
    body = await asyncio.to_thread(generate_latest, request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE,
                                            "X-Content-Type-Options": "nosniff"})


def register(app: web.Application, metrics_: ServerMetrics) -> None:
    app[METRICS] = metrics_
    metrics_.registry.register(StateCollector(app[STORE], app[CLUSTER], app[LEADERSHIP]))
    app.router.add_get("/metrics", metrics)
