"""The leader loop: runs on every replica, acts only while this replica leads.

Each round asks `decide` (a pure function) what to do and proposes its commands through the
log, where they are checked again on apply. All the I/O of the scheduler is here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import aiohttp

from hacontrol.controller.errors import ControlError, Rejection
from hacontrol.model import protocol
from hacontrol.observe.metrics import ServerMetrics
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.tls.roles import Role

from .decide import Decisions, Now, finish, survey
from .leader_state import Leadership, LeaderState
from .liveness import DEFAULT_GRACE_S

log = logging.getLogger("hacontrol.scheduler.leader")

T = TypeVar("T")
IDLE_WAKE_S = 0.25
# How soon a replica that has just been elected takes its first step: against a heartbeat
# grace of seconds, a tenth of a second is nothing, and ten wake-ups a second cost a
# follower nothing next to being woken for every batch it applies.
FOLLOWER_POLL_S = 0.1
# An agent that does not answer its health check within this is taken for dead; its own
# HTTP side answers from the event loop that also syncs, so a slow answer means a stuck one.
PROBE_TIMEOUT_S = 1.0

Probe = Callable[[str], Awaitable[bool]]


class HealthProbe:
    """Asks an agent's `GET /v1/health` (open to anyone, see `agent/http.py`) whether it is
    alive; `tls`: the controllers' client context for https:// agent addresses."""

    def __init__(self, tls: ssl.SSLContext | None = None,
                 timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.tls = tls
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def __call__(self, address: str) -> bool:
        connector = aiohttp.TCPConnector(ssl=self.tls) if self.tls is not None else None
        # With TLS the agent's certificate names its role, not its address.
        name = Role.AGENT.hostname if self.tls is not None else None
        headers = {protocol.HEADER: str(protocol.spoken())} if protocol.versioned() else None
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                             headers=headers) as s, \
                    s.get(f"{address.rstrip('/')}/v1/health", server_hostname=name) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False


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
                 grace_s: float = DEFAULT_GRACE_S, probe: Probe | None = None,
                 metrics: ServerMetrics | None = None) -> None:
        """`probe(address)`: whether a silent node's agent still answers (default: its
        health endpoint over plain HTTP, or https with the system's CAs); `metrics`: where
        placement latencies and counts are recorded."""
        self.proposer = proposer
        self.leadership = leadership
        self.wait_changed = wait_changed
        self.on_elected = on_elected
        self.grace_s = grace_s
        self.probe = probe if probe is not None else HealthProbe()
        self.metrics = metrics
        self._probes: set[asyncio.Task[None]] = set()

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
            if self.leadership.current() is None:
                # Not leading: an applied entry gives nothing to do (a follower applies
                # every write), so only a change of leadership is looked for.
                await asyncio.sleep(FOLLOWER_POLL_S)
            else:
                await self.wait_changed(IDLE_WAKE_S)

    async def step(self) -> None:
        leader = self.leadership.current()
        if leader is None:
            return
        if not leader.announced:
            leader.announced = True
            log.info("leading term %d", leader.term)
            self.on_elected(leader.term)
        start = time.perf_counter()
        now = Now(wall=time.time(), mono=time.monotonic())
        # Only the survey holds the state still; planning runs outside the apply lock.
        found = self.proposer.read_local(lambda m: survey(m, leader, now, self.grace_s))
        decisions = finish(found)
        await self.carry_out(decisions, leader)
        if self.metrics is not None and any(p.op == C.PLAN for p in decisions.proposals):
            self.metrics.placement.observe(time.perf_counter() - start)

    async def carry_out(self, decisions: Decisions, leader: LeaderState) -> None:
        """Record the decisions' notes in `leader`, then propose their commands in order."""
        leader.last_scaled.update(decisions.scaled)
        leader.note_scaling(decisions.metric_notes)
        if decisions.unplaced is not None:
            leader.unplaced = decisions.unplaced
        for name, address in decisions.probes:
            if name not in leader.probing:
                leader.probing.add(name)
                task = asyncio.create_task(self._probe(leader, name, address))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)
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
            if self.metrics is not None and p.op == C.PLAN:
                self.metrics.placed.inc(len(res.get("placed") or ()))
                self.metrics.plans_rejected.inc(len(res.get("rejected") or ()))
            if res.get("rejected"):
                log.info("plan: %d placed, %d rejected on apply", len(res["placed"]),
                         len(res["rejected"]))


    async def _probe(self, leader: LeaderState, name: str, address: str) -> None:
        """Probe a silent node in the background (rounds go on meanwhile); an answer counts
        as contact, a failure lets the next round mark it down."""
        try:
            alive = await self.probe(address)
        except Exception:
            log.exception("probing node %s failed", name)
            alive = False
        finally:
            leader.probing.discard(name)
        now = time.monotonic()
        if alive:
            log.warning("node %s is silent but its agent answers at %s: keeping it ready",
                        name, address)
            leader.record_heartbeat(name, now)
        else:
            leader.probe_failed[name] = now


def _message(err: Exception) -> str:
    return err.message if isinstance(err, Rejection) else str(err)


def _target(args: dict[str, Any]) -> str:
    return f"{args.get('namespace', '')}/{args.get('name', '')}"
