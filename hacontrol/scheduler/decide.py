"""The leader's decisions: a pure function of (state, leader state, now) -> commands.

`decide` reads nothing but its arguments and changes none of them; the leader loop
(`loop.py`) proposes what it returns and records its notes in the `LeaderState`. Every
command is checked again when it is applied, so a decision made from a view that has since
moved on is refused or trimmed there, never applied blindly.

One round does one kind of work, in this order, and the loop runs the next round as soon
as the first one's commands are applied, so each kind sees the effects of the one before:

1. liveness: mark the first silent node down (its allocations become lost and are
   replaced when the command applies);
2. rollouts: the next step of every running deployment, with an automatic revert;
3. drains: allocations to move off draining nodes;
4. autoscaling and placement (with preemption), which do not disturb each other: a plan
   entry for an allocation that a scale-down stopped is refused on apply.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

from hacontrol.model.records import Allocation, Job
from hacontrol.model.states import (
    AllocState,
    DeploymentStatus,
    DesiredState,
    JobStatus,
    NodeStatus,
)
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from . import autoscale, drain, metric_scale, rollout
from .leader_state import JobKey, LeaderState
from .liveness import DEFAULT_GRACE_S, Heard, judge
from .placement import Demand, NodeRoom, plan_placements
from .view import placement_inputs

# A round's survey costs about the same whatever the plan's size (it builds every node's
# room), so larger plans place more per CPU second: 100,000 on 5,000 nodes in memory
# (`bench/placement_cpu.py --per-plan N`), 11,300 with 1,000 per plan, 13,700 with 5,000;
# in a cluster of 1,000 simulated nodes (`bench/scheduler.py --scale --quick`) 1,106 and
# 1,849 placements/s, since each round also waits for its plan's commit. At 5,000 nodes
# (`--scale --soak-s 0`, alternating, same half hour) 10,000 per plan placed 100,000 in
# 20.3-24.0 s (median 22.2) against 26.0-27.3 s with 5,000: a node woken by a plan then
# gets two assignments per answer instead of one, and the leader's syncs are a third of its
# time. A plan of 10,000 is a 264 KiB entry that a replica applies in about 75 ms (in
# memory); heartbeats go out before an entry this large is applied
# (`heartbeat_before_bytes`, raft/config.py).
MAX_PLACEMENTS_PER_PLAN = 10000

_FAILED = (AllocState.FAILED, AllocState.LOST)
_IN_FLIGHT = (AllocState.PENDING, AllocState.STARTING)
# Per job that scales on a metric: the scale-down in waiting (None: none) and the reason.
MetricNotes = dict[JobKey, tuple[autoscale.LowSince | None, str]]


@dataclass(frozen=True)
class Now:
    wall: float  # time.time(): deadlines, cooldowns and command timestamps
    mono: float  # time.monotonic(): heartbeats and the leader's start (LeaderState.since)


@dataclass(frozen=True)
class Proposal:
    """One command for the log."""

    op: str
    args: dict[str, Any]
    # A refusal (quota, a lost race) is logged and the round goes on; otherwise it ends
    # the round, and the next one decides again from the state as it is then.
    best_effort: bool = False
    warning: str | None = None  # logged when proposed


@dataclass(frozen=True)
class Decisions:
    proposals: list[Proposal] = field(default_factory=list)
    # Why each pending allocation stays unplaced; None when placement did not run.
    unplaced: dict[str, str] | None = None
    # Jobs the autoscaler changed, with the time its cooldown starts.
    scaled: dict[JobKey, float] = field(default_factory=dict)
    # Silent nodes to probe before judging them: (name, address of its agent).
    probes: list[tuple[str, str]] = field(default_factory=list)
    # Every running job that scales on a metric: what to remember of a scale-down in
    # waiting, and why; None when this round did not look at them.
    metric_notes: MetricNotes | None = None


@dataclass(frozen=True)
class Survey:
    """What `survey` read from the state: decisions made, and the frozen inputs of the
    placement still to plan (planning needs no lock on the state)."""

    decisions: Decisions
    place: bool = False  # placement is still to plan, from the fields below
    demands: list[Demand] = field(default_factory=list)
    rooms: list[NodeRoom] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)


def decide(m: StateMachine, leader: LeaderState, now: Now,
           grace_s: float = DEFAULT_GRACE_S) -> Decisions:
    """What the leader should propose now (see the module docstring for the order)."""
    return finish(survey(m, leader, now, grace_s))


def survey(m: StateMachine, leader: LeaderState, now: Now,
           grace_s: float = DEFAULT_GRACE_S) -> Survey:
    """The part of `decide` that reads the state (the caller holds it still)."""
    ready = [n.name for n in m.nodes.values() if n.status == NodeStatus.READY]
    heard = Heard(leader.contact(now.mono), leader.syncing(),
                  _Addressed(m), leader.probing, leader.probe_failed)
    verdicts = judge(ready, heard, leader.since, now.mono, grace_s)
    probes = [(name, m.nodes[name].address) for name in verdicts.probe]
    for name in verdicts.down:
        return Survey(Decisions([Proposal(C.NODE_STATUS, {"name": name, "status": "down"},
                                          warning=f"node {name} missed heartbeats for "
                                                  f"{grace_s:.1f}s: marking down")],
                                probes=probes))
    steps = deployment_steps(m, now.wall)
    if steps:
        return Survey(Decisions(steps, probes=probes))
    moves = drain_moves(m, now.wall)
    if moves:
        return Survey(Decisions([Proposal(C.MIGRATE, {"allocations": moves,
                                                      "reason": "node drain"})],
                                probes=probes))
    scales, scaled, notes = autoscale_proposals(m, leader, now)
    demands, rooms, blocked = placement_inputs_of(m, now.wall)
    return Survey(Decisions(scales, None, scaled, probes, notes), True, demands, rooms,
                  blocked)


def finish(s: Survey) -> Decisions:
    """The part of `decide` that needs only the survey: the placement plan, if any."""
    if not s.place:
        return s.decisions
    plan, unplaced = placement_proposal(s.demands, s.rooms, s.blocked)
    d = s.decisions
    return Decisions(d.proposals + plan, unplaced, d.scaled, d.probes, d.metric_notes)


class _Addressed(Collection[str]):
    """The nodes whose agent gave an address the leader can probe."""

    def __init__(self, m: StateMachine) -> None:
        self._nodes = m.nodes

    def __contains__(self, name: object) -> bool:
        node = self._nodes.get(name) if isinstance(name, str) else None
        return node is not None and bool(node.address)

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._nodes if n in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


# ------------------------------------------------------------------ rollouts

def deployment_steps(m: StateMachine, now_wall: float) -> list[Proposal]:
    out: list[Proposal] = []
    for job in m.jobs.values():
        dep = job.rollout
        if dep is None or dep.status != DeploymentStatus.RUNNING:
            continue
        upd = job.spec.update_policy
        new: list[rollout.Allocation] = []
        old: list[rollout.Allocation] = []
        for a in m.job_allocs(job):
            if a.desired != DesiredState.RUN or a.terminal and a.state not in _FAILED:
                continue
            one = rollout.Allocation(a.id, a.state, a.health, a.running_since)
            (new if a.version == job.version else old).append(one)
        old = [i for i in old if i.state not in _FAILED]
        step = rollout.next_step(job.spec.count, upd.max_parallel, upd.min_healthy_s,
                                 dep.deadline, upd.auto_revert, dep.from_version, new, old,
                                 now_wall)
        if step.empty:
            continue
        out.append(Proposal(C.DEPLOY_STEP, {
            "namespace": job.namespace, "name": job.name, "version": job.version,
            "start": step.start, "stop": step.stop, "status": step.status,
            "message": step.message}))
        if step.revert_to is not None:
            out.append(Proposal(C.JOB_REVERT, {
                "namespace": job.namespace, "name": job.name, "version": step.revert_to},
                warning=f"deployment of {job.namespace}/{job.name} v{job.version} failed: "
                        f"reverting to v{step.revert_to}"))
    return out


# -------------------------------------------------------------------- drains

def drain_moves(m: StateMachine, now_wall: float) -> list[str]:
    moves: list[str] = []
    for node in m.nodes.values():
        if not node.drain:
            continue
        on_node = []
        for a in m.node_allocs(node.name):
            if a.desired == DesiredState.RUN and not a.terminal:
                job = m.jobs.get((a.namespace, a.job))
                par = job.spec.update_policy.max_parallel if job else 1
                on_node.append(drain.OnNode(a.id, (a.namespace, a.job), par))
        if not on_node:
            continue
        in_flight: dict[tuple[str, str], int] = {}
        for a in m.allocs.values():
            if (a.desired == DesiredState.RUN and a.state in _IN_FLIGHT
                    and a.node != node.name):
                in_flight[(a.namespace, a.job)] = in_flight.get((a.namespace, a.job), 0) + 1
        moves += drain.to_migrate(on_node, in_flight, now_wall, node.drain_deadline)
    return moves


# --------------------------------------------------------------- autoscaling

def autoscale_proposals(m: StateMachine, leader: LeaderState, now: Now
                        ) -> tuple[list[Proposal], dict[JobKey, float], MetricNotes]:
    metrics = leader.alloc_metrics
    out: list[Proposal] = []
    scaled: dict[JobKey, float] = {}
    notes: MetricNotes = {}
    for job in m.jobs.values():
        sc = job.spec.scaling
        if sc is None or job.status != JobStatus.RUNNING:
            continue
        key = (job.namespace, job.name)
        if sc.metric is not None:
            md = autoscale.decide_metric(
                job.spec.count, metric_scale.reading(m, job, leader, now.mono),
                metric_scale.rule_of(sc), metric_scale.last_change(job, leader),
                leader.scale_low.get(key), now.wall)
            notes[key] = (md.low, md.reason)
            d = None if md.count is None else autoscale.ScaleDecision(md.count, md.reason)
        else:
            used = [metrics[a.id]["cpu_percent"] / 100.0 for a in m.job_allocs(job)
                    if a.state == AllocState.RUNNING and a.id in metrics
                    and metrics[a.id].get("cpu_percent") is not None]
            d = autoscale.decide(job.spec.count, job.spec.resources.cpu, used, sc.min_count,
                                 sc.max_count, sc.cpu_target, leader.last_scaled.get(key),
                                 sc.cooldown_s, now.wall)
        if d is None:
            continue
        scaled[key] = now.wall
        out.append(Proposal(C.JOB_SCALE, {"namespace": job.namespace, "name": job.name,
                                          "count": d.count, "source": "autoscaler",
                                          "reason": d.reason}, best_effort=True))
    return out, scaled, notes


# ----------------------------------------------------------------- placement

def _waiting_for(m: StateMachine, job: Job) -> list[str]:
    """Names of the jobs `job` still waits for (batch jobs that have not completed)."""
    waiting = []
    for dep in job.spec.depends_on or ():
        other = m.jobs.get((job.namespace, dep))
        if other is None or m.job_status(other) != JobStatus.COMPLETE:
            waiting.append(dep)
    return waiting


def fenced_until(m: StateMachine, job: Job) -> float | None:
    """Until when the job's allocations lost with a down node may still run there.

    A job with `disconnect.stop_after_s` has its agent stop them once it has been cut off
    from the leader that long; its silence began before the node was marked down (when
    its allocations became lost), so by lost time + stop_after_s none of them runs any
    more. Placing their replacements earlier could run two copies when the node comes
    back. None: nothing to wait for (jobs without the setting are replaced at once and a
    returning node stops its stale copies, as Nomad does by default).
    """
    dis = job.spec.disconnect
    if dis is None or not dis.stop_after_s:
        return None
    until = None
    for a in m.job_allocs(job):
        if a.state == AllocState.LOST:
            end = a.updated_at + dis.stop_after_s
            until = end if until is None else max(until, end)
    return until


def placement_inputs_of(m: StateMachine, now_wall: float | None = None
                        ) -> tuple[list[Demand], list[NodeRoom], dict[str, str]]:
    """Placement's inputs for the pending allocations that may be placed now, and why the
    others wait."""
    blocked: dict[str, str] = {}
    ready: dict[int, list[str]] = {}  # priority -> ids of allocations that may be placed
    # Each job with pending allocations is judged once, and its ids taken in one step.
    for key, pending in m.pending_by_job().items():
        job = m.jobs.get(key)
        if job is None:
            continue
        waiting = _waiting_for(m, job)
        if waiting:
            why = "waiting for job(s) to complete: " + ", ".join(waiting)
            blocked.update(dict.fromkeys(pending, why))
            continue
        until = fenced_until(m, job) if now_wall is not None else None
        if now_wall is not None and until is not None and until > now_wall:
            why = (f"waiting {until - now_wall:.1f}s more for allocations lost with their "
                   f"node to stop there (disconnect.stop_after_s)")
            blocked.update(dict.fromkeys(pending, why))
            continue
        ready.setdefault(job.spec.priority, []).extend(pending)
    if not ready:
        # Nothing to place: building the rooms of every node (a walk over every allocation,
        # under the apply lock) would only delay reads and applies.
        return [], [], blocked
    # Plan only what one plan entry can carry, highest priority first, then by id: planning
    # the rest now would be thrown away and redone after this plan applies.
    first: list[Allocation] = []
    allocs = m.allocs
    for priority in sorted(ready, reverse=True):
        room = MAX_PLACEMENTS_PER_PLAN - len(first)
        if room <= 0:
            break
        first += (allocs[i] for i in heapq.nsmallest(room, ready[priority]))
    demands, rooms = placement_inputs(m, first)
    return demands, rooms, blocked


def placement_proposal(demands: list[Demand], rooms: list[NodeRoom], blocked: dict[str, str]
                       ) -> tuple[list[Proposal], dict[str, str]]:
    """The plan for the demands (at most one), and why the rest stay pending."""
    if not demands:
        return [], blocked
    plan = plan_placements(demands, rooms)
    unplaced = {**plan.unplaced, **blocked}
    evictions = [list(e) for e in plan.evictions]
    if not plan.placements and not evictions:
        return [], unplaced
    batch = plan.placements[:MAX_PLACEMENTS_PER_PLAN]
    return [Proposal(C.PLAN, {"placements": [list(p) for p in batch],
                              "evictions": evictions})], unplaced
