"""The Prometheus metrics: conventions, bounded labels, one registry per app, the timed
state machine, and the Grafana dashboard against what a running app exports."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from hacontrol.agent.http import build_agent_app
from hacontrol.api.app import build_app
from hacontrol.observe.metrics import ServerMetrics, TimedMachine
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .api_fake import ApplyingReplica
from .test_agent_http import served
from .test_api_errors import TOKEN

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "hacontrol.json"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _replica_with_a_node() -> ApplyingReplica:
    """A node and a job of one (pending) allocation."""
    replica = ApplyingReplica()
    for op, args in ((C.NODE_REGISTER, {"name": "n1", "cpu": 2.0, "memory_mb": 1024,
                                        "address": "http://127.0.0.1:1", "labels": {},
                                        "attributes": {}}),
                     (C.JOB_PUT, {"namespace": "default", "name": "web",
                                  "spec": {"command": ["sleep", "100"], "count": 1}})):
        replica.index += 1
        assert replica.m.apply(C.Command(op, time.time(), args).encode(),
                               replica.index)["ok"]
    return replica


def _scrape(app: web.Application, *requests: tuple[str, str]) -> str:
    async def go() -> str:
        async with TestClient(TestServer(app)) as client:
            for method, path in requests:
                await (await client.request(method, path, headers=AUTH)).read()
            resp = await client.get("/metrics", headers=AUTH)
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return await resp.text()
    return asyncio.run(go())


def _samples(text: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(dict(s.labels))
    return out


def _leader_with_reports() -> Leadership:
    leadership = Leadership(lambda: 3)
    state = leadership.current()
    assert state is not None
    state.alloc_metrics["a1"] = {"cpu_percent": 50.0, "rss_bytes": 1 << 20, "threads": 2,
                                 "open_files": 5, "io_read_bytes": 10, "io_write_bytes": 20}
    return leadership


def test_requests_are_labelled_by_route_pattern_and_a_bounded_method() -> None:
    replica = _replica_with_a_node()
    app = build_app(replica, replica, Leadership(lambda: 3), TOKEN)
    text = _scrape(app, ("GET", "/v1/jobs/default/no-such-job"),
                   ("GET", "/v1/jobs/default/other-job"), ("GET", "/no/such/path/x1"),
                   ("PROPFIND", "/v1/jobs"))
    counts = {(s.labels["route"], s.labels["method"], s.labels["code"]): s.value
              for f in text_string_to_metric_families(text)
              for s in f.samples if s.name == "hacontrol_http_request_duration_seconds_count"}
    assert counts[("/v1/jobs/{ns}/{name}", "GET", "404")] == 2
    assert counts[("unmatched", "GET", "404")] == 1
    assert any(m == "other" for _, m, _ in counts), counts
    assert not any("no-such-job" in r or "x1" in r for r, _, _ in counts)


def test_state_gauges_follow_the_unit_conventions() -> None:
    replica = _replica_with_a_node()
    text = _scrape(build_app(replica, replica, _leader_with_reports(), TOKEN))
    s = {f.name: f for f in text_string_to_metric_families(text)}
    assert s["hacontrol_node_memory_capacity_bytes"].samples[0].value == 1024 * 1024 * 1024
    assert s["hacontrol_node_cpu_capacity_cores"].samples[0].value == 2.0
    assert s["hacontrol_allocation_cpu_ratio"].samples[0].value == 0.5
    assert s["hacontrol_allocation_io_read_bytes"].type == "counter"
    assert s["hacontrol_nodes_ready"].samples[0].value == 1


def test_two_apps_in_one_process_keep_their_own_registries() -> None:
    one, two = _replica_with_a_node(), _replica_with_a_node()
    app1 = build_app(one, one, Leadership(lambda: 3), TOKEN)
    app2 = build_app(two, two, Leadership(lambda: 3), TOKEN)
    first = _samples(_scrape(app1, ("GET", "/v1/jobs")))
    second = _samples(_scrape(app2))
    assert any(s["route"] == "/v1/jobs" for s in
               first["hacontrol_http_request_duration_seconds_count"])
    # the second app saw no request to /v1/jobs: nothing of the first leaked into it
    assert not any(s.get("route") == "/v1/jobs" for s in
                   second.get("hacontrol_http_request_duration_seconds_count", []))


def test_the_timed_machine_records_each_apply_and_keeps_the_verdict() -> None:
    metrics = ServerMetrics()
    machine = StateMachine()
    timed = TimedMachine(machine, metrics.apply)
    timed.apply(C.Command(C.NOOP, 1.0, {}).encode(), 1)
    timed.apply(b"not msgpack", 2)
    count = metrics.registry.get_sample_value("hacontrol_raft_apply_duration_seconds_count")
    assert count == 2
    assert timed.broken == machine.broken
    restored = StateMachine()
    TimedMachine(restored, metrics.apply).restore(timed.snapshot())
    assert restored.index == machine.index


def _dashboard_metrics() -> set[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs.append(doc["templating"]["list"][1]["query"]["query"])
    names: set[str] = set()
    for e in exprs:
        names |= set(re.findall(r"\b((?:hacontrol|process)_[a-z0-9_]+)\b", e))
    return names


def test_every_metric_of_the_dashboard_is_exported_by_a_running_app() -> None:
    names = _dashboard_metrics()
    assert len(names) > 15
    replica = _replica_with_a_node()
    metrics = ServerMetrics()
    app = build_app(replica, replica, _leader_with_reports(), TOKEN, metrics=metrics)
    exported = set(_samples(_scrape(app, ("GET", "/v1/jobs"))))
    assert names <= exported, sorted(names - exported)


def test_the_dashboard_is_valid_grafana_json() -> None:
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and doc["uid"] and doc["schemaVersion"] >= 30
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]


class _OneAllocation:
    def allocations(self) -> dict[str, object]:
        return {"a1": object()}

    def active(self, alloc_id: str) -> bool:
        return True

    def metrics(self) -> dict[str, object]:
        from hacontrol.agent.metrics import AllocationMetrics
        return {"a1": AllocationMetrics(1, 1, 25.0, 4096, 1, 3, 0, 0, 1.0)}


def test_the_agent_exports_the_same_allocation_series() -> None:
    app = build_agent_app(_OneAllocation(), lambda secret: secret == TOKEN)  # type: ignore[arg-type]

    async def scrape() -> str:
        async with served(app) as url, aiohttp.ClientSession() as client, \
                client.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 200, await r.text()
            return await r.text()
    samples = _samples(asyncio.run(scrape()))
    assert samples["hacontrol_agent_allocations"]
    assert samples["hacontrol_allocation_cpu_ratio"] == [{"allocation": "a1"}]
    assert "process_resident_memory_bytes" in samples
