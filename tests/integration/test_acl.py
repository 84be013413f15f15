"""ACLs on three real replicas: revocation and expiry reach every replica, bootstrap is
once per cluster, and a node credential speaks for its node only."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from .harness import Cluster, http, wait_for

JOB = {"command": ["sleep", "600"], "count": 1, "resources": {"cpu": 0.1, "memory_mb": 16}}
WRITE_ALL = {"rules": {"namespaces": {"*": {"policy": "write"}}}}


def new_token(c: Cluster, ttl_s: float | None = None) -> tuple[str, str]:
    assert c.write("PUT", "/v1/acl/policies/w", WRITE_ALL).status == 200
    resp = c.write("POST", "/v1/acl/tokens", {"name": "w", "policies": ["w"], "ttl_s": ttl_s})
    assert resp.status == 200, resp
    return resp.body["token"]["secret_id"], resp.body["token"]["accessor_id"]


def test_revoked_token_is_refused_on_every_replica(cluster: Cluster) -> None:
    secret, accessor = new_token(cluster)
    for r in cluster.replicas:  # a linearizable read: every replica knows the token now
        resp = http("GET", f"{r.api}/v1/jobs", token=secret)
        assert resp.status == 200, (r.id, resp)
    assert http("PUT", f"{cluster.replicas[0].api}/v1/jobs/default/a", JOB,
                token=secret).status == 200
    assert cluster.write("DELETE", f"/v1/acl/tokens/{accessor}").status == 200
    # A write proposed after the revocation is refused wherever it enters: every replica
    # applies it after the revocation and refuses it there.
    for r in cluster.replicas:
        resp = http("PUT", f"{r.api}/v1/jobs/default/b-{r.id}", JOB, token=secret)
        assert resp.status == 403, (r.id, resp)
    for r in cluster.replicas:
        wait_for(lambda r=r: http("GET", f"{r.api}/v1/jobs?stale=true",
                                  token=secret).status == 403, 5, what=f"refused on {r.id}")
    jobs = cluster.api("GET", "/v1/jobs").body["jobs"]
    assert [j["name"] for j in jobs] == ["a"]
    # The audit trail names the token that wrote.
    evs = cluster.api("GET", "/v1/events?follow=false&type=job_registered").body["events"]
    assert [e.get("accessor") for e in evs] == [accessor]


def test_expired_token_is_refused_on_every_replica(cluster: Cluster) -> None:
    secret, _ = new_token(cluster, ttl_s=3.0)
    expires = cluster.api("GET", "/v1/acl/tokens").body["tokens"][-1]["expires_ts"]
    status = http("GET", f"{cluster.replicas[0].api}/v1/jobs", token=secret).status
    if time.time() < expires - 0.5:  # a loaded machine may already be past it
        assert status == 200
    for r in cluster.replicas:
        wait_for(lambda r=r: http("PUT", f"{r.api}/v1/jobs/default/x", JOB,
                                  token=secret).status == 403, 10, what=f"expired on {r.id}")
    # Once refused, always refused: the state judges at each command's stamped time.
    for r in cluster.replicas:
        assert http("PUT", f"{r.api}/v1/jobs/default/y", JOB, token=secret).status == 403


def test_bootstrap_once_on_a_locked_cluster(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "locked", configured_token=False)
    try:
        c.start()
        first = c.replicas[0]
        assert http("GET", f"{first.api}/v1/jobs", token=c.token).status == 403
        resp = http("POST", f"{first.api}/v1/acl/bootstrap")
        assert resp.status == 200, resp
        secret = resp.body["token"]["secret_id"]
        assert resp.body["token"]["type"] == "management"
        for r in c.replicas:
            wait_for(lambda r=r: http("GET", f"{r.api}/v1/jobs?stale=true",
                                      token=secret).status == 200, 5, what="token known")
            assert http("POST", f"{r.api}/v1/acl/bootstrap").status == 403
        assert http("PUT", f"{c.replicas[1].api}/v1/jobs/default/w", JOB,
                    token=secret).status == 200
    finally:
        c.stop()


def test_configured_token_cluster_refuses_bootstrap(cluster: Cluster) -> None:
    for r in cluster.replicas:
        assert http("POST", f"{r.api}/v1/acl/bootstrap").status == 403
    me = cluster.api("GET", "/v1/acl/tokens/self").body["token"]
    assert me["type"] == "management" and me["name"] == "configured"


def test_agent_joins_with_an_introduction_token(cluster: Cluster) -> None:
    resp = cluster.write("POST", "/v1/nodes/intro", {"name": "n1", "ttl_s": 60})
    assert resp.status == 200, resp
    intro_file = cluster.root / "n1-intro"
    intro_file.write_text(resp.body["token"]["secret_id"])
    intro_file.chmod(0o600)  # the agent refuses a secret others can read
    cluster.start_agent("n1", intro_token_file=intro_file)
    cred_file = cluster.root / "n1" / "node-credential"
    wait_for(cred_file.exists, 30, what="the node credential")
    assert cred_file.stat().st_mode & 0o777 == 0o600
    cred = cred_file.read_text().strip()
    wait_for(lambda: cluster.api("GET", "/v1/nodes/n1").status == 200, 20, what="n1 ready")
    # The credential speaks for n1 only, and can do nothing else.
    lead = cluster.leader()
    node = {"name": "n2", "cpu": 1, "memory_mb": 64, "address": "http://127.0.0.1:9"}
    assert http("POST", f"{lead.api}/v1/agent/sync", {"node": node}, token=cred).status == 403
    assert http("PUT", f"{lead.api}/v1/jobs/default/x", JOB, token=cred).status == 403
    assert http("GET", f"{lead.api}/v1/jobs", token=cred).status == 403
    # The controllers still reach the agent (with their own credential): a job's logs.
    job = {"command": ["sh", "-c", "echo hello-from-n1; sleep 600"], "count": 1,
           "resources": {"cpu": 0.1, "memory_mb": 16}}
    assert cluster.write("PUT", "/v1/jobs/default/echo", job).status == 200

    def running_alloc() -> str | None:
        allocs = cluster.api("GET", "/v1/allocations?job=echo").body["allocations"]
        return next((a["id"] for a in allocs if a["state"] == "running"), None)
    alloc_id = wait_for(running_alloc, 30, what="echo running")

    def logs() -> bytes:
        req = urllib.request.Request(f"{lead.api}/v1/allocations/{alloc_id}/logs",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            body: bytes = resp.read()
            return body
    wait_for(lambda: b"hello-from-n1" in logs(), 20, what="logs through the controllers")
    # A user's token is refused by the agent itself.
    agent_url = cluster.api("GET", "/v1/nodes/n1").body["node"]["address"]
    assert http("GET", f"{agent_url}/v1/allocations/{alloc_id}/logs",
                token=cluster.token).status == 403
