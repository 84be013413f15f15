"""The recent events, derived deterministically from applied entries.

Not part of snapshots: a replica restored from one starts its event buffer afresh.
"""

from __future__ import annotations

from collections import deque
from typing import Any

EVENTS_KEPT = 5000

Event = dict[str, Any]


class EventLog:
    def __init__(self, kept: int = EVENTS_KEPT) -> None:
        self.buffer: deque[Event] = deque(maxlen=kept)

    def add(self, event: Event) -> None:
        # Several events can share a log index; `seq` numbers them within it so a stream
        # can resume exactly after the last one a client saw ("index.seq").
        last = self.buffer[-1] if self.buffer else None
        seq = last["seq"] + 1 if last is not None and last["index"] == event["index"] else 0
        event["seq"] = seq
        event["id"] = f"{event['index']}.{seq}"
        self.buffer.append(event)

    def since(self, index: int, seq: int = -1, limit: int = 1000,
              kinds: set[str] | None = None) -> list[Event]:
        """Events after (index, seq), of the given kinds; seq -1 means after every event
        of `index`. The limit applies after filtering, so a filtered reader that resumes
        from its last event never sees the same window twice."""
        out = []
        for e in self.buffer:
            if e["index"] > index or (e["index"] == index and seq >= 0 and e["seq"] > seq):
                if kinds and e["type"] not in kinds:
                    continue
                out.append(e)
                if len(out) >= limit:
                    break
        return out
