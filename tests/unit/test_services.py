"""Service discovery without processes: the spec's ports and services, placement of static
ports, the registry derived in `apply`, and the agent's choice of ports."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from hacontrol.agent.assignments import allocation_spec
from hacontrol.agent.ports import NoFreePort, PortBook
from hacontrol.model.errors import Rejection
from hacontrol.model.messages import Assignment
from hacontrol.model.spec import JobSpec, PortSpec, ServiceSpec
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.scheduler.placement import Demand, NodeRoom, plan_placements
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.state.services import rebuild

from .test_leader_decisions import World

WEB: dict[str, Any] = {"ports": [{"name": "http"}],
                       "services": [{"name": "websvc", "port": "http"}]}


# ------------------------------------------------------------------ the spec

def test_ports_and_services_round_trip() -> None:
    spec = parse_job_spec({"command": ["x"], "ports": [{"name": "http"},
                                                       {"name": "admin", "static": 8080}],
                           "services": [{"name": "websvc", "port": "http"}]})
    assert spec.ports == (PortSpec("http"), PortSpec("admin", 8080))
    assert spec.services == (ServiceSpec("websvc", "http"),)
    assert spec.static_ports() == {"admin": 8080}
    d = spec.to_dict()
    assert d["ports"] == [{"name": "http"}, {"name": "admin", "static": 8080}]
    assert JobSpec.from_dict(d) == spec
    # A spec without them encodes as before (the state digest depends on it).
    assert "ports" not in parse_job_spec({"command": ["x"]}).to_dict()


@pytest.mark.parametrize(("extra", "field"), [
    ({"ports": [{"name": "HTTP"}]}, "ports[0].name"),
    ({"ports": [{"name": "1x"}]}, "ports[0].name"),
    ({"ports": [{"name": "http"}, {"name": "http"}]}, "ports[1].name"),
    ({"ports": [{"name": "a", "static": 0}]}, "ports[0].static"),
    ({"ports": [{"name": "a", "static": 65536}]}, "ports[0].static"),
    ({"ports": [{"name": "a", "static": "80"}]}, "ports[0].static"),
    ({"ports": [{"name": "a", "static": 80}, {"name": "b", "static": 80}]}, "ports[1].static"),
    ({"ports": [{"name": "a", "host": "x"}]}, "ports[0].host"),
    ({"ports": {"name": "a"}}, "ports"),
    ({"ports": [{"name": "http"}], "services": [{"name": "web", "port": "grpc"}]},
     "services[0].port"),
    ({"services": [{"name": "web", "port": "http"}]}, "services[0].port"),
    ({"ports": [{"name": "http"}], "services": [{"name": "web", "port": "http"},
                                               {"name": "web", "port": "http"}]},
     "services[1].name"),
    ({"ports": [{"name": "http"}], "services": [{"name": "-web", "port": "http"}]},
     "services[0].name"),
    ({"ports": [{"name": "http"}], "services": [{"name": "Web", "port": "http"}]},
     "services[0].name"),
    ({"ports": [{"name": "http"}], "health": {"type": "tcp", "port": "grpc"}},
     "health.port"),
])
def test_bad_ports_and_services_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(Rejection) as err:
        parse_job_spec({"command": ["x"], **extra})
    assert err.value.code == "invalid" and err.value.field == field


# ------------------------------------------------------------- placement

def _room(name: str, used: frozenset[int] = frozenset()) -> NodeRoom:
    return NodeRoom(name, 4.0, 4096, 4.0, 4096, ports_used=used)


def _demand(alloc_id: str, job: str = "web", ports: frozenset[int] = frozenset()) -> Demand:
    return Demand(alloc_id, "default", job, 0.1, 16, ports=ports)


def test_two_static_users_of_a_port_never_share_a_node() -> None:
    p8080 = frozenset({8080})
    plan = plan_placements([_demand("a", ports=p8080), _demand("b", ports=p8080),
                            _demand("c", ports=p8080), _demand("d")],
                           [_room("n1"), _room("n2")])
    placed = dict(plan.placements)
    assert {placed["a"], placed["b"]} == {"n1", "n2"} and "d" in placed
    assert "c" not in placed
    assert "2 nodes with static port 8080 already in use" in plan.unplaced["c"]


def test_a_port_held_by_another_job_keeps_the_node_out() -> None:
    plan = plan_placements([_demand("a", job="other", ports=frozenset({8080}))],
                           [_room("n1", frozenset({8080})), _room("n2", frozenset({9090}))])
    assert plan.placements == [("a", "n2")]
    plan = plan_placements([_demand("a", job="other", ports=frozenset({8080}))],
                           [_room("n1", frozenset({8080}))])
    assert "static port 8080 already in use" in plan.unplaced["a"]


def test_the_leader_places_static_ports_apart_and_apply_rechecks() -> None:
    w = World("n1", "n2")
    w.put_job("web", count=3, ports=[{"name": "http", "static": 8080}])
    w.put_job("api", count=1, ports=[{"name": "http", "static": 8080}])
    w.settle()
    live = w.live("web") + w.live("api")
    assert len(live) == 2 and {a.node for a in live} == {"n1", "n2"}
    waiting = [a for a in w.m.allocs.values() if a.node is None and a.desired == "run"]
    assert len(waiting) == 2
    assert all("port 8080" in w.leader.unplaced[a.id] for a in waiting)
    # A plan made from a stale view is refused where it counts, when it applies.
    res = w.apply(C.PLAN, {"placements": [[waiting[0].id, "n1"]]})
    assert res["placed"] == [] and "port 8080 already in use" in res["rejected"][0][1]


def test_dynamic_ports_do_not_constrain_placement() -> None:
    w = World("n1")
    w.put_job("web", count=3, **WEB)
    w.settle()
    assert len(w.live("web")) == 3


# -------------------------------------------------------------- the registry

class Agents(World):
    """A world whose agents report a port for each allocation, as real ones do."""

    def __init__(self, *nodes: str) -> None:
        super().__init__(*nodes)
        self.next_port = 20000

    def started(self, a: Any) -> dict[str, Any]:
        self.next_port += 1
        return {**super().started(a), "ports": {"http": self.next_port}}

    def endpoints(self, name: str = "websvc") -> list[tuple[str, str, int]]:
        reg = self.m.store.registry
        return [(e.allocation, e.address, e.port)
                for e in reg.endpoints.get(("default", name), ())]

    def service_index(self, name: str = "websvc") -> int | None:
        return self.m.store.registry.index.get(("default", name))

    def index_at_last_apply(self) -> int:
        return self.index

    def report(self, alloc_id: str, **fields: Any) -> None:
        a = self.m.allocs[alloc_id]
        assert a.node is not None
        update = {"id": alloc_id, "state": a.state, "pid": 1, "ports": a.ports, **fields}
        assert self.apply(C.ALLOC_UPDATE, {"node": a.node, "updates": [update]})["ok"]


def assert_derived(m: StateMachine) -> None:
    """The registry kept step by step equals one derived from scratch."""
    fresh = rebuild(m.store, 0)
    assert fresh.endpoints == m.store.registry.endpoints
    assert set(fresh.index) == set(m.store.registry.index)


def test_endpoints_follow_running_allocations() -> None:
    w = Agents("n1", "n2")
    w.put_job("web", count=2, **WEB)
    assert w.endpoints() == [] and w.service_index() is not None  # declared, none running yet
    w.settle()
    eps = w.endpoints()
    assert len(eps) == 2 and {host for _, host, _ in eps} == {"n1", "n2"}
    assert all(port > 20000 for _, _, port in eps)
    assert_derived(w.m)
    w.apply(C.JOB_SCALE, {"namespace": "default", "name": "web", "count": 3})
    w.settle()
    assert len(w.endpoints()) == 3
    w.apply(C.JOB_SCALE, {"namespace": "default", "name": "web", "count": 1})
    assert len(w.endpoints()) == 1  # stopping ones leave at once, before they have stopped
    assert_derived(w.m)
    w.apply(C.JOB_DELETE, {"namespace": "default", "name": "web"})
    assert w.endpoints() == [] and w.service_index() is None
    assert_derived(w.m)


def test_the_index_moves_only_when_the_endpoints_change() -> None:
    w = Agents("n1")
    w.put_job("web", count=1, **WEB)
    w.settle()
    (alloc,) = w.live("web")
    at = w.service_index()
    w.report(alloc.id)  # the same news again
    w.put_job("other", count=1)
    w.settle()
    assert w.service_index() == at
    w.report(alloc.id, ports={"http": 30001})  # a new port is a new endpoint
    assert at is not None and w.service_index() == w.index_at_last_apply() and w.service_index() > at


def test_health_decides_and_a_lost_node_takes_its_endpoints() -> None:
    w = Agents("n1", "n2")
    w.health = {1: "starting"}
    w.put_job("web", count=2, health={"type": "tcp", "port": 1}, **WEB)
    w.settle()
    assert w.endpoints() == []  # running, not healthy yet
    for a in w.live("web"):
        w.report(a.id, health="healthy")
    assert len(w.endpoints()) == 2
    a1 = next(a for a in w.live("web") if a.node == "n1")
    w.report(a1.id, health="unhealthy")
    assert [e[0] for e in w.endpoints()] != [] and a1.id not in [e[0] for e in w.endpoints()]
    before = w.service_index()
    w.apply(C.NODE_STATUS, {"name": "n2", "status": "down"})
    assert w.endpoints() == [] and (w.service_index() or 0) > (before or 0)
    assert_derived(w.m)


def test_a_node_that_moves_moves_its_endpoints() -> None:
    w = Agents("n1")
    w.put_job("web", count=1, **WEB)
    w.settle()
    assert w.endpoints()[0][1] == "n1"
    w.apply(C.NODE_REGISTER, {"name": "n1", "cpu": 2.0, "memory_mb": 1024,
                              "address": "http://10.0.0.7:4647", "labels": {},
                              "attributes": {}})
    assert w.endpoints()[0][1] == "10.0.0.7"


def test_random_histories_keep_the_registry_derived() -> None:
    rng = random.Random(7)
    w = Agents("n1", "n2", "n3")
    for _ in range(120):
        pick = rng.random()
        job = rng.choice(["web", "api"])
        if pick < 0.25:
            w.put_job(job, count=rng.randint(0, 4), env={"V": str(rng.randint(0, 2))},
                      **(WEB if rng.random() < 0.8 else {}))
        elif pick < 0.35:
            w.apply(C.JOB_DELETE, {"namespace": "default", "name": job})
        elif pick < 0.45:
            node = rng.choice(["n1", "n2", "n3"])
            status = rng.choice(["down", "ready"])
            w.apply(C.NODE_STATUS, {"name": node, "status": status})
        elif pick < 0.55:
            live = sorted(a.id for a in w.m.allocs.values() if a.state == "running")
            if live:
                w.report(rng.choice(live), state=rng.choice(["running", "exited"]))
        else:
            w.agents()
            w.round()
        w.tick(0.3)
        assert_derived(w.m)


def test_snapshots_keep_the_indexes_and_the_digest() -> None:
    w = Agents("n1", "n2")
    w.put_job("web", count=2, **WEB)
    w.settle()
    w.apply(C.JOB_SCALE, {"namespace": "default", "name": "web", "count": 1})
    copy = StateMachine()
    copy.restore(w.m.snapshot())
    assert copy.store.registry.index == w.m.store.registry.index
    assert copy.store.registry.endpoints == w.m.store.registry.endpoints
    assert copy.digest() == w.m.digest()
    # The next entry moves both alike.
    w.apply(C.JOB_SCALE, {"namespace": "default", "name": "web", "count": 0})
    copy.apply(C.Command(C.JOB_SCALE, w.wall, {"namespace": "default", "name": "web",
                                                "count": 0}, f"key-{w.index}").encode(),
               w.index)
    assert copy.digest() == w.m.digest()


def test_old_versions_serve_what_they_declared_during_a_rollout() -> None:
    w = Agents("n1")
    update = {"max_parallel": 1, "min_healthy_s": 30.0}
    w.put_job("web", count=2, update=update, **WEB)
    w.settle()
    job = w.m.jobs[("default", "web")]
    w.put_job("web", count=2, update=update, ports=WEB["ports"],
              services=[{"name": "next", "port": "http"}])
    assert len(w.endpoints()) == 2  # the old ones still serve what their version declared
    assert w.m.store.registry.declared[job.key] == {"next"}
    assert w.m.store.registry.endpoints[("default", "next")] == ()
    assert_derived(w.m)


# ------------------------------------------------------------------ the agent

def test_the_agent_picks_free_ports_and_keeps_them(tmp_path: Path) -> None:
    busy = {20000, 20001}
    book = PortBook((20000, 20003), is_free=lambda p: p not in busy, rng=random.Random(1).random)
    wanted = (PortSpec("http"), PortSpec("admin", 9000))
    ports = book.ports_for("web-000001", wanted, tmp_path / "a1")
    assert ports["admin"] == 9000 and ports["http"] in (20002, 20003)
    other = book.ports_for("web-000002", (PortSpec("http"),), tmp_path / "a2")
    assert other["http"] in (20002, 20003) and other["http"] != ports["http"]
    with pytest.raises(NoFreePort):
        book.ports_for("web-000003", (PortSpec("http"),), tmp_path / "a3")
    # A new agent (after a restart) finds what the allocation holds on disk.
    again = PortBook((20000, 20003), is_free=lambda p: False)
    again.recall("web-000001", wanted, tmp_path / "a1")
    assert again.get("web-000001") == ports
    # Allocations no longer on the node free their ports.
    book.retain(["web-000002"])
    assert book.get("web-000001") is None and book.get("web-000002") == other


def test_the_allocation_finds_its_ports_in_its_environment() -> None:
    a = Assignment.from_dict({"id": "web-000001", "namespace": "default", "job": "web",
                              "version": 1, "desired": "run", "state": "pending",
                              "spec": {"command": ["x"], **WEB}})
    spec = allocation_spec(a, "n1", ports={"http": 21234})
    assert spec.env["HACONTROL_PORT_HTTP"] == "21234"


def test_a_health_check_can_follow_a_named_port() -> None:
    a = Assignment.from_dict({"id": "web-000001", "namespace": "default", "job": "web",
                              "version": 1, "desired": "run", "state": "pending",
                              "spec": {"command": ["x"], **WEB,
                                       "health": {"type": "http", "port": "http"}}})
    assert a.spec is not None and a.spec.health is not None and a.spec.health.port == "http"
    spec = allocation_spec(a, "n1", ports={"http": 21234})
    assert spec.health is not None and spec.health.port == 21234
    with pytest.raises(ValueError):
        allocation_spec(a, "n1")
