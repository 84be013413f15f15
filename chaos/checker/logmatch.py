"""Raft's Log Matching property over the logs replicas hold on disk.

Raft (figure 3) promises: if two logs hold an entry with the same index and term, they hold
the same command there and agree on every entry before it. Logs may legitimately differ
beyond that point: an entry appended by a leader that lost its term, not yet overwritten.
So for each pair of replicas, the entries at or below the highest index where both hold the
same term must be identical, and so must every entry both hold at or below the lower of their
commit indexes (committed entries never change). The first index breaking either rule is a
violation.

The runner snapshots every replica's log right after each power cut (the cut ones as they
will restart, the others live), after each membership change (the members then, joiners once
caught up: a removed replica is compared no more) and once more after the final convergence;
each snapshot is compared here when taken, and `log_matching` turns the recorded results
into a verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from pathlib import Path
from typing import Any

from chaos.history import History

from .invariants import Verdict
from .journal import ReplicaLog, read_log


def first_difference(a: ReplicaLog, b: ReplicaLog) -> dict[str, Any] | None:
    """The first index where `a` and `b` break Log Matching, or None."""
    common = sorted(set(a.entries) & set(b.entries))
    if not common:
        return None
    same_term = [i for i in common if a.entries[i].term == b.entries[i].term]
    matched = same_term[-1] if same_term else 0
    committed = min(a.commit_index or 0, b.commit_index or 0)
    bound = max(matched, committed)
    for i in common:
        if i > bound:
            break
        if a.entries[i] != b.entries[i]:
            return {"index": i, "rule": "log matching" if i <= matched else "committed entry",
                    "matched_up_to": matched, "committed_up_to": committed,
                    "a": a.entries[i].to_json(), "b": b.entries[i].to_json()}
    return None


def compare(logs: Mapping[str, ReplicaLog]) -> dict[str, Any]:
    """Every pair compared; `divergences` lists the pairs that break the property."""
    divergences = []
    for x, y in combinations(sorted(logs), 2):
        diff = first_difference(logs[x], logs[y])
        if diff is not None:
            divergences.append({"replicas": [x, y], **diff})
    return {"replicas": {n: log.summary() for n, log in sorted(logs.items())},
            "divergences": divergences}


def snapshot(data_dirs: Mapping[str, Path]) -> dict[str, Any]:
    """Read every replica's log from its data dir and compare them."""
    return compare({name: read_log(d) for name, d in data_dirs.items()})


def log_matching(h: History) -> Verdict:
    """No snapshot taken after a power cut (or at the end) shows two logs disagreeing."""
    snaps: list[dict[str, Any]] = []
    for ev in h.faults:
        # Power cuts snapshot with their start, membership changes with their end.
        if ev.get("phase") in ("start", "end"):
            snaps += [s for s in ev.get("logs") or [] if s]
    final = h.final.get("logs")
    if final:
        snaps.append({"after": "the final convergence", **final})
    bad = []
    unreadable = []
    for s in snaps:
        for d in s.get("divergences", []):
            bad.append({"after": s.get("after"), **d})
        if s.get("error"):
            unreadable.append({"after": s.get("after"), "error": s["error"]})
        for name, r in (s.get("replicas") or {}).items():
            if r.get("error"):
                unreadable.append({"after": s.get("after"), "replica": name,
                                   "error": r["error"]})
    if not snaps:
        return Verdict("log_matching", True,
                       "no log snapshots taken (no power cuts, no membership changes)")
    first = (f"; first: {bad[0]['replicas'][0]} and {bad[0]['replicas'][1]} differ at index "
             f"{bad[0]['index']} after {bad[0]['after']}" if bad else "")
    return Verdict("log_matching", not bad,
                   f"{len(snaps)} snapshots of every replica's log, {len(bad)} pairs "
                   f"disagreeing{first}; {len(unreadable)} unreadable", bad + unreadable)
