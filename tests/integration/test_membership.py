"""Membership changes of real replicas (real processes) under continuous client writes.

`make test` runs the smoke (join, list, remove a follower, a refused removal); the longer
scenarios (grow 3 -> 5 and shrink back, replace a killed replica, a minority of five
killed, remove the leader) run with `make test-ops` (HACONTROL_TEST_OPS=1).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hacontrol.cli.client import Client
from hacontrol.cli.transport import HttpTransport
from hacontrol.tls.context import TLSConfig
from tests.integration.harness import Cluster, Replica, http, wait_for
from tests.integration.membership_load import (
    Load,
    new_replica,
    peers,
    remove,
    wait_member_ready,
)

OPS = os.environ.get("HACONTROL_TEST_OPS") == "1"
ops_only = pytest.mark.skipif(not OPS, reason="long membership scenarios: make test-ops")


def cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if c.tls:
        d = c.root / "tls"
        env.update(HACONTROL_CACERT=str(d / "ca.pem"), HACONTROL_CLIENT_CERT=str(d / "cli.pem"),
                   HACONTROL_CLIENT_KEY=str(d / "cli-key.pem"))
    return subprocess.run([sys.executable, "-m", "hacontrol", *args,
                           "--addr", ",".join(r.api for r in c.live()),
                           "--token-file", str(c.root / "token")],
                          capture_output=True, text=True, timeout=60, env=env)


def long_client(c: Cluster) -> Client:
    """One CLI client, as one long invocation uses it, given the replicas running now."""
    tls = None
    if c.tls:
        d = c.root / "tls"
        tls = TLSConfig(d / "ca.pem", d / "cli.pem", d / "cli-key.pem")
    return Client([r.api for r in c.live()], token=c.token,
                  transport=HttpTransport(use_env_proxy=False, tls=tls))


def prefer(client: Client, r: Replica) -> None:
    """Make `r` the address the client's next request tries first."""
    for _ in client.addrs:
        if client.addrs[client._preferred] == r.api:
            return
        client.rotate()
    raise AssertionError(f"{r.id} is not among {client.addrs}")


def report(what: str, seconds: float) -> None:
    print(f"\n[membership] {what}: {seconds * 1000:.0f} ms", flush=True)


def assert_clean(load: Load) -> None:
    assert not load.failures, load.failures[:5]
    assert load.acks, "no write was acknowledged"


def assert_no_campaign_before_added(c: Cluster, r: Replica) -> None:
    """Joining deposes nobody: pysyncobj has no pre-vote, so a replica that campaigned
    while still outside the configuration would depose the leader once added."""
    log = (c.root / f"{r.id}.log").read_text().splitlines()
    added = next(i for i, line in enumerate(log)
                 if f"added 127.0.0.1:{r.raft_port}" in line)
    assert not any("campaigns" in line for line in log[:added]), log[:added]


def test_join_list_remove_under_load(tmp_path: Path) -> None:
    """Over mutual TLS: the new replica joins with the same CA, certificates and Raft
    secret as the others."""
    c = Cluster(tmp_path / "cluster", tls=True).start()
    try:
        join_list_remove(c)
    finally:
        c.stop()


def join_list_remove(c: Cluster) -> None:
    # Only a replica's certificate may ask to add one: the CLI's (with a management token)
    # is refused.
    me = {"id": "c9", "raft": "127.0.0.1:1", "api": "https://127.0.0.1:2"}
    resp = http("POST", f"{c.replicas[0].api}/v1/operator/raft/peers", me, token=c.token,
                context=c.client_tls)
    assert resp.status == 403 and resp.body["error"]["field"] == "certificate", resp
    client = long_client(c)  # started before c4 exists
    assert client.get("/v1/status")["members"]
    with Load(c) as load:
        time.sleep(0.3)  # writes under way before anything changes
        t0 = time.monotonic()
        c4 = new_replica(c, "c4", [c.replicas[0]])
        wait_member_ready(c, c4)
        assert_no_campaign_before_added(c, c4)
        wait_for(lambda: "c4" in peers(c) and peers(c)["c4"]["alive"], 20, what="c4 listed")
        t1 = time.monotonic()
        report("join c4 (3 -> 4), longest write pause", load.pause_in(t0, t1))

        listed = cli(c, "operator", "raft", "list-peers", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {p["id"]: p for p in json.loads(listed.stdout)["peers"]}
        assert set(rows) == {"c1", "c2", "c3", "c4"}
        assert sum(p["leader"] for p in rows.values()) == 1
        assert rows["c4"]["api"] == c4.api and rows["c4"]["voter"]
        table = cli(c, "operator", "raft", "list-peers")
        assert "c4" in table.stdout and "LAG" in table.stdout
        # Every replica lists the new member in /v1/status (clients learn it there).
        for r in c.live():
            wait_for(lambda r=r: {m["id"] for m in (c.status(r) or {}).get("members", [])}
                     == {"c1", "c2", "c3", "c4"}, 10, what=f"{r.id} lists c4")

        # A follower removed under load; the leader stays.
        victim = next(r for r in c.followers() if r.id != "c4")
        t2 = time.monotonic()
        out = cli(c, "operator", "raft", "remove-peer", victim.id)
        assert out.returncode == 0, out.stderr
        t3 = time.monotonic()
        report(f"remove {victim.id} (4 -> 3), longest write pause", load.pause_in(t2, t3))
        assert set(peers(c)) == {"c1", "c2", "c3", "c4"} - {victim.id}
        victim.proc.stop()
        # The client tries the removed (stopped) replica first: refused, it asks an
        # answering replica for the members, and from then on uses c4, not the victim.
        prefer(client, victim)
        client.put("/v1/namespaces/learned", {"quota": {"cpu": 1, "memory_mb": 64}})
        assert c4.api in client.addrs and victim.api not in client.addrs, client.addrs
        time.sleep(0.5)
    assert_clean(load)


def test_refused_removals_say_why(cluster: Cluster) -> None:
    c = cluster
    lead = c.leader()
    # A new member the leader cannot connect to is not added: it would vote from the start.
    with socket.socket() as reserved:  # bound, never listening: connections are refused
        reserved.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{reserved.getsockname()[1]}"
        resp = http("POST", f"{lead.api}/v1/operator/raft/peers",
                    {"id": "c9", "raft": nowhere, "api": "http://127.0.0.1:9"}, token=c.token)
    assert resp.status == 409, resp
    err = resp.body["error"]
    assert err["reason"] == "unreachable" and err["field"] == "raft", err
    assert nowhere in err["message"], err
    assert set(peers(c)) == {r.id for r in c.replicas}
    dead = [r for r in c.replicas if r is not lead]
    dead[0].proc.kill9()
    wait_for(lambda: not peers(c)[dead[0].id]["alive"], 10, what="the dead one unreachable")
    # Removing the live follower would leave {leader, dead}: one alive of two remaining.
    resp = remove(c, dead[1].id)
    assert resp.status == 409, resp
    err = resp.body["error"]
    assert err["code"] == "conflict" and err["reason"] == "quorum_at_risk", err
    assert err["alive"] == 1 and err["remaining"] == 2 and err["needed"] == 2
    # The CLI says the same, and exits non-zero.
    out = cli(c, "operator", "raft", "remove-peer", dead[1].id)
    assert out.returncode != 0 and "quorum" in (out.stderr + out.stdout)
    assert remove(c, "nope").status == 404
    # Bad input is a 422 naming the field, and a token without operator write is refused.
    bad = http("POST", f"{lead.api}/v1/operator/raft/peers", {"id": "c9", "raft": "x",
                                                             "api": lead.api}, token=c.token)
    assert bad.status == 422 and bad.body["error"]["field"] == "raft", bad
    assert http("GET", f"{lead.api}/v1/operator/raft/peers").status == 401
    # Removing the dead one leaves {leader, live follower}: allowed.
    resp = remove(c, dead[0].id)
    assert resp.status == 200, resp
    assert set(peers(c)) == {lead.id, dead[1].id}


@ops_only
def test_grow_to_five_and_shrink_to_three_under_load(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "cluster").start()
    try:
        with Load(c) as load:
            time.sleep(0.3)
            for rid in ("c4", "c5"):
                t0 = time.monotonic()
                r = new_replica(c, rid, c.live()[:2])
                wait_member_ready(c, r)
                report(f"join {rid}, longest write pause", load.pause_in(t0, time.monotonic()))
                assert_no_campaign_before_added(c, r)
            assert set(peers(c)) == {"c1", "c2", "c3", "c4", "c5"}
            # Shrink: a follower, then the leader itself (handed over first).
            lead = c.leader()
            follower = next(r for r in c.followers() if r.id in ("c1", "c2", "c3"))
            for victim in (follower, lead):
                t0 = time.monotonic()
                resp = remove(c, victim.id)
                assert resp.status == 200, resp
                report(f"remove {victim.id}{' (leader)' if victim is lead else ''}, "
                       "longest write pause", load.pause_in(t0, time.monotonic()))
                victim.proc.stop()
            assert len(peers(c)) == 3
            time.sleep(1.0)
        assert_clean(load)
    finally:
        c.stop()


@ops_only
def test_a_client_given_c1_to_c3_keeps_working_while_they_are_replaced(tmp_path: Path) -> None:
    """c1..c3 replaced by c4..c6, a join then a removal at a time, the leader's included:
    one client, started with c1..c3 only, writes after each step and ends up using c4..c6
    only. Each write after a removal first tries the removed replica."""
    c = Cluster(tmp_path / "cluster").start()
    try:
        client = long_client(c)
        client.put("/v1/namespaces/n0", {"quota": {"cpu": 1, "memory_mb": 64}})
        olds = list(c.replicas)
        for k, old in enumerate(olds, 4):
            new = new_replica(c, f"c{k}", c.live())
            wait_member_ready(c, new)
            resp = remove(c, old.id)
            assert resp.status == 200, resp
            old.proc.stop()
            c.replicas.remove(old)
            if old.api in client.addrs:
                prefer(client, old)
            client.request("PUT", f"/v1/namespaces/n{k}",
                           body={"quota": {"cpu": 1, "memory_mb": 64}},
                           idempotency_key=f"replace-{k}")
            assert old.api not in client.addrs, client.addrs
        assert sorted(client.addrs) == sorted(r.api for r in c.live())
        names = {n["name"] for n in client.get("/v1/namespaces")["namespaces"]}
        assert {"n0", "n4", "n5", "n6"} <= names
    finally:
        c.stop()


@ops_only
def test_replace_a_killed_replica_then_lose_a_minority_of_five(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "cluster").start()
    try:
        with Load(c) as load:
            time.sleep(0.3)
            dead = c.followers()[0]
            dead.proc.kill9()
            t0 = time.monotonic()
            r4 = new_replica(c, "c4", c.live())
            wait_member_ready(c, r4)
            resp = remove(c, dead.id)
            assert resp.status == 200, resp
            report(f"replace killed {dead.id} by c4, longest write pause",
                   load.pause_in(t0, time.monotonic()))
            c.replicas.remove(dead)
            for rid in ("c5", "c6"):
                wait_member_ready(c, new_replica(c, rid, c.live()))
            assert len(peers(c)) == 5
            # Two of five killed, the leader among them: the other three keep writing.
            lead = c.leader()
            victims = [lead, next(r for r in c.followers())]
            t1 = time.monotonic()
            for v in victims:
                v.proc.kill9()
            c.leader(timeout=15)
            before = load.count_between(t1, time.monotonic())
            time.sleep(2.0)
            assert load.count_between(t1, time.monotonic()) > before
            report("2 of 5 killed (leader included), longest write pause",
                   load.pause_in(t1, time.monotonic()))
        assert_clean(load)
    finally:
        c.stop()


@ops_only
def test_restart_keeps_the_recorded_membership_over_stale_flags(tmp_path: Path) -> None:
    """pysyncobj #133 made explicit: after c4 and c5 joined, c1 restarted with its original
    --peer flags (c2, c3 only) still counts them, so c1, c4 and c5 are a majority."""
    c = Cluster(tmp_path / "cluster").start()
    try:
        for rid in ("c4", "c5"):
            wait_member_ready(c, new_replica(c, rid, c.live()))
        c1 = c.replicas[0]
        c1.proc.stop()
        c1.proc.start()  # the same argv: --peer c2, --peer c3
        wait_member_ready(c, c1)
        record = json.loads((c.root / "c1" / "members.json").read_text())
        assert {m["id"] for m in record["members"]} == {"c1", "c2", "c3", "c4", "c5"}
        for r in c.replicas[1:3]:
            r.proc.kill9()
        c.leader(timeout=15)
        resp = c.write("PUT", "/v1/jobs/default/after", {"command": ["sleep", "1"],
                                                         "count": 0,
                                                         "resources": {"cpu": 0.1,
                                                                       "memory_mb": 16}})
        assert resp.status == 200, resp
        assert "overrides --peer" in (c.root / "c1.log").read_text()
    finally:
        c.stop()


@ops_only
def test_autopilot_cleans_up_a_dead_server_but_keeps_the_minimum(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "cluster", size=4,
                extra_server_args=["--cleanup-dead-servers", "--dead-server-after", "2",
                                   "--min-quorum", "3"]).start()
    try:
        with Load(c) as load:
            victim = c.followers()[0]
            victim.proc.kill9()
            wait_for(lambda: victim.id not in peers(c), 20, what="the dead one removed")
            c.replicas.remove(victim)
            second = c.followers()[0]
            second.proc.kill9()
            time.sleep(4.0)  # past dead_after: still listed, the minimum is 3
            assert second.id in peers(c)
        assert_clean(load)
    finally:
        c.stop()


@ops_only
def test_a_member_that_never_answers_is_removed_again(tmp_path: Path) -> None:
    """A port that accepts connections but speaks no Raft passes the leader's connection
    check; the added member never answers, and after the catch-up wait it is taken out."""
    c = Cluster(tmp_path / "cluster").start()
    try:
        with socket.socket() as mute:
            mute.bind(("127.0.0.1", 0))
            mute.listen()
            raft = f"127.0.0.1:{mute.getsockname()[1]}"
            lead = c.leader()
            resp = http("POST", f"{lead.api}/v1/operator/raft/peers",
                        {"id": "c9", "raft": raft, "api": "http://127.0.0.1:9"},
                        token=c.token, timeout=200.0)
        assert resp.status == 409, resp
        err = resp.body["error"]
        assert err["reason"] == "never_connected" and "removed again" in err["message"], err
        assert set(peers(c)) == {r.id for r in c.replicas}
        resp = c.write("PUT", "/v1/jobs/default/after", {"command": ["sleep", "1"],
                                                         "count": 0,
                                                         "resources": {"cpu": 0.1,
                                                                       "memory_mb": 16}})
        assert resp.status == 200, resp
    finally:
        c.stop()
