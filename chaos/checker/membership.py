"""The membership changes of a run (the `membership` nemesis) and the membership it ends with.

Expected under faults, and so not violations: a refusal (409 `change_in_progress`,
`quorum_at_risk`), a change whose answer was lost (its window's reconciliation with the
leader's table of voters settles it), a window that makes no change while a join catches
up. Violations: a change the cluster answered with anything else (`failed`: a join refused
for good, a removal answered 4xx/5xx), the leader listing fewer than `MIN_VOTERS` voters,
and at the end voters that are not the replicas running (a removed replica still voting, a
running one left out) or a voter the leader cannot reach.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from chaos.history import History

from .invariants import Verdict

MIN_VOTERS = 3
KIND = "membership"


def changes(h: History) -> list[dict[str, Any]]:
    """One row per membership window: what it changed, with what, and how it ended."""
    starts = {ev.get("id"): ev for ev in h.faults
              if ev.get("kind") == KIND and ev.get("phase") == "start"}
    rows = []
    for ev in h.faults:
        if ev.get("kind") != KIND or ev.get("phase") != "end":
            continue
        st = starts.get(ev.get("id"), {})
        row = {"id": ev.get("id"), "t": ev.get("t"), "change": st.get("change"),
               "member": st.get("member"), "companion": st.get("companion"),
               "voters_before": st.get("voters"), "outcome": ev.get("outcome"),
               "reason": ev.get("reason"), "took_s": ev.get("took_s"),
               "voters_after": ev.get("voters_after")}
        after = row["voters_after"]
        if row["outcome"] == "unknown" and after is not None and row["member"]:
            # A lost answer, settled by the leader's table once the faults healed.
            took_effect = (row["member"] in after) == (row["change"] == "join")
            row["settled"] = "took effect" if took_effect else "did not take effect"
        rows.append(row)
    return rows


def tally(h: History) -> dict[str, Any] | None:
    """Counts for the report: joins and removals done, refused, uncertain."""
    rows = changes(h)
    if not rows:
        return None
    done = Counter(r["change"] for r in rows if r["outcome"] == "done"
                   or r.get("settled") == "took effect")
    return {"windows": len(rows), "joins": done.get("join", 0),
            "removals": done.get("remove", 0),
            "refused": dict(Counter(str(r["reason"]) for r in rows if r["outcome"] == "refused")),
            "uncertain": sum(1 for r in rows if r["outcome"] == "unknown"
                             and "settled" not in r),
            "failed": sum(1 for r in rows if r["outcome"] == "failed"),
            "no_change": sum(1 for r in rows if r["change"] == "none")}


def membership(h: History) -> Verdict | None:
    """None for a run without membership changes."""
    rows = changes(h)
    fin = h.final.get("membership")
    if not rows and fin is None:
        return None
    bad: list[dict[str, Any]] = []
    for r in rows:
        if r["outcome"] == "failed":
            bad.append({"problem": "the cluster failed a change", **r})
        for key in ("voters_before", "voters_after"):
            if r[key] is not None and len(r[key]) < MIN_VOTERS:
                bad.append({"problem": f"fewer than {MIN_VOTERS} voters", **r})
    final = "no final membership recorded"
    if fin is not None:
        voters, running = fin.get("voters"), fin.get("tracked") or []
        if voters is None:
            bad.append({"problem": "no leader listed the voters at the end", **fin})
        else:
            final = f"final voters {', '.join(voters)}"
            if sorted(voters) != sorted(running):
                bad.append({"problem": "the voters at the end are not the replicas running",
                            **fin})
            if fin.get("dead_voters"):
                bad.append({"problem": "voters the leader cannot reach at the end", **fin})
            if len(voters) < MIN_VOTERS:
                bad.append({"problem": f"fewer than {MIN_VOTERS} voters at the end", **fin})
    t = tally(h) or {"windows": 0, "joins": 0, "removals": 0, "refused": {}, "uncertain": 0}
    refused = sum(t["refused"].values())
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(t["refused"].items()))
    return Verdict("membership", not bad,
                   f"{t['windows']} windows: {t['joins']} joins and {t['removals']} removals "
                   f"done, {refused} refused as expected{f' ({reasons})' if reasons else ''}, "
                   f"{t['uncertain']} uncertain; {final}", bad + rows)
