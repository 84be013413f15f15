#!/usr/bin/env python3
"""What the leader's alert round holds the apply lock for, next to a placement round's read.

    python bench/alerts.py [--nodes 200] [--jobs 100] [--per-job 1000] [--restarted 0.05]
                           [--rules 20] [--runs 5]

An in-memory state of `jobs x per-job` running allocations on `nodes` nodes, a fraction of
them restarted (the rest never were), the event buffer full, and `rules` alert rules of
every kind. Timed, medians over the runs: the alert runner's survey (`build_view`, the
score, `evaluate`, the due deliveries: all under the apply lock, every 0.5 s while rules
exist), the health score route's read (`build_view` + score), and a bare walk over every
allocation, the floor of anything that looks at them all.
Nothing is started: no cluster, no processes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hacontrol.alerts.evaluate import evaluate  # noqa: E402
from hacontrol.alerts.runner import due_deliveries  # noqa: E402
from hacontrol.health.score import score  # noqa: E402
from hacontrol.health.view import ReplicaRow, build_view  # noqa: E402
from hacontrol.model.alerts import AlertWhen  # noqa: E402
from hacontrol.model.spec_parse import parse_job_spec  # noqa: E402
from hacontrol.model.states import AllocState  # noqa: E402
from hacontrol.state import commands as C  # noqa: E402
from hacontrol.state.machine import StateMachine  # noqa: E402

SPEC: dict[str, Any] = {"command": ["sleep", "1"], "resources": {"cpu": 0.1, "memory_mb": 64}}
REPLICAS = [ReplicaRow("c1", True, 0), ReplicaRow("c2", True, 3), ReplicaRow("c3", True, 0)]


def state(nodes: int, jobs: int, per_job: int, restarted: float, rules: int) -> StateMachine:
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
    every = max(1, round(1 / restarted)) if restarted > 0 else 0
    for k, a in enumerate(allocs):
        if every and k % every == 0:
            a.restarts = 1 + k % 5
            a.updated_at = 2000.0
    for i in range(5000):  # a full event buffer of allocation reports
        a = allocs[i % len(allocs)]
        m.add_event({"index": index, "ts": 2000.0, "type": "alloc_running", "alloc": a.id,
                     "restarts": a.restarts})
    kinds = list(AlertWhen)
    for r in range(rules):
        when = kinds[r % len(kinds)]
        rule: dict[str, Any] = {"when": str(when)}
        if when == AlertWhen.QUOTA_ABOVE:
            rule["threshold"] = 0.5
        apply(C.ALERT_PUT, {"name": f"r{r}", "rule": rule})
    return m


def median_ms(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--per-job", type=int, default=1000)
    p.add_argument("--restarted", type=float, default=0.05)
    p.add_argument("--rules", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    m = state(a.nodes, a.jobs, a.per_job, a.restarted, a.rules)
    now = 2100.0

    def alert_round() -> None:
        view = build_view(m, now, REPLICAS, "c1")
        evaluate(list(m.store.alert_rules.values()), view, m.store.alert_states, score(view))
        due_deliveries(m.store.alert_states, now)

    def score_read() -> None:
        score(build_view(m, now, REPLICAS, "c1"))

    rows = [("alert round (survey, under the lock)", median_ms(alert_round, a.runs)),
            ("health score read", median_ms(score_read, a.runs)),
            ("a bare walk over every allocation (the floor)",
             median_ms(lambda: sum(1 for x in m.allocs.values()
                                   if x.restarts > 0 or x.state == AllocState.PENDING),
                       a.runs))]
    print(f"{len(m.allocs)} allocations on {len(m.nodes)} nodes, "
          f"{sum(1 for x in m.allocs.values() if x.restarts)} restarted, "
          f"{len(m.store.alert_rules)} rules; medians of {a.runs} runs")
    for name, ms in rows:
        print(f"  {name:48s} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
