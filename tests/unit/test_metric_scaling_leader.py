"""Metric scaling through the leader's decisions, on an in-memory state machine: pushed
values and their staleness, scraped values summed over running allocations, a new
leader that knows no value, and CPU scaling left as it was."""

from __future__ import annotations

from typing import Any

from hacontrol.model.messages import SCALING_METRIC_KEY
from hacontrol.scheduler.leader_state import LeaderState, PushedValue
from hacontrol.state import commands as C

from .test_leader_decisions import World

EXTERNAL: dict[str, Any] = {"min": 1, "max": 8, "cooldown_s": 5, "scale_down_delay_s": 20,
                            "metric": {"name": "queue_length", "stale_s": 30},
                            "target_per_instance": 10}
PROMETHEUS: dict[str, Any] = {**EXTERNAL, "metric": {"name": "waiting",
                                                     "source": "prometheus", "port": 9100}}
SMALL = {"cpu": 0.1, "memory_mb": 16}


def push(w: World, value: float, job: str = "q", metric: str = "queue_length") -> None:
    w.leader.pushed[("default", job)] = PushedValue(metric, value, w.mono)


def scales(w: World) -> list[int]:
    return [p.args["count"] for p in w.decide().proposals if p.op == C.JOB_SCALE]


def count(w: World, job: str = "q") -> int:
    return w.m.jobs[("default", job)].spec.count


def test_pushed_values_scale_up_then_down_after_the_delay() -> None:
    w = World("n1", cpu=8.0)
    w.put_job("q", count=1, scaling=EXTERNAL, resources=SMALL)
    w.settle()
    push(w, 45)
    assert scales(w) == []  # the job was just created: its cooldown runs from then
    w.tick(5)
    assert scales(w) == [5]
    w.settle()
    assert count(w) == 5 and len(w.live("q")) == 5
    push(w, 8)
    w.settle()
    assert count(w) == 5  # asked for 1, but not for long enough yet
    assert "scaling down after 20s" in w.leader.scale_notes[("default", "q")]
    for _ in range(3):
        w.tick(8)
        push(w, 8)
        w.settle()
    assert count(w) == 1 and len(w.live("q")) == 1
    evs = [e for e in w.m.events if e["type"] == "job_scaled"]
    assert [e["count"] for e in evs] == [5, 1]
    assert all(e["source"] == "autoscaler" and "metric total" in e["reason"] for e in evs)


def test_a_stale_or_foreign_value_changes_nothing() -> None:
    w = World("n1", cpu=8.0)
    w.put_job("q", count=1, scaling=EXTERNAL, resources=SMALL)
    w.settle()
    w.tick(10)
    push(w, 100)
    w.tick(31)  # older than stale_s
    d = w.decide()
    assert not [p for p in d.proposals if p.op == C.JOB_SCALE]
    assert d.metric_notes is not None
    assert "no fresh value" in d.metric_notes[("default", "q")][1]
    push(w, 100, metric="other_metric")  # for a metric the job no longer names
    assert scales(w) == []
    push(w, 100)
    assert scales(w) == [8]


def test_a_new_leader_waits_for_a_value_and_keeps_the_cooldown() -> None:
    w = World("n1", cpu=8.0)
    w.put_job("q", count=1, scaling=EXTERNAL, resources=SMALL)
    w.settle()
    w.tick(10)
    push(w, 30)
    w.settle()
    assert count(w) == 3
    w.leader = LeaderState(term=2, since=w.mono)  # failover: a fresh memory
    w.tick(1)
    assert scales(w) == []  # no value yet
    push(w, 60)
    assert scales(w) == []  # the cooldown runs from the scale the log records
    w.tick(5)
    assert scales(w) == [6]


def test_scraped_values_are_summed_over_running_allocations() -> None:
    w = World("n1", cpu=8.0)
    w.put_job("p", count=2, scaling=PROMETHEUS, resources=SMALL)
    w.settle()
    w.tick(10)
    live = w.live("p")
    assert scales(w) == []  # nothing scraped yet
    w.leader.alloc_metrics[live[0].id] = {"cpu_percent": 1.0, SCALING_METRIC_KEY: 25.0}
    assert scales(w) == [3]  # 25 known, the other not yet scraped: may go up
    w.leader.alloc_metrics[live[1].id] = {SCALING_METRIC_KEY: 40.0}
    assert scales(w) == [7]
    w.leader.alloc_metrics[live[0].id] = {SCALING_METRIC_KEY: 1.0}
    w.leader.alloc_metrics[live[1].id] = {SCALING_METRIC_KEY: None}  # its scrape failed
    w.settle()
    w.tick(30)
    w.settle()
    assert count(w, "p") == 2  # never down on a partial sum
    w.leader.alloc_metrics[live[1].id] = {SCALING_METRIC_KEY: 2.0}
    w.settle()
    w.tick(21)
    w.settle()
    assert count(w, "p") == 1


def test_cpu_scaling_ignores_metric_memory() -> None:
    w = World("n1", cpu=8.0)
    w.put_job("web", count=2, scaling={"min": 1, "max": 4, "cpu_target": 0.5,
                                       "cooldown_s": 30}, resources={"cpu": 0.5,
                                                                     "memory_mb": 16})
    w.settle()
    push(w, 1000, job="web")
    for a in w.live("web"):
        w.leader.alloc_metrics[a.id] = {"cpu_percent": 25.0, SCALING_METRIC_KEY: 500.0}
    assert scales(w) == []  # 50% of request at a 50% target: steady
    assert ("default", "web") not in w.leader.scale_notes


def test_the_leader_forgets_what_it_kept_for_jobs_gone_or_no_longer_scaled() -> None:
    w = World("n1", cpu=8.0)
    w.put_job("q", count=1, scaling=EXTERNAL, resources=SMALL)
    w.put_job("r", count=1, scaling=EXTERNAL, resources=SMALL)
    w.settle()
    push(w, 3)
    push(w, 3, job="r")
    w.round()
    assert set(w.leader.pushed) == set(w.leader.scale_notes) == {("default", "q"),
                                                                  ("default", "r")}
    w.apply(C.JOB_DELETE, {"namespace": "default", "name": "q"})
    w.put_job("r", count=1, resources=SMALL)  # no scaling any more
    w.settle()  # its rollout first (rounds that look at nothing else), then a full round
    assert w.leader.pushed == {} and w.leader.scale_notes == {}
