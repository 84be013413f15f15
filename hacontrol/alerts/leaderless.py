"""`no_leader` notifications that every replica sends itself, from its own memory.

Delivery through the log needs a leader, and a cluster without one is when `no_leader`
matters. So each replica watches its own view of the cluster: once it has known no leader
for longer than a `no_leader` rule's threshold, it sends that rule's sinks a firing
notification itself and, once it knows a leader again, the matching resolved one (only to
the sinks that got the firing one). Nothing of this passes through the log, which cannot be
written then; the new leader records the episode there as it measured it (`evaluate.py`)
without sending it again (`runner.py`).

The ids are deterministic: the rule's name, the term of the last leader the replica knew
and the status (`down-leaderless-7`, `down-leaderless-7-resolved`). Every replica that lost
the same leader sends the same ids, and receivers, which deduplicate by id, keep one of each
(the bodies differ: each replica says what it saw). A replica that knew no leader since it
started uses the term it started in.

`LeaderlessWatch` is the decision, a pure function of what it is fed each round; `Outbox`
holds the notifications being delivered (retried with the log's backoff, at most
`MAX_ATTEMPTS` per sink) and is driven by the runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hacontrol.model.alerts import AlertRule, AlertStatus, AlertWhen, Sink
from hacontrol.state.handlers.alerts import MAX_ATTEMPTS

from . import backoff


@dataclass(frozen=True)
class Notice:
    """A notification this replica makes and sends itself."""

    rule: AlertRule
    status: AlertStatus
    id: str
    fired_id: str  # for a resolved notice: the firing one it resolves (else its own id)
    body: dict[str, Any]


@dataclass
class LeaderlessWatch:
    """Fed each round with what this replica knows; says which notices to make."""

    me: str
    last_term: int | None = None  # the term of the last leader known
    last_leader: str | None = None
    lost_at: float | None = None  # monotonic time since which no leader is known
    start_term: int = 0
    fired: dict[str, str] = field(default_factory=dict)  # rule name -> firing notice id

    def observe(self, mono: float, wall: float, leader: str | None, term: int,
                rules: list[AlertRule]) -> list[Notice]:
        """`leader`, `term`: the leader this replica knows (None: none) and its Raft term;
        `rules`: every rule in its state as applied so far."""
        by_name = {r.name: r for r in rules if r.when == AlertWhen.NO_LEADER}
        out = []
        if leader is not None:
            gap = 0.0 if self.lost_at is None else mono - self.lost_at
            for name, fired_id in sorted(self.fired.items()):
                rule = by_name.get(name)
                if rule is not None:
                    out.append(self._notice(rule, AlertStatus.RESOLVED, f"{fired_id}-resolved",
                                            fired_id, wall, {
                                                "leaderless_s": round(gap, 3),
                                                "leader": leader, "term": term}))
            self.fired.clear()
            self.last_term, self.last_leader, self.lost_at = term, leader, None
            return out
        if self.lost_at is None:
            self.lost_at = mono
            if self.last_term is None:
                self.start_term = term
        gap = mono - self.lost_at
        episode = self.last_term if self.last_term is not None else self.start_term
        for name, rule in sorted(by_name.items()):
            if name in self.fired or gap <= rule.threshold:
                continue
            nid = f"{name}-leaderless-{episode}"
            self.fired[name] = nid
            out.append(self._notice(rule, AlertStatus.FIRING, nid, nid, wall, {
                "leaderless_s": round(gap, 3), "last_leader": self.last_leader,
                "last_term": self.last_term}))
        return out

    def _notice(self, rule: AlertRule, status: AlertStatus, nid: str, fired_id: str,
                wall: float, details: dict[str, Any]) -> Notice:
        body = {"alert": rule.name, "id": nid, "status": str(status),
                "severity": str(rule.severity), "when": str(rule.when),
                "details": {**details, "replica": self.me}, "at": wall}
        return Notice(rule, status, nid, fired_id, body)


@dataclass
class Sending:
    """One notice's delivery to each of its sinks."""

    notice: Notice
    sinks: tuple[Sink, ...]
    wanted: list[bool]  # sinks it goes to (a resolved one: those that got the firing one)
    attempts: list[int]
    next_at: list[float]
    delivered: list[bool]

    def pending(self, i: int) -> bool:
        return self.wanted[i] and not self.delivered[i] and self.attempts[i] < MAX_ATTEMPTS


@dataclass(frozen=True)
class Attempt:
    id: str
    sink_index: int
    sink: Sink
    body: dict[str, Any]


@dataclass
class Outbox:
    """The notices being sent, kept until they are resolved (a firing one) or done."""

    sending: dict[str, Sending] = field(default_factory=dict)

    def add(self, notice: Notice, now: float) -> None:
        sinks = notice.rule.sinks
        wanted = [True] * len(sinks)
        if notice.status == AlertStatus.RESOLVED:
            fired = self.sending.pop(notice.fired_id, None)
            # Only where the firing one got through (a sink of the same place, the rule
            # may have changed meanwhile): a resolved alone would say nothing.
            got = set() if fired is None else {
                _where(s) for i, s in enumerate(fired.sinks) if fired.delivered[i]}
            wanted = [_where(s) in got for s in sinks]
            if not any(wanted):
                return
        n = len(sinks)
        self.sending[notice.id] = Sending(notice, sinks, wanted, [0] * n, [now] * n,
                                          [False] * n)

    def forget_firing(self) -> None:
        """A leader is known again: firing notices not resolved by now (their rule is gone)
        and their retries are dropped."""
        for nid in [k for k, s in self.sending.items()
                    if s.notice.status == AlertStatus.FIRING]:
            del self.sending[nid]

    def due(self, now: float) -> list[Attempt]:
        return [Attempt(s.notice.id, i, s.sinks[i], dict(s.notice.body))
                for s in self.sending.values() for i in range(len(s.sinks))
                if s.pending(i) and backoff.due(s.next_at[i], now)]

    def record(self, nid: str, sink: int, error: str | None, now: float, rand: float) -> None:
        s = self.sending.get(nid)
        if s is None:
            return
        s.attempts[sink] += 1
        if error is None:
            s.delivered[sink] = True
        else:
            s.next_at[sink] = now + backoff.retry_delay(s.attempts[sink], rand)
        # Done with a resolved notice once no sink is pending; a firing one is kept for its
        # resolved one to know where it got through.
        if s.notice.status == AlertStatus.RESOLVED and not any(
                s.pending(i) for i in range(len(s.sinks))):
            del self.sending[nid]


def _where(sink: Sink) -> tuple[str, str]:
    return (str(sink.type), sink.url or " ".join(sink.command))
