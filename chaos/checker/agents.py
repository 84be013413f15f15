"""Checks of runs with real agents, each a pure function of the recorded history.

The process checks read what the OS showed after the final heal (recorded by
`chaos.agents.AgentsWorkload.settle` in `final["os_processes"]`), never the API's own
account; the capacity check reads placement polls (`kind == "placement"`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from chaos.checker.invariants import Verdict
from chaos.history import History

# Allocation states that occupy capacity on their node (pending counts once it has a node).
HOLDING = frozenset({"pending", "starting", "running", "paused", "exited"})
EPSILON = 1e-6  # cpu sums are floats


def process_counts(h: History, bound_s: float) -> Verdict:
    """Every job had exactly its count of live processes within `bound_s` of the final heal."""
    rec = h.final.get("os_processes")
    if not rec:
        return Verdict("process_counts", False, "no OS process samples were recorded")
    samples = rec.get("samples", [])
    expected = {j: n for j, n in rec.get("expected", {}).items() if n}
    settled = rec.get("settled_at")
    if settled is not None:
        took = float(settled) - float(rec["healed_at"])
        ok = took <= bound_s
        return Verdict("process_counts", ok,
                       f"{sum(expected.values())} processes of {len(expected)} jobs as "
                       f"counted by the OS, {took:.1f}s after the final heal (bound "
                       f"{bound_s:g}s, {len(samples)} samples)",
                       [] if ok else [{"expected": expected, "settled_at": settled,
                                       "healed_at": rec["healed_at"]}])
    last = samples[-1] if samples else {}
    seen = last.get("by_job", {})
    diff = {j: {"expected": expected.get(j, 0), "running": seen.get(j, 0)}
            for j in sorted(set(expected) | set(seen)) if expected.get(j, 0) != seen.get(j, 0)}
    return Verdict("process_counts", False,
                   f"process counts never matched the jobs' counts within {bound_s:g}s of the "
                   f"final heal ({len(samples)} samples); last: {diff or 'duplicates'}",
                   [{"last_sample": last, "expected": expected, "mismatch": diff}])


def never_oversubscribed(h: History) -> Verdict:
    """In no observed state did a node's resource-holding allocations exceed its capacity."""
    polls = [p for p in h.polls if p.get("kind") == "placement"]
    bad: list[dict[str, Any]] = []
    unknown_nodes: set[str] = set()
    for p in polls:
        used: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for _id, _job, node, state, cpu, mem in p["allocs"]:
            if node is None or state not in HOLDING:
                continue
            u = used[node]
            u[0] += float(cpu)
            u[1] += float(mem)
            u[2] += 1
        for node, (cpu, mem, n) in sorted(used.items()):
            cap = p["nodes"].get(node)
            if cap is None:
                unknown_nodes.add(node)
                continue
            if cpu > float(cap["cpu"]) + EPSILON or mem > float(cap["memory_mb"]):
                bad.append({"t": p["t"], "replica": p.get("replica"), "node": node,
                            "allocations": int(n), "cpu": round(cpu, 6),
                            "memory_mb": mem, "capacity": {"cpu": cap["cpu"],
                                                           "memory_mb": cap["memory_mb"]}})
    extra = f"; allocations on unregistered nodes {sorted(unknown_nodes)}" \
        if unknown_nodes else ""
    if not polls:
        return Verdict("oversubscription", False, "no placement polls were recorded")
    return Verdict("oversubscription", not bad,
                   f"{len(polls)} observed states, {len(bad)} node states over capacity{extra}",
                   bad)


def no_duplicate_instances(h: History) -> Verdict:
    """After the final heal, no allocation ever had two live processes."""
    rec = h.final.get("os_processes")
    if not rec:
        return Verdict("duplicates", False, "no OS process samples were recorded")
    samples = rec.get("samples", [])
    bad = [{"t": s.get("t"), "alloc": a, "pids": pids}
           for s in samples for a, pids in sorted(s.get("duplicates", {}).items())]
    return Verdict("duplicates", not bad,
                   f"{len(samples)} OS samples after the final heal, "
                   f"{len({b['alloc'] for b in bad})} allocations with more than one process",
                   bad)


def agent_faults(h: History) -> list[str]:
    """Agents any fault (or the final heal) named: only they may rightly be marked down."""
    named: set[str] = set()
    for f in h.faults:
        named.update(f.get("targets") or [])
        for g in f.get("groups") or []:
            named.update(g)
    # Naming convention from chaos.cluster.base: agents are "n1", "n2"...
    return sorted(n for n in named if n.startswith("n"))


def nodes_stayed_up(h: History) -> Verdict:
    """In a run whose faults never touched an agent, no observed state had a node down or
    an allocation lost: a busy agent, or a leader that changed, is not a dead node."""
    touched = agent_faults(h)
    if touched:
        return Verdict("nodes_up", True, f"not applicable: faults on agents {touched}")
    polls = [p for p in h.polls if p.get("kind") == "placement"]
    if not polls:
        return Verdict("nodes_up", False, "no placement polls were recorded")
    down: dict[str, dict[str, Any]] = {}
    lost: dict[str, dict[str, Any]] = {}
    for p in polls:
        for node, cap in p["nodes"].items():
            if cap.get("status") != "ready":
                down.setdefault(node, {"t": p["t"], "replica": p.get("replica"), "node": node,
                                       "status": cap.get("status")})
        for alloc_id, job, node, state, _cpu, _mem in p["allocs"]:
            if state == "lost":
                lost.setdefault(alloc_id, {"t": p["t"], "replica": p.get("replica"),
                                           "alloc": alloc_id, "job": job, "node": node})
    bad = list(down.values()) + list(lost.values())
    return Verdict("nodes_up", not bad,
                   f"{len(polls)} observed states: nodes seen down {sorted(down)}, "
                   f"{len(lost)} allocations seen lost", bad)


def check_all(h: History, bound_s: float) -> list[Verdict]:
    return [process_counts(h, bound_s), never_oversubscribed(h), no_duplicate_instances(h),
            nodes_stayed_up(h)]
