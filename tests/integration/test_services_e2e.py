"""Service discovery on a real cluster with a real agent: allocations of a job with a
dynamic port run `python -m http.server` on the port the agent picked, and the registry
follows them as they are scaled, killed and restarted; the replicas' DNS answers (`--dns`)
over UDP and TCP."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Cluster, free_ports, http, wait_for

INTERVAL_S = 2.0  # the health check's interval: a killed allocation must leave within it
DNS_PORTS: dict[str, int] = {}  # replica id -> its --dns port


@pytest.fixture(scope="module")
def services_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster and agent for the module (each test uses its own job and service)."""
    c = Cluster(tmp_path_factory.mktemp("services") / "cluster")
    # Every replica answers DNS too (test_dns_over_udp_and_tcp...), for `default` only.
    # free_ports releases what it found, so a port the cluster already chose (and has not
    # bound yet) may come back: a replica's API port once did, and c1's DNS could not bind.
    taken = {int(p) for r in c.replicas for a in r.proc.argv for p in re.findall(r":(\d+)", a)}

    def apart() -> list[int] | None:
        ports = free_ports(len(c.replicas))
        return ports if taken.isdisjoint(ports) else None
    ports = wait_for(apart, 5, what="DNS ports apart from the cluster's")
    for r, port in zip(c.replicas, ports, strict=True):
        DNS_PORTS[r.id] = port
        r.proc.argv += ["--dns", f"127.0.0.1:{port}"]
    try:
        c.start()
        c.start_agent("n1")
        yield c
    finally:
        c.stop()


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest,
                    services_cluster: Cluster) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)  # set by the package's conftest
    if rep is not None and rep.failed:
        print(services_cluster.logs())


def web_job(cwd: Path, count: int) -> dict[str, Any]:
    return {
        "command": [f'exec {sys.executable} -m http.server "$HACONTROL_PORT_HTTP" '
                    f"--bind 127.0.0.1"],
        "shell": True, "cwd": str(cwd), "count": count,
        "resources": {"cpu": 0.1, "memory_mb": 256},
        # Restarted a while after a crash, so its absence is there to be seen.
        "restart": {"policy": "on-failure", "backoff_s": 1.5, "backoff_max_s": 1.5},
        "stop": {"signal": "SIGTERM", "timeout_s": 2.0},
        "ports": [{"name": "http"}],
        "services": [{"name": "websvc", "port": "http"}],
        # Failures while the server starts do not count (grace); then it must answer.
        "health": {"type": "http", "port": "http", "interval_s": INTERVAL_S,
                   "timeout_s": 1.5, "failures": 2, "grace_s": 10.0},
    }


def endpoints(c: Cluster, service: str = "websvc") -> list[dict[str, Any]]:
    resp = c.api("GET", f"/v1/services/default/{service}")
    assert resp.status == 200, resp
    return list(resp.body["endpoints"])


def exactly(n: int, found: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    return found if len(found) == n else None


def answers(e: dict[str, Any]) -> bool:
    with urllib.request.urlopen(f"http://{e['address']}:{e['port']}/", timeout=5) as r:
        return bool(r.status == 200)


class Watcher(threading.Thread):
    """A client that follows the service with blocking queries, recording every answer
    whose index moved: (index, allocation ids, when it arrived)."""

    def __init__(self, c: Cluster) -> None:
        super().__init__(daemon=True)
        self.c = c
        self.seen: list[tuple[int, list[str], float]] = []
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        index = 0
        try:
            while not self.done.is_set():
                resp = self.c.api("GET", f"/v1/services/default/websvc?index={index}&wait=2s",
                                  timeout=15)
                assert resp.status == 200, resp
                if resp.body["index"] > index:
                    index = resp.body["index"]
                    self.seen.append((index, [e["allocation"] for e in resp.body["endpoints"]],
                                      time.monotonic()))
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def latest(self) -> list[str]:
        return self.seen[-1][1] if self.seen else []


def test_endpoints_follow_scaling_crashes_and_are_watched_in_order(
        services_cluster: Cluster, tmp_path: Path) -> None:
    c = services_cluster
    watcher = Watcher(c)
    watcher.start()
    try:
        for count in (1, 2, 3):
            assert c.write("PUT", "/v1/jobs/default/web", web_job(tmp_path, count)).status == 200
            eps = wait_for(lambda n=count: exactly(n, endpoints(c)), 30,
                           what=f"{count} endpoints")
            assert all(answers(e) for e in eps)
            wait_for(lambda n=count: len(watcher.latest()) == n, 10, what="the watcher")
        ports = [e["port"] for e in eps]
        assert len(set(ports)) == 3 and all(20000 <= p <= 32000 for p in ports)
        # Each allocation finds its port in its environment.
        for e in eps:
            alloc = c.api("GET", f"/v1/allocations/{e['allocation']}").body["allocation"]
            assert alloc["ports"] == {"http": e["port"]}
            environ = Path(f"/proc/{alloc['pid']}/environ").read_bytes().split(b"\0")
            assert f"HACONTROL_PORT_HTTP={e['port']}".encode() in environ

        # Kill one: it leaves the registry within its health check's interval (the agent
        # sees the exit at once), and comes back on the same port once restarted, healthy.
        victim = eps[1]
        pid = c.api("GET", f"/v1/allocations/{victim['allocation']}").body["allocation"]["pid"]
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: victim["allocation"] not in watcher.latest()
                 and len(watcher.latest()) == 2, 10, what="the killed one to leave")
        left_after = watcher.seen[-1][2] - killed_at
        print(f"killed allocation left the registry after {left_after:.3f}s "
              f"(health interval {INTERVAL_S}s)")
        assert left_after < INTERVAL_S
        back = wait_for(lambda: exactly(3, endpoints(c)), 30, what="the restarted one back")
        assert next(e for e in back if e["allocation"] == victim["allocation"]) == victim
        assert answers(victim)

        # Scale down: the stopped ones leave.
        assert c.write("POST", "/v1/jobs/default/web/scale", {"count": 1}).status == 200
        wait_for(lambda: len(watcher.latest()) == 1, 20, what="scaled down")
    finally:
        watcher.done.set()
        watcher.join(20)
    assert watcher.error is None, watcher.error

    # The watcher saw every change, in order: each one the log recorded for the service.
    events = c.api("GET", "/v1/events?follow=false&type=service_updated").body["events"]
    changes = [(e["index"], e["endpoints"]) for e in events if e["service"] == "websvc"]
    seen = [(i, len(ids)) for i, ids, _ in watcher.seen]
    assert seen == changes, (seen, changes)
    assert [n for _, n in seen] == [0, 1, 2, 3, 2, 3, 1]


def test_a_static_port_is_never_shared_on_one_node(services_cluster: Cluster,
                                                   tmp_path: Path) -> None:
    c = services_cluster
    (port,) = free_ports(1)
    fixed = {**web_job(tmp_path, 2), "ports": [{"name": "http", "static": port}],
             "services": [{"name": "fixedsvc", "port": "http"}]}
    assert c.write("PUT", "/v1/jobs/default/fixed", fixed).status == 200
    (e,) = wait_for(lambda: exactly(1, endpoints(c, "fixedsvc")), 30, what="one endpoint")
    assert e["port"] == port and answers(e)

    def waiting() -> str | None:
        job = c.api("GET", "/v1/jobs/default/fixed", replica=c.leader()).body["job"]
        reasons = [a.get("pending_reason") or "" for a in job["allocations"]
                   if a["node"] is None and a["desired"] == "run"]
        return reasons[0] if len(reasons) == 1 and reasons[0] else None
    assert f"port {port}" in wait_for(waiting, 10, what="the second one's reason")
    assert c.write("DELETE", "/v1/jobs/default/fixed").status == 200


def test_bad_specs_and_queries_name_the_field(services_cluster: Cluster,
                                              tmp_path: Path) -> None:
    c = services_cluster
    bad = {**web_job(tmp_path, 1), "services": [{"name": "websvc", "port": "grpc"}]}
    resp = c.api("PUT", "/v1/jobs/default/bad", bad)
    assert resp.status == 422 and resp.body["error"]["field"] == "services[0].port"
    resp = http("GET", f"{c.live()[0].api}/v1/services/default/websvc?index=x",
                token=c.token)
    assert resp.status == 422 and resp.body["error"]["field"] == "index"


def test_a_restarted_agent_keeps_its_allocations_ports(services_cluster: Cluster,
                                                       tmp_path: Path) -> None:
    c = services_cluster
    job = {**web_job(tmp_path, 2), "services": [{"name": "keptsvc", "port": "http"}]}
    assert c.write("PUT", "/v1/jobs/default/kept", job).status == 200
    before = wait_for(lambda: exactly(2, endpoints(c, "keptsvc")), 30, what="two endpoints")
    index = c.api("GET", "/v1/services/default/keptsvc").body["index"]
    reported = {a["id"]: a["updated_at"] for a in c.allocs("kept") if a["desired"] == "run"}
    # The agent exits leaving its work running (SIGQUIT), and a new one re-adopts it.
    proc = c.agents["n1"]
    os.kill(proc.pid, signal.SIGQUIT)
    assert proc.popen is not None
    proc.popen.wait(10)
    c.start_agent("n1")

    def readopted() -> bool:
        allocs = {a["id"]: a for a in c.allocs("kept")}
        return all(allocs[i]["updated_at"] > at and allocs[i]["state"] == "running"
                   and allocs[i]["health"] == "healthy" for i, at in reported.items())
    wait_for(readopted, 30, what="the new agent's reports of the re-adopted allocations")
    # Found on the same ports (ports.json) and with the health they had (health.json):
    # the same endpoints, which never stopped answering, and the registry never moved.
    assert endpoints(c, "keptsvc") == before
    assert c.api("GET", "/v1/services/default/keptsvc").body["index"] == index
    assert all(answers(e) for e in before)
    assert c.write("DELETE", "/v1/jobs/default/kept").status == 200


def test_dns_over_udp_and_tcp_answers_listed_namespaces_only(services_cluster: Cluster,
                                                             tmp_path: Path) -> None:
    """A real `hacontrol server --dns` (namespace `default` only) answers SRV and A for a
    real service over UDP and TCP, from every replica; the same service in namespace
    `team` is NXDOMAIN (not listed), over both."""
    import dns.message
    import dns.query
    import dns.rcode

    c = services_cluster
    assert c.write("PUT", "/v1/namespaces/team", {}).status == 200
    job = {**web_job(tmp_path, 1), "services": [{"name": "dnssvc", "port": "http"}]}
    for ns in ("default", "team"):
        assert c.write("PUT", f"/v1/jobs/{ns}/dnsweb", job).status == 200
    try:
        (ep,) = wait_for(lambda: exactly(1, endpoints(c, "dnssvc")), 30, what="the endpoint")
        wait_for(lambda: len(c.api("GET", "/v1/services/team/dnssvc").body["endpoints"]) == 1,
                 30, what="the team endpoint (there, but not answered for)")

        def ask(port: int, name: str, rdtype: str, tcp: bool) -> dns.message.Message:
            q = dns.message.make_query(name, rdtype)
            if tcp:
                return dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
            return dns.query.udp(q, "127.0.0.1", port=port, timeout=5)

        for r in c.replicas:
            port = DNS_PORTS[r.id]
            for tcp in (False, True):
                # A follower answers from its registry as applied so far: poll.
                srv = wait_for(lambda p=port, t=tcp: ask(
                    p, "dnssvc.service.hacontrol.", "SRV", t).answer, 10,
                    what=f"SRV from {r.id}, tcp={tcp}")
                assert [(x.port, x.target.to_text()) for x in srv[0]] == [
                    (ep["port"], "7f000001.addr.hacontrol.")]
                (a,) = ask(port, "dnssvc.default.service.hacontrol.", "A", tcp).answer
                assert [x.address for x in a] == ["127.0.0.1"]
                hidden = ask(port, "dnssvc.team.service.hacontrol.", "SRV", tcp)
                assert hidden.rcode() == dns.rcode.NXDOMAIN and hidden.answer == []
                assert ask(port, "example.org.", "A", tcp).rcode() == dns.rcode.REFUSED
    finally:
        for ns in ("default", "team"):
            c.write("DELETE", f"/v1/jobs/{ns}/dnsweb")
