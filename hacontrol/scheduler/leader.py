"""The leader's duties: place pending work, notice dead nodes, roll out updates, drain
nodes and scale jobs.

Runs on every replica but acts only while this replica is the Raft leader. Every decision
is a pure function (`placement`, `liveness`, `rollout`, `drain`, `autoscale`); this loop only
reads a consistent view, asks them, and proposes the outcome through the log, where it is
checked again on apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from hacontrol.api.errors import ApiError
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.state.model import DESIRED_RUN, NODE_READY, PENDING, STARTING, Job

from . import autoscale, drain, rollout
from .liveness import DEFAULT_GRACE_S, nodes_to_mark_down
from .placement import plan_placements
from .view import placement_inputs

if TYPE_CHECKING:
    from hacontrol.server import Controller

log = logging.getLogger(__name__)

IDLE_WAKE_S = 0.25
MAX_PLACEMENTS_PER_PLAN = 1000


def _waiting_for(m: StateMachine, job: Job) -> list[str]:
    """Names of the jobs `job` still waits for (batch jobs that have not completed)."""
    waiting = []
    for dep in job.spec.option("depends_on", []):
        other = m.jobs.get((job.namespace, dep))
        if other is None or m.job_status(other) != "complete":
            waiting.append(dep)
    return waiting


def _deployments(m: StateMachine, now_wall: float) -> list[tuple[Job, rollout.Step]]:
    out = []
    for job in m.jobs.values():
        dep = job.deployment
        if dep is None or dep.get("status") != "running":
            continue
        upd = job.spec.option("update") or {}
        new, old = [], []
        for a in m.job_allocs(job):
            if a.desired != DESIRED_RUN or a.terminal and a.state not in ("failed", "lost"):
                continue
            inst = rollout.Instance(a.id, a.state, a.health, a.running_since)
            (new if a.version == job.version else old).append(inst)
        old = [i for i in old if i.state not in ("failed", "lost")]
        step = rollout.next_step(job.spec.count, int(upd.get("max_parallel", 1)),
                                 float(upd.get("min_healthy_s", 0.0)), float(dep["deadline"]),
                                 bool(upd.get("auto_revert", False)),
                                 int(dep["from_version"]), new, old, now_wall)
        if not step.empty:
            out.append((job, step))
    return out


def _drains(m: StateMachine, now_wall: float) -> list[str]:
    moves: list[str] = []
    for node in m.nodes.values():
        if not node.drain:
            continue
        on_node = []
        for a in m.allocs.values():
            if a.node == node.name and a.desired == DESIRED_RUN and not a.terminal:
                job = m.jobs.get((a.namespace, a.job))
                par = int((job.spec.option("update") or {}).get("max_parallel", 1)) if job else 1
                on_node.append(drain.OnNode(a.id, (a.namespace, a.job), par))
        if not on_node:
            continue
        in_flight: dict[tuple[str, str], int] = {}
        for a in m.allocs.values():
            if a.desired == DESIRED_RUN and a.state in (PENDING, STARTING) and a.node != node.name:
                in_flight[(a.namespace, a.job)] = in_flight.get((a.namespace, a.job), 0) + 1
        moves += drain.to_migrate(on_node, in_flight, now_wall, node.drain_deadline)
    return moves


def _priority(m: StateMachine, a: Any) -> int:
    job = m.jobs.get((a.namespace, a.job))
    return job.spec.priority if job is not None else 0


class LeaderLoop:
    def __init__(self, ctl: Controller, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.ctl = ctl
        self.grace_s = grace_s
        self.leader_since: float | None = None
        self.leader_term: int | None = None
        self.last_scaled: dict[tuple[str, str], float] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                log.info("leader step: %s", err.message)
            except Exception:
                log.exception("leader step failed")
            await self.ctl.wait_changed(IDLE_WAKE_S)

    async def step(self) -> None:
        st = self.ctl.replica.status()
        if st.role != "leader":
            self.leader_since = None
            self.leader_term = None
            return
        if self.leader_term != st.term:
            self.leader_term = st.term
            self.leader_since = time.monotonic()
            self.ctl.heartbeats.clear()
            self.ctl.unplaced.clear()
            self.last_scaled.clear()
            log.info("leading term %d", st.term)
            self.ctl.local_event("leader_elected", leader=self.ctl.me.id, term=st.term)
        assert self.leader_since is not None

        ready = self.ctl.replica.read(
            lambda m: [n.name for n in m.nodes.values() if n.status == NODE_READY])
        for name in nodes_to_mark_down(ready, self.ctl.heartbeats, self.leader_since,
                                       time.monotonic(), self.grace_s):
            log.warning("node %s missed heartbeats for %.1fs: marking down", name, self.grace_s)
            await self.ctl.write(C.NODE_STATUS, {"name": name, "status": "down"})
            return  # the view changed; replan on the next step

        now = time.time()
        steps = self.ctl.replica.read(lambda m: _deployments(m, now))
        for job, step in steps:
            await self._deploy(job, step)

        moves = self.ctl.replica.read(lambda m: _drains(m, now))
        if moves:
            await self.ctl.write(C.MIGRATE, {"allocations": moves, "reason": "node drain"})

        await self._autoscale(now)
        await self._place()

    async def _place(self) -> None:
        def gather(m: StateMachine) -> tuple[Any, Any, dict[str, str]]:
            blocked: dict[str, str] = {}
            pending = []
            for a in m.pending_allocs():
                job = m.jobs.get((a.namespace, a.job))
                if job is None:
                    continue
                waiting = _waiting_for(m, job)
                if waiting:
                    blocked[a.id] = "waiting for job(s) to complete: " + ", ".join(waiting)
                    continue
                pending.append(a)
            # Plan only what one plan entry can carry, highest priority first: planning the
            # rest now would be thrown away and redone after this plan applies.
            pending.sort(key=lambda a: (-_priority(m, a), a.id))
            demands, rooms = placement_inputs(m, pending[:MAX_PLACEMENTS_PER_PLAN])
            return demands, rooms, blocked

        demands, rooms, blocked = self.ctl.replica.read(gather)
        if not demands:
            self.ctl.unplaced = blocked
            return
        plan = plan_placements(demands, rooms)
        self.ctl.unplaced = {**plan.unplaced, **blocked}
        evictions = [list(e) for e in getattr(plan, "evictions", [])]
        if plan.placements or evictions:
            batch = plan.placements[:MAX_PLACEMENTS_PER_PLAN]
            res = await self.ctl.write(C.PLAN, {"placements": [list(p) for p in batch],
                                                "evictions": evictions})
            if res.get("rejected"):
                log.info("plan: %d placed, %d rejected on apply", len(res["placed"]),
                         len(res["rejected"]))

    async def _deploy(self, job: Job, step: rollout.Step) -> None:
        args = {"namespace": job.namespace, "name": job.name, "version": job.version,
                "start": step.start, "stop": step.stop, "status": step.status,
                "message": step.message}
        await self.ctl.write(C.DEPLOY_STEP, args)
        if step.revert_to is not None:
            log.warning("deployment of %s/%s v%d failed: reverting to v%d", job.namespace,
                        job.name, job.version, step.revert_to)
            await self.ctl.write(C.JOB_REVERT, {"namespace": job.namespace, "name": job.name,
                                                "version": step.revert_to})

    async def _autoscale(self, now: float) -> None:
        metrics = self.ctl.alloc_metrics

        def gather(m: StateMachine) -> list[tuple[Job, list[float]]]:
            out = []
            for job in m.jobs.values():
                if job.spec.option("scaling") is None or job.status != "running":
                    continue
                used = [metrics[a.id]["cpu_percent"] / 100.0 for a in m.job_allocs(job)
                        if a.state == "running" and a.id in metrics
                        and metrics[a.id].get("cpu_percent") is not None]
                out.append((job, used))
            return out

        for job, used in self.ctl.replica.read(gather):
            sc = job.spec.option("scaling")
            key = (job.namespace, job.name)
            d = autoscale.decide(job.spec.count, job.spec.resources.cpu, used, sc["min"],
                                 sc["max"], sc["cpu_target"], self.last_scaled.get(key),
                                 sc["cooldown_s"], now)
            if d is None:
                continue
            self.last_scaled[key] = now
            try:
                await self.ctl.write(C.JOB_SCALE, {"namespace": job.namespace,
                                                   "name": job.name, "count": d.count,
                                                   "source": "autoscaler", "reason": d.reason})
            except ApiError as err:  # quota: recorded as an event by the state machine
                log.info("autoscale %s/%s to %d refused: %s", job.namespace, job.name, d.count,
                         err.message)



