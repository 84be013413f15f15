"""The view as a walk over every allocation and the event buffer finds it: the reference
the tally-backed `view.build_view` is checked against (tests/unit/test_alert_tally.py),
and the "before" of bench/alerts.py. Not used by the running system: at 100,000
allocations this walk held the apply lock for 250-450 ms per alert check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from hacontrol.model.records import Allocation
from hacontrol.model.states import TERMINAL_STATES, AllocState, DesiredState
from hacontrol.state.machine import StateMachine

from .view import LOOKBACK_S, Captured, ClusterView, ReplicaRow, assemble, copied

_NOTED_STATES = frozenset({AllocState.PENDING, AllocState.FAILED, AllocState.LOST})


def restart_marks(m: StateMachine, since: float) -> dict[str, list[tuple[float, int]]]:
    """Each allocation's restart counts as the event buffer recorded them."""
    marks: dict[str, list[tuple[float, int]]] = {}
    for e in m.events:
        restarts = e.get("restarts")
        if not restarts or e["ts"] < since or not isinstance(restarts, int):
            continue
        alloc = e.get("alloc")
        if alloc is not None:
            marks.setdefault(str(alloc), []).append((float(e["ts"]), restarts))
    return marks


def noted(m: StateMachine, since: float) -> list[Allocation]:
    """Pending and wanted; failed or lost since `since`; restarted and not long finished."""
    out = []
    for a in m.allocs.values():
        if not a.restarts and a.state not in _NOTED_STATES:
            continue
        if a.state == AllocState.PENDING:
            if a.desired == DesiredState.RUN:
                out.append(a)
        elif a.updated_at >= since or (a.restarts and a.state not in TERMINAL_STATES):
            out.append(a)
    return out


def full_view(m: StateMachine, now: float, replicas: Iterable[ReplicaRow] = (),
              leader: str | None = None, leaderless_s: float = 0.0,
              leading_s: float = 0.0,
              marks: Mapping[str, Sequence[tuple[float, int]]] | None = None) -> ClusterView:
    """`marks`: each allocation's restart marks (default: from the event buffer)."""
    since = now - LOOKBACK_S
    found = noted(m, since)
    if marks is None:
        marks = restart_marks(m, since) if any(a.restarts for a in found) else {}
    return Captured(assemble(m, now, replicas, leader, leaderless_s, leading_s),
                    tuple(copied(a, marks.get(a.id, ())) for a in found)).view()
