"""The alert, health score and cluster config routes through the real app over a real
state machine: answers, 4xx naming the field, permissions (attacked), secrets never read."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from hacontrol.acl.secrets import hash_secret, new_accessor
from hacontrol.state import commands as C

from .api_fake import ApplyingReplica, call

HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "very-secret-value"}
RULE = {"when": "node_down", "severity": "critical", "sinks": [HOOK]}


def body(raw: bytes) -> Any:
    return json.loads(raw)


def send(replica: ApplyingReplica, method: str, path: str, data: Any = None,
         token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    status, _, raw = call(replica, method, path,
                          None if data is None else json.dumps(data).encode(), headers)
    return status, body(raw) if raw else None


def client_token(replica: ApplyingReplica, secret: str, rules: dict[str, Any]) -> str:
    name = f"p-{secret}"
    m = replica.m
    replica.index += 1
    assert m.apply(C.Command(C.ACL_POLICY_PUT, time.time(), {
        "policy": {"name": name, "rules": rules}}).encode(), replica.index)["ok"]
    replica.index += 1
    assert m.apply(C.Command(C.ACL_TOKEN_CREATE, time.time(), {
        "accessor_id": new_accessor(), "secret_hash": hash_secret(secret), "name": secret,
        "type": "client", "policies": [name]}).encode(), replica.index)["ok"]
    return secret


def test_put_get_list_delete() -> None:
    r = ApplyingReplica()
    status, out = send(r, "PUT", "/v1/alerts/down", RULE)
    assert status == 200, out
    assert out["alert"]["name"] == "down" and out["alert"]["when"] == "node_down"
    status, out = send(r, "GET", "/v1/alerts/down")
    assert status == 200
    assert out["rule"]["severity"] == "critical"
    assert out["state"]["status"] == "ok" and out["state"]["notifications"] == []
    status, out = send(r, "GET", "/v1/alerts")
    assert status == 200 and [a["name"] for a in out["alerts"]] == ["down"]
    assert out["alerts"][0]["status"] == "ok" and out["alerts"][0]["sinks"] == 1
    status, out = send(r, "DELETE", "/v1/alerts/down")
    assert status == 200 and out["deleted"] == "down"
    status, out = send(r, "GET", "/v1/alerts/down")
    assert status == 404 and out["error"]["field"] == "name"
    status, out = send(r, "DELETE", "/v1/alerts/down")
    assert status == 404


def test_a_webhook_secret_is_never_answered() -> None:
    r = ApplyingReplica()
    status, _, raw = call(r, "PUT", "/v1/alerts/down", json.dumps(RULE).encode())
    assert status == 200 and b"very-secret-value" not in raw
    for path in ("/v1/alerts/down", "/v1/alerts", "/v1/events?follow=false"):
        status, _, raw = call(r, "GET", path)
        assert status == 200 and b"very-secret-value" not in raw, path
    _, out = send(r, "GET", "/v1/alerts/down")
    assert out["rule"]["sinks"][0]["secret_set"] is True
    assert "secret" not in out["rule"]["sinks"][0]
    # What GET shows can be applied again (test_alert_secret_kept.py: with its secret).
    status, out = send(r, "PUT", "/v1/alerts/down", out["rule"])
    assert status == 200, out


@pytest.mark.parametrize(("rule", "field"), [
    ({}, "when"),
    ({"when": "node_down", "threshold": "many"}, "threshold"),
    ({"when": "restart_flapping", "job": "Not A Name"}, "job"),
    ({"when": "node_down", "sinks": [{"type": "webhook", "url": "http://x", "secret": 5}]},
     "sinks[0].secret"),
    ({"when": "node_down", "sinks": {"type": "exec"}}, "sinks"),
])
def test_bad_rules_get_a_422_naming_the_field(rule: dict[str, Any], field: str) -> None:
    r = ApplyingReplica()
    status, out = send(r, "PUT", "/v1/alerts/down", rule)
    assert status == 422 and out["error"]["field"] == field, out


def test_a_bad_name_or_body_is_a_4xx() -> None:
    r = ApplyingReplica()
    status, out = send(r, "PUT", "/v1/alerts/Bad%20Name", RULE)
    assert status == 422 and out["error"]["field"] == "name"
    status, _, raw = call(r, "PUT", "/v1/alerts/down", b"[1]")
    assert status == 422 and body(raw)["error"]["field"] == "body"


def test_permissions_namespace_rights_never_reach_alerts() -> None:
    """The attack: a token with write (and run-as-root) on every namespace tries to make an
    exec sink (a command on the leader's host) or a webhook. Refused before the log."""
    r = ApplyingReplica()
    ns = client_token(r, "ns-writer", {"namespaces": {"*": {
        "policy": "write", "capabilities": ["run-as-root"]}}})
    for sink in ({"type": "exec", "command": ["sh", "-c", "touch /tmp/pwned"]},
                 {"type": "webhook", "url": "http://attacker.example/"}):
        status, out = send(r, "PUT", "/v1/alerts/evil", {"when": "node_down", "sinks": [sink]},
                           token=ns)
        assert status == 403, out
    assert send(r, "GET", "/v1/alerts", token=ns)[0] == 403
    assert send(r, "GET", "/v1/health/score", token=ns)[0] == 403
    assert send(r, "PUT", "/v1/operator/config", {}, token=ns)[0] == 403
    assert r.m.store.alert_rules == {}

    reader = client_token(r, "op-reader", {"operator": "read"})
    assert send(r, "PUT", "/v1/alerts/x", RULE)[0] == 200
    assert send(r, "GET", "/v1/alerts/x", token=reader)[0] == 200
    assert send(r, "GET", "/v1/operator/config", token=reader)[0] == 200
    assert send(r, "PUT", "/v1/alerts/x", RULE, token=reader)[0] == 403
    assert send(r, "DELETE", "/v1/alerts/x", token=reader)[0] == 403
    assert send(r, "PUT", "/v1/operator/config", {}, token=reader)[0] == 403

    writer = client_token(r, "op-writer", {"operator": "write"})
    assert send(r, "PUT", "/v1/alerts/y", RULE, token=writer)[0] == 200


def test_health_score_route() -> None:
    r = ApplyingReplica()
    status, out = send(r, "GET", "/v1/health/score")
    assert status == 200, out
    assert out["score"] == 100 and out["reasons"] == [] and out["asked"] == "c1"
    r.index += 1
    assert r.m.apply(C.Command(C.NODE_REGISTER, time.time(), {
        "name": "n1", "cpu": 2.0, "memory_mb": 1024, "address": "http://127.0.0.1:1",
        "labels": {}, "attributes": {}}).encode(), r.index)["ok"]
    r.index += 1
    assert r.m.apply(C.Command(C.NODE_STATUS, time.time(), {"name": "n1", "status": "down"}
                               ).encode(), r.index)["ok"]
    status, out = send(r, "GET", "/v1/health/score")
    assert out["score"] == 90
    assert out["reasons"] == [{"reason": "node_down", "penalty": 10, "count": 1,
                               "items": ["n1"]}]
    # The weights are live: change them and the same state scores differently.
    status, cfg = send(r, "PUT", "/v1/operator/config", {"health": {"node_down": 30}})
    assert status == 200 and cfg["config"]["health"]["node_down"] == 30
    assert send(r, "GET", "/v1/health/score")[1]["score"] == 70


def test_cluster_config_routes() -> None:
    r = ApplyingReplica()
    status, out = send(r, "GET", "/v1/operator/config")
    assert status == 200 and out["set"] is False
    assert out["config"]["health"]["replica_down"] == 20
    status, out = send(r, "PUT", "/v1/operator/config", {"health": {"replica_down": -3}})
    assert status == 422 and out["error"]["field"] == "health.replica_down"
    status, out = send(r, "PUT", "/v1/operator/config", {"healthy": {}})
    assert status == 422 and out["error"]["field"] == "healthy"
    status, out = send(r, "PUT", "/v1/operator/config", {"health": {"replica_down": 1}})
    assert status == 200
    status, out = send(r, "GET", "/v1/operator/config")
    assert out["set"] is True and out["config"]["health"]["replica_down"] == 1


def test_webhook_secrets_enter_the_log_sealed() -> None:
    """The replica that takes a rule seals its webhook secret with the cluster secret: the
    command in the log, the state and snapshots hold no clear secret, and only a replica
    with the cluster secret opens it."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from hacontrol.alerts.sealing import Sealer, Unsealable
    from hacontrol.api.alert_routes import use_sealer
    from hacontrol.api.app import build_app
    from hacontrol.raft.keys import generate_secret
    from hacontrol.scheduler.leader_state import Leadership

    from .test_api_errors import TOKEN

    cluster_secret = generate_secret()
    r = ApplyingReplica()
    logged: list[dict[str, Any]] = []
    write = r.write

    async def logging_write(op: str, args: dict[str, Any], idem: str | None = None,
                            *, actor: str | None = None) -> dict[str, Any]:
        logged.append(args)
        return await write(op, args, idem, actor=actor)
    r.write = logging_write  # type: ignore[method-assign]

    async def go() -> int:
        app = build_app(r, r, Leadership(lambda: 3), TOKEN)
        use_sealer(app, Sealer(cluster_secret))
        async with TestClient(TestServer(app)) as client:
            resp = await client.put("/v1/alerts/down", json=RULE,
                                    headers={"Authorization": f"Bearer {TOKEN}"})
            return resp.status
    assert asyncio.run(go()) == 200
    assert "very-secret-value" not in repr(logged)
    assert b"very-secret-value" not in r.m.snapshot()
    stored = r.m.store.alert_rules["down"].sinks[0].secret
    assert stored is not None and stored.startswith("sealed1:")
    assert Sealer(cluster_secret).open(stored) == "very-secret-value"
    with pytest.raises(Unsealable):
        Sealer(generate_secret()).open(stored)
    # A rotation (the new key first, the old one still listed) opens what the old sealed.
    rotated = Sealer(f"{generate_secret()} {cluster_secret}")
    assert rotated.open(stored) == "very-secret-value"
    assert rotated.seal("x") != rotated.seal("x")  # a fresh token each time
