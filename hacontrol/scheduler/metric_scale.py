"""What a job that scales on a metric reads: its reading and its rule, from the replicated
state and the leader's memory. The decision itself is `autoscale.decide_metric`.

Where the values live: in the leader's memory only, never in the log. A value is an
observation that its source sends again every few seconds, not an intent to keep: a
pushed value is trusted for `metric.stale_s` after it arrived, a scraped one while its
allocation runs and its agent keeps reporting it. A new leader knows none until the
next push or sync, and without a value nothing changes, so a failover can delay a
scaling step but never cause one. (A log entry per push would cost a replicated, fsynced
write per value, and grow the log by one entry per push for nothing that must survive.)
"""

from __future__ import annotations

from hacontrol.model.messages import SCALING_METRIC_KEY
from hacontrol.model.records import Job
from hacontrol.model.spec import ScalingSpec
from hacontrol.model.states import AllocState, DesiredState, MetricSource
from hacontrol.state.machine import StateMachine

from .autoscale import Reading, Rule
from .leader_state import LeaderState


def rule_of(sc: ScalingSpec) -> Rule:
    assert sc.target_per_instance is not None  # the parser sets it with `metric`
    return Rule(sc.min_count, sc.max_count, sc.target_per_instance, sc.cooldown_s,
                sc.down_delay_s, sc.band)


def reading(m: StateMachine, job: Job, leader: LeaderState, now_mono: float
            ) -> Reading | None:
    """The metric's total over the job now; None when there is no fresh value."""
    sc = job.spec.scaling
    metric = sc.metric if sc is not None else None
    if metric is None:
        return None
    if metric.source == MetricSource.EXTERNAL:
        pushed = leader.pushed.get(job.key)
        if (pushed is None or pushed.metric != metric.name
                or now_mono - pushed.at > metric.stale_after_s):
            return None
        return Reading(pushed.value)
    values = []
    for a in m.job_allocs(job):
        if a.state == AllocState.RUNNING and a.desired == DesiredState.RUN:
            v = leader.alloc_metrics.get(a.id, {}).get(SCALING_METRIC_KEY)
            values.append(float(v) if isinstance(v, int | float) and
                          not isinstance(v, bool) else None)
    known = [v for v in values if v is not None]
    if not known:
        return None
    return Reading(sum(known), complete=len(known) == len(values))


def last_change(job: Job, leader: LeaderState) -> float:
    """When the job's count or spec last changed (wall time): the later of what the log
    records and what this leader proposed, so a new leader keeps the cooldown."""
    return max(job.updated_at, leader.last_scaled.get(job.key, job.updated_at))
