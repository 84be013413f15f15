"""The leader's short history of allocation metrics: its bounds, and the route that serves
it (recorded from the agents' real sync route, read with the permission of reading the
allocation)."""

from __future__ import annotations

import math

from hacontrol.model.states import AllocState
from hacontrol.observe.history import MAX_POINTS, WINDOW_S, MetricsHistory
from hacontrol.scheduler.leader_state import Leadership

from .test_acl_api import SPEC, Call, LocalReplica, bootstrap, client_token, session


def test_a_series_is_bounded_by_its_window_and_its_count() -> None:
    h = MetricsHistory(window_s=10, max_points=5)
    for t in range(3):
        h.record("n1", "a", {"cpu_percent": float(t), "rss_bytes": 100 + t}, 1000.0 + t)
    assert [p["t"] for p in h.points("a")] == [1000.0, 1001.0, 1002.0]
    assert h.points("a")[1] == {"t": 1001.0, "cpu_percent": 1.0, "rss_bytes": 101}
    # Past the window, one point before it stays: the value when the window starts.
    h.record("n1", "a", {"cpu_percent": 9.0, "rss_bytes": 1}, 1011.5)
    assert [p["t"] for p in h.points("a")] == [1001.0, 1002.0, 1011.5]
    for i in range(20):  # faster than anything ages out: the count bounds it
        h.record("n1", "a", {"cpu_percent": 1.0}, 1012.0 + i / 10)
    assert len(h.points("a")) == 5
    assert h.points("a")[-1]["rss_bytes"] is None  # not reported: null, not zero


def test_points_since_a_time_and_a_clock_that_steps_back() -> None:
    h = MetricsHistory()
    for t in (10.0, 11.0, 12.0):
        h.record("n1", "a", {"cpu_percent": t}, t)
    assert [p["t"] for p in h.points("a", since=11.0)] == [12.0]
    assert h.points("a", since=12.0) == []
    h.record("n1", "a", {"cpu_percent": 1.0}, 5.0)  # the leader's clock stepped back
    assert [p["t"] for p in h.points("a")] == [10.0, 11.0, 12.0, 12.0]
    assert h.points("nobody") == []


def test_series_go_with_their_allocations_and_memory_stays_bounded() -> None:
    h = MetricsHistory()
    for alloc in ("a", "b", "c"):
        h.record("n1", alloc, {"cpu_percent": 1.0}, 1.0)
    h.record("n2", "d", {"cpu_percent": 1.0}, 1.0)
    h.keep_only("n1", {"b"})
    assert len(h) == 2 and h.points("a") == [] and h.points("d") != []
    h.forget("d")
    assert len(h) == 1
    # The documented bound: MAX_POINTS points shown, an eighth more stored until a batch
    # trim, of three 8-byte numbers each.
    full = MetricsHistory()
    for i in range(3 * MAX_POINTS):
        full.record("n1", "a", {"cpu_percent": math.pi, "rss_bytes": 1 << 30}, i * 0.5)
    assert len(full.points("a")) == MAX_POINTS
    assert MAX_POINTS * 24 <= full.bytes_used() <= (MAX_POINTS + MAX_POINTS // 8) * 24 == 16200
    assert full.window_s == WINDOW_S


def test_the_route_serves_what_the_agents_synced_to_readers_of_the_allocation() -> None:
    replica = LocalReplica()
    leadership = Leadership(lambda: 3)

    def script(call: Call) -> None:
        root = bootstrap(call)
        node = {"name": "n1", "cpu": 2, "memory_mb": 1024, "address": "http://127.0.0.1:9"}
        assert call("POST", "/v1/agent/sync", {"node": node}, root)[0] == 200
        assert call("PUT", "/v1/jobs/default/web", SPEC, root)[0] == 200
        alloc = replica.m.store.pending_allocs()[0]
        replica.m.store.place(alloc, "n1")
        for cpu in (1.0, 2.0, 3.0):
            status, body = call("POST", "/v1/agent/sync", {"node": node, "metrics": {
                alloc.id: {"cpu_percent": cpu, "rss_bytes": 4096}}}, root)
            assert status == 200, body
        url = f"/v1/allocations/{alloc.id}/metrics"
        status, body = call("GET", url, token=root)
        assert status == 200, body
        assert body["kept"] and body["window_s"] == WINDOW_S
        points = body["points"]
        assert [p["cpu_percent"] for p in points] == [1.0, 2.0, 3.0]
        assert points[0]["t"] <= points[-1]["t"] <= body["now"]
        status, body = call("GET", f"{url}?since={points[1]['t']!r}", token=root)
        assert [p["cpu_percent"] for p in body["points"]] == [3.0]
        for bad in ("yesterday", "nan", "inf"):
            status, body = call("GET", f"{url}?since={bad}", token=root)
            assert status == 422 and body["error"]["field"] == "since", bad
        status, body = call("GET", "/v1/allocations/no-such/metrics", token=root)
        assert status == 404 and body["error"]["field"] == "id"
        # A token that may not read the allocation's namespace sees nothing of it.
        other, _ = client_token(call, root, "other", {"namespaces": {"prod": {
            "policy": "read"}}})
        assert call("GET", url, token=other)[0] == 403
        assert call("GET", url)[0] == 401
        reader, _ = client_token(call, root, "reader", {"namespaces": {"default": {
            "policy": "read"}}})
        assert call("GET", url, token=reader)[0] == 200
        # Once the allocation has ended, its history goes too.
        alloc.state = AllocState.STOPPED
        assert call("POST", "/v1/agent/sync", {"node": node, "metrics": {}}, root)[0] == 200
        assert call("GET", url, token=root)[1]["points"] == []
    session(replica, script, leadership)


def test_a_replica_that_does_not_lead_says_so_and_names_the_leader() -> None:
    replica = LocalReplica()

    def script(call: Call) -> None:
        root = bootstrap(call)
        assert call("PUT", "/v1/jobs/default/web", SPEC, root)[0] == 200
        alloc = replica.m.store.pending_allocs()[0]
        status, body = call("GET", f"/v1/allocations/{alloc.id}/metrics", token=root)
        assert status == 200, body
        assert body["kept"] is False and body["points"] == []
        assert body["leader_api"] == "http://c1"
    session(replica, script, Leadership(lambda: None))
