"""A frozen view of the cluster: what the health score and the alert rules judge.

`build_view` reads the replicated state (the caller holds it still, under the apply lock)
plus what only a process knows (the replicas' reachability and lag, how long the cluster
went without a leader) and returns plain frozen rows; everything that judges them
(`score.py`, `hacontrol/alerts/evaluate.py`) is a pure function of the view.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from hacontrol.model.alerts import AlertStatus, AlertWhen
from hacontrol.model.cluster_config import ClusterConfig
from hacontrol.model.records import Allocation
from hacontrol.model.resources import Quota, Usage
from hacontrol.model.states import (
    TERMINAL_STATES,
    AllocState,
    DeploymentStatus,
    DesiredState,
    NodeStatus,
)
from hacontrol.state.machine import StateMachine

# How far back restarts and failures are looked at (the longest window a rule may ask for
# is longer, but the event buffer rarely reaches further back than this anyway).
LOOKBACK_S = 3600.0
# States that make an allocation worth judging whatever its restarts.
_NOTED_STATES = frozenset({AllocState.PENDING, AllocState.FAILED, AllocState.LOST})


@dataclass(frozen=True)
class ReplicaRow:
    id: str
    up: bool  # answering and healthy
    lag: int | None  # log entries behind the leader; None: not heard from


@dataclass(frozen=True)
class NodeRow:
    name: str
    down: bool
    draining: bool


@dataclass(frozen=True)
class AllocRow:
    """An allocation worth judging: failed or lost lately, pending, or restarted."""

    id: str
    namespace: str
    job: str
    state: AllocState
    wanted: bool  # desired to run
    created_at: float
    updated_at: float
    # (wall time, restarts so far) as the log saw them change, oldest first
    restarts: tuple[tuple[float, int], ...] = ()

    def restarts_within(self, now: float, window_s: float) -> int:
        """Restarts in the `window_s` before `now`: the count now less the count at the
        window's start (the last mark before it; 0 for an allocation made within it; else
        the first mark inside it, which can miss one restart when the log kept no mark
        before the window)."""
        if not self.restarts:
            return 0
        start = now - window_s
        latest = self.restarts[-1][1]
        base = None
        for t, n in reversed(self.restarts):  # a few marks each: the latest first
            if t <= start:
                base = n
                break
        if base is None:
            base = 0 if self.created_at >= start else self.restarts[0][1]
        return max(latest - base, 0)


@dataclass(frozen=True)
class QuotaRow:
    namespace: str
    fraction: float  # the highest of used/limit over the quota's limits
    dimension: str  # which limit that is


@dataclass(frozen=True)
class JobRow:
    namespace: str
    name: str
    deployment_failed: bool
    version: int


@dataclass(frozen=True)
class AlertRow:
    name: str
    when: AlertWhen
    severity: str
    firing: bool


@dataclass(frozen=True)
class ClusterView:
    now: float
    leader: str | None
    replicas: tuple[ReplicaRow, ...] = ()
    nodes: tuple[NodeRow, ...] = ()
    allocations: tuple[AllocRow, ...] = ()
    quotas: tuple[QuotaRow, ...] = ()
    jobs: tuple[JobRow, ...] = ()
    alerts: tuple[AlertRow, ...] = ()
    leaderless_s: float = 0.0  # how long the cluster was without a leader before this term
    leading_s: float = 0.0  # how long the current leader has led (as it knows it)
    config: ClusterConfig = field(default_factory=ClusterConfig)


def quota_fraction(quota: Quota, used: Usage) -> tuple[float, str]:
    """The fullest of the namespace's limits: (used / limit, which limit)."""
    best, which = 0.0, ""
    for name, limit, value in (("cpu", quota.cpu, used.cpu),
                               ("memory_mb", quota.memory_mb, used.memory_mb),
                               ("processes", quota.processes, used.processes)):
        if limit is None:
            continue
        frac = (value / limit) if limit > 0 else (1.0 if value > 0 else 0.0)
        if frac > best:
            best, which = frac, name
    return best, which


def _restart_marks(m: StateMachine, since: float) -> dict[str, list[tuple[float, int]]]:
    """Each allocation's restart counts as the event buffer recorded them (every replica
    derives the same events from the log, so a new leader sees the same marks)."""
    marks: dict[str, list[tuple[float, int]]] = {}
    for e in m.events:
        restarts = e.get("restarts")
        if not restarts or e["ts"] < since or not isinstance(restarts, int):
            continue  # most events carry no restarts, or none yet
        alloc = e.get("alloc")
        if alloc is not None:
            marks.setdefault(str(alloc), []).append((float(e["ts"]), restarts))
    return marks


def _noted(m: StateMachine, since: float) -> list[Allocation]:
    """The allocations worth judging: pending, failed or lost lately, or restarted (and
    not long finished). One pass over every allocation, the cheap test first: at 100,000
    allocations this walk is most of what the view costs (bench/alerts.py)."""
    out = []
    for a in m.allocs.values():
        if not a.restarts and a.state not in _NOTED_STATES:
            continue
        if a.state == AllocState.PENDING:
            if a.desired == DesiredState.RUN:
                out.append(a)
        elif a.updated_at >= since or (a.restarts and a.state not in TERMINAL_STATES):
            out.append(a)
    return out


def build_view(m: StateMachine, now: float, replicas: Iterable[ReplicaRow] = (),
               leader: str | None = None, leaderless_s: float = 0.0,
               leading_s: float = 0.0) -> ClusterView:
    """The view at wall time `now`; the caller holds the state still."""
    store = m.store
    since = now - LOOKBACK_S
    noted = _noted(m, since)
    marks = _restart_marks(m, since) if any(a.restarts for a in noted) else {}
    rows = []
    for a in noted:
        seen = marks.get(a.id, [])
        if a.restarts and (not seen or seen[-1][1] != a.restarts):
            seen = [*seen, (a.updated_at, a.restarts)]
        rows.append(AllocRow(a.id, a.namespace, a.job, a.state,
                             a.desired == DesiredState.RUN, a.created_at, a.updated_at,
                             tuple(seen)))
    quotas = []
    for ns, quota in m.namespaces.items():
        frac, which = quota_fraction(quota, m.namespace_usage(ns))
        if which:
            quotas.append(QuotaRow(ns, frac, which))
    jobs = tuple(JobRow(j.namespace, j.name, j.rollout is not None
                        and j.rollout.status == DeploymentStatus.FAILED, j.version)
                 for j in m.jobs.values())
    alerts = tuple(AlertRow(r.name, r.when, str(r.severity),
                            store.alert_states.get(r.name) is not None
                            and store.alert_states[r.name].status == AlertStatus.FIRING)
                   for r in store.alert_rules.values())
    return ClusterView(
        now=now, leader=leader, replicas=tuple(replicas),
        nodes=tuple(NodeRow(n.name, n.status == NodeStatus.DOWN, bool(n.drain))
                    for n in m.nodes.values()),
        allocations=tuple(rows), quotas=tuple(quotas), jobs=jobs, alerts=alerts,
        leaderless_s=leaderless_s, leading_s=leading_s,
        config=store.cluster_config or ClusterConfig())
