"""The leader loop's I/O around `decide`, with an in-memory proposer (a state machine
applying what it is given, as the log would)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from hacontrol.controller.errors import Rejection
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.scheduler.decide import Decisions, Proposal
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.scheduler.loop import LeaderLoop
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

T = TypeVar("T")


class MemoryProposer:
    def __init__(self) -> None:
        self.m = StateMachine()
        self.index = 0
        self.proposed: list[str] = []

    async def propose(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        self.proposed.append(op)
        res = self.m.apply(C.Command(op, 1000.0 + self.index, args, f"k{self.index}").encode(),
                           self.index)
        if not res["ok"]:
            raise Rejection(**res["error"])
        return res

    def read_local(self, fn: Callable[[StateMachine], T]) -> T:
        return fn(self.m)


async def _idle(timeout: float) -> None:
    await asyncio.sleep(0)


def _loop(p: MemoryProposer, term: list[int | None], elected: list[int]) -> LeaderLoop:
    return LeaderLoop(p, Leadership(lambda: term[0]), _idle, on_elected=elected.append)


def test_acts_only_while_leading_and_announces_each_term_once() -> None:
    p = MemoryProposer()
    asyncio.run(p.propose(C.NODE_REGISTER, {"name": "n1", "cpu": 1.0, "memory_mb": 512,
                                            "address": "", "labels": {}, "attributes": {}}))
    spec = parse_job_spec({"command": ["true"], "resources": {"cpu": 0.1, "memory_mb": 8}})
    asyncio.run(p.propose(C.JOB_PUT, {"namespace": "default", "name": "web",
                                      "spec": spec.to_dict()}))
    term: list[int | None] = [None]
    elected: list[int] = []
    loop = _loop(p, term, elected)
    asyncio.run(loop.step())
    assert elected == [] and p.proposed == [C.NODE_REGISTER, C.JOB_PUT]
    term[0] = 2
    asyncio.run(loop.step())
    asyncio.run(loop.step())
    assert elected == [2] and p.proposed[2:] == [C.PLAN]
    term[0] = 3
    asyncio.run(loop.step())
    assert elected == [2, 3]


def test_a_refusal_ends_the_round_unless_best_effort() -> None:
    p = MemoryProposer()
    leadership = Leadership(lambda: 1)
    loop = LeaderLoop(p, leadership, _idle)
    leader = leadership.current()
    assert leader is not None
    missing = {"namespace": "default", "name": "nope", "count": 1}
    noop = Proposal(C.NOOP, {})
    best = Decisions([Proposal(C.JOB_SCALE, missing, best_effort=True), noop],
                     unplaced={"a1": "no room"}, scaled={("default", "nope"): 5.0})
    asyncio.run(loop.carry_out(best, leader))
    assert p.proposed == [C.JOB_SCALE, C.NOOP]
    assert leader.unplaced == {"a1": "no room"} and leader.last_scaled == {("default", "nope"): 5.0}
    with pytest.raises(Rejection):
        asyncio.run(loop.carry_out(Decisions([Proposal(C.JOB_SCALE, missing), noop]), leader))
    assert p.proposed[2:] == [C.JOB_SCALE]
