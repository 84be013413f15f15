"""Checks beyond linearizability, each a pure function of the recorded history."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.history import OK, UNKNOWN, History


@dataclass
class Verdict:
    name: str
    valid: bool
    summary: str
    details: list[Any] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"valid": self.valid, "summary": self.summary, "details": self.details[:50]}


def quota_never_exceeded(h: History) -> Verdict:
    """No namespace read (by any client, at any time) showed usage above its quota."""
    bad = []
    reads = 0
    for op in h.ops:
        if op.f == "read_ns" and op.status == OK and isinstance(op.output, dict):
            reads += 1
            q, u = op.output.get("quota"), op.output.get("usage")
            if q is not None and u is not None and u > q:
                bad.append({"op": op.id, "ns": op.key, "quota": q, "usage": u,
                            "replica": op.replicas[-1] if op.replicas else op.replica})
    for snap in h.final.get("namespaces", []):
        q, u = snap.get("quota"), snap.get("usage")
        if q is not None and u is not None and u > q:
            bad.append({"final": True, **snap})
    return Verdict("quota", not bad, f"{reads} namespace reads, {len(bad)} over quota", bad)


def one_leader_per_term(h: History) -> Verdict:
    """No two replicas ever claimed leadership of the same term (from status polls)."""
    leaders: dict[int, set[str]] = {}
    for p in h.polls:
        if p.get("role") == "leader":
            leaders.setdefault(int(p["term"]), set()).add(p["replica"])
    bad = [{"term": t, "leaders": sorted(ls)} for t, ls in sorted(leaders.items()) if len(ls) > 1]
    return Verdict("leaders", not bad,
                   f"{len(leaders)} terms with a leader seen, {len(bad)} with more than one", bad)


def acknowledged_writes_present(h: History) -> Verdict:
    """Every acknowledged job write is still reflected in the final state.

    Versions only grow while a job exists, so a job's final version must be at least every
    version a client was told, unless a delete (acknowledged or uncertain) may have taken
    effect after it, i.e. did not complete before that write was invoked. A job whose acknowledged writes are all followed by no delete
    must still exist.
    """
    final_jobs: dict[tuple[str, str], dict[str, Any]] = {
        (j["namespace"], j["name"]): j for j in h.final.get("jobs", [])}
    bad = []
    checked = 0
    for op in h.ops:
        if op.f not in ("put_job", "scale") or op.status != OK or not isinstance(op.output,
                                                                                 dict):
            continue
        checked += 1
        key = (op.key, op.input["job"])
        # A delete could have taken effect after this write if it had not completed before
        # the write was invoked (an uncertain delete never completes).
        deleted_later = any(o.f == "delete" and o.key == op.key and o.input["job"] == key[1]
                            and o.status in (OK, UNKNOWN)
                            and (o.complete is None or o.complete >= op.invoke)
                            for o in h.ops)
        if deleted_later:
            continue
        fin = final_jobs.get(key)
        if fin is None:
            bad.append({"op": op.id, "job": "/".join(key), "acked_version": op.output["version"],
                        "final": None})
        elif fin["version"] < op.output["version"]:
            bad.append({"op": op.id, "job": "/".join(key), "acked_version": op.output["version"],
                        "final_version": fin["version"]})
    return Verdict("acknowledged_writes", not bad,
                   f"{checked} acknowledged job writes checked, {len(bad)} lost", bad)


def converged(h: History, bound_s: float) -> Verdict:
    c = h.final.get("convergence", {})
    ok = bool(c.get("converged")) and float(c.get("seconds", 1e9)) <= bound_s
    return Verdict("convergence", ok,
                   (f"converged {c.get('seconds', '?'):.2f}s after the final heal "
                    f"(bound {bound_s:g}s)" if c.get("converged") else
                    f"did not converge within {bound_s:g}s: {c.get('reason', '?')}"),
                   [c])


# Lines a healthy replica never logs: pysyncobj deleting entries it had applied (the wedge
# seen under load), and our own fail-stop after an internal error in apply.
ALARMS = ("truncating already-applied log entries", "replica marked broken",
          "Traceback (most recent call last)")


def replica_logs_clean(logs: Path) -> Verdict:
    """No replica log shows a wedge, a divergence alarm or an unexpected traceback."""
    bad = []
    files = sorted(logs.glob("c*.log")) if logs.is_dir() else []
    for f in files:
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if any(a in line for a in ALARMS):
                bad.append({"log": f.name, "line": n, "text": line[:300]})
    return Verdict("replica_logs", not bad,
                   f"{len(files)} replica logs scanned, {len(bad)} alarm lines", bad)
