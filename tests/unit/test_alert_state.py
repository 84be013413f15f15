"""Alert rules, alert states, notifications and the cluster config in the replicated
state: checks, permissions at apply, idempotent transitions and delivery records, bounds,
and snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from hacontrol.model.alerts import AlertStatus, DeliveryStatus
from hacontrol.state import commands as C
from hacontrol.state import snapshot
from hacontrol.state.handlers.alerts import MAX_ATTEMPTS, NOTIFICATIONS_KEPT
from hacontrol.state.machine import StateMachine

from .test_acl_state import Feeder, policy, refused, setup

HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s3cret"}
EXEC = {"type": "exec", "command": ["/bin/true"]}
RULE = {"when": "node_down", "severity": "critical", "sinks": [HOOK, EXEC]}


def put(f: Feeder, name: str = "down", rule: dict[str, Any] | None = None,
        acc: str | None = None) -> dict[str, Any]:
    return f(C.ALERT_PUT, acc, name=name, rule=rule or RULE)


def fire(f: Feeder, name: str = "down", status: str = "firing",
         index: int | None = None) -> dict[str, Any]:
    rule = f.m.store.alert_rules[name]
    return f(C.ALERT_TRANSITION, transitions=[{
        "name": name, "status": status, "details": {"nodes": ["n1"]},
        "rule_index": rule.modify_index if index is None else index}])


def attempt(f: Feeder, nid: str, sink: int, n: int, ok: bool, name: str = "down"
            ) -> dict[str, Any]:
    return f(C.ALERT_DELIVERY, results=[{"alert": name, "id": nid, "sink": sink, "attempt": n,
                                         "ok": ok, "error": None if ok else "HTTP 500",
                                         "next_at": f.ts + 5}])


def test_put_keeps_the_rule_and_answers_without_the_secret() -> None:
    f = Feeder()
    r = put(f)
    assert r["ok"], r
    assert "s3cret" not in repr(r)
    assert r["alert"]["sinks"][0] == {"type": "webhook", "url": HOOK["url"], "timeout_s": 10.0,
                                      "secret_set": True}
    assert f.m.store.alert_rules["down"].sinks[0].secret == "s3cret"
    assert f.m.store.alert_states["down"].status == AlertStatus.OK
    # The idempotency table keeps the answer: no secret there either.
    assert "s3cret" not in repr(list(f.m.idem))


@pytest.mark.parametrize(("rule", "field"), [
    ({"when": "sometimes"}, "when"),
    ({"when": "node_down", "severity": "page"}, "severity"),
    ({"when": "node_down", "namespace": "default"}, "namespace"),
    ({"when": "quota_above", "threshold": 1.5}, "threshold"),
    ({"when": "health_below", "threshold": -1}, "threshold"),
    ({"when": "node_down", "window_s": 0}, "window_s"),
    ({"when": "node_down", "sinks": [{"type": "pager"}]}, "sinks[0].type"),
    ({"when": "node_down", "sinks": [{"type": "webhook", "url": "ftp://x"}]}, "sinks[0].url"),
    ({"when": "node_down", "sinks": [{"type": "webhook", "url": "http://x", "secret": ""}]},
     "sinks[0].secret"),
    ({"when": "node_down", "sinks": [{"type": "exec", "command": []}]}, "sinks[0].command"),
    ({"when": "node_down", "sinks": [{"type": "exec", "command": ["x"], "extra": 1}]},
     "sinks[0].extra"),
    ({"when": "node_down", "sinks": [EXEC, {"type": "exec", "command": "ls"}]},
     "sinks[1].command"),
    ({"when": "node_down", "bogus": 1}, "bogus"),
    ({"when": "node_down", "name": "other"}, "name"),
])
def test_a_bad_rule_is_refused_at_apply_naming_the_field(rule: dict[str, Any],
                                                         field: str) -> None:
    f = Feeder()
    r = put(f, rule=rule)
    assert not r["ok"] and r["error"]["code"] == "invalid" and r["error"]["field"] == field
    assert f.m.store.alert_rules == {}


def test_a_namespace_only_token_cannot_write_alerts_or_the_config() -> None:
    """Sinks run commands and send requests from the leader's host: a token with every right
    in every namespace, but no operator:write, must not create one (checked at apply, where
    it counts, whatever the API believed)."""
    f, root = setup()
    policy(f, root, "ns-admin", {"namespaces": {"*": {"policy": "write",
                                                      "capabilities": ["run-as-root"]}},
                                 "operator": "read"})
    tok = f.token(C.ACL_TOKEN_CREATE, root, name="t", type="client", policies=["ns-admin"])
    assert refused(put(f, "evil", {"when": "node_down",
                                   "sinks": [{"type": "exec", "command": ["sh", "-c", "id"]}]},
                       acc=tok))
    assert refused(put(f, "evil", {"when": "node_down",
                                   "sinks": [{"type": "webhook", "url": "http://evil/"}]},
                       acc=tok))
    assert refused(f(C.CLUSTER_CONFIG_PUT, tok, config={}))
    assert f.m.store.alert_rules == {} and f.m.store.cluster_config is None
    assert put(f, "ok", acc=root)["ok"]
    assert refused(f(C.ALERT_DELETE, tok, name="ok"))
    # The leader's own commands are the controllers' only.
    assert refused(f(C.ALERT_TRANSITION, tok, transitions=[]))
    assert refused(f(C.ALERT_DELIVERY, tok, results=[]))
    policy(f, root, "opw", {"operator": "write"})
    opw = f.token(C.ACL_TOKEN_CREATE, root, name="o", type="client", policies=["opw"])
    assert put(f, "by-operator", acc=opw)["ok"]


def test_a_transition_makes_one_notification_per_status_change() -> None:
    f = Feeder()
    put(f)
    r = fire(f)
    assert r["ok"] and r["notifications"] == ["down-1"]
    state = f.m.store.alert_states["down"]
    assert state.status == AlertStatus.FIRING and state.details == {"nodes": ["n1"]}
    n = state.notifications[0]
    assert n.body == {"alert": "down", "id": "down-1", "status": "firing",
                      "severity": "critical", "when": "node_down",
                      "details": {"nodes": ["n1"]}, "at": f.ts}
    assert [d.status for d in n.deliveries] == ["pending", "pending"]
    # The same transition again (a retry, a second leader): nothing new.
    assert fire(f)["notifications"] == []
    # Resolving what is not firing changes nothing either.
    assert fire(f, status="resolved")["notifications"] == ["down-2"]
    assert fire(f, status="resolved")["notifications"] == []
    # A transition judged against an older version of the rule is dropped.
    put(f)
    assert fire(f, index=1)["notifications"] == []
    assert len(f.m.store.alert_states["down"].notifications) == 2


def test_delivery_attempts_are_recorded_once_each_and_give_up_at_the_limit() -> None:
    f = Feeder()
    put(f)
    fire(f)
    n = f.m.store.alert_states["down"].notifications[0]
    retry_at = f.ts + 5  # what `attempt` proposes as the next attempt's time
    assert attempt(f, "down-1", 0, 1, False)["recorded"] == 1
    assert attempt(f, "down-1", 0, 1, False)["recorded"] == 0  # the same attempt again
    assert attempt(f, "down-1", 0, 3, False)["recorded"] == 0  # not the next one
    hook = n.deliveries[0]
    assert (hook.status, hook.attempts, hook.last_error) == ("pending", 1, "HTTP 500")
    assert hook.next_at == retry_at  # as proposed by the leader
    assert attempt(f, "down-1", 0, 2, True)["recorded"] == 1
    assert (hook.status, hook.attempts, hook.last_error) == ("delivered", 2, None)
    assert attempt(f, "down-1", 0, 3, True)["recorded"] == 0  # delivered stays delivered
    for i in range(1, MAX_ATTEMPTS + 1):
        attempt(f, "down-1", 1, i, False)
    assert n.deliveries[1].status == DeliveryStatus.FAILED
    assert not n.pending
    kinds = [e["type"] for e in f.m.events]
    assert kinds.count("alert_delivered") == 1 and kinds.count("alert_delivery_failed") == 1
    assert attempt(f, "nope-1", 0, 1, True, name="nope")["recorded"] == 0


def test_notifications_are_bounded_and_dropped_pending_ones_counted() -> None:
    f = Feeder()
    put(f)
    for i in range(NOTIFICATIONS_KEPT + 5):
        fire(f, status="firing" if i % 2 == 0 else "resolved")
    state = f.m.store.alert_states["down"]
    assert len(state.notifications) == NOTIFICATIONS_KEPT
    assert state.dropped == 5 and state.seq == NOTIFICATIONS_KEPT + 5
    assert state.notifications[-1].id == f"down-{NOTIFICATIONS_KEPT + 5}"


def test_delete_removes_the_rule_and_its_state() -> None:
    f = Feeder()
    put(f)
    fire(f)
    assert f(C.ALERT_DELETE, name="down")["ok"]
    assert f.m.store.alert_rules == {} and f.m.store.alert_states == {}
    r = f(C.ALERT_DELETE, name="down")
    assert r["error"]["code"] == "not_found" and r["error"]["field"] == "name"


def test_cluster_config_put_replaces_it() -> None:
    f = Feeder()
    r = f(C.CLUSTER_CONFIG_PUT, config={"health": {"node_down": 25}})
    assert r["ok"] and r["config"]["health"]["node_down"] == 25
    assert f.m.store.cluster_config is not None
    assert f.m.store.cluster_config.health.node_down == 25
    r = f(C.CLUSTER_CONFIG_PUT, config={"health": {"node_down": -1}})
    assert r["error"]["field"] == "health.node_down"
    assert f.m.store.cluster_config.health.node_down == 25


def test_snapshots_carry_everything_and_a_state_without_alerts_encodes_as_before() -> None:
    f = Feeder()
    before = snapshot.encode(f.m.store, f.m.idem)
    assert b"alert_rules" not in before and b"cluster_config" not in before
    put(f)
    fire(f)
    attempt(f, "down-1", 0, 1, False)
    f(C.CLUSTER_CONFIG_PUT, config={"health": {"node_down": 25}})
    raw = f.m.snapshot()
    other = StateMachine()
    other.restore(raw)
    assert other.digest() == f.m.digest()
    state = other.store.alert_states["down"]
    assert state.notifications[0].deliveries[0].attempts == 1
    assert other.store.alert_rules["down"].sinks[0].secret == "s3cret"
    assert other.store.cluster_config == f.m.store.cluster_config
