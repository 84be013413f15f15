"""The tally the state machine keeps for the health score and the alert rules
(`state/tally.py`), and each job's index of finished allocations, against a recount from
scratch after random histories: the same allocations in each table, and the same score and
alert transitions as the walk over every allocation and the event buffer gives
(`health/recount.py`), at several times after the last entry, before and after a restore.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from hacontrol.alerts.evaluate import evaluate
from hacontrol.health.recount import full_view
from hacontrol.health.score import score
from hacontrol.health.view import ReplicaRow, build_view
from hacontrol.state import commands as C
from hacontrol.state.events import EVENTS_KEPT
from hacontrol.state.lifecycle import TERMINAL_ALLOCS_KEPT_PER_JOB
from hacontrol.state.machine import StateMachine
from hacontrol.state.tally import Tally

from .test_leader_decisions import World

JOBS = ["web", "api", "batch"]
RULES: list[dict[str, Any]] = [
    {"when": "allocation_failed", "window_s": 60},
    {"when": "allocation_failed", "window_s": 900, "threshold": 2, "job": "web"},
    {"when": "restart_flapping", "window_s": 30, "threshold": 1},
    {"when": "restart_flapping", "window_s": 2000, "threshold": 2, "namespace": "def*"},
    {"when": "node_down"},
    {"when": "deployment_failed"},
    {"when": "health_below", "threshold": 99},
]
REPLICAS = (ReplicaRow("c1", True, 0), ReplicaRow("c2", False, None))


def assert_tally_derived(m: StateMachine) -> None:
    """The tally kept entry by entry holds what one derived from the tables holds."""
    kept, fresh = m.store.tally, Tally.rebuild(m.allocs)
    assert set(kept.pending) == set(fresh.pending)
    assert set(kept.failed) == set(fresh.failed)
    assert set(kept.restarted) == set(fresh.restarted) == set(kept.marks) == set(kept.rise)
    assert not kept.dirty
    for table in (kept.failed, kept.restarted):
        keys = list(table.values())
        assert keys == sorted(keys)  # newest-first walks may stop at the first too old
    for alloc_id, key in kept.failed.items():
        assert key >= m.allocs[alloc_id].updated_at
    for alloc_id, key in kept.restarted.items():
        marks = kept.marks[alloc_id]
        assert marks[-1][1] == m.allocs[alloc_id].restarts and key >= marks[-1][0]
        assert kept.rise[alloc_id] == marks[-1][1] - min(n for _, n in marks)
    done: dict[tuple[str, str], set[str]] = {}
    for a in m.allocs.values():
        if a.terminal:
            done.setdefault((a.namespace, a.job), set()).add(a.id)
    assert {k: set(v) for k, v in m.store.done.items()} == done


def assert_same_judgement(m: StateMachine, wall: float, events: bool = True) -> None:
    """Score and transitions from the tally equal those of a walk over everything, with
    the restart marks of the event buffer (`events`) or the tally's own."""
    rules = list(m.store.alert_rules.values())
    for later in (0.0, 20.0, 100.0, 700.0, 1900.0, 4000.0):
        now = wall + later
        fast = build_view(m, now, REPLICAS, "c1")
        full = full_view(m, now, REPLICAS, "c1",
                         marks=None if events else m.store.tally.marks)
        assert score(fast) == score(full), later
        assert evaluate(rules, fast, m.store.alert_states, score(fast)) == \
            evaluate(rules, full, m.store.alert_states, score(full)), later


class Agents(World):
    """A world whose agents also report restarts and failures."""

    def report(self, rng: random.Random) -> None:
        live = sorted(a.id for a in self.m.allocs.values()
                      if a.node is not None and not a.terminal)
        if not live:
            return
        a = self.m.allocs[rng.choice(live)]
        state = rng.choice(["running", "running", "exited", "failed", "starting"])
        restarts = a.restarts + rng.choice([0, 1, 1, 2])
        update = {"id": a.id, "state": state, "pid": 1, "restarts": restarts}
        assert self.apply(C.ALLOC_UPDATE, {"node": a.node, "updates": [update]})["ok"]


def play(seed: int, steps: int, back: bool) -> Agents:
    """`back`: the proposer's clock steps back now and then (a new leader's clock behind
    the last one's). The event buffer then holds marks the tally does not need (reports
    that changed the state but not the restart count, out of time order) that a window
    can judge differently, so the judgement is compared with the tally's own marks."""
    rng = random.Random(seed)
    w = Agents("n1", "n2", "n3")
    for k, rule in enumerate(RULES):
        assert w.apply(C.ALERT_PUT, {"name": f"r{k}", "rule": rule})["ok"]
    for step in range(steps):
        pick = rng.random()
        job = rng.choice(JOBS)
        if pick < 0.15:
            # Sometimes more than fits: some stay pending.
            w.put_job(job, count=rng.randint(0, 6), env={"V": str(rng.randint(0, 2))})
        elif pick < 0.2:
            w.apply(C.JOB_DELETE, {"namespace": "default", "name": job})
        elif pick < 0.3:
            w.apply(C.NODE_STATUS, {"name": rng.choice(["n1", "n2", "n3"]),
                                    "status": rng.choice(["down", "ready"])})
        elif pick < 0.6:
            for _ in range(rng.randint(1, 3)):
                w.report(rng)
        else:
            w.agents()
            w.round()
        w.tick(rng.choice([0.5, 5.0, 40.0, 300.0, *([-50.0] if back else [])]))
        if step % 5 == 0:
            assert_tally_derived(w.m)
            assert_same_judgement(w.m, w.wall, events=not back)
    assert len(w.m.events) < EVENTS_KEPT  # the walk saw every restart the log made
    return w


@pytest.mark.parametrize(("seed", "back"), [(1, False), (2, False), (3, True), (4, True)])
def test_random_histories_keep_the_tally_equal_to_a_recount(seed: int, back: bool) -> None:
    w = play(seed, 150, back)
    assert w.m.store.tally.failed and w.m.store.tally.restarted  # the history judged some
    assert_tally_derived(w.m)
    assert_same_judgement(w.m, w.wall, events=not back)
    # A restored replica derives its tally from the tables (no restart history: as the
    # event buffer, it is not in the snapshot) and judges as a walk over its state does.
    copy = StateMachine()
    copy.restore(w.m.snapshot())
    assert copy.digest() == w.m.digest()
    assert_tally_derived(copy)
    assert_same_judgement(copy, w.wall)
    for a in copy.allocs.values():
        assert a.terminal or a.id not in copy.store.tally.failed


def test_trimming_keeps_the_newest_finished_allocations() -> None:
    w = World("n1")
    gone = []
    for version in range(TERMINAL_ALLOCS_KEPT_PER_JOB + 5):
        w.put_job("web", count=1, env={"V": str(version)})  # replaces the one before
        w.settle()
        (a,) = w.live("web")
        gone.append(a.id)
        w.tick(1.0)
    kept = [a.id for a in w.m.allocs.values() if a.terminal]
    assert kept == gone[-TERMINAL_ALLOCS_KEPT_PER_JOB - 1:-1]
    assert set(w.m.store.done[("default", "web")]) == set(kept)
    assert_tally_derived(w.m)
