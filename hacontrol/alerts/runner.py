"""The leader's alerting loop: evaluate the rules, write transitions to the log, deliver
what is due, write each attempt's outcome to the log.

Runs on every replica and acts only while this one leads. Everything it remembers that
matters is in the log (each alert's status, each notification and the attempts made on
it), so a new leader picks up where the last one stopped: it delivers what is still
pending (at least once: an attempt made but not recorded before a failover is made again,
and receivers deduplicate by the notification id) and repeats nothing recorded as
delivered. In-process memory is only what is in flight now, how long the cluster went
without a leader, and the `no_leader` notifications every replica sends itself while there
is none (`leaderless.py`): the log's own `no_leader` notifications are then a record, marked
delivered without being sent again.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from hacontrol.controller.errors import ControlError, Rejection
from hacontrol.health.score import score
from hacontrol.health.view import Captured, ReplicaRow, capture
from hacontrol.model.alerts import AlertRule, AlertState, AlertWhen, DeliveryStatus, Sink
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.scheduler.loop import Proposer
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from . import backoff, sinks
from .evaluate import Transition, evaluate
from .leaderless import Attempt, LeaderlessWatch, Outbox
from .sealing import Sealer, Unsealable

log = logging.getLogger("hacontrol.alerts")

EVALUATE_EVERY_S = 0.5
# The next survey waits this many times as long as the last took. Under the apply lock a
# survey only copies what the state machine's tally found (~1 ms at 100,000 allocations,
# bench/alerts.py), so this no longer guards the lock; it bounds the event loop's share
# when thousands of allocations restart within the windows judged (the judging then costs
# in proportion to them). Deliveries due in between are still started every
# EVALUATE_EVERY_S.
SURVEY_SPACING = 4.0
# At most this many deliveries at once (each has its own timeout).
MAX_IN_FLIGHT = 16

Deliver = Callable[[aiohttp.ClientSession, Sink, dict[str, Any]], Any]
# The leader this replica hears now (None: none), asked each round on every replica.
HeardLeader = Callable[[aiohttp.ClientSession], Awaitable[str | None]]


@dataclass(frozen=True)
class Due:
    """One delivery to attempt now."""

    alert: str
    id: str
    sink_index: int
    attempt: int  # the number this attempt will have
    sink: Sink
    body: dict[str, Any]


def due_deliveries(states: dict[str, AlertState], now: float) -> list[Due]:
    """The pending deliveries whose time has come, oldest notification first."""
    out = []
    for state in states.values():
        for n in state.notifications:
            for d in n.deliveries:
                if d.status == DeliveryStatus.PENDING and backoff.due(d.next_at, now) \
                        and d.sink < len(n.sinks):
                    out.append(Due(state.name, n.id, d.sink, d.attempts + 1, n.sinks[d.sink],
                                   dict(n.body)))
    out.sort(key=lambda x: (x.body.get("at", 0.0), x.id, x.sink_index))
    return out


@dataclass(frozen=True)
class Round:
    """What a survey read under the apply lock; `transitions()` judges it after."""

    captured: Captured | None
    rules: list[AlertRule]
    states: dict[str, AlertState]  # copies: the apply thread changes the live ones
    due: list[Due]

    def transitions(self) -> list[Transition]:
        if self.captured is None:
            return []
        view = self.captured.view()
        return evaluate(self.rules, view, self.states, score(view))


class AlertRunner:
    """`replicas()`: the replicas as the leader sees them (called only while leading);
    `leader_id()`: the leader this replica knows of, if any; `term()`: its Raft term;
    `me`: its id; `heard_leader(session)`: the leader, if this replica still hears it
    (default: `leader_id()`; a Raft follower cut off from everyone keeps its last leader,
    `wiring.py` asks that leader)."""

    def __init__(self, proposer: Proposer, leadership: Leadership,
                 replicas: Callable[[], list[ReplicaRow]],
                 leader_id: Callable[[], str | None],
                 deliver: Deliver = sinks.deliver,
                 clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random,
                 sealer: Sealer | None = None,
                 term: Callable[[], int] = lambda: 0, me: str = "",
                 heard_leader: HeardLeader | None = None) -> None:
        """`sealer` opens the webhook secrets the API sealed (None: kept in the clear)."""
        self.proposer = proposer
        self.sealer = sealer
        self.leadership = leadership
        self.replicas = replicas
        self.leader_id = leader_id
        self.deliver = deliver
        self.clock, self.mono, self.rand = clock, mono, rand
        self.in_flight: set[tuple[str, int]] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_led: float = mono()  # when a leader was last known (monotonic)
        self.term_seen: int | None = None
        self.leaderless_s = 0.0
        self.next_survey = 0.0  # monotonic time of the next full survey
        self.term = term
        self.heard_leader = heard_leader
        self.heard: str | None = None  # the leader heard in the latest round
        self.watch = LeaderlessWatch(me)
        self.outbox = Outbox()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self.step(session)
                except asyncio.CancelledError:
                    raise
                except (Rejection, ControlError) as err:
                    log.info("alert round: %s", err)
                except Exception:
                    log.exception("alert round failed")
                await asyncio.sleep(EVALUATE_EVERY_S)

    def _track_leader(self) -> float | None:
        """Note when a leader was last known; the monotonic time this replica began to lead
        its current term, or None when it does not lead."""
        leader = self.leadership.current()
        if leader is None:
            # The leader heard this round (`_watch_leaderless`): a follower cut off from
            # everyone still names its dead leader, and the gap would start only when it
            # was elected.
            if self.heard is not None:
                self.last_led = self.mono()
            self.term_seen = None
            return None
        if self.term_seen != leader.term:
            # A new term of ours: the cluster was leaderless from when this replica last
            # knew a leader until it was elected.
            self.term_seen = leader.term
            self.leaderless_s = max(0.0, leader.since - self.last_led)
            if self.leaderless_s > 0.5:
                log.info("leading after %.1fs without a leader", self.leaderless_s)
        self.last_led = self.mono()
        return leader.since

    def survey(self, m: StateMachine, now: float, since: float,
               replicas: list[ReplicaRow], leader: str | None) -> Round:
        """What to judge and deliver this round (the caller holds the state still)."""
        if not m.store.alert_rules:
            # No rule, so nothing to judge nor deliver (deleting a rule drops its
            # notifications).
            return Round(None, [], {}, [])
        captured = capture(m, now, replicas, leader, self.leaderless_s,
                           max(0.0, self.mono() - since))
        states = {name: copy.copy(s) for name, s in m.store.alert_states.items()}
        return Round(captured, list(m.store.alert_rules.values()), states,
                     due_deliveries(m.store.alert_states, now))

    async def _watch_leaderless(self, session: aiohttp.ClientSession) -> None:
        """On every replica, leader or not: `no_leader` sent from memory (`leaderless.py`)."""
        rules = self.proposer.read_local(lambda m: [
            r for r in m.store.alert_rules.values() if r.when == AlertWhen.NO_LEADER])
        watching = bool(rules or self.watch.fired or self.outbox.sending)
        if watching and self.heard_leader is not None:
            leader = await self.heard_leader(session)
        else:
            leader = self.leader_id()
        self.heard = leader
        wall = self.clock()
        if watching:
            for notice in self.watch.observe(self.mono(), wall, leader, self.term(), rules):
                log.warning("alert %s %s (sent by this replica): %s", notice.rule.name,
                            notice.status, notice.body["details"])
                self.outbox.add(notice, wall)
            if leader is not None:
                self.outbox.forget_firing()
        else:  # nothing to send: only keep track of the leader
            self.watch.observe(self.mono(), wall, leader, self.term(), [])
        for one in self.outbox.due(wall):
            self._spawn((one.id, one.sink_index),
                        functools.partial(self._send_from_memory, session, one))

    async def _send_from_memory(self, session: aiohttp.ClientSession, one: Attempt) -> None:
        try:
            error = await self._attempt(session, one.sink, one.body, one.id)
            if error is None:
                log.info("alert notification %s delivered to sink %d by this replica", one.id,
                         one.sink_index)
            else:
                log.warning("alert notification %s to sink %d (from this replica): %s",
                            one.id, one.sink_index, error)
            self.outbox.record(one.id, one.sink_index, error, self.clock(), self.rand())
        finally:
            self.in_flight.discard((one.id, one.sink_index))

    async def step(self, session: aiohttp.ClientSession) -> None:
        await self._watch_leaderless(session)
        since = self._track_leader()
        if since is None:
            return
        try:
            replicas = self.replicas()
        except ControlError:
            return  # lost the lead meanwhile
        now, leader = self.clock(), self.leader_id()  # asked outside the apply lock
        if self.mono() < self.next_survey:
            self._start(session, self.proposer.read_local(
                lambda m: due_deliveries(m.store.alert_states, now)))
            return
        started = time.perf_counter()
        found = self.proposer.read_local(lambda m: self.survey(m, now, since, replicas,
                                                               leader))
        transitions = found.transitions()
        took = time.perf_counter() - started
        self.next_survey = self.mono() + SURVEY_SPACING * took
        due = found.due
        if transitions:
            for t in transitions:
                log.warning("alert %s %s: %s", t.name, t.status, t.details)
            await self.proposer.propose(C.ALERT_TRANSITION, {
                "transitions": [t.to_args() for t in transitions]})
            # Deliver the notifications just made in this round, not the next.
            due = self.proposer.read_local(lambda m: due_deliveries(m.store.alert_states,
                                                                    self.clock()))
        self._start(session, due)

    def _start(self, session: aiohttp.ClientSession, due: list[Due]) -> None:
        for one in due:
            self._spawn((one.id, one.sink_index), functools.partial(self._deliver, session, one))

    def _spawn(self, key: tuple[str, int], send: Callable[[], Awaitable[None]]) -> None:
        """Run `send()` in a task unless that notification's sink is being sent to already
        or too many are; the task takes `key` out of `in_flight` when it ends."""
        if key in self.in_flight or len(self.in_flight) >= MAX_IN_FLIGHT:
            return
        self.in_flight.add(key)
        task = asyncio.ensure_future(send())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _opened(self, sink: Sink) -> Sink:
        if sink.secret is None or self.sealer is None:
            return sink
        return replace(sink, secret=self.sealer.open(sink.secret))

    async def _attempt(self, session: aiohttp.ClientSession, sink: Sink,
                       body: dict[str, Any], nid: str) -> str | None:
        try:
            result = await self.deliver(session, self._opened(sink), body)
            return None if result is None else str(result)
        except Unsealable as exc:
            return str(exc)
        except Exception as exc:  # a sink's bug is a failed attempt, not a dead loop
            log.exception("delivering %s failed", nid)
            return f"{type(exc).__name__}: {exc}"

    async def _deliver(self, session: aiohttp.ClientSession, due: Due) -> None:
        try:
            if due.body.get("when") == AlertWhen.NO_LEADER:
                # A record only: the replicas sent this episode themselves while there was
                # no leader (`leaderless.py`); sending it again would repeat it under
                # another id.
                error = None
            else:
                error = await self._attempt(session, due.sink, due.body, due.id)
            next_at = self.clock() + backoff.retry_delay(due.attempt, self.rand())
            if error is None:
                log.info("alert notification %s delivered to sink %d (attempt %d)", due.id,
                         due.sink_index, due.attempt)
            else:
                log.warning("alert notification %s to sink %d, attempt %d: %s", due.id,
                            due.sink_index, due.attempt, error)
            await self.proposer.propose(C.ALERT_DELIVERY, {"results": [{
                "alert": due.alert, "id": due.id, "sink": due.sink_index,
                "attempt": due.attempt, "ok": error is None, "error": error,
                "next_at": next_at}]})
        except (Rejection, ControlError) as err:
            # Not recorded: the next round (here or on the next leader) tries again.
            log.info("recording delivery of %s: %s", due.id, err)
        finally:
            self.in_flight.discard((due.id, due.sink_index))
