"""The leader's alerting loop: evaluate the rules, write transitions to the log, deliver
what is due, write each attempt's outcome to the log.

Runs on every replica and acts only while this one leads. Everything it remembers that
matters is in the log (each alert's status, each notification and the attempts made on
it), so a new leader picks up where the last one stopped: it delivers what is still
pending (at least once: an attempt made but not recorded before a failover is made again,
and receivers deduplicate by the notification id) and repeats nothing recorded as
delivered. In-process memory is only what is in flight now, and how long the cluster went
without a leader (for `no_leader`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from hacontrol.controller.errors import ControlError, Rejection
from hacontrol.health.score import score
from hacontrol.health.view import Captured, ReplicaRow, capture
from hacontrol.model.alerts import AlertRule, AlertState, DeliveryStatus, Sink
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.scheduler.loop import Proposer
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from . import backoff, sinks
from .evaluate import Transition, evaluate
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
    `leader_id()`: the leader this replica knows of, if any."""

    def __init__(self, proposer: Proposer, leadership: Leadership,
                 replicas: Callable[[], list[ReplicaRow]],
                 leader_id: Callable[[], str | None],
                 deliver: Deliver = sinks.deliver,
                 clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random,
                 sealer: Sealer | None = None) -> None:
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
            if self.leader_id() is not None:
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

    async def step(self, session: aiohttp.ClientSession) -> None:
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
            key = (one.id, one.sink_index)
            if key in self.in_flight or len(self.in_flight) >= MAX_IN_FLIGHT:
                continue
            self.in_flight.add(key)
            task = asyncio.create_task(self._deliver(session, one))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _opened(self, sink: Sink) -> Sink:
        if sink.secret is None or self.sealer is None:
            return sink
        return replace(sink, secret=self.sealer.open(sink.secret))

    async def _deliver(self, session: aiohttp.ClientSession, due: Due) -> None:
        try:
            try:
                error = await self.deliver(session, self._opened(due.sink), due.body)
            except Unsealable as exc:
                error = str(exc)
            except Exception as exc:  # a sink's bug is a failed attempt, not a dead loop
                log.exception("delivering %s failed", due.id)
                error = f"{type(exc).__name__}: {exc}"
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
