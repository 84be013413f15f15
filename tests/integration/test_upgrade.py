"""Upgrades: replicas and agents of adjacent protocol versions work together, a new
command type waits until every replica knows it, and a rolling restart of every controller
and every agent under client load fails no request and restarts no allocation."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hacontrol.state import commands as C

from .harness import Cluster, http, pid_alive, wait_for
from .test_agent_e2e import job, processes_with, running
from .upgrade_helpers import OLD, Load, restart_order, restart_replica, start_with, without_ops

# `make test-ops` sets more rounds (each round restarts every replica and every agent).
ROUNDS = int(os.environ.get("HACONTROL_UPGRADE_ROUNDS", "1"))
REPLICAS = int(os.environ.get("HACONTROL_UPGRADE_REPLICAS", "3"))
# What c2 (protocol 1) does not know: every command type added since, which waits for it.
NEWER = C.CAPABILITIES - C.PROTOCOL1_OPS


@pytest.fixture
def unstarted(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    size, tls = getattr(request, "param", (3, False))
    c = Cluster(tmp_path / "cluster", size=size, tls=tls)
    try:
        yield c
    finally:
        c.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(c.logs())


def status(c: Cluster, i: int) -> dict[str, Any]:
    st = c.status(c.replicas[i])
    assert st is not None
    return st


# Over TLS: replicas read each other's reports through the server role's certificate.
@pytest.mark.parametrize("unstarted", [(3, True)], indirect=True, ids=["tls"])
def test_a_new_command_type_waits_until_every_replica_knows_it(unstarted: Cluster) -> None:
    c = unstarted
    # c1 is this release; c2 the one before versions were written at all (protocol 1);
    # c3 a release that reports its ops but does not know ns_put (our stand-in for a new op).
    start_with(c.replicas[0].proc)
    start_with(c.replicas[1].proc, OLD)
    start_with(c.replicas[2].proc, without_ops("ns_put"))
    c.wait_ready()
    st2 = status(c, 1)
    assert "protocol" not in st2 and "ops" not in st2  # what a protocol-1 replica publishes
    wait_for(lambda: status(c, 0)["member_protocols"] == {"c1": 2, "c2": 1, "c3": 2}
             and status(c, 0)["ops_waiting"] == sorted(NEWER | {"ns_put"}), 15,
             what="c1 heard every report")

    # Refused by every replica that has the rule, naming the replica it waits for. (c2 plays
    # a release from before the rule; such a replica cannot know a newer op to propose it.)
    for r in (c.replicas[0], c.replicas[2]):
        refused = c.api("PUT", "/v1/namespaces/team", {}, replica=r)
        assert refused.status == 409, refused
        err = refused.body["error"]
        assert err["code"] == "unsupported_by_cluster" and "c3" in err["message"], err
    # The rest works meanwhile, from any replica, commands of both versions in one log.
    for r in c.replicas:
        put = c.write("PUT", f"/v1/jobs/default/web-{r.id}", job("x", count=0), replica=r)
        assert put.status == 200, put
    wait_for(lambda: all(len(c.api("GET", "/v1/jobs?stale=true", replica=r).body["jobs"]) == 3
                         for r in c.replicas), 10, what="every replica applied the jobs")
    assert c.api("GET", "/v1/namespaces/team").status == 404

    # Upgrade c3 (restart it without the switch): the op is accepted once c1 hears of it.
    restart_replica(c, c.replicas[2])
    wait_for(lambda: status(c, 0)["ops_waiting"] == sorted(NEWER), 15,
             what="c1 heard c3's new report")
    assert c.write("PUT", "/v1/namespaces/team", {}, replica=c.replicas[0]).status == 200
    wait_for(lambda: c.api("GET", "/v1/namespaces/team?stale=true",
                           replica=c.replicas[1]).status == 200, 10, what="team on c2")
    # What replicas propose on their own (the controllers' credential, newer than protocol
    # 1) went through the same gate, and waited for c2 quietly: no error, no retry storm.
    for r in (c.replicas[0], c.replicas[2]):
        text = (c.root / f"{r.id}.log").read_text()
        assert "failed; retrying" not in text, text[-2000:]


def test_a_replica_restarted_while_a_peer_is_down_takes_a_survivors_word_for_it(
        unstarted: Cluster) -> None:
    # c1 restarts while c3 is down: it never hears c3 itself, but c2 heard c3 report
    # every op, and a replica never goes back to an older version.
    c = unstarted
    c.start()
    wait_for(lambda: status(c, 1)["ops_waiting"] == [], 15, what="c2 heard every report")
    c.replicas[2].proc.kill9()
    restart_replica(c, c.replicas[0])
    assert status(c, 0)["member_protocols"]["c3"] is None
    # A cluster config write: a command type newer than protocol 1.
    put = c.write("PUT", "/v1/operator/config", {"health": {"replica_down": 33}},
                  replica=c.replicas[0])
    assert put.status == 200, put


def test_a_new_job_spec_section_waits_until_every_replica_knows_it(unstarted: Cluster) -> None:
    # c3 plays a release that knows every command type but not the `ports` spec section:
    # it would refuse such a spec as it applies while c1 and c2 accept it.
    c = unstarted
    start_with(c.replicas[0].proc)
    start_with(c.replicas[1].proc)
    start_with(c.replicas[2].proc, without_ops(C.SPEC_PORTS))
    c.wait_ready()
    wait_for(lambda: status(c, 0)["ops_waiting"] == [C.SPEC_PORTS], 15,
             what="c1 heard c3's report")
    ported = {**job("x", count=0), "ports": [{"name": "http"}]}
    refused = c.api("PUT", "/v1/jobs/default/ported", ported, replica=c.replicas[0])
    assert refused.status == 409, refused
    err = refused.body["error"]
    assert err["code"] == "unsupported_by_cluster", err
    assert "job spec section 'ports'" in err["message"] and "c3" in err["message"], err
    assert c.write("PUT", "/v1/jobs/default/plain", job("x", count=0)).status == 200
    assert c.api("GET", "/v1/jobs/default/ported").status == 404

    restart_replica(c, c.replicas[2])
    wait_for(lambda: status(c, 0)["ops_waiting"] == [], 15, what="c1 heard c3's new report")
    assert c.write("PUT", "/v1/jobs/default/ported", ported,
                   replica=c.replicas[0]).status == 200
    wait_for(lambda: c.api("GET", "/v1/jobs/default/ported?stale=true",
                           replica=c.replicas[2]).status == 200, 10, what="ported on c3")


def alloc_state(c: Cluster) -> dict[str, tuple[int, int, str]]:
    allocs = [a for a in c.allocs("web") if a["desired"] == "run"]
    return {a["id"]: (a["pid"], a["restarts"], a["state"]) for a in allocs}


def agent_protocol(c: Cluster, name: str) -> int | None:
    lead = c.leader()
    node = c.api("GET", f"/v1/nodes/{name}", replica=lead).body.get("node", {})
    agent = node.get("agent") or {}
    return agent.get("protocol") if agent.get("pid") == c.agents[name].pid else None


def logs_answer(c: Cluster, alloc_id: str) -> int:
    r = c.leader()
    return http("GET", f"{r.api}/v1/allocations/{alloc_id}/logs?tail=1", token=c.token).status


@pytest.mark.parametrize("unstarted", [(REPLICAS, False)], indirect=True,
                         ids=[f"{REPLICAS}-replicas"])
def test_rolling_upgrade_of_controllers_then_agents_under_load(unstarted: Cluster) -> None:
    c = unstarted
    # The cluster runs the previous release (protocol 1), but agent n2 is already upgraded:
    # an agent newer than its controllers.
    for r in c.replicas:
        start_with(r.proc, OLD)
    c.wait_ready()
    for name in ("n1", "n2"):
        c.start_agent(name)
    # start_agent started both as they are; restart n1 as the previous release.
    c.agents["n1"].kill9()
    start_with(c.agents["n1"], OLD)
    wait_for(lambda: sorted(n["name"] for n in c.api("GET", "/v1/nodes").body["nodes"]
                            if n["status"] == "ready") == ["n1", "n2"], 20, what="both nodes")
    marker = uuid.uuid4().hex
    spec = job(marker, count=4, scoring="spread")
    assert c.write("PUT", "/v1/jobs/default/web", spec).status == 200
    wait_for(lambda: running(c, "web", 4), 30, what="four allocations running")
    wait_for(lambda: agent_protocol(c, "n1") == 1 and agent_protocol(c, "n2") == 2, 30,
             what="each agent's protocol seen by the leader")
    before = alloc_state(c)
    by_node = {a["node"]: a["id"] for a in c.allocs("web")}
    assert set(by_node) == {"n1", "n2"}  # spread: every agent's restart matters
    assert logs_answer(c, by_node["n2"]) == 200  # an old leader calls a new agent

    steps: list[str] = []  # each restart, from its stop to ready (replicas) or synced (agents)
    with Load(c) as load:
        for n in range(ROUNDS):
            for r in restart_order(c):  # controllers, one at a time, each ready before the next
                t0 = time.monotonic()
                restart_replica(c, r)
                steps.append(f"{r.id} {time.monotonic() - t0:.1f}s")
            if n == 0:  # the old agent n1 syncs with, and is called by, the new controllers
                wait_for(lambda: agent_protocol(c, "n1") == 1, 30, what="n1 at the new leader")
                assert logs_answer(c, by_node["n1"]) == 200
            for name, proc in c.agents.items():  # then agents: each exits leaving its work
                t0 = time.monotonic()
                os.kill(proc.pid, signal.SIGQUIT)
                proc.popen.wait(10)  # type: ignore[union-attr]
                start_with(proc)
                wait_for(lambda name=name: agent_protocol(c, name) == 2, 30,  # type: ignore[misc]
                         what=f"{name} back and syncing")
                steps.append(f"{name} {time.monotonic() - t0:.1f}s")
            assert all(status(c, i)["protocol"] == 2 for i in range(len(c.replicas)))
    print(f"\nrolling upgrade x{ROUNDS}: {load.summary()}\n  restarts: {', '.join(steps)}")
    assert load.outcomes and not load.failures(), load.failures()[:5]
    # No allocation restarted: same ids, same pids, same restart counts, one process each.
    wait_for(lambda: running(c, "web", 4), 20, what="still four running")
    assert alloc_state(c) == before
    assert all(pid_alive(pid) for pid, _, _ in before.values())
    assert len(processes_with(marker)) == 4
    assert logs_answer(c, by_node["n1"]) == 200
