"""The agents' delta sync against the real state machine: an agent that applies delta
answers (`state.views.sync_changes` on the leader, `agent.assignments.HeldAssignments` on
the agent, through a JSON round trip) always holds exactly what a full answer would carry,
whatever happened in between, and a delta carries only what changed."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hacontrol.agent.assignments import HeldAssignments
from hacontrol.model.messages import DeltaRequest
from hacontrol.state import commands as C
from hacontrol.state import store as store_module
from hacontrol.state.machine import StateMachine
from hacontrol.state.views import sync_changes

from . import state_scenario

NODES = ("n1", "n2", "n3")


class Agent:
    """One node's agent speaking the delta protocol to `m`, as `ControllerLink` does."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.held = HeldAssignments()
        self.last: dict[str, Any] = {}
        self.sent_bytes = 0

    def sync(self, m: StateMachine) -> dict[str, Any]:
        held = DeltaRequest.from_dict(json.loads(json.dumps(self.held.request())))
        allocs, delta = sync_changes(m.store, self.node, held)
        wire = json.dumps({"index": m.index,
                           "allocations": [a.to_dict(with_spec=False) for a in allocs],
                           "delta": delta.to_dict()})
        self.sent_bytes += len(wire)
        answer = json.loads(wire)
        merged = self.held.apply(answer["index"], answer["allocations"], answer["delta"])
        assert merged is not None, "a consistent leader's answer always applies"
        self.last = json.loads(wire)  # as sent (apply gives the answer's dicts their specs)
        return {a["id"]: a for a in merged}


class Log:
    """A state machine fed commands as the log would: index by index, never broken."""

    def __init__(self) -> None:
        self.m = StateMachine()

    def do(self, op: str, **args: Any) -> None:
        index = self.m.index + 1
        self.m.apply(C.Command(op, 1000.0 + index, args).encode(), index)
        assert self.m.broken is None


def full_answer(m: StateMachine, node: str) -> dict[str, Any]:
    return {a["id"]: a for a in json.loads(json.dumps(m.node_assignments(node)))}


def check(m: StateMachine, agents: list[Agent]) -> None:
    for agent in agents:
        assert agent.sync(m) == full_answer(m, agent.node), agent.node


def replay(record: list[tuple[str, dict[str, Any]]], every: int) -> None:
    m = StateMachine()
    agents = [Agent(n) for n in NODES]
    for i, (op, args) in enumerate(record, start=1):
        m.apply(C.Command(op, 1000.0 + 1.5 * i, args).encode(), i)
        assert m.broken is None
        if i % every == 0:
            check(m, agents)
    check(m, agents)


def test_the_scenario_synced_at_every_pace_matches_full_answers() -> None:
    record: list[tuple[str, dict[str, Any]]] = []
    state_scenario.run(record)
    for every in (1, 2, 3, 5, 8, len(record)):
        replay(record, every)


def test_a_delta_carries_only_what_changed() -> None:
    record: list[tuple[str, dict[str, Any]]] = []
    m = state_scenario.run(record)
    agent = Agent("n1")
    first = agent.sync(m)
    assert first and agent.last["delta"]["since"] == 0  # a new agent gets everything
    assert agent.last["delta"]["jobs"], "with the specs, once per job"
    assert all("spec" not in a for a in agent.last["allocations"])
    agent.sync(m)
    assert agent.last["allocations"] == [] and agent.last["delta"]["removed"] == []
    assert agent.last["delta"]["jobs"] == {} and agent.last["delta"]["since"] == m.index
    # One allocation reported running: that one comes back, without any spec.
    a = next(a for a in m.node_allocs("n1") if not a.terminal)
    m.apply(C.Command(C.ALLOC_UPDATE, 2000.0, {"node": "n1", "updates": [
        {"id": a.id, "state": "running", "pid": 7}]}).encode(), m.index + 1)
    agent.sync(m)
    assert [x["id"] for x in agent.last["allocations"]] == [a.id]
    assert agent.last["delta"]["jobs"] == {}


def test_an_agent_behind_a_restore_or_ahead_of_the_leader_gets_a_full_answer() -> None:
    m = state_scenario.run()
    agent = Agent("n1")
    agent.sync(m)
    restored = StateMachine()
    restored.restore(m.snapshot())
    assert agent.sync(restored) == full_answer(restored, "n1")
    assert agent.last["delta"]["since"] == m.index  # nothing was lost at that index
    behind = Agent("n1")
    behind.held.since = 1  # synced long before the snapshot the replica started from
    behind.sync(restored)
    assert behind.last["delta"]["since"] == 0
    ahead = Agent("n1")
    ahead.sync(m)
    ahead.held.since = m.index + 10  # told by a leader further along the log
    assert ahead.sync(m) == full_answer(m, "n1") and ahead.last["delta"]["since"] == 0


def test_removals_beyond_what_is_kept_fall_back_to_a_full_answer(monkeypatch: Any) -> None:
    monkeypatch.setattr(store_module, "REMOVED_KEPT", 4)
    log = Log()
    m, do = log.m, log.do

    do(C.NODE_REGISTER, name="n1", cpu=64, memory_mb=65536, address="", labels={},
       attributes={})
    agent = Agent("n1")
    for round_ in range(3):
        do(C.JOB_PUT, namespace="default", name=f"j{round_}",
           spec={"command": ["sleep", "1"], "count": 10})
        do(C.PLAN, placements=[[a.id, "n1"] for a in m.pending_allocs()])
        agent.sync(m)
        do(C.JOB_DELETE, namespace="default", name=f"j{round_}")
        do(C.ALLOC_UPDATE, node="n1", updates=[
            {"id": a.id, "state": "stopped"} for a in m.node_allocs("n1") if not a.terminal])
        assert agent.sync(m) == full_answer(m, "n1") == {}
        assert agent.last["delta"]["since"] == 0  # 10 forgotten, only 4 remembered


OPS = st.sampled_from(["put", "put", "scale", "delete", "place", "report", "down",
                       "register", "drain", "sync"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(OPS, st.integers(0, 2), st.integers(0, 6)), min_size=1,
                max_size=60))
def test_any_history_synced_at_any_moment_matches_full_answers(
        steps: list[tuple[str, int, int]]) -> None:
    log = Log()
    m, do = log.m, log.do

    for n in NODES:
        do(C.NODE_REGISTER, name=n, cpu=4, memory_mb=4096, address="", labels={},
           attributes={})
    agents = [Agent(n) for n in NODES]
    for op, k, v in steps:
        job, node = f"j{k}", NODES[k]
        if op == "put":
            do(C.JOB_PUT, namespace="default", name=job,
               spec={"command": ["sleep", str(v)], "count": v, "env": {"V": str(v % 2)},
                     "resources": {"cpu": 0.5, "memory_mb": 64}})
        elif op == "scale":
            do(C.JOB_SCALE, namespace="default", name=job, count=v)
        elif op == "delete":
            do(C.JOB_DELETE, namespace="default", name=job)
        elif op == "place":
            ready = [n for n in NODES if m.nodes[n].eligible]
            if ready:
                do(C.PLAN, placements=[[a.id, ready[i % len(ready)]]
                                       for i, a in enumerate(m.pending_allocs())])
        elif op == "report":
            state = ("running", "stopped", "failed", "exited")[v % 4]
            do(C.ALLOC_UPDATE, node=node, updates=[
                {"id": a.id, "state": "stopped" if a.desired == "stop" else state,
                 "exit_code": 0} for a in m.node_allocs(node) if not a.terminal])
        elif op == "down":
            do(C.NODE_STATUS, name=node, status="down")
        elif op == "register":
            do(C.NODE_REGISTER, name=node, cpu=4, memory_mb=4096, address="", labels={},
               attributes={})
        elif op == "drain":
            do(C.NODE_DRAIN, name=node, enable=bool(v % 2), deadline_s=30)
        else:
            check(m, [agents[k]])
    check(m, agents)


def test_an_answer_without_changes_keeps_the_held_list_without_rebuilding_it() -> None:
    from hacontrol.agent.assignments import HeldAssignments
    held = HeldAssignments()
    spec = {"command": ["sleep", "1"]}
    first = held.apply(5, [{"id": "a1", "namespace": "default", "job": "web"}],
                       {"since": 0, "jobs": {"default/web": {"index": 3, "spec": spec}}})
    assert first is not None and held.changes == 1
    again = held.apply(7, [], {"since": 5, "jobs": {}, "removed": []})
    assert again is first and held.changes == 1 and held.since == 7
    gone = held.apply(9, [], {"since": 7, "jobs": {}, "removed": ["a1"]})
    assert gone == [] and held.changes == 2


def test_a_delta_hands_out_the_same_object_for_every_assignment_it_did_not_change() -> None:
    """A burst of starts changes a few assignments per answer (their states): the others
    stay the very same objects, so the decoder knows them unchanged at a glance; a change
    of their job's spec renews them all."""
    from hacontrol.agent.assignments import HeldAssignments
    held = HeldAssignments()

    def raw(alloc_id: str, state: str = "pending") -> dict[str, object]:
        return {"id": alloc_id, "namespace": "default", "job": "web", "state": state}

    spec = {"command": ["sleep", "1"]}
    first = held.apply(5, [raw(f"a{i}") for i in range(4)],
                       {"since": 0, "jobs": {"default/web": {"index": 3, "spec": spec}}})
    assert first is not None
    second = held.apply(6, [raw("a1", "running")], {"since": 5, "jobs": {}, "removed": ["a3"]})
    assert second is not None
    by_id = {item["id"]: item for item in first}
    after = {item["id"]: item for item in second}
    assert sorted(after) == ["a0", "a1", "a2"]
    assert after["a0"] is by_id["a0"] and after["a2"] is by_id["a2"]
    assert after["a1"] is not by_id["a1"] and after["a1"]["state"] == "running"
    assert after["a1"]["spec"] is spec
    spec2 = {"command": ["sleep", "2"]}
    third = held.apply(7, [], {"since": 6, "jobs": {"default/web": {"index": 6, "spec": spec2}}})
    assert third is not None
    assert all(item["spec"] is spec2 and item is not after[item["id"]] for item in third)
    assert [item["state"] for item in third] == ["pending", "running", "pending"]
