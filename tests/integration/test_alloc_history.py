"""An allocation's metric history, asked of any replica: only the leader keeps it, and a
replica that does not lead asks the leader on the caller's behalf (with the caller's own
token, judged again there)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from .harness import Cluster, http, wait_for
from .test_agent_e2e import job, running


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_follower_answers_with_the_leaders_history(tmp_path: Path, tls: bool) -> None:
    c = Cluster(tmp_path / "cluster", tls=tls)
    try:
        c.start()
        c.start_agent("n1")
        c.write("PUT", "/v1/jobs/default/web", job(uuid.uuid4().hex, count=1))
        alloc = wait_for(lambda: running(c, "web", 1), 20, what="one running")[0]
        path = f"/v1/allocations/{alloc['id']}/metrics"
        lead = c.leader()
        wait_for(lambda: c.api("GET", path, replica=lead).body["points"], 20,
                 what="a point on the leader")
        follower = c.followers()[0]
        # The node's measured use is the sum of its allocations' last reports, on the
        # leader only (beside what they reserve, which every replica knows).
        node = c.api("GET", "/v1/nodes/n1", replica=lead).body["node"]
        assert node["measured"]["reporting"] == 1, node
        listed = c.api("GET", "/v1/nodes", replica=lead).body["nodes"]
        assert listed[0]["measured"] == node["measured"] or listed[0]["measured"]["reporting"] == 1
        assert c.api("GET", "/v1/nodes/n1", replica=follower).body["node"]["measured"] is None
        got = c.api("GET", path, replica=follower)
        assert got.status == 200, got
        assert got.body["kept"] is True and got.body["via"] == follower.id, got.body
        assert got.body["points"], got.body

        # The leader judges the forwarded request with the caller's token: none, refused
        # by the follower itself; one of another namespace, refused.
        assert http("GET", f"{follower.api}{path}", context=c.client_tls).status == 401
        c.write("PUT", "/v1/acl/policies/other", {"rules": {"namespaces": {
            "other": {"policy": "read"}}}})
        tok = c.write("POST", "/v1/acl/tokens", {"name": "o", "policies": ["other"]})
        secret = tok.body["token"]["secret_id"]
        assert http("GET", f"{follower.api}{path}", token=secret,
                    context=c.client_tls).status == 403
        # A request already forwarded is never forwarded again (no loop between replicas).
        again = http("GET", f"{follower.api}{path}", token=c.token,
                     headers={"Hacontrol-Forwarded": "1"}, context=c.client_tls)
        assert again.status == 200 and again.body["kept"] is False, again.body
        assert again.body["leader_api"] == lead.api
    finally:
        c.stop()
