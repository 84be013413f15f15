"""Node identities over time, on three real replicas: a lost answer to the credential
exchange is retried, expired tokens are pruned, and a change of the cluster secret leaves
the controllers' credential (which agents pin) as it was."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.raft.keys import generate_secret

from .harness import Cluster, Replica, http, wait_for

NODE = {"cpu": 1, "memory_mb": 64, "address": "http://127.0.0.1:9"}


def tokens(c: Cluster, r: Replica | None = None) -> list[dict]:
    resp = c.api("GET", "/v1/acl/tokens?stale=true", replica=r)
    assert resp.status == 200, resp
    return list(resp.body["tokens"])


def node_credentials(c: Cluster, node: str) -> list[str]:
    return [t["accessor_id"] for t in tokens(c) if t["type"] == "node" and t["node"] == node]


def post_and_hang_up(r: Replica, path: str, body: dict, token: str) -> None:
    """Send a request and close the connection without reading a byte of the answer."""
    raw = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", r.api_port), timeout=5) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that do not restart it (they touch different tokens)."""
    c = Cluster(tmp_path_factory.mktemp("acl-upkeep") / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_a_lost_exchange_answer_is_retried_and_one_credential_stays_valid(
        cluster: Cluster) -> None:
    resp = cluster.write("POST", "/v1/nodes/intro", {"ttl_s": 120})
    assert resp.status == 200, resp
    intro = resp.body["token"]["secret_id"]
    lead = cluster.leader()
    post_and_hang_up(lead, "/v1/agent/credential", {"node": "n7"}, intro)
    lost = wait_for(lambda: node_credentials(cluster, "n7"), 15,
                    what="the exchange whose answer was lost applied")
    # The node never saw that credential; the same introduction token gets it one again.
    for r in cluster.replicas:  # whichever replica the retry reaches
        retry = http("POST", f"{r.api}/v1/agent/credential", {"node": "n7"}, token=intro)
        assert retry.status == 200, (r.id, retry)
    cred, last = retry.body["token"]["secret_id"], retry.body["token"]["accessor_id"]
    # The earlier ones are gone. Read where the last retry has applied: these reads are
    # stale, from a replica that may not have applied it yet.
    now = wait_for(lambda: (ids := node_credentials(cluster, "n7")) == [last] and ids, 10,
                   what="only the last retry's credential left")
    assert now != lost, (lost, now)
    # Another node name is refused: the first exchange bound the token to n7.
    assert http("POST", f"{lead.api}/v1/agent/credential", {"node": "n8"},
                token=intro).status == 403
    # The credential works; its first use ends the retries.
    sync = http("POST", f"{lead.api}/v1/agent/sync", {"node": {"name": "n7", **NODE}},
                token=cred)
    assert sync.status == 200, sync
    assert http("POST", f"{lead.api}/v1/agent/credential", {"node": "n7"},
                token=intro).status in (401, 403)
    assert node_credentials(cluster, "n7") == now


def test_expired_tokens_are_pruned_on_every_replica(cluster: Cluster) -> None:
    made = []
    for i in range(3):
        resp = cluster.write("POST", "/v1/acl/tokens",
                             {"name": f"short{i}", "type": "management", "ttl_s": 1})
        assert resp.status == 200, resp
        made.append(resp.body["token"]["accessor_id"])
    resp = cluster.write("POST", "/v1/nodes/intro", {"ttl_s": 1})
    made.append(resp.body["token"]["accessor_id"])
    lasting = cluster.write("POST", "/v1/acl/tokens", {"name": "lasting", "type": "management",
                                                      "ttl_s": 3600}).body["token"]
    for r in cluster.replicas:
        wait_for(lambda r=r: not {t["accessor_id"] for t in tokens(cluster, r)} & set(made),
                 20, what=f"expired tokens pruned on {r.id}")
        assert lasting["accessor_id"] in {t["accessor_id"] for t in tokens(cluster, r)}
    evs = cluster.api("GET", "/v1/events?follow=false&type=acl_tokens_pruned").body["events"]
    assert sum(e["count"] for e in evs) == len(made), evs


@pytest.mark.parametrize("rolling", [
    False,
    # The three rounds of rolling restarts take about a minute: `pytest -m slow`.
    pytest.param(True, marks=pytest.mark.slow)])
def test_changing_the_cluster_secret_keeps_the_agents_working(tmp_path: Path,
                                                              rolling: bool) -> None:
    """A new cluster secret on 3 replicas with an agent joined, by the rolling rotation of
    docs/security-raft.md or (faster, the same for the agents) a full stop: the agent keeps
    its pin and still takes the controllers' calls, without re-pinning."""
    c = Cluster(tmp_path / "c")
    try:
        c.start()
        resp = c.write("POST", "/v1/nodes/intro", {"name": "n1", "ttl_s": 60})
        intro_file = c.root / "n1-intro"
        intro_file.write_text(resp.body["token"]["secret_id"])
        intro_file.chmod(0o600)
        agent = c.start_agent("n1", intro_token_file=intro_file)
        pin = c.root / "n1" / "controller-credential.sha256"
        wait_for(pin.exists, 30, what="the agent pinned the controllers' credential")
        pinned = pin.read_text()
        job = {"command": ["sh", "-c", "echo hello-n1; sleep 600"], "count": 1,
               "resources": {"cpu": 0.1, "memory_mb": 16}}
        assert c.write("PUT", "/v1/jobs/default/echo", job).status == 200

        def running() -> str | None:
            allocs = c.api("GET", "/v1/allocations?job=echo").body["allocations"]
            return next((a["id"] for a in allocs if a["state"] == "running"), None)
        alloc_id = wait_for(running, 30, what="echo running")

        def logs_through(r: Replica) -> bool:
            req = urllib.request.Request(f"{r.api}/v1/allocations/{alloc_id}/logs",
                                         headers={"Authorization": f"Bearer {c.token}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as answer:
                    return b"hello-n1" in answer.read()
            except OSError:
                return False
        wait_for(lambda: logs_through(c.leader()), 20, what="logs through the controllers")

        old, new = c.secret, generate_secret()
        if rolling:
            for secret in (f"{old}\n{new}", f"{new}\n{old}", new):
                (c.root / "secret").write_text(secret)
                for r in c.replicas:
                    r.proc.stop()
                    r.proc.start()
                    c.wait_ready(60)
        else:
            for r in c.replicas:
                r.proc.stop()
            (c.root / "secret").write_text(new)
            for r in c.replicas:
                r.proc.start()
            c.wait_ready(60)
        assert c.write("PUT", "/v1/namespaces/rotated", {}).status == 200
        # Every replica now derives another credential from its secret, but presents the
        # one the state keeps: the agent, never restarted or re-pinned, takes their calls.
        assert agent.alive() and pin.read_text() == pinned
        for r in c.replicas:
            wait_for(lambda r=r: logs_through(r), 20, what=f"logs through {r.id}")
        assert c.write("POST", "/v1/jobs/default/echo/scale", {"count": 2}).status == 200
        wait_for(lambda: sum(a["state"] == "running" for a in
                             c.api("GET", "/v1/allocations?job=echo").body["allocations"]) == 2,
                 30, what="the agent still syncing: a second allocation runs")
    finally:
        c.stop()
