"""Node liveness verdicts: a pure function of heartbeat times and the clock."""

from __future__ import annotations

DEFAULT_GRACE_S = 3.0


def nodes_to_mark_down(ready_nodes: list[str], heartbeats: dict[str, float],
                       leader_since: float, now: float,
                       grace_s: float = DEFAULT_GRACE_S) -> list[str]:
    """Ready nodes silent for longer than the grace period.

    A node never heard from by this leader counts from the moment it became leader: a new
    leader gives every node a fresh grace period instead of inheriting a stale view.
    """
    out = []
    for name in ready_nodes:
        last = max(heartbeats.get(name, leader_since), leader_since)
        if now - last > grace_s:
            out.append(name)
    return out
