"""The cluster health score: 100 less a penalty for every reason that lowers it.

`score(view)` is a pure function of a `ClusterView`: every reason is reported with its
penalty, how many items it counts and (the first few of) which, so an operator sees why
the score is what it is. Weights and thresholds come from the cluster config
(`model/cluster_config.py`, changeable live).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hacontrol.model.alerts import AlertWhen
from hacontrol.model.cluster_config import HealthWeights
from hacontrol.model.states import AllocState

from .view import ClusterView

ITEMS_SHOWN = 10


@dataclass(frozen=True)
class Reason:
    reason: str
    penalty: float
    count: int
    items: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "penalty": self.penalty, "count": self.count,
                "items": list(self.items[:ITEMS_SHOWN])}


@dataclass(frozen=True)
class Score:
    score: float
    reasons: tuple[Reason, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "reasons": [r.to_dict() for r in self.reasons]}


def _reason(name: str, weight: float, items: list[str], cap: float) -> Reason | None:
    if not items or weight <= 0:
        return None
    return Reason(name, round(min(weight * len(items), cap), 2), len(items), tuple(items))


def _once(name: str, weight: float, holds: bool, cap: float,
          items: tuple[str, ...] = ()) -> Reason | None:
    if not holds or weight <= 0:
        return None
    return Reason(name, round(min(weight, cap), 2), 1, items)


def quorum_reasons(view: ClusterView, w: HealthWeights) -> list[Reason | None]:
    cap = w.max_per_reason
    total = len(view.replicas)
    down = [r.id for r in view.replicas if not r.up]
    lagging = [r.id for r in view.replicas
               if r.up and r.lag is not None and r.lag >= w.lag_entries]
    up = total - len(down)
    majority = total // 2 + 1
    # Losing quorum is worse than any one reason may weigh: it is not capped.
    lost = Reason("quorum_lost", w.quorum_lost, 1, tuple(down)) \
        if total and up < majority and w.quorum_lost > 0 else None
    return [
        _reason("replica_down", w.replica_down, down, cap),
        _reason("replica_lagging", w.replica_lagging, lagging, cap),
        lost,
        _once("no_quorum_margin", w.no_quorum_margin, total > 1 and up == majority, cap),
        Reason("no_leader", w.no_leader, 1, ()) if view.leader is None and w.no_leader > 0
        else None,
    ]


def score(view: ClusterView, weights: HealthWeights | None = None) -> Score:
    """The score of `view` with `weights` (default: the view's own config)."""
    w = weights if weights is not None else view.config.health
    cap = w.max_per_reason
    now = view.now
    failed = [a.id for a in view.allocations
              if a.state in (AllocState.FAILED, AllocState.LOST)
              and a.updated_at >= now - w.failed_window_s]
    pending = [a.id for a in view.allocations
               if a.state == AllocState.PENDING and a.wanted
               and a.created_at <= now - w.pending_s]
    flapping = [a.id for a in view.allocations
                if a.restarts_within(now, w.flapping_window_s) >= w.flapping_restarts]
    # An alert on the score itself would otherwise hold the score down that fired it.
    judged = [a for a in view.alerts if a.firing and a.when != AlertWhen.HEALTH_BELOW]
    reasons = [
        *quorum_reasons(view, w),
        _reason("node_down", w.node_down, [n.name for n in view.nodes if n.down], cap),
        _reason("node_draining", w.node_draining,
                [n.name for n in view.nodes if n.draining and not n.down], cap),
        _reason("allocation_failed", w.allocation_failed, failed, cap),
        _reason("allocation_pending", w.allocation_pending, pending, cap),
        _reason("allocation_flapping", w.allocation_flapping, flapping, cap),
        _reason("quota_pressure", w.quota_pressure,
                [q.namespace for q in view.quotas if q.fraction >= w.quota_fraction], cap),
        _reason("deployment_failed", w.deployment_failed,
                [f"{j.namespace}/{j.name}" for j in view.jobs if j.deployment_failed], cap),
        _reason("alert_critical", w.alert_critical,
                [a.name for a in judged if a.severity == "critical"], cap),
        _reason("alert_warning", w.alert_warning,
                [a.name for a in judged if a.severity != "critical"], cap),
    ]
    kept = tuple(sorted((r for r in reasons if r is not None),
                        key=lambda r: (-r.penalty, r.reason)))
    total = sum(r.penalty for r in kept)
    return Score(round(max(0.0, 100.0 - total), 2), kept)
