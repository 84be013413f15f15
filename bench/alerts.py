#!/usr/bin/env python3
"""What the leader's alert round holds the apply lock for: from the tally the state machine
keeps (`state/tally.py`) and, in the same run, from a walk over every allocation and the
event buffer (`health/recount.py`, how it was done before).

    python bench/alerts.py [--nodes 200] [--jobs 100] [--per-job 1000] [--restarted 0.05]
                           [--restart-age 100] [--rules 20] [--runs 5]

An in-memory state of `jobs x per-job` running allocations on `nodes` nodes, a fraction of
them restarted 1 to 5 times (20 s apart, reported through alloc_update entries) up to
`--restart-age` seconds before the check (the rest never were: with the default age every
restarted one is within the restart windows, and those restarted 3 times or more are
flapping, the tally's worst case; a quiet cluster's restarts are older), the event buffer
full, and `rules` alert rules of every kind. Timed, medians over the runs, the two ways alternated within each run: the
alert runner's survey (`build_view`, the score, `evaluate`, the due deliveries: all under
the apply lock before; now only `capture` and the due deliveries are), the health score
route's read (`build_view` + score), and a bare walk over every allocation, the floor of
anything that looks at them all.
Nothing is started: no cluster, no processes.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hacontrol.alerts.evaluate import evaluate  # noqa: E402
from hacontrol.alerts.runner import due_deliveries  # noqa: E402
from hacontrol.health.recount import full_view  # noqa: E402
from hacontrol.health.score import score  # noqa: E402
from hacontrol.health.view import ReplicaRow, build_view, capture  # noqa: E402
from hacontrol.model.alerts import AlertWhen  # noqa: E402
from hacontrol.model.spec_parse import parse_job_spec  # noqa: E402
from hacontrol.model.states import AllocState  # noqa: E402
from hacontrol.state import commands as C  # noqa: E402
from hacontrol.state.machine import StateMachine  # noqa: E402
from hacontrol.state.tally import Tally  # noqa: E402

SPEC: dict[str, Any] = {"command": ["sleep", "1"], "resources": {"cpu": 0.1, "memory_mb": 64}}
REPLICAS = [ReplicaRow("c1", True, 0), ReplicaRow("c2", True, 3), ReplicaRow("c3", True, 0)]


def state(nodes: int, jobs: int, per_job: int, restarted: float, rules: int,
          restarted_at: float) -> StateMachine:
    m = StateMachine()
    index = 0

    def apply(op: str, args: dict[str, Any], ts: float = 1000.0) -> None:
        nonlocal index
        index += 1
        res = m.apply(C.Command(op, ts, args, None).encode(), index)
        assert res["ok"], res
    for i in range(nodes):
        apply(C.NODE_REGISTER, {"name": f"n{i:05d}", "cpu": 64, "memory_mb": 10**6,
                                "address": "", "labels": {}, "attributes": {}})
    for j in range(jobs):
        apply(C.JOB_PUT, {"namespace": "default", "name": f"j{j}",
                          "spec": parse_job_spec({**SPEC, "count": per_job}).to_dict()})
    names = sorted(m.nodes)
    allocs = m.pending_allocs()
    for k, a in enumerate(allocs):
        m.store.place(a, names[k % nodes])
        a.state = AllocState.RUNNING
    # Set above without applying entries (to build 100,000 allocations quickly): derived
    # as a restore derives it.
    m.store.tally = Tally.rebuild(m.allocs)
    # The restarts are reported as agents report them: the restarted allocations restart
    # 1 to 5 times, 20 s apart, the last one `restarted_at` (the reports fill the event
    # buffer, where the walk took restart counts from).
    every = max(1, round(1 / restarted)) if restarted > 0 else 0
    times = {a.id: 1 + (k // every) % 5 for k, a in enumerate(allocs) if every and k % every == 0}
    for turn in range(1, 6):
        by_node: dict[str, list[dict[str, Any]]] = {}
        for alloc_id, n in times.items():
            if n >= turn:
                node = m.allocs[alloc_id].node
                assert node is not None
                by_node.setdefault(node, []).append({"id": alloc_id, "state": "running",
                                                     "pid": 1, "restarts": turn})
        for node, updates in sorted(by_node.items()):
            apply(C.ALLOC_UPDATE, {"node": node, "updates": updates},
                  ts=restarted_at - (5 - turn) * 20.0)
    kinds = list(AlertWhen)
    for r in range(rules):
        when = kinds[r % len(kinds)]
        rule: dict[str, Any] = {"when": str(when)}
        if when == AlertWhen.QUOTA_ABOVE:
            rule["threshold"] = 0.5
        apply(C.ALERT_PUT, {"name": f"r{r}", "rule": rule})
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--per-job", type=int, default=1000)
    p.add_argument("--restarted", type=float, default=0.05)
    p.add_argument("--restart-age", type=float, default=100.0)
    p.add_argument("--rules", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    now = 2100.0
    m = state(a.nodes, a.jobs, a.per_job, a.restarted, a.rules, now - a.restart_age)

    def walk_round() -> tuple[float, float]:
        """The survey as it was: everything under the lock."""
        t0 = time.perf_counter()
        view = full_view(m, now, REPLICAS, "c1")
        evaluate(list(m.store.alert_rules.values()), view, m.store.alert_states, score(view))
        due_deliveries(m.store.alert_states, now)
        took = (time.perf_counter() - t0) * 1000
        return took, took

    def tally_round() -> tuple[float, float]:
        """The survey now: the copies under the lock, the judging after it."""
        t0 = time.perf_counter()
        captured = capture(m, now, REPLICAS, "c1")
        rules = list(m.store.alert_rules.values())
        states = {n: copy.copy(st) for n, st in m.store.alert_states.items()}
        due_deliveries(m.store.alert_states, now)
        t1 = time.perf_counter()
        view = captured.view()
        evaluate(rules, view, states, score(view))
        return (time.perf_counter() - t0) * 1000, (t1 - t0) * 1000

    def walk_score() -> tuple[float, float]:
        t0 = time.perf_counter()
        score(full_view(m, now, REPLICAS, "c1"))
        took = (time.perf_counter() - t0) * 1000
        return took, took

    def tally_score() -> tuple[float, float]:
        t0 = time.perf_counter()
        captured = capture(m, now, REPLICAS, "c1")
        t1 = time.perf_counter()
        score(captured.view())
        return (time.perf_counter() - t0) * 1000, (t1 - t0) * 1000

    # The same answers both ways (what tests/unit/test_alert_tally.py checks at random),
    # with the same restart marks (the event buffer kept only the latest reports).
    marks = m.store.tally.marks
    assert score(full_view(m, now, REPLICAS, "c1", marks=marks)) == score(
        build_view(m, now, REPLICAS, "c1"))
    ways = {"walk": (walk_round, walk_score), "tally": (tally_round, tally_score)}
    times: dict[tuple[str, str], list[float]] = {}
    for run in range(a.runs):
        order = list(ways.items()) if run % 2 == 0 else list(reversed(ways.items()))
        for name, (round_of, score_of) in order:
            for what, fn in (("round", round_of), ("score", score_of)):
                total, locked = fn()
                times.setdefault((what, name), []).append(total)
                times.setdefault((what + " lock", name), []).append(locked)
        t0 = time.perf_counter()
        sum(1 for x in m.allocs.values() if x.restarts > 0 or x.state == AllocState.PENDING)
        times.setdefault(("bare", ""), []).append((time.perf_counter() - t0) * 1000)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(m.allocs)} allocations on {len(m.nodes)} nodes, "
          f"{sum(1 for x in m.allocs.values() if x.restarts)} restarted "
          f"{a.restart_age:g} s ago, {len(m.store.alert_rules)} rules; medians of {a.runs} "
          "runs (ms)")
    print(f"  {'':44s} {'walk':>8s} {'tally':>8s} {'ratio':>7s}")
    for key, label in (("round", "alert round (survey)"),
                       ("round lock", "  of which under the apply lock"),
                       ("score", "health score read"),
                       ("score lock", "  of which under the apply lock")):
        walk, tally = med[(key, "walk")], med[(key, "tally")]
        print(f"  {label:44s} {walk:8.1f} {tally:8.1f} {walk / max(tally, 1e-6):6.1f}x")
    print(f"  {'a bare walk over every allocation (floor)':44s} {med[('bare', '')]:8.1f}")

if __name__ == "__main__":
    main()
