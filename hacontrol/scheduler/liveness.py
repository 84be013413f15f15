"""Node liveness verdicts: pure functions of what the leader heard and the clock.

A slow node is not a dead one. A node is alive while its agent has a sync request in
flight on an open connection (a long poll, or a report the leader is still writing), or
was last heard from (a sync arrived or was answered, or its health endpoint answered a
probe) within the grace period. A silent node that the leader can reach is probed before
it is marked down: one that still answers stays ready, since marking it down would replace
allocations whose processes are still running there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

DEFAULT_GRACE_S = 3.0
# The longest long poll the leader grants (`api/agent_routes.py`). A new leader cannot tell
# an agent still waiting out a poll at the old one from a dead node, so a node it has never
# heard from is marked down without a probe only after the grace plus this.
LONGEST_POLL_S = 30.0
# The long poll the leader asks of an agent with nothing to report. Its connection has TCP
# keep-alive at both ends (`model/keepalive.py`), so a vanished node stops counting as
# syncing within a few seconds however long its poll: the poll's length only sets how
# often an idle node's answer costs both sides a round trip. 5 s took the idle CPU of an
# agent with 200 sleeping processes from 0.3-0.4 % of a core to 0.1-0.2 %.
BASE_POLL_S = 5.0
# Beyond BASE_POLL_S * POLLS_PER_S nodes the poll grows with the cluster, so that idle
# nodes cost the leader about this many answers a second (Nomad stretches its heartbeat
# TTLs the same way).
POLLS_PER_S = 500.0


def poll_seconds(nodes: int) -> float:
    """The long poll to ask of every agent in a cluster of `nodes` nodes."""
    return min(LONGEST_POLL_S, max(BASE_POLL_S, nodes / POLLS_PER_S))


def nodes_to_mark_down(ready_nodes: list[str], heartbeats: Mapping[str, float],
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


@dataclass(frozen=True)
class Heard:
    """What the leader knows of its nodes' agents (monotonic times)."""

    heartbeats: Mapping[str, float] = field(default_factory=dict)  # last contact
    syncing: Collection[str] = ()  # a sync request in flight on an open connection
    probeable: Collection[str] = ()  # nodes with an address the leader can probe
    probing: Collection[str] = ()  # a probe under way
    probe_failed: Mapping[str, float] = field(default_factory=dict)  # last failed probe


@dataclass(frozen=True)
class Verdicts:
    down: list[str]  # silent, and no probe can (or did) show it alive
    probe: list[str]  # silent, but reachable: ask its agent before judging


def judge(ready_nodes: list[str], heard: Heard, leader_since: float, now: float,
          grace_s: float = DEFAULT_GRACE_S, longest_poll_s: float = LONGEST_POLL_S
          ) -> Verdicts:
    """Which ready nodes to mark down and which to probe first (see the module docstring).

    A probe counts only if it failed after the node's last contact: an older failure says
    nothing about a node that has been heard from since.
    """
    # Silence first, a sync in flight second: asking every ready node whether it has one
    # (its requests' connections, one call each) was 5 % of a leader's CPU at 5,000 nodes,
    # where a handful are silent at a time.
    silent = [n for n in nodes_to_mark_down(ready_nodes, heard.heartbeats, leader_since, now,
                                            grace_s) if n not in heard.syncing]
    down: list[str] = []
    probe: list[str] = []
    for name in silent:
        if name in heard.probing:
            continue
        last = max(heard.heartbeats.get(name, leader_since), leader_since)
        failed = heard.probe_failed.get(name)
        if name in heard.probeable and (failed is None or failed < last):
            probe.append(name)
        elif name in heard.heartbeats or name in heard.probeable \
                or now - leader_since > grace_s + longest_poll_s:
            down.append(name)
    return Verdicts(down, probe)
