"""What a handler gets while applying one command: the store, the command's log index and
timestamp, and the event log. Handlers read no clock: `ts` was stamped by the proposer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hacontrol.model.resources import Quota, Usage

from .events import EventLog
from .quota import check_fits
from .store import Store

Result = dict[str, Any]


@dataclass
class Applying:
    store: Store
    events: EventLog
    index: int
    ts: float
    # Test-only planted fault (see hacontrol/planted.py); None in every real deployment.
    planted_quota_skip: Callable[[], bool] | None = None
    # The accessor id of the token the command acts for (None: the controllers themselves).
    actor: str | None = None
    # A restore's state decoded before the entry applied (`prepare.Preparer.take`): the
    # outcome for a deflated body, or None (not prepared: decode it here).
    prepared: Callable[[bytes], Any] | None = None

    def event(self, kind: str, **payload: Any) -> None:
        """Record an event; it names the acting token, so the events are an audit trail."""
        self.events.add({"index": self.index, "ts": self.ts, "type": kind,
                         **{k: v for k, v in payload.items() if v is not None},
                         **({"accessor": self.actor} if self.actor is not None else {})})

    def check_quota(self, ns: str, usage: Usage) -> None:
        """Raise `Rejection` unless `usage` fits the namespace's quota."""
        if self.planted_quota_skip is not None and self.planted_quota_skip():
            return
        rej = check_fits(self.store.namespaces.get(ns, Quota()), usage)
        if rej is not None:
            raise rej
