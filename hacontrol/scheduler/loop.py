"""The leader loop: runs on every replica, acts only while this replica leads.

Each round asks `decide` (a pure function) what to do and proposes its commands through the
log, where they are checked again on apply. All the I/O of the scheduler is here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from hacontrol.controller.errors import ControlError, Rejection
from hacontrol.state.machine import StateMachine

from .decide import Decisions, Now, finish, survey
from .leader_state import Leadership, LeaderState
from .liveness import DEFAULT_GRACE_S

log = logging.getLogger("hacontrol.scheduler.leader")

T = TypeVar("T")
IDLE_WAKE_S = 0.25


class Proposer(Protocol):
    """What the leader loop needs from its replica: propose a command, read the state."""

    async def propose(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """The command's result once applied; raises `Rejection` or a `ControlError`."""
        ...

    def read_local(self, fn: Callable[[StateMachine], T]) -> T:
        """`fn` over the state as applied on this replica, under the apply lock."""
        ...


class LeaderLoop:
    """Proposes the leader's decisions while `leadership` says this replica leads.

    `wait_changed(timeout)` returns when an entry is applied (or at the timeout);
    `on_elected(term)` records that this replica leads a new term.
    """

    def __init__(self, proposer: Proposer, leadership: Leadership,
                 wait_changed: Callable[[float], Awaitable[None]],
                 on_elected: Callable[[int], None] = lambda term: None,
                 grace_s: float = DEFAULT_GRACE_S) -> None:
        self.proposer = proposer
        self.leadership = leadership
        self.wait_changed = wait_changed
        self.on_elected = on_elected
        self.grace_s = grace_s

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except (Rejection, ControlError) as err:
                log.info("leader step: %s", _message(err))
            except Exception:
                log.exception("leader step failed")
            await self.wait_changed(IDLE_WAKE_S)

    async def step(self) -> None:
        leader = self.leadership.current()
        if leader is None:
            return
        if not leader.announced:
            leader.announced = True
            log.info("leading term %d", leader.term)
            self.on_elected(leader.term)
        now = Now(wall=time.time(), mono=time.monotonic())
        # Only the survey holds the state still; planning runs outside the apply lock.
        found = self.proposer.read_local(lambda m: survey(m, leader, now, self.grace_s))
        decisions = finish(found)
        await self.carry_out(decisions, leader)

    async def carry_out(self, decisions: Decisions, leader: LeaderState) -> None:
        """Record the decisions' notes in `leader`, then propose their commands in order."""
        leader.last_scaled.update(decisions.scaled)
        if decisions.unplaced is not None:
            leader.unplaced = decisions.unplaced
        for p in decisions.proposals:
            if p.warning:
                log.warning("%s", p.warning)
            try:
                res = await self.proposer.propose(p.op, p.args)
            except (Rejection, ControlError) as err:
                if not p.best_effort:
                    raise
                log.info("%s %s refused: %s", p.op, _target(p.args), _message(err))
                continue
            if res.get("rejected"):
                log.info("plan: %d placed, %d rejected on apply", len(res["placed"]),
                         len(res["rejected"]))


def _message(err: Exception) -> str:
    return err.message if isinstance(err, Rejection) else str(err)


def _target(args: dict[str, Any]) -> str:
    return f"{args.get('namespace', '')}/{args.get('name', '')}"
