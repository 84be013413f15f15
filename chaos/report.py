"""Run results: `report.json` (machine-readable verdicts), `report.md`, `timeline.png`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from .checker.membership import changes as membership_changes
from .checker.membership import tally as membership_tally
from .history import FAIL, OK, UNKNOWN, History


def summarize(h: History, verdicts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    by_status = Counter(op.status for op in h.ops)
    by_f = Counter(op.f for op in h.ops)
    faults = [f for f in h.faults if f.get("phase") == "start"]
    out = {
        "valid": all(v["valid"] for v in verdicts.values()),
        "seed": h.seed,
        "nemesis": h.nemesis,
        "backend": h.backend,
        "plant": h.meta.get("plant"),
        "duration_s": h.meta.get("duration_s"),
        "operations": len(h.ops),
        "outcomes": {OK: by_status.get(OK, 0), FAIL: by_status.get(FAIL, 0),
                     UNKNOWN: by_status.get(UNKNOWN, 0)},
        "by_function": dict(by_f),
        "faults": len(faults),
        "convergence_s": h.final.get("convergence", {}).get("seconds"),
        "checkers": verdicts,
    }
    tally = membership_tally(h)
    if tally is not None:
        out["membership"] = tally
    return out


def write_markdown(path: Path, summary: dict[str, Any], h: History) -> None:
    lines = [f"# Chaos run: {summary['nemesis']} (seed {summary['seed']})", "",
             f"- backend: {summary['backend']}" + (f", planted fault: **{summary['plant']}**"
                                                   if summary.get("plant") else ""),
             f"- verdict: **{'valid' if summary['valid'] else 'INVALID'}**",
             f"- operations: {summary['operations']} "
             f"(ok {summary['outcomes']['ok']}, fail {summary['outcomes']['fail']}, "
             f"unknown {summary['outcomes']['unknown']})",
             f"- faults injected: {summary['faults']}",
             f"- convergence after final heal: {summary['convergence_s']} s", "",
             "## Checkers", "", "| checker | verdict | summary |", "|---|---|---|"]
    for name, v in summary["checkers"].items():
        lines.append(f"| {name} | {'ok' if v['valid'] else '**violation**'} | "
                     f"{v['summary'].replace('|', '/')} |")
    lines += ["", "## Faults", "", "| t (s) | phase | fault | targets |", "|---|---|---|---|"]
    for f in h.faults:
        lines.append(f"| {f.get('t', 0):.2f} | {f.get('phase')} | {f.get('fault')} | "
                     f"{', '.join(map(str, f.get('targets', []) or []))} |")
    lines += _power_cut_lines(h)
    lines += _membership_lines(h)
    lines += ["", "## Operations by function", "", "| function | count |", "|---|---|"]
    for f, n in sorted(summary["by_function"].items()):
        lines.append(f"| {f} | {n} |")
    for name, v in summary["checkers"].items():
        if not v["valid"] and v.get("details"):
            lines += ["", f"## {name}: details", "", "```",
                      json.dumps(v["details"][:10], indent=2, default=str)[:6000], "```"]
    lines.append("")
    path.write_text("\n".join(lines))


def _membership_lines(h: History) -> list[str]:
    rows = membership_changes(h)
    if not rows:
        return []
    lines = ["", "## Membership changes", "",
             "| t (s) | change | member | with | outcome | took (s) | voters after |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        outcome = f"{r['outcome']}" + (f" ({r['reason']})" if r.get("reason") else "") + (
            f", {r['settled']}" if r.get("settled") else "")
        lines.append(f"| {r['t'] or 0:.2f} | {r['change']} | {r['member'] or '-'} | "
                     f"{r['companion']} | {outcome} | {r['took_s']} | "
                     f"{', '.join(r['voters_after'] or []) or '?'} |")
    return lines


def _power_cut_lines(h: History) -> list[str]:
    """What each replica's disk held right after each power cut (from the log snapshots)."""
    snaps = [(f.get("t", 0.0), s) for f in h.faults if f.get("phase") == "start"
             for s in f.get("logs") or [] if s]
    if not snaps:
        return []
    lines = ["", "## Logs on disk after each power cut", "",
             "| t (s) | after | replica | entries | first-last | last term | term | commit |",
             "|---|---|---|---|---|---|---|---|"]
    for t, s in snaps:
        for name, r in (s.get("replicas") or {}).items():
            span = f"{r['first']}-{r['last']}" if r.get("entries") else "-"
            lines.append(f"| {t:.2f} | {s.get('after', '')} | {name} | {r.get('entries', 0)} "
                         f"| {span} | {r.get('last_term')} | {r.get('term')} | "
                         f"{r.get('commit')} |")
    return lines


def write_timeline(path: Path, h: History) -> None:
    """Operations per replica over time, coloured by outcome, fault windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    replicas = sorted({op.replica for op in h.ops if op.replica})
    row = {r: i for i, r in enumerate(replicas)}
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.6 * max(1, len(replicas))))
    colours = {OK: "#2a7", FAIL: "#999", UNKNOWN: "#d33"}
    for status in (OK, FAIL, UNKNOWN):
        xs = [op.invoke for op in h.ops if op.status == status and op.replica in row]
        ys = [row[op.replica] + (hash(op.id) % 100 - 50) / 200 for op in h.ops
              if op.status == status and op.replica in row]
        ax.scatter(xs, ys, s=4, c=colours[status], label=status, linewidths=0)
    starts: dict[tuple[str, str], float] = {}
    end_t = max([op.invoke for op in h.ops] + [1.0])
    spans = []
    for f in h.faults:
        k = (str(f.get("fault")), str(f.get("id", f.get("targets"))))
        if f.get("phase") == "start":
            starts[k] = float(f.get("t", 0))
        elif k in starts:
            spans.append((starts.pop(k), float(f.get("t", 0)), k[0]))
    spans += [(t, end_t, k[0]) for k, t in starts.items()]
    for a, b, name in spans:
        ax.axvspan(a, b, color="#fc3", alpha=0.25)
        ax.text(a, len(replicas) - 0.4, name, fontsize=7, rotation=0, va="bottom")
    ax.set_yticks(range(len(replicas)), replicas)
    ax.set_xlabel("seconds since start")
    ax.set_title(f"{h.nemesis} seed {h.seed}: operations by replica asked")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_all(out: Path, h: History, verdicts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    h.save(out / "history.jsonl")
    summary = summarize(h, verdicts)
    (out / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_markdown(out / "report.md", summary, h)
    try:
        write_timeline(out / "timeline.png", h)
    except Exception as exc:  # a missing plotting library must not hide the verdicts
        (out / "timeline.error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
    return summary
