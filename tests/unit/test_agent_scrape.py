"""The agent's scraping of a job's scaling gauge: the parsing on plain text, the scraper
against a real local HTTP server (good, failing, too large, gone), and how the values
ride in the metrics a sync carries."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from hacontrol.agent.httpclient import Client
from hacontrol.agent.metrics import AllocationMetrics
from hacontrol.agent.report import MetricsOutbox, metrics_report
from hacontrol.agent.scrape import MAX_BYTES, Scraper, Target, gauge_value, named_port
from hacontrol.model.messages import SCALING_METRIC_KEY
from hacontrol.model.spec import MetricSpec
from hacontrol.model.states import MetricSource

from .http_server import serve_in_thread


def exposition() -> str:
    reg = CollectorRegistry()
    g = Gauge("queue_length", "items waiting", ["queue"], registry=reg)
    g.labels("a").set(3)
    g.labels("b").set(4.5)
    Gauge("other", "not this one", registry=reg).set(100)
    Counter("queue_length_done", "a counter named alike", registry=reg).inc(7)
    return generate_latest(reg).decode()


def test_gauge_value_sums_every_label_set_of_that_name_only() -> None:
    text = exposition()
    assert gauge_value(text, "queue_length") == 7.5
    assert gauge_value(text, "other") == 100.0
    assert gauge_value(text, "missing") is None
    assert gauge_value("untyped_one 2\n", "untyped_one") == 2.0
    assert gauge_value("this is { not prometheus", "queue_length") is None
    assert gauge_value('x{a="1"} NaN\nx{a="2"} 3\n', "x") == 3.0


def test_targets_only_for_prometheus_metrics() -> None:
    assert Target.of(None) is None
    assert Target.of(MetricSpec("q")) is None  # external: pushed, not scraped
    t = Target.of(MetricSpec("q", MetricSource.PROMETHEUS, 9100, None, 2.0))
    assert t == Target("q", 9100, "/metrics", 2.0)
    assert t.url(9100) == "http://127.0.0.1:9100/metrics"


def test_a_named_port_is_the_allocations_own() -> None:
    env = {"HACONTROL_PORT_HTTP": "31005", "HACONTROL_PORT_BAD": "x", "HACONTROL_PORT_BIG":
           "70000"}
    assert named_port(env, "http") == 31005
    assert named_port(env, "bad") is None and named_port(env, "big") is None
    assert named_port(env, "none") is None and named_port(None, "http") is None


def test_scraper_reads_running_allocations_and_reports_failures_as_null() -> None:
    text = exposition()
    big = "x 1\n" * (MAX_BYTES // 4 + 10)

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/metrics":
            return web.Response(text=text)
        if request.path == "/big":
            return web.Response(text=big)
        if request.path == "/slow":
            await asyncio.sleep(5)
        return web.Response(status=500)

    with serve_in_thread(handle) as (_, ports):
        port = ports[0]
        running = {"a1", "a2", "a3", "a4"}
        clock = [100.0]
        envs = {"a6": {"HACONTROL_PORT_METRICS": str(port)}}
        s = Scraper(lambda: set(running), envs.get, monotonic=lambda: clock[0])
        running |= {"a6", "a7"}  # a7 has no such named port
        s.set_targets({"a1": Target("queue_length", port, "/metrics", 1.0),
                       "a6": Target("queue_length", "metrics", "/metrics", 1.0),
                       "a7": Target("queue_length", "metrics", "/metrics", 1.0),
                       "a2": Target("queue_length", port, "/broken", 1.0),
                       "a3": Target("queue_length", port, "/big", 1.0),
                       "a4": Target("queue_length", port, "/slow", 0.5),
                       "a5": Target("queue_length", port, "/metrics", 1.0)})  # not running

        async def go() -> None:
            async with Client() as session:
                await s.scrape_once(session)
                assert s.values == {"a1": 7.5, "a2": None, "a3": None, "a4": None,
                                    "a6": 7.5, "a7": None}
                s.values["a1"] = -1.0
                await s.scrape_once(session)  # nothing due yet
                assert s.values["a1"] == -1.0
                clock[0] += 1.0
                running.discard("a2")
                await s.scrape_once(session)
                assert s.values["a1"] == 7.5 and "a2" not in s.values
        asyncio.run(go())
        s.set_targets({"a1": Target("queue_length", port, "/metrics", 1.0)})
        assert set(s.values) == {"a1"}
    # The server is gone: a refused connection is a failed scrape.
    clock[0] += 5

    async def gone() -> None:
        async with Client() as session:
            await s.scrape_once(session)
    asyncio.run(gone())
    assert s.values == {"a1": None}


def _m(cpu: float) -> AllocationMetrics:
    return AllocationMetrics(7, 1, cpu, 100, 1, 3, 0, 0, 1.0)


def test_scraped_values_ride_with_the_allocations_metrics() -> None:
    box = MetricsOutbox()
    a, b = _m(1.0), _m(2.0)
    sent = box.pending({"a": a, "b": b}, 1, {"a": 12.0})
    assert sent == {"a": {**metrics_report(a), SCALING_METRIC_KEY: 12.0},
                    "b": metrics_report(b)}
    box.delivered(1)
    assert box.pending({"a": a, "b": b}, 1, {"a": 12.0}) == {}
    box.delivered(1)
    # Only the scraped value changed: the whole entry goes again (the leader replaces it).
    assert box.pending({"a": a, "b": b}, 1, {"a": None}) == {
        "a": {**metrics_report(a), SCALING_METRIC_KEY: None}}
    box.delivered(1)
    # Scraped before the sampler's first sample of it.
    assert box.pending({"a": a, "b": b}, 1, {"a": None, "c": 3.0}) == {
        "c": {SCALING_METRIC_KEY: 3.0}}
    box.delivered(1)
    assert box.pending({"a": a, "b": b}, 1, {"a": None}) == {}
