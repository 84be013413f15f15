"""Alert rules (`/v1/alerts`), the cluster health score (`/v1/health/score`) and the
cluster config (`/v1/operator/config`).

Rules are read with operator:read and written with operator:write (`auth.ROUTES`, checked
again when the command applies, `state/permit.py`): their sinks run commands and send
requests from the leader's host, which no namespace's rights may grant. Webhook secrets are
never answered: a sink says `secret_set` instead, and a webhook sink given back with
`"secret_set": true` and no `secret` keeps the secret the rule has for that URL, so a rule
read back can be applied again as it is.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from hacontrol.alerts.sealing import Sealer
from hacontrol.health.score import score
from hacontrol.health.view import ReplicaRow, capture
from hacontrol.model.alerts import (
    MAX_SINKS,
    AlertRule,
    AlertWhen,
    Severity,
    SinkType,
    parse_rule,
)
from hacontrol.model.checks import check_name
from hacontrol.model.cluster_config import ClusterConfig, HealthWeights, parse_cluster_config
from hacontrol.model.errors import invalid, not_found
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .members import gather
from .openapi import STALE, WRITE_ERRORS, Operation, documented
from .request import idem_key, is_stale, json_body, ok, store_of
from .schemas import NAME, NUMBER, OBJECT, STRING

SINK = {"type": "object", "required": ["type"], "properties": {
    "type": {"enum": ["webhook", "exec"]},
    "url": {"type": "string", "description": "webhook: http:// or https:// URL"},
    "secret": {"type": "string", "minLength": 1, "maxLength": 512,
               "description": "webhook: HMAC-SHA256 key; written, never read back"},
    "secret_set": {"type": "boolean",
                   "description": "answered instead of the secret; given back true without "
                                  "a secret, keeps the secret the rule has for this url"},
    "command": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                "description": "exec: argv, run on the leader's host with the body on stdin"},
    "timeout_s": {"type": "number", "minimum": 0.1, "maximum": 120}}}
RULE_FIELDS: dict[str, Any] = {
    "when": {"enum": [str(w) for w in AlertWhen]},
    "severity": {"enum": [str(s) for s in Severity], "default": "warning"},
    "namespace": {"type": ["string", "null"], "description": "a namespace or a glob"},
    "job": {"type": ["string", "null"]},
    "threshold": NUMBER, "window_s": {"type": "number", "minimum": 1, "maximum": 86400},
    "sinks": {"type": "array", "items": SINK, "maxItems": MAX_SINKS}}
RULE_BODY = {"type": "object", "required": ["when"], "properties": RULE_FIELDS}
RULE = {"type": "object", "properties": {**RULE_FIELDS, "name": NAME,
                                          "modify_index": {"type": "integer"}}}
ALERT = {"type": "object", "required": ["name", "rule", "state"], "properties": {
    "name": NAME, "rule": RULE, "state": {
        "type": ["object", "null"], "properties": {
            "status": {"enum": ["ok", "firing", "resolved"]}, "since": NUMBER,
            "details": OBJECT, "seq": {"type": "integer"}, "dropped": {"type": "integer"},
            "notifications": {"type": "array", "items": {
                "type": "object", "description": "id, status, body, and each sink's "
                "delivery: status (pending, delivered, failed), attempts, next_at, "
                "last_error, delivered_at"}}}}}}
SCORE = {"type": "object", "required": ["score", "reasons"], "properties": {
    "score": {"type": "number", "minimum": 0, "maximum": 100},
    "reasons": {"type": "array", "items": {
        "type": "object", "required": ["reason", "penalty"],
        "properties": {"reason": STRING, "penalty": NUMBER, "count": {"type": "integer"},
                       "items": {"type": "array", "items": STRING}}}}}}
WEIGHTS = {"type": "object", "additionalProperties": False,
           "properties": {k: NUMBER for k in HealthWeights().to_dict()}}
CONFIG = {"type": "object", "additionalProperties": False,
          "properties": {"health": WEIGHTS}}
PATH = {"name": NAME}
# Seals webhook secrets before they enter the log (`alerts/sealing.py`); None (the unit
# tests' apps) keeps them as given.
SEALER = web.AppKey[Sealer | None]("alert_sealer")


def use_sealer(app: web.Application, sealer: Sealer) -> None:
    app[SEALER] = sealer


def _alert_view(m: StateMachine, name: str) -> dict[str, Any] | None:
    rule = m.store.alert_rules.get(name)
    if rule is None:
        return None
    state = m.store.alert_states.get(name)
    return {"name": name, "rule": rule.public(),
            "state": state.public() if state is not None else None}


# -------------------------------------------------------------------- rules

def _keeping(raw: Any) -> list[int]:
    """The webhook sinks of a rule body that ask to keep their secret: `secret_set` true
    and no `secret` (what GET answers; a null one likewise). Called after `parse_rule`
    checked the body."""
    out = []
    for i, sink in enumerate(raw.get("sinks") or []):
        flag = sink.get("secret_set")
        if flag is not None and not isinstance(flag, bool):
            raise invalid(f"sinks[{i}].secret_set", "must be true or false")
        if sink.get("type") == SinkType.WEBHOOK and flag is True and sink.get("secret") is None:
            out.append(i)
    return out


def keep_secrets(rule: AlertRule, keeping: list[int], current: AlertRule | None) -> AlertRule:
    """`rule` with the secret `current` has for the same URL in each sink of `keeping`
    (the sink at the same place first). A secret is only ever kept for the URL it was
    given for: `secret_set` cannot move it to another receiver, nor conjure one for a new
    rule (422 naming the sink's secret)."""
    sinks = list(rule.sinks)
    old = current.sinks if current is not None else ()
    for i in keeping:
        url = sinks[i].url
        same = [j for j, s in enumerate(old)
                if s.type == SinkType.WEBHOOK and s.url == url and s.secret is not None]
        if not same:
            raise invalid(f"sinks[{i}].secret", "secret_set is true but the rule has no "
                          "secret for this url: give the secret (or secret_set false for none)")
        j = i if i in same else same[0]
        sinks[i] = replace(sinks[i], secret=old[j].secret)
    return replace(rule, sinks=tuple(sinks))


@documented(Operation("Create or replace an alert rule", "alerts", body=RULE_BODY, path=PATH,
                      ok={"type": "object", "properties": {"alert": RULE}}, write=True,
                      errors=WRITE_ERRORS))
async def put_alert(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "name")
    raw = await json_body(request)
    rule = parse_rule(name, raw)  # 422 naming the field, before the log
    keeping = _keeping(raw)
    if keeping:
        # The secret as sealed in the rule now (a linearizable read). Two PUTs of one rule
        # at once: the later in the log wins, with the secret it read.
        current = await store_of(request).read(lambda m: m.store.alert_rules.get(name))
        rule = keep_secrets(rule, keeping, current)
    sealer = request.app.get(SEALER)
    if sealer is not None:
        rule = sealer.seal_rule(rule)
    res = await store_of(request).write(C.ALERT_PUT, {"name": name, "rule": rule.to_dict()},
                                        idem_key(request))
    return ok({"alert": res.get("alert") or rule.public(), "index": res["index"]})


@documented(Operation("List the alert rules with each alert's status", "alerts",
                      params=(STALE,), ok={"type": "object", "properties": {
                          "alerts": {"type": "array", "items": OBJECT}}}))
async def list_alerts(request: web.Request) -> web.Response:
    def view(m: StateMachine) -> list[dict[str, Any]]:
        out = []
        for name, rule in sorted(m.store.alert_rules.items()):
            state = m.store.alert_states.get(name)
            out.append({"name": name, "when": str(rule.when), "severity": str(rule.severity),
                        "status": str(state.status) if state else "ok",
                        "since": state.since if state else None,
                        "sinks": len(rule.sinks),
                        "pending": sum(1 for n in state.notifications if n.pending)
                        if state else 0})
        return out
    return ok({"alerts": await store_of(request).read(view, is_stale(request))})


@documented(Operation("An alert rule, its status and its recent notifications with every "
                      "delivery attempt", "alerts", params=(STALE,), path=PATH, ok=ALERT))
async def get_alert(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "name")
    out = await store_of(request).read(lambda m: _alert_view(m, name), is_stale(request))
    if out is None:
        raise not_found(f"alert {name!r}", "name")
    return ok(out)


@documented(Operation("Delete an alert rule (its undelivered notifications with it)",
                      "alerts", path=PATH, ok={"type": "object"}, write=True,
                      errors=WRITE_ERRORS))
async def delete_alert(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"], "name")
    res = await store_of(request).write(C.ALERT_DELETE, {"name": name}, idem_key(request))
    return ok({"deleted": name, "index": res["index"]})


# ------------------------------------------------------------- health score

@documented(Operation(
    "The cluster health score (0-100) with every reason that lowers it", "health",
    description="Judged by the replica asked: the replicas as it reaches them, the rest "
                "from the replicated state. Weights: GET/PUT /v1/operator/config.",
    params=(STALE,), ok=SCORE))
async def health_score(request: web.Request) -> web.Response:
    members = await gather(request)
    rows = [ReplicaRow(str(m["id"]), bool(m["reachable"] and m.get("healthy")), m.get("lag"))
            for m in members["members"]]
    now = time.time()
    # Only the copies are made under the apply lock; the rows and the score after it.
    captured = await store_of(request).read(
        lambda m: capture(m, now, rows, members["leader"]), is_stale(request))
    return ok({**score(captured.view()).to_dict(), "asked": members["asked"]})


# ----------------------------------------------------------- cluster config

@documented(Operation("The cluster config (health score weights), defaults filled in",
                      "operator", params=(STALE,), ok={"type": "object", "properties": {
                          "config": CONFIG}}))
async def get_config(request: web.Request) -> web.Response:
    config = await store_of(request).read(lambda m: m.store.cluster_config, is_stale(request))
    return ok({"config": (config or ClusterConfig()).to_dict(), "set": config is not None})


@documented(Operation("Replace the cluster config (fields left out take their defaults); "
                      "applies at once", "operator", body=CONFIG, write=True,
                      errors=WRITE_ERRORS,
                      ok={"type": "object", "properties": {"config": CONFIG}}))
async def put_config(request: web.Request) -> web.Response:
    config = parse_cluster_config(await json_body(request))
    res = await store_of(request).write(C.CLUSTER_CONFIG_PUT, {"config": config.to_dict()},
                                        idem_key(request))
    return ok({"config": res.get("config") or config.to_dict(), "index": res["index"]})


def register(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/alerts", list_alerts)
    r.add_get("/v1/alerts/{name}", get_alert)
    r.add_put("/v1/alerts/{name}", put_alert)
    r.add_delete("/v1/alerts/{name}", delete_alert)
    r.add_get("/v1/health/score", health_score)
    r.add_get("/v1/operator/config", get_config)
    r.add_put("/v1/operator/config", put_config)
