"""A frozen view of the cluster: what the health score and the alert rules judge.

`capture` reads the replicated state (the caller holds it still, under the apply lock)
plus what only a process knows (the replicas' reachability and lag, how long the cluster
went without a leader), `Captured.view()` turns that into plain frozen rows (`build_view`
does both); everything that judges them (`score.py`, `hacontrol/alerts/evaluate.py`) is a
pure function of the view. What is worth judging among the allocations comes from the
tally the state machine keeps as it applies (`state/tally.py`), so building a view costs
O(nodes + jobs + namespaces + rules + the allocations pending, failed lately or restarted
within the windows judged), not a walk over every allocation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

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
# is longer; restart marks were taken from the event buffer, which rarely reached further
# back than this, and windows are still judged as they were then).
LOOKBACK_S = 3600.0


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
    jobs: tuple[JobRow, ...] = ()  # from the state: only those whose rollout failed
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


def restart_judged(m: StateMachine) -> tuple[float, float]:
    """(the longest restart window judged, the fewest restarts judged flapping): the
    score's and every `restart_flapping` rule's (an unbounded window when a rule would
    count an allocation that never restarted)."""
    store = m.store
    health = (store.cluster_config or ClusterConfig()).health
    longest, fewest = health.flapping_window_s, float(health.flapping_restarts)
    for rule in store.alert_rules.values():
        if rule.when == AlertWhen.RESTART_FLAPPING:
            if rule.threshold <= 0:
                return math.inf, rule.threshold
            longest, fewest = max(longest, rule.window_s), min(fewest, rule.threshold)
    return longest, fewest


# What a view keeps of an allocation, copied under the apply lock: (id, namespace, job,
# state, wanted (desired to run), created_at, updated_at, restarts, restart marks).
Copied = tuple[str, str, str, AllocState, bool, float, float, int, tuple[tuple[float, int], ...]]


def copied(a: Allocation, marks: Iterable[tuple[float, int]]) -> Copied:
    return (a.id, a.namespace, a.job, a.state, a.desired == DesiredState.RUN, a.created_at,
            a.updated_at, a.restarts, tuple(marks))


def alloc_row(c: Copied, since: float) -> AllocRow:
    """The row of an allocation with its restart marks from `since` on, ending with its
    count now (at its `updated_at` when no kept mark has it)."""
    alloc_id, namespace, job, state, wanted, created_at, updated_at, restarts, marks = c
    seen = [mark for mark in marks if mark[0] >= since]
    if restarts and (not seen or seen[-1][1] != restarts):
        seen.append((updated_at, restarts))
    return AllocRow(alloc_id, namespace, job, state, wanted, created_at, updated_at,
                    tuple(seen))


def _table_order(c: Copied) -> int:
    """An allocation's place in the table: ids end with the sequence number they were
    made with (`lifecycle.new_alloc`), and the table is in creation order."""
    tail = c[0].rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def noted(m: StateMachine, now: float) -> list[Copied]:
    """The allocations worth judging at `now`, from the tally the state machine keeps
    (`state/tally.py`): pending and wanted; failed or lost within `LOOKBACK_S`; restarted
    (not pending, and running or changed within `LOOKBACK_S`) with a restart mark inside
    the longest restart window judged, unless made before that window and restarted fewer
    times than any threshold since its oldest kept mark (no window can count more). Costs
    what it finds, not a walk over every allocation: the score and the rules judge the
    same rows as a walk over all would give them (tests/unit/test_alert_tally.py)."""
    tally, allocs = m.store.tally, m.allocs
    since = now - LOOKBACK_S
    found: dict[str, Allocation] = {i: allocs[i] for i in tally.pending}
    for alloc_id in tally.failed_since(since):
        a = allocs[alloc_id]
        if a.updated_at >= since:
            found[alloc_id] = a
    window, fewest = restart_judged(m)
    start, rise = now - window, tally.rise
    for alloc_id in tally.restarted_after(start):
        a = allocs[alloc_id]
        if rise[alloc_id] < fewest and a.created_at < start:
            continue
        if a.state != AllocState.PENDING and (a.updated_at >= since
                                              or a.state not in TERMINAL_STATES):
            found[alloc_id] = a
    return [copied(a, tally.marks.get(i, ())) for i, a in found.items()]


def assemble(m: StateMachine, now: float, replicas: Iterable[ReplicaRow],
             leader: str | None, leaderless_s: float, leading_s: float) -> ClusterView:
    """The view but its allocations (O(nodes + jobs + namespaces + rules), the jobs only
    looked at)."""
    store = m.store
    quotas = []
    for ns, quota in m.namespaces.items():
        frac, which = quota_fraction(quota, m.namespace_usage(ns))
        if which:
            quotas.append(QuotaRow(ns, frac, which))
    # Only the jobs whose rollout failed: nothing else of a job is judged, and a row for
    # each of 10,000 jobs would be most of a view's cost under the lock.
    jobs = tuple(JobRow(j.namespace, j.name, True, j.version) for j in m.jobs.values()
                 if j.rollout is not None and j.rollout.status == DeploymentStatus.FAILED)
    alerts = tuple(AlertRow(r.name, r.when, str(r.severity),
                            store.alert_states.get(r.name) is not None
                            and store.alert_states[r.name].status == AlertStatus.FIRING)
                   for r in store.alert_rules.values())
    return ClusterView(
        now=now, leader=leader, replicas=tuple(replicas),
        nodes=tuple(NodeRow(n.name, n.status == NodeStatus.DOWN, bool(n.drain))
                    for n in m.nodes.values()),
        quotas=tuple(quotas), jobs=jobs, alerts=alerts,
        leaderless_s=leaderless_s, leading_s=leading_s,
        config=store.cluster_config or ClusterConfig())


@dataclass(frozen=True)
class Captured:
    """What a view is made of, read under the apply lock: every row but the allocations',
    and the allocations worth judging as copies. `view()` makes their rows (and sorts
    them) after the lock is released: the lock is held only for the copies."""

    base: ClusterView
    allocations: tuple[Copied, ...]

    def view(self) -> ClusterView:
        since = self.base.now - LOOKBACK_S
        rows = tuple(alloc_row(c, since) for c in sorted(self.allocations, key=_table_order))
        return replace(self.base, allocations=rows)


def capture(m: StateMachine, now: float, replicas: Iterable[ReplicaRow] = (),
            leader: str | None = None, leaderless_s: float = 0.0,
            leading_s: float = 0.0) -> Captured:
    """What the view at wall time `now` needs; the caller holds the state still. Restarts
    are in it as far back as the longest restart window of the cluster config and the
    rules (a score judged with other weights than the config's must not ask for longer)."""
    return Captured(assemble(m, now, replicas, leader, leaderless_s, leading_s),
                    tuple(noted(m, now)))


def build_view(m: StateMachine, now: float, replicas: Iterable[ReplicaRow] = (),
               leader: str | None = None, leaderless_s: float = 0.0,
               leading_s: float = 0.0) -> ClusterView:
    """The view at wall time `now` (`capture`, then its rows made at once)."""
    return capture(m, now, replicas, leader, leaderless_s, leading_s).view()
