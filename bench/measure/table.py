"""The comparison table: medians over runs, the best peer per row, hacontrol's ratio to it.

Pure functions over plain data (no clock, no I/O) so that the arithmetic the whole
comparison rests on is unit-tested (tests/unit/test_bench_compare.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

HACONTROL = "hacontrol"
# hacontrol from another checkout (`bench.compare --baseline DIR`): shown, never a peer.
BASELINE = "hacontrol-before"
Better = Literal["higher", "lower"]


def pct(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of `xs` (p in 0..1); `xs` must not be empty."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]


def median(xs: Iterable[float | None]) -> float | None:
    """Median of the values that were measured; None when none was (all runs failed)."""
    got = [x for x in xs if x is not None]
    return statistics.median(got) if got else None


@dataclass(frozen=True)
class RowSpec:
    key: str
    label: str
    unit: str
    better: Better
    spec: str = ".1f"  # format of the values
    # What hacontrol's side of this row is, when a row needs saying (job PUT or scale).
    note: str = ""


@dataclass
class Row:
    spec: RowSpec
    # system -> value of each run (None: measured but failed, e.g. a timeout)
    runs: dict[str, list[float | None]] = field(default_factory=dict)

    def add(self, system: str, value: float | None) -> None:
        self.runs.setdefault(system, []).append(value)

    def medians(self) -> dict[str, float | None]:
        return {name: median(vs) for name, vs in self.runs.items()}


def best_peer(better: Better, medians: Mapping[str, float | None]) -> tuple[str, float] | None:
    """The best peer's name and median (hacontrol excluded); None without any peer value.
    Ties go to the peer listed first, so the answer does not depend on dict order luck."""
    peers = [(n, v) for n, v in medians.items()
             if n not in (HACONTROL, BASELINE) and v is not None]
    if not peers:
        return None
    pick = max if better == "higher" else min
    target = pick(v for _, v in peers)
    return next((n, v) for n, v in peers if v == target)


def ratio(hac: float | None, best: float | None) -> float | None:
    """hacontrol / best peer; None when either is missing. A peer at 0 (e.g. no CPU time
    measurable in the window) against hacontrol above 0 is an infinite ratio, not a blank:
    hacontrol is behind there."""
    if hac is None or best is None:
        return None
    if best == 0:
        return 1.0 if hac == 0 else math.inf
    return hac / best


def ahead(better: Better, r: float | None) -> bool | None:
    """Whether hacontrol leads the row (ties count as leading); None without a ratio."""
    if r is None:
        return None
    return r >= 1.0 if better == "higher" else r <= 1.0


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def row_summary(row: Row) -> dict[str, Any]:
    """One row as plain data (the JSON output and the table are both built from it)."""
    meds = row.medians()
    best = best_peer(row.spec.better, meds)
    r = ratio(meds.get(HACONTROL), best[1] if best else None)
    shown = None if r is None or math.isinf(r) else r  # JSON has no infinity
    return {"key": row.spec.key, "label": row.spec.label, "unit": row.spec.unit,
            "better": row.spec.better, "note": row.spec.note, "medians": meds,
            "runs": row.runs, "best_peer": best[0] if best else None,
            "ratio_to_best_peer": shown, "ratio_infinite": r is not None and math.isinf(r),
            "hacontrol_ahead": ahead(row.spec.better, r)}


def format_table(rows: Sequence[Row], systems: Sequence[str]) -> str:
    """Median per system, ratio hacontrol / best peer, direction, per-run values under it.

    Cells are "-" where a system has no value (not part of this row, missing, or failed);
    a peer that is not installed is reported above the table by the caller."""
    head = ["figure", *systems, "ratio", "better", "lead"]
    lines: list[list[str]] = [head]
    for row in rows:
        sm = row_summary(row)
        note = f" [{row.spec.note}]" if row.spec.note else ""
        cells = [f"{row.spec.label}{note} ({row.spec.unit})"]
        for name in systems:
            cells.append(fmt(sm["medians"].get(name), row.spec.spec))
        r = sm["ratio_to_best_peer"]
        if sm["ratio_infinite"]:
            cells.append(f"inf {sm['best_peer']}")
        else:
            cells.append("-" if r is None else f"{r:.2f}x {sm['best_peer']}")
        cells.append(row.spec.better)
        lead = sm["hacontrol_ahead"]
        cells.append("-" if lead is None else ("yes" if lead else "no"))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(c.ljust(widths[j]) if j in (0, len(head) - 3) else
                             c.rjust(widths[j]) for j, c in enumerate(line)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("")
    out.append("ratio = hacontrol / best peer (median over runs); better = which direction "
               "wins; lead = hacontrol ahead")
    for row in rows:
        per = "; ".join(f"{name} [{' '.join(fmt(v, row.spec.spec) for v in row.runs[name])}]"
                        for name in systems if name in row.runs)
        note = f" ({row.spec.note})" if row.spec.note else ""
        out.append(f"  {row.spec.label}{note}: per run {per}")
    return "\n".join(out)
