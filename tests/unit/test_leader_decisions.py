"""The leader's decisions against an in-memory state machine: no Raft, no processes.

Each test plays a cluster forward: the leader decides (`decide`, a pure function), its
commands are applied with `StateMachine.apply` as the log would apply them, and a fake
agent per node reports what a real one would (placed allocations start, stopped ones stop).
"""

from __future__ import annotations

from typing import Any

from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.scheduler.decide import Decisions, Now, decide
from hacontrol.scheduler.leader_state import LeaderState
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

SLEEP: dict[str, Any] = {"command": ["sleep", "600"], "resources": {"cpu": 0.5,
                                                                    "memory_mb": 64}}
GRACE_S = 3.0


class World:
    """A state machine, a clock, the leader's memory and the agents of some nodes."""

    def __init__(self, *nodes: str, cpu: float = 2.0) -> None:
        self.m = StateMachine()
        self.index = 0
        self.wall = 1_000.0
        self.mono = 0.0
        self.leader = LeaderState(term=1, since=self.mono)
        self.silent: set[str] = set()  # nodes whose agent no longer syncs
        self.dead: set[str] = set()  # silent nodes whose agent does not answer probes either
        self.health: dict[int, str] = {}  # what allocations of a job version report
        for name in nodes:
            self.apply(C.NODE_REGISTER, {"name": name, "cpu": cpu, "memory_mb": 1024,
                                         "address": f"http://{name}", "labels": {},
                                         "attributes": {}})

    def apply(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        cmd = C.Command(op, self.wall, args, f"key-{self.index}")
        result = self.m.apply(cmd.encode(), self.index)
        assert self.m.broken is None
        return result

    def put_job(self, name: str, **spec: Any) -> None:
        body = parse_job_spec({**SLEEP, **spec}).to_dict()
        res = self.apply(C.JOB_PUT, {"namespace": "default", "name": name, "spec": body})
        assert res["ok"], res

    def tick(self, seconds: float = 0.1) -> None:
        self.wall += seconds
        self.mono += seconds

    def decide(self) -> Decisions:
        """The leader's decisions, after probing the silent nodes it asks to probe (as
        `LeaderLoop` does between two rounds)."""
        d = decide(self.m, self.leader, Now(self.wall, self.mono), GRACE_S)
        if not d.probes:
            return d
        for name, address in d.probes:
            assert address == f"http://{name}"
            if name in self.dead:
                self.leader.probe_failed[name] = self.mono
            else:
                self.leader.record_heartbeat(name, self.mono)
        return decide(self.m, self.leader, Now(self.wall, self.mono), GRACE_S)

    def round(self) -> list[str]:
        """One leader round, applied the way the leader loop applies it; the ops proposed."""
        d = self.decide()
        self.leader.last_scaled.update(d.scaled)
        self.leader.note_scaling(d.metric_notes)
        if d.unplaced is not None:
            self.leader.unplaced = d.unplaced
        for p in d.proposals:
            res = self.apply(p.op, p.args)
            if not res["ok"] and not p.best_effort:
                break
        return [p.op for p in d.proposals]

    def agents(self) -> None:
        """Every agent that still syncs heartbeats and reports its allocations."""
        for node in self.m.nodes.values():
            if node.name in self.silent:
                continue
            self.leader.record_heartbeat(node.name, self.mono)
            updates = []
            for a in self.m.node_allocs(node.name):
                if a.desired == "stop" and not a.terminal:
                    updates.append({"id": a.id, "state": "stopped"})
                elif a.desired == "run" and a.state in ("pending", "starting"):
                    updates.append(self.started(a))
            if updates:
                assert self.apply(C.ALLOC_UPDATE, {"node": node.name, "updates": updates})["ok"]

    def started(self, a: Any) -> dict[str, Any]:
        """An agent's report of allocation `a` now running."""
        return {"id": a.id, "state": "running", "pid": 1, "health": self.health.get(a.version)}

    def settle(self, rounds: int = 50, step_s: float = 0.1) -> None:
        """Run leader rounds and agents until nothing more happens."""
        for _ in range(rounds):
            before = self.index
            self.agents()
            self.round()
            self.tick(step_s)
            if self.index == before:
                return

    def live(self, job: str) -> list[Any]:
        return [a for a in self.m.allocs.values()
                if a.job == job and a.desired == "run" and a.state == "running"]


def test_pending_work_is_placed_and_explained_when_it_cannot_be() -> None:
    w = World("n1")
    w.put_job("web", count=3)
    w.put_job("huge", count=1, resources={"cpu": 64, "memory_mb": 64})
    w.settle()
    assert len(w.live("web")) == 3
    (huge,) = [a for a in w.m.allocs.values() if a.job == "huge"]
    assert huge.node is None and "cpu" in w.leader.unplaced[huge.id]


def test_rolling_update_replaces_one_at_a_time_and_succeeds() -> None:
    w = World("n1", "n2")
    update = {"max_parallel": 1, "min_healthy_s": 1.0, "deadline_s": 60}
    w.put_job("web", count=3, update=update, env={"V": "1"})
    w.settle()
    assert len(w.live("web")) == 3
    w.put_job("web", count=3, update=update, env={"V": "2"})
    assert w.m.jobs[("default", "web")].deployment is not None
    fewest = 3
    for _ in range(400):
        w.agents()
        w.round()
        w.tick(0.1)
        fewest = min(fewest, len(w.live("web")))
        if w.m.jobs[("default", "web")].deployment is None:
            break
    live = w.live("web")
    assert [a.version for a in live] == [2, 2, 2]
    assert fewest >= 2  # max_parallel 1: never more than one down at a time
    assert w.m.jobs[("default", "web")].versions[-1]["stable"] is True


def test_failed_rollout_reverts_after_its_deadline() -> None:
    w = World("n1")
    update = {"max_parallel": 1, "min_healthy_s": 0.0, "deadline_s": 5, "auto_revert": True}
    health = {"type": "tcp", "port": 1}
    w.health = {1: "healthy", 2: "unhealthy"}
    w.put_job("web", count=2, update=update, health=health, env={"V": "1"})
    w.settle()
    w.put_job("web", count=2, update=update, health=health, env={"V": "2"})
    ops: list[str] = []
    for _ in range(100):
        w.agents()
        ops += w.round()
        w.tick(0.2)
        if C.JOB_REVERT in ops:
            break
    job = w.m.jobs[("default", "web")]
    assert C.JOB_REVERT in ops and job.version == 3
    assert dict(job.spec.env) == {"V": "1"}


def test_drain_moves_max_parallel_at_a_time_to_other_nodes() -> None:
    w = World("n1")
    w.put_job("web", count=3, update={"max_parallel": 1})
    w.settle()
    w.apply(C.NODE_REGISTER, {"name": "n2", "cpu": 2.0, "memory_mb": 1024,
                              "address": "http://n2", "labels": {}, "attributes": {}})
    assert w.apply(C.NODE_DRAIN, {"name": "n1", "enable": True, "deadline_s": 600})["ok"]
    w.agents()
    d = w.decide()
    assert [p.op for p in d.proposals] == [C.MIGRATE]
    assert len(d.proposals[0].args["allocations"]) == 1
    w.settle()
    assert {a.node for a in w.live("web")} == {"n2"} and len(w.live("web")) == 3


def test_lost_node_is_marked_down_and_its_work_rescheduled() -> None:
    w = World("n1", "n2", cpu=1.0)
    w.put_job("web", count=2, constraints=[{"operator": "distinct_nodes"}])
    w.put_job("db", count=1)
    w.settle()
    on_n1 = {a.id for a in w.m.node_allocs("n1") if a.state == "running"}
    assert on_n1
    w.silent.add("n1")
    w.dead.add("n1")
    w.tick(GRACE_S / 2)
    w.agents()
    assert C.NODE_STATUS not in [p.op for p in w.decide().proposals]  # within its grace
    w.tick(GRACE_S)
    w.agents()
    d = w.decide()
    assert [(p.op, p.args) for p in d.proposals] == [
        (C.NODE_STATUS, {"name": "n1", "status": "down"})]
    w.settle()
    assert w.m.nodes["n1"].status == "down"
    assert all(w.m.allocs[i].state == "lost" for i in on_n1 if i in w.m.allocs)
    # web's distinct_nodes leaves one of its two unplaced; db moves to n2.
    assert {a.node for a in w.live("db")} == {"n2"}
    assert len(w.live("web")) == 1


def test_replacements_wait_until_the_lost_copies_have_stopped_themselves() -> None:
    """A job whose agents stop their allocations after stop_after_s without a leader is
    not replaced before that: the lost copies may still run on the cut-off node."""
    w = World("n1", "n2", cpu=1.0)
    w.put_job("db", count=1, disconnect={"stop_after_s": 10})
    w.put_job("web", count=1)
    w.settle()
    (db,) = w.live("db")
    (web,) = w.live("web")
    cut = db.node
    w.silent.add(cut)
    w.dead.add(cut)
    w.tick(GRACE_S + 0.5)
    w.settle(rounds=5)
    assert w.m.nodes[cut].status == "down"
    lost_at = w.m.allocs[db.id].updated_at
    # Jobs without the setting are replaced at once (web, when it ran there too).
    if web.node == cut:
        assert [a.node for a in w.live("web")] != [cut] and len(w.live("web")) == 1
    assert not w.live("db")
    (waiting,) = [a for a in w.m.job_allocs(w.m.jobs[("default", "db")])
                  if a.state == "pending"]
    assert waiting.node is None and "stop_after_s" in w.leader.unplaced[waiting.id]
    while w.wall < lost_at + 10 - 0.2:
        w.tick(1.0 if w.wall < lost_at + 9 else 0.1)
        w.agents()
        w.round()
        assert not w.live("db"), f"replaced {w.wall - lost_at:.1f}s after the loss"
    w.tick(0.5)
    w.settle()
    assert [a.node for a in w.live("db")] != [cut] and len(w.live("db")) == 1


def test_a_silent_node_whose_agent_answers_its_probe_stays_ready() -> None:
    w = World("n1", "n2")
    w.put_job("web", count=2)
    w.settle()
    w.silent.add("n1")  # its syncs do not arrive, but its agent answers on its address
    for _ in range(10):
        w.tick(GRACE_S)
        w.agents()
        assert C.NODE_STATUS not in [p.op for p in w.decide().proposals]
    assert w.m.nodes["n1"].status == "ready"
    w.dead.add("n1")  # now it answers nothing either
    w.tick(GRACE_S + 0.1)
    w.agents()
    assert [(p.op, p.args) for p in w.decide().proposals] == [
        (C.NODE_STATUS, {"name": "n1", "status": "down"})]


def test_a_node_with_a_sync_in_flight_is_never_marked_down() -> None:
    w = World("n1")
    w.silent.add("n1")
    w.dead.add("n1")  # a probe would fail: only the request in flight keeps it ready
    connection = {"open": True}
    n = w.leader.sync_started("n1", lambda: connection["open"], now=w.mono)
    for _ in range(10):  # a report that takes long to write, or a long poll
        w.tick(GRACE_S)
        assert w.decide().proposals == []
    w.leader.sync_ended("n1", n, now=w.mono)  # answered: counts as contact
    w.tick(GRACE_S / 2)
    assert w.decide().proposals == []
    n = w.leader.sync_started("n1", lambda: connection["open"], now=w.mono)
    connection["open"] = False  # its agent went away mid-poll: gone, not slow
    w.tick(GRACE_S)
    w.leader.sync_ended("n1", n, now=w.mono)  # no contact: the connection had closed
    w.tick(0.1)
    assert [p.op for p in w.decide().proposals] == [C.NODE_STATUS]


def test_a_silent_node_without_an_address_is_marked_down_without_a_probe() -> None:
    w = World()
    w.apply(C.NODE_REGISTER, {"name": "n9", "cpu": 1.0, "memory_mb": 1024, "address": "",
                              "labels": {}, "attributes": {}})
    w.leader.record_heartbeat("n9", w.mono)  # heard from, then silent
    w.tick(GRACE_S + 0.1)
    d = decide(w.m, w.leader, Now(w.wall, w.mono), GRACE_S)
    assert d.probes == [] and [p.op for p in d.proposals] == [C.NODE_STATUS]


def test_new_leader_gives_every_node_a_fresh_grace_period() -> None:
    w = World("n1")
    w.dead.add("n1")
    w.tick(100.0)  # nobody heard from n1 for long, but this leader has just started
    w.leader = LeaderState(term=2, since=w.mono)
    assert w.decide().proposals == []
    w.tick(GRACE_S + 0.1)
    assert [p.op for p in w.decide().proposals] == [C.NODE_STATUS]


def test_high_priority_service_preempts_batch_then_is_placed() -> None:
    w = World("n1", cpu=1.0)
    w.put_job("low", type="batch", priority=10, count=1,
              resources={"cpu": 0.8, "memory_mb": 16})
    w.settle()
    (victim,) = w.live("low")
    w.put_job("high", priority=90, preempt=True, count=1,
              resources={"cpu": 0.5, "memory_mb": 16})
    d = w.decide()
    (plan,) = d.proposals
    assert plan.op == C.PLAN and plan.args["placements"] == []
    assert [e[0] for e in plan.args["evictions"]] == [victim.id]
    w.settle()
    assert len(w.live("high")) == 1 and w.m.allocs[victim.id].desired == "stop"


def test_autoscale_follows_cpu_and_waits_out_its_cooldown() -> None:
    w = World("n1", cpu=8.0)
    scaling = {"min": 1, "max": 6, "cpu_target": 0.5, "cooldown_s": 30}
    w.put_job("web", count=2, scaling=scaling, resources={"cpu": 0.5, "memory_mb": 16})
    w.settle()
    for a in w.live("web"):
        w.leader.alloc_metrics[a.id] = {"cpu_percent": 50.0}  # 0.5 cores: 100% of request
    d = w.decide()
    assert [(p.op, p.args["count"]) for p in d.proposals if p.op == C.JOB_SCALE] == [
        (C.JOB_SCALE, 4)]
    w.round()
    assert w.m.jobs[("default", "web")].spec.count == 4
    w.tick(10)
    w.agents()
    assert not [p for p in w.decide().proposals if p.op == C.JOB_SCALE]  # cooling down
    w.tick(30)
    w.agents()
    assert [p.args["count"] for p in w.decide().proposals if p.op == C.JOB_SCALE] == [6]


def test_decide_changes_nothing() -> None:
    w = World("n1")
    w.put_job("web", count=2)
    digest, leader = w.m.digest(), repr(w.leader)
    w.decide()
    w.decide()
    assert w.m.digest() == digest and repr(w.leader) == leader


def test_one_job_spreads_over_nodes_unless_its_spec_says_spread_false() -> None:
    w = World("n1", "n2", cpu=4.0)
    w.put_job("web", count=4, resources={"cpu": 0.1, "memory_mb": 16})
    w.put_job("packed", count=4, resources={"cpu": 0.1, "memory_mb": 16}, spread=False)
    w.round()
    on: dict[str, list[str]] = {}
    for a in w.m.allocs.values():
        on.setdefault(a.job, []).append(a.node or "")
    assert sorted(on["web"]) == ["n1", "n1", "n2", "n2"]
    assert len(set(on["packed"])) == 1
