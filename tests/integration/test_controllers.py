"""Three real replicas on loopback: replication, failover, durability, the API contract."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from .harness import Cluster, http, wait_for

JOB = {"command": ["sleep", "600"], "count": 1, "resources": {"cpu": 0.1, "memory_mb": 16}}


def job_count(c: Cluster, name: str, replica=None) -> int | None:
    resp = c.api("GET", f"/v1/jobs/default/{name}", replica=replica)
    return resp.body["job"]["count"] if resp.status == 200 else None


def test_status_and_auth(cluster: Cluster) -> None:
    lead = cluster.leader()
    st = cluster.api("GET", "/v1/status", replica=lead).body
    assert st["role"] == "leader" and st["leader"] == lead.id
    assert {m["id"] for m in st["members"]} == {"c1", "c2", "c3"}
    assert st["leader_api"] == lead.api
    assert http("GET", f"{lead.api}/v1/jobs").status == 401
    resp = http("GET", f"{lead.api}/v1/jobs", token="wrong")
    assert resp.status == 403 and resp.body["error"]["code"] == "forbidden"
    assert http("GET", f"{lead.api}/v1/health").status == 200
    ready = http("GET", f"{lead.api}/v1/health/ready")
    assert ready.status == 200 and ready.body["ready"] is True
    page = urllib.request.urlopen(f"{lead.api}/ui", timeout=5).read().decode()
    assert "<title>hacontrol</title>" in page


def test_write_through_follower_is_read_everywhere(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    resp = cluster.api("PUT", "/v1/jobs/default/web", JOB, replica=follower)
    assert resp.status == 200, resp
    assert resp.body["job"]["version"] == 1 and resp.body["index"] > 0
    # Linearizable reads: every replica sees the acknowledged write at once.
    for r in cluster.replicas:
        assert job_count(cluster, "web", replica=r) == 1


def test_bad_input_gets_422_naming_the_field(cluster: Cluster) -> None:
    cases = [
        ({"count": 1}, "command"),
        ({"command": "sleep 1"}, "command"),
        ({**JOB, "count": -1}, "count"),
        ({**JOB, "resources": {"cpu": "x"}}, "resources.cpu"),
        ({**JOB, "restart": {"policy": "sometimes"}}, "restart.policy"),
        ({**JOB, "stop": {"signal": "SIGNOPE"}}, "stop.signal"),
        ({**JOB, "bogus": 1}, "bogus"),
    ]
    for body, field in cases:
        resp = cluster.api("PUT", "/v1/jobs/default/web", body)
        assert resp.status == 422, (body, resp)
        assert resp.body["error"]["field"] == field, (body, resp.body)
    resp = cluster.api("PUT", "/v1/jobs/default/web", b"{not json")
    assert resp.status == 422 and resp.body["error"]["field"] == "body"
    resp = cluster.api("PUT", "/v1/jobs/default/Bad%20Name", JOB)
    assert resp.status in (404, 422)
    resp = cluster.api("POST", "/v1/jobs/default/nope/scale", {"count": 2})
    assert resp.status == 404 and resp.body["error"]["code"] == "not_found"


def test_quota_rejects_overcommit(cluster: Cluster) -> None:
    resp = cluster.api("PUT", "/v1/namespaces/team", {"quota": {"processes": 3, "cpu": None}})
    assert resp.status == 200, resp
    assert cluster.api("PUT", "/v1/jobs/team/a", {**JOB, "count": 2}).status == 200
    resp = cluster.api("PUT", "/v1/jobs/team/b", {**JOB, "count": 2})
    assert resp.status == 409 and resp.body["error"]["code"] == "quota_exceeded"
    ns = cluster.api("GET", "/v1/namespaces/team").body["namespace"]
    assert ns["usage"]["processes"] == 2 and ns["headroom"]["processes"] == 1


def test_idempotency_key_applies_once(cluster: Cluster) -> None:
    cluster.api("PUT", "/v1/jobs/default/web", JOB)
    first = cluster.api("POST", "/v1/jobs/default/web/scale", {"count": 2}, idem="k-1")
    cluster.api("POST", "/v1/jobs/default/web/scale", {"count": 3})
    again = cluster.api("POST", "/v1/jobs/default/web/scale", {"count": 2}, idem="k-1",
                        replica=cluster.replicas[2])
    assert again.status == 200
    assert again.body["index"] == first.body["index"]
    assert job_count(cluster, "web") == 3  # the retry did not apply a second time


def test_leader_kill_new_leader_serves_and_nothing_acknowledged_is_lost(cluster: Cluster) -> None:
    acked = []
    for i in range(20):
        assert cluster.write("PUT", f"/v1/jobs/default/j{i}", JOB).status == 200
        acked.append(f"j{i}")
    old = cluster.leader()
    old.proc.kill9()
    new = cluster.leader()
    assert new is not old
    for i in range(20, 30):
        assert cluster.write("PUT", f"/v1/jobs/default/j{i}", JOB).status == 200
        acked.append(f"j{i}")
    names = {j["name"] for j in cluster.api("GET", "/v1/jobs", replica=new).body["jobs"]}
    assert set(acked) <= names
    # The killed replica comes back and catches up.
    old.proc.start()
    wait_for(lambda: {j["name"] for j in cluster.api("GET", "/v1/jobs?stale=true",
                                                      replica=old).body["jobs"]} >= set(acked),
             20, what="restarted replica to catch up")


def test_whole_cluster_restart_keeps_state(tmp_path: Path) -> None:
    # Compaction every 20 entries, so the restart goes through the dump file as well as
    # the journal.
    c = Cluster(tmp_path / "c", extra_server_args=["--compaction-entries", "20"])
    try:
        c.start()
        for i in range(50):
            assert c.write("PUT", f"/v1/jobs/default/j{i}", {**JOB, "count": i % 3}).status == 200
        c.write("PUT", "/v1/namespaces/team", {"quota": {"cpu": 4.0}})
        for r in c.replicas:
            r.proc.kill9()
        c.start()
        jobs = {j["name"]: j["count"] for j in c.api("GET", "/v1/jobs").body["jobs"]}
        assert jobs == {f"j{i}": i % 3 for i in range(50)}
        assert c.api("GET", "/v1/namespaces/team").body["namespace"]["quota"]["cpu"] == 4.0
        assert list((tmp_path / "c" / "c1").glob("*dump*")), "no dump file written"
    finally:
        c.stop()


def test_stale_read_and_no_quorum(cluster: Cluster) -> None:
    cluster.write("PUT", "/v1/jobs/default/web", JOB)
    lone = cluster.followers()[0]
    # A follower learns that an entry is committed from the leader's next message (a commit
    # index alone goes out a few milliseconds after it advances): wait until this one has
    # applied the write, or killing the others could leave it holding the entry uncommitted.
    wait_for(lambda: cluster.api("GET", "/v1/jobs/default/web?stale=true",
                                 replica=lone).status == 200,
             what="the follower to apply the write")
    for r in cluster.replicas:
        if r is not lone:
            r.proc.kill9()
    resp = cluster.api("GET", "/v1/jobs/default/web", replica=lone)
    assert resp.status == 503 and "Retry-After" in resp.headers
    resp = cluster.api("GET", "/v1/jobs/default/web?stale=true", replica=lone)
    assert resp.status == 200 and resp.body["job"]["name"] == "web"
    resp = cluster.api("PUT", "/v1/jobs/default/other", JOB, replica=lone)
    assert resp.status == 503
    assert resp.body["error"]["outcome"] in ("unknown", "not_applied")


def test_unknown_outcome_then_retry_with_same_key_applies_once(cluster: Cluster) -> None:
    lead = cluster.leader()
    others = [r for r in cluster.replicas if r is not lead]
    for r in others:
        r.proc.pause()
    try:
        resp = cluster.api("PUT", "/v1/jobs/default/web", JOB, replica=lead, idem="same-key",
                           timeout=30)
        assert resp.status == 503, resp
        # The leader appended the entry but could not commit it: nobody can say yet
        # whether it will be applied.
        assert resp.body["error"]["outcome"] == "unknown", resp.body
        assert resp.body["error"]["idempotency_key"] == "same-key"
        assert resp.headers.get("Retry-After")
    finally:
        for r in others:
            r.proc.resume()
    cluster.leader()
    resp = cluster.write("PUT", "/v1/jobs/default/web", JOB)  # another key, same content
    assert resp.status == 200
    again = None
    for r in cluster.replicas:
        again = cluster.api("PUT", "/v1/jobs/default/web", JOB, replica=r, idem="same-key")
        assert again.status == 200, again
    jobs = cluster.api("GET", "/v1/jobs").body["jobs"]
    assert [j["name"] for j in jobs] == ["web"] and jobs[0]["version"] == 1
