"""plan: the leader's placements (and preemptions), re-checked against the state as it is
when the plan is applied."""

from __future__ import annotations

from typing import Any

from hacontrol.model.states import AllocState, DesiredState

from ..context import Applying, Result
from ..store import Store
from ..validate import parse_evictions, parse_placements
from .allocations import stop_and_replace


def apply_plan(tx: Applying, args: dict[str, Any]) -> Result:
    s = tx.store
    parsed = parse_placements(args)
    evicted = stop_and_replace(tx, parse_evictions(args))
    if evicted:
        tx.event("allocs_preempted", allocations=evicted)
    # Free room of the nodes this plan names, worked out when first needed: working it out
    # for every node walked every allocation of the cluster on each plan, on every replica.
    free: dict[str, tuple[float, int]] = {}
    placed: list[str] = []
    rejected: list[list[str]] = []
    ports: dict[str, set[int]] = {}  # ports held per node, looked up when first needed
    # Re-check each placement against the state as it is now, not as the planner saw it:
    # two plans made from the same view can never oversubscribe a node.
    for alloc_id, node_name in parsed:
        alloc = s.allocs.get(alloc_id)
        node = s.nodes.get(node_name)
        reason = None
        if alloc is None or alloc.desired != DesiredState.RUN \
                or alloc.state != AllocState.PENDING:
            reason = "allocation no longer pending"
        elif alloc.node is not None:
            reason = "allocation already placed"
        elif node is None or not node.eligible:
            reason = "node not ready or draining"
        else:
            if node_name not in free:
                free[node_name] = s.node_free(node)
            cpu, mem = free[node_name]
            if alloc.resources.cpu > cpu + 1e-9 or alloc.resources.memory_mb > mem:
                reason = "node has no room"
            elif alloc.ports:
                held = ports.get(node_name)
                if held is None:
                    held = ports[node_name] = ports_held(s, node_name)
                taken = sorted(held.intersection(alloc.ports.values()))
                if taken:
                    reason = "port " + ", ".join(map(str, taken)) + " already in use there"
        if reason is not None or alloc is None:
            rejected.append([alloc_id, reason or ""])
            continue
        cpu, mem = free[node_name]
        free[node_name] = (cpu - alloc.resources.cpu, mem - alloc.resources.memory_mb)
        if alloc.ports and node_name in ports:
            ports[node_name].update(alloc.ports.values())
        s.place(alloc, node_name)
        alloc.placed_at = tx.ts
        alloc.updated_at = tx.ts
        alloc.modify_index = tx.index
        alloc.message = ""
        placed.append(alloc_id)
    if placed:
        tx.event("allocs_placed", placements=[[a, s.allocs[a].node] for a in placed])
    return {"placed": placed, "rejected": rejected, "evicted": evicted}


def ports_held(s: Store, node: str) -> set[int]:
    """The ports allocations on `node` hold (static ones from their creation, dynamic
    ones as reported) until they have stopped."""
    held: set[int] = set()
    for a in s.node_allocs(node):
        if a.ports and a.holds_resources:
            held.update(a.ports.values())
    return held
