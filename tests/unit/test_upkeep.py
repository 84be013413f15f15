"""What replicas propose on their own (scheduler/upkeep.py) goes through the version gate,
and waits through an upgrade instead of giving up or logging errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from hacontrol.controller.errors import NotApplied, Unsupported
from hacontrol.controller.replica import Controller
from hacontrol.controller.status import Member
from hacontrol.controller.versions import ASSUMED
from hacontrol.model import protocol
from hacontrol.model.errors import Rejection
from hacontrol.scheduler import upkeep
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

ME = Member("c1", "127.0.0.1:7001", "http://127.0.0.1:8101")
OLD = Member("c2", "127.0.0.1:7002", "http://127.0.0.1:8102")


class Book:
    def members(self) -> list[Member]:
        return [ME, OLD]


class NoLog:
    """A replica whose log must never be reached: the gate refuses first."""

    book = Book()

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the log was reached ({name}) for a gated command")


def test_every_command_type_newer_than_protocol_1_waits_for_every_voter() -> None:
    ctl = Controller(ME, [OLD], NoLog(), StateMachine())  # type: ignore[arg-type]
    assert ctl.versions.view()["c2"] is None  # not heard from: assumed protocol 1
    newer = sorted(C.OPS - C.PROTOCOL1_OPS)
    # The upkeep's two, and the restore, are among them.
    assert {C.ACL_TOKEN_PRUNE, C.CONTROLLER_CREDENTIAL, C.STATE_RESTORE} <= set(newer)

    async def each() -> None:
        # All at once: each refusal first waits out the unheard voter's grace (a second).
        proposals = [p for op in newer for p in (ctl.propose(op, {}), ctl.write(op, {}, "k"))]
        outcomes = await asyncio.gather(*proposals, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, Unsupported), outcome
            assert "c2 (protocol 1)" in str(outcome)
    asyncio.run(each())
    assert all(ctl.versions.refusal(op) is None for op in C.PROTOCOL1_OPS)
    ctl.versions.reports["c2"] = ctl.versions.mine  # c2 upgraded
    assert all(ctl.versions.refusal(op) is None for op in C.OPS)
    assert ASSUMED.ops == C.PROTOCOL1_OPS


class Upgrading:
    """A Proposer whose cluster refuses the credential as Unsupported `old_for` times (a
    voter not upgraded yet), then applies it."""

    def __init__(self, old_for: int, fail: Exception | None = None) -> None:
        self.m = StateMachine()
        self.old_for = old_for
        self.fail = fail
        self.proposed: list[str] = []

    async def propose(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.proposed.append(op)
        if self.fail is not None:
            raise self.fail
        if len(self.proposed) <= self.old_for:
            raise Unsupported(f"command type {op!r} is not known to replica c2")
        cmd = C.Command(op, 1.0, args, f"k{len(self.proposed)}", v=protocol.PROTOCOL)
        result: dict[str, Any] = self.m.apply(cmd.encode(), len(self.proposed))
        assert result["ok"], result
        return result

    def read_local(self, fn: Callable[[StateMachine], Any]) -> Any:
        return fn(self.m)


def test_the_controllers_credential_waits_through_an_upgrade(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(upkeep, "CREDENTIAL_RETRY_S", 0.0)
    ctl = Upgrading(old_for=3)
    with caplog.at_level(logging.DEBUG, logger="hacontrol.upkeep"):
        asyncio.run(asyncio.wait_for(upkeep.keep_controller_credential(ctl, "ab" * 32), 10))
    assert ctl.m.controller_credential == "ab" * 32
    assert ctl.proposed == [C.CONTROLLER_CREDENTIAL] * 4
    # Waiting for an upgrade is expected: no error, no traceback.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_propose_until_stops_at_a_refusal_and_when_done() -> None:
    async def refuse() -> None:
        raise Rejection("conflict", "already bootstrapped")

    refused = asyncio.run(upkeep.propose_until(lambda: False, refuse, "x", 0.0))
    assert isinstance(refused, Rejection) and refused.code == "conflict"
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise NotApplied("no leader", None)

    assert asyncio.run(upkeep.propose_until(lambda: len(calls) >= 3, flaky, "x", 0.0)) is None
    assert len(calls) == 3


def test_propose_until_pauses_when_an_answered_proposal_is_not_done_yet() -> None:
    """A write answered before its entry applied here (the planted early-ack fault did
    that) made the loop propose again at once, forever, and nothing else on the event
    loop ran: other tasks must get their turns, and proposals come `retry_s` apart."""
    proposals: list[float] = []
    ticks: list[int] = []

    async def answered_early() -> None:
        proposals.append(asyncio.get_running_loop().time())

    async def other_task() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    async def scenario() -> None:
        other = asyncio.create_task(other_task())
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.35
        await upkeep.propose_until(lambda: loop.time() >= until, answered_early, "x", 0.1)
        other.cancel()

    asyncio.run(scenario())
    assert 3 <= len(proposals) <= 5, proposals
    gaps = [b - a for a, b in zip(proposals, proposals[1:], strict=False)]
    assert all(g >= 0.09 for g in gaps), proposals
    assert ticks
