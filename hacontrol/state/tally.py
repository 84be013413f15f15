"""The allocations the health score and the alert rules look at, kept as entries apply.

Most allocations run quietly: what the score and the rules judge is the few that are
pending, failed or lost lately, or restarting. Walking every allocation to find them cost
~90 ms at 10,000 allocations and 250-450 ms at 100,000, under the apply lock, on every
alert check and every `GET /v1/health/score` (bench/alerts.py). This index keeps them
aside instead, so a check costs what it finds (hacontrol/health/view.py):

- `pending`: pending and wanted (desired `run`), in creation order;
- `failed`: failed or lost, ordered by a key no older than their `updated_at`, so a check
  walks them newest first and stops at the first older than what it looks back to;
- `restarted`: restarted at least once, ordered likewise by a key no older than their last
  restart mark, with `marks`, the (wall time, restarts) of each change the log made to
  the restart count (the newest `MARKS_KEPT`), which is what restart windows are judged
  from, and `rise`, the count now less the lowest kept mark's: no window sees more
  restarts than that of an allocation made before it began, so a check skips those that
  cannot reach its threshold (one restart after a node's reboot is not flapping).

Derived, never written to the log nor snapshotted, so the state digest and the snapshot
encoding do not change. Handlers mark the allocations they change (`Store.touch_alloc`,
`add_alloc`, `forget_alloc`); `refresh` looks at them again once the entry is applied, in
id order, with the entry's timestamp (stamped by the proposer, the same on every replica),
so every replica that applied the same entries holds the same index. `rebuild` derives it
from the tables alone (after a restore), with one mark per restarted allocation, its
`(updated_at, restarts)`: the restart history before a restore is not in the state (as
the event buffer is not), and a test checks the kept index against it after random
histories (tests/unit/test_alert_tally.py).

Keys are a running maximum of the entries' timestamps rather than the timestamps
themselves: a proposer's clock may step back, and keys that never decrease keep each
table ordered by key, so the newest-first walk may stop at the first key that is too old.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

from hacontrol.model.records import Allocation
from hacontrol.model.states import AllocState, DesiredState

# Restart marks kept per allocation: a window holding more than this many restarts of one
# allocation judges it from the oldest kept mark, which is past any flapping threshold.
MARKS_KEPT = 64
_FAILED = frozenset({AllocState.FAILED, AllocState.LOST})

Mark = tuple[float, int]


class Tally:
    def __init__(self) -> None:
        self.pending: dict[str, None] = {}
        self.failed: dict[str, float] = {}  # id -> key, keys never decreasing
        self.restarted: dict[str, float] = {}  # id -> key, keys never decreasing
        self.marks: dict[str, list[Mark]] = {}  # the restarted ones' marks, oldest first
        self.rise: dict[str, int] = {}  # the restarted ones' count less their lowest mark's
        self.clock = float("-inf")  # the highest timestamp applied (or derived) so far
        self.dirty: set[str] = set()

    def touch(self, alloc_id: str) -> None:
        self.dirty.add(alloc_id)

    def fork(self) -> Tally:
        """A copy for a dry run's store: its handlers mark allocations here, never in the
        live index (a dry run never refreshes, so the tables are shared read only)."""
        f = copy.copy(self)
        f.dirty = set()
        return f

    # ------------------------------------------------------------ keeping

    def refresh(self, allocs: Mapping[str, Allocation], ts: float) -> None:
        """Look again at the marked allocations after an entry stamped `ts`."""
        if not self.dirty:
            return
        self.clock = max(self.clock, ts)
        dirty, self.dirty = self.dirty, set()
        for alloc_id in sorted(dirty):
            alloc = allocs.get(alloc_id)
            if alloc is None:  # forgotten
                self.pending.pop(alloc_id, None)
                self.failed.pop(alloc_id, None)
                self.restarted.pop(alloc_id, None)
                self.marks.pop(alloc_id, None)
                self.rise.pop(alloc_id, None)
                continue
            self._classify(alloc, ts)

    def _classify(self, a: Allocation, ts: float) -> None:
        if a.state == AllocState.PENDING and a.desired == DesiredState.RUN:
            self.pending[a.id] = None
        else:
            self.pending.pop(a.id, None)
        if a.state in _FAILED:
            key = self.failed.get(a.id)
            if key is None or a.updated_at > key:
                self.failed.pop(a.id, None)
                self.failed[a.id] = self.clock  # to the end: the newest key
        else:
            self.failed.pop(a.id, None)
        if a.restarts > 0:
            marks = self.marks.setdefault(a.id, [])
            if not marks or marks[-1][1] != a.restarts:
                marks.append((ts, a.restarts))
                if len(marks) > MARKS_KEPT:
                    del marks[0]
                self.rise[a.id] = a.restarts - min(n for _, n in marks)
                self.restarted.pop(a.id, None)
                self.restarted[a.id] = self.clock
        else:
            self.restarted.pop(a.id, None)
            self.marks.pop(a.id, None)
            self.rise.pop(a.id, None)

    @classmethod
    def rebuild(cls, allocs: Mapping[str, Allocation]) -> Tally:
        """The index derived from the tables alone (table order among equal keys)."""
        t = cls()
        failed: list[Allocation] = []
        restarted: list[Allocation] = []
        # One pass over every allocation on a restore: the members looked up once (an
        # enum member's lookup is most of a bare comparison's cost).
        pending, run, clock = AllocState.PENDING, DesiredState.RUN, t.clock
        for a in allocs.values():
            state = a.state
            if a.updated_at > clock:
                clock = a.updated_at
            if state == pending and a.desired == run:
                t.pending[a.id] = None
            elif state in _FAILED:
                failed.append(a)
            if a.restarts > 0:
                restarted.append(a)
        t.clock = clock
        for a in sorted(failed, key=lambda x: x.updated_at):
            t.failed[a.id] = a.updated_at
        for a in sorted(restarted, key=lambda x: x.updated_at):
            t.restarted[a.id] = a.updated_at
            t.marks[a.id] = [(a.updated_at, a.restarts)]
            t.rise[a.id] = 0
        return t

    # ------------------------------------------------------------ reading

    def failed_since(self, since: float) -> Iterator[str]:
        """The failed or lost allocations that may have changed at `since` or later
        (newest first; the caller checks each one's `updated_at`)."""
        for alloc_id, key in reversed(self.failed.items()):
            if key < since:
                return
            yield alloc_id

    def restarted_after(self, start: float) -> Iterator[str]:
        """The restarted allocations whose last mark may be after `start` (newest first):
        the others restarted no more within any window that begins at `start` or later."""
        for alloc_id, key in reversed(self.restarted.items()):
            if key <= start:
                return
            yield alloc_id
