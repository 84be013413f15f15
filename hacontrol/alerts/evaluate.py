"""Alert evaluation: a pure function of (rules, view, alert states, now) -> transitions.

`condition(rule, view, score)` says whether a rule's condition holds now, with the details
a notification carries; `evaluate` compares that with each alert's recorded status and
returns what changed (firing, or resolved after firing). No clock, no I/O: the leader
(`runner.py`) builds the view, calls this and proposes the transitions through the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hacontrol.acl.authorize import glob_match
from hacontrol.health.score import Score
from hacontrol.health.view import ClusterView
from hacontrol.model.alerts import AlertRule, AlertState, AlertStatus, AlertWhen
from hacontrol.model.states import AllocState

ITEMS_IN_DETAILS = 20


@dataclass(frozen=True)
class Transition:
    name: str
    status: AlertStatus  # firing | resolved
    details: dict[str, Any]
    rule_index: int  # the rule's modify_index it was judged against

    def to_args(self) -> dict[str, Any]:
        return {"name": self.name, "status": str(self.status), "details": self.details,
                "rule_index": self.rule_index}


def _in_scope(rule: AlertRule, namespace: str, job: str | None = None) -> bool:
    if rule.namespace is not None and not glob_match(rule.namespace, namespace):
        return False
    return rule.job is None or job is None or rule.job == job


def _many(key: str, items: list[str], threshold: float, **extra: Any) -> dict[str, Any] | None:
    if len(items) < threshold:
        return None
    return {key: sorted(items)[:ITEMS_IN_DETAILS], "count": len(items), **extra}


def condition(rule: AlertRule, view: ClusterView, score: Score) -> dict[str, Any] | None:
    """The details when the rule's condition holds in `view`, else None."""
    now, t = view.now, rule.threshold
    match rule.when:
        case AlertWhen.ALLOCATION_FAILED:
            failed = [a.id for a in view.allocations
                      if a.state == AllocState.FAILED and a.updated_at >= now - rule.window_s
                      and _in_scope(rule, a.namespace, a.job)]
            return _many("allocations", failed, t, window_s=rule.window_s)
        case AlertWhen.RESTART_FLAPPING:
            counts = {a.id: a.restarts_within(now, rule.window_s) for a in view.allocations
                      if _in_scope(rule, a.namespace, a.job)}
            flapping = [i for i, n in counts.items() if n >= t]
            if not flapping:
                return None
            return {"allocations": sorted(flapping)[:ITEMS_IN_DETAILS], "count": len(flapping),
                    "restarts": {i: counts[i] for i in sorted(flapping)[:ITEMS_IN_DETAILS]},
                    "window_s": rule.window_s}
        case AlertWhen.NODE_DOWN:
            return _many("nodes", [n.name for n in view.nodes if n.down], t)
        case AlertWhen.QUOTA_ABOVE:
            full = {q.namespace: q for q in view.quotas
                    if q.fraction >= t and _in_scope(rule, q.namespace)}
            if not full:
                return None
            return {"namespaces": {ns: {"fraction": round(q.fraction, 4), "limit": q.dimension}
                                   for ns, q in sorted(full.items())[:ITEMS_IN_DETAILS]},
                    "count": len(full)}
        case AlertWhen.NO_LEADER:
            # Only a leader can deliver: the alert fires once a leader is back, for a gap
            # longer than the threshold, and resolves once it has led for window_s.
            if view.leaderless_s > t and view.leading_s < rule.window_s:
                return {"leaderless_s": round(view.leaderless_s, 3)}
            return None
        case AlertWhen.REPLICA_DOWN:
            return _many("replicas", [r.id for r in view.replicas if not r.up], t)
        case AlertWhen.REPLICA_LAGGING:
            lagging = {r.id: r.lag for r in view.replicas
                       if r.up and r.lag is not None and r.lag >= t}
            return {"replicas": lagging, "count": len(lagging)} if lagging else None
        case AlertWhen.DEPLOYMENT_FAILED:
            failed_jobs = [f"{j.namespace}/{j.name}" for j in view.jobs
                           if j.deployment_failed and _in_scope(rule, j.namespace, j.name)]
            return _many("jobs", failed_jobs, t)
        case AlertWhen.HEALTH_BELOW:
            if score.score >= t:
                return None
            return {"score": score.score,
                    "reasons": [r.to_dict() for r in score.reasons[:ITEMS_IN_DETAILS]]}


def evaluate(rules: Iterable[AlertRule], view: ClusterView,
             states: Mapping[str, AlertState], score: Score) -> list[Transition]:
    """The transitions to propose: a rule whose condition holds and whose alert is not
    firing fires; a firing alert whose condition no longer holds resolves."""
    out = []
    for rule in rules:
        state = states.get(rule.name)
        firing = state is not None and state.status == AlertStatus.FIRING
        details = condition(rule, view, score)
        if details is not None and not firing:
            out.append(Transition(rule.name, AlertStatus.FIRING, details, rule.modify_index))
        elif details is None and firing:
            out.append(Transition(rule.name, AlertStatus.RESOLVED,
                                  {"was": state.details if state else {}},
                                  rule.modify_index))
    return out
