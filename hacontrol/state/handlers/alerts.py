"""alert_put, alert_delete, alert_transition, alert_delivery, cluster_config_put.

Rules come from operators; transitions and delivery outcomes from the leader
(`hacontrol/alerts/runner.py`), which may propose them twice (a retry after an unknown
outcome, a new leader repeating an attempt): both are applied only when they still make a
difference (a status that changes, an attempt number that follows the last one), so a
repeat changes nothing. The argument checks of these ops live here, beside the only code
that uses them.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from hacontrol.model.alerts import (
    AlertState,
    AlertStatus,
    Delivery,
    DeliveryStatus,
    Notification,
    parse_rule,
)
from hacontrol.model.checks import check_name
from hacontrol.model.cluster_config import parse_cluster_config
from hacontrol.model.errors import Rejection, invalid, not_found

from ..context import Applying, Result

MAX_ALERT_RULES = 256
# Notifications kept per alert (oldest forgotten first, counted in `dropped` when one was
# still pending): GET shows the recent ones, and the state stays bounded.
NOTIFICATIONS_KEPT = 20
# Attempts per sink before a notification is given up on (with the runner's backoff,
# about a quarter of an hour).
MAX_ATTEMPTS = 12
MAX_ERROR_LEN = 300
MAX_DETAILS_ITEMS = 50


def put(tx: Applying, args: dict[str, Any]) -> Result:
    rule = parse_rule(args.get("name"), args.get("rule"))
    rules = tx.store.alert_rules
    created = rule.name not in rules
    if created and len(rules) >= MAX_ALERT_RULES:
        raise Rejection("limit_exceeded", f"at most {MAX_ALERT_RULES} alert rules", "name")
    rule = replace(rule, modify_index=tx.index)
    rules[rule.name] = rule
    tx.store.alert_states.setdefault(rule.name, AlertState(rule.name, since=tx.ts))
    tx.event("alert_put", alert=rule.name, when=str(rule.when), created=created)
    return {"alert": rule.public(), "created": created}


def delete(tx: Applying, args: dict[str, Any]) -> Result:
    name = check_name(args.get("name"), "name")
    if name not in tx.store.alert_rules:
        raise not_found(f"alert {name!r}", "name")
    del tx.store.alert_rules[name]
    # Its undelivered notifications go with it: nobody is left to want them.
    tx.store.alert_states.pop(name, None)
    tx.event("alert_deleted", alert=name)
    return {"deleted": name}


def config_put(tx: Applying, args: dict[str, Any]) -> Result:
    config = parse_cluster_config(args.get("config"))
    tx.store.cluster_config = config
    tx.event("cluster_config_put")
    return {"config": config.to_dict()}


# ------------------------------------------------------------- the leader's

def _items(args: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = args.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise invalid(key, "must be a list of objects")
    return items


def _details(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) > MAX_DETAILS_ITEMS:
        raise invalid("transitions.details", "must be an object")
    return value


def transition(tx: Applying, args: dict[str, Any]) -> Result:
    """Each `{name, status, details, rule_index}`: the alert goes firing or resolved, with
    a notification for every sink of its rule, unless the rule changed since the leader
    judged it (`rule_index`) or the alert already has that status."""
    checked = []
    for t in _items(args, "transitions"):
        status = t.get("status")
        if status not in (AlertStatus.FIRING, AlertStatus.RESOLVED):
            raise invalid("transitions.status", "must be firing or resolved")
        checked.append((check_name(t.get("name"), "transitions.name"), AlertStatus(status),
                        _details(t.get("details", {})), t.get("rule_index")))
    made = []
    for name, status, details, rule_index in checked:
        rule = tx.store.alert_rules.get(name)
        if rule is None or rule.modify_index != rule_index:
            continue
        state = tx.store.alert_states.setdefault(name, AlertState(name))
        if state.status == status or (status == AlertStatus.RESOLVED
                                      and state.status != AlertStatus.FIRING):
            continue
        state.status, state.since, state.details = status, tx.ts, details
        state.seq += 1
        nid = f"{name}-{state.seq}"
        body = {"alert": name, "id": nid, "status": str(status), "severity": str(rule.severity),
                "when": str(rule.when), "details": details, "at": tx.ts}
        state.notifications.append(Notification(
            nid, name, status, tx.ts, body, rule.sinks,
            [Delivery(i, next_at=tx.ts) for i in range(len(rule.sinks))]))
        while len(state.notifications) > NOTIFICATIONS_KEPT:
            gone = state.notifications.pop(0)
            if gone.pending:
                state.dropped += 1
        tx.event("alert_" + status, alert=name, severity=str(rule.severity),
                 when=str(rule.when), notification=nid)
        made.append(nid)
    return {"notifications": made}


def _find(tx: Applying, alert: str, nid: str) -> Notification | None:
    state = tx.store.alert_states.get(alert)
    if state is None:
        return None
    return next((n for n in state.notifications if n.id == nid), None)


def delivery(tx: Applying, args: dict[str, Any]) -> Result:
    """Each `{alert, id, sink, attempt, ok, error, next_at}`: the outcome of attempt number
    `attempt` to deliver notification `id` to sink `sink`. Applied only when it is the
    attempt after the last one recorded, and the delivery is still pending."""
    checked = []
    for r in _items(args, "results"):
        sink, attempt, next_at = r.get("sink"), r.get("attempt"), r.get("next_at", tx.ts)
        if isinstance(sink, bool) or not isinstance(sink, int) or sink < 0:
            raise invalid("results.sink", "must be a sink index")
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise invalid("results.attempt", "must be an attempt number from 1")
        if isinstance(next_at, bool) or not isinstance(next_at, int | float) \
                or not math.isfinite(next_at):
            raise invalid("results.next_at", "must be a time")
        if not isinstance(r.get("ok"), bool) or not isinstance(r.get("id"), str):
            raise invalid("results", "each needs an id and ok")
        error = r.get("error")
        checked.append((check_name(r.get("alert"), "results.alert"), r["id"], sink, attempt,
                        r["ok"], str(error)[:MAX_ERROR_LEN] if error is not None else None,
                        float(next_at)))
    recorded = 0
    for alert, nid, sink, attempt, ok, error, next_at in checked:
        n = _find(tx, alert, nid)
        if n is None or sink >= len(n.deliveries):
            continue
        d = n.deliveries[sink]
        if d.status != DeliveryStatus.PENDING or d.attempts != attempt - 1:
            continue
        d.attempts = attempt
        recorded += 1
        if ok:
            d.status, d.delivered_at, d.last_error = DeliveryStatus.DELIVERED, tx.ts, None
            tx.event("alert_delivered", alert=alert, notification=nid, sink=sink,
                     attempts=attempt)
            continue
        d.last_error, d.next_at = error, next_at
        if attempt >= MAX_ATTEMPTS:
            d.status = DeliveryStatus.FAILED
            tx.event("alert_delivery_failed", alert=alert, notification=nid, sink=sink,
                     attempts=attempt, error=error)
    return {"recorded": recorded}
