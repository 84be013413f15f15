"""Alert evaluation without I/O: for each `when`, a view where its condition holds and one
where it does not, and the transitions (firing, resolved, nothing) from each status."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hacontrol.alerts.backoff import MAX_S, base_delay, retry_delay
from hacontrol.alerts.evaluate import Transition, condition, evaluate
from hacontrol.health.score import score
from hacontrol.health.view import (
    AllocRow,
    ClusterView,
    JobRow,
    NodeRow,
    QuotaRow,
    ReplicaRow,
)
from hacontrol.model.alerts import AlertRule, AlertState, AlertStatus, AlertWhen, parse_rule
from hacontrol.model.states import AllocState

NOW = 50_000.0
UP = (ReplicaRow("c1", True, 0), ReplicaRow("c2", True, 0), ReplicaRow("c3", True, 0))
CALM = ClusterView(now=NOW, leader="c1", replicas=UP, nodes=(NodeRow("n1", False, False),),
                   leading_s=1000.0)


def rule(when: str, **fields: object) -> AlertRule:
    return replace(parse_rule("r", {"when": when, **fields}), modify_index=7)


def flapping(restarts: int) -> AllocRow:
    marks = tuple((NOW - 100 + i, i + 1) for i in range(restarts))
    return AllocRow("web-1", "default", "web", AllocState.RUNNING, True, NOW - 1000, NOW,
                    ((NOW - 500, 0), *marks))


# (rule, a view where it holds, the details it carries, a view where it does not)
CASES: list[tuple[AlertRule, ClusterView, dict[str, object], ClusterView]] = [
    (rule("allocation_failed", namespace="default", window_s=60),
     replace(CALM, allocations=(AllocRow("web-1", "default", "web", AllocState.FAILED, True,
                                         0.0, NOW - 30),)),
     {"allocations": ["web-1"], "count": 1, "window_s": 60.0},
     replace(CALM, allocations=(AllocRow("web-1", "default", "web", AllocState.FAILED, True,
                                         0.0, NOW - 90),))),  # failed before the window
    (rule("restart_flapping", threshold=3, window_s=300),
     replace(CALM, allocations=(flapping(3),)),
     {"allocations": ["web-1"], "count": 1, "restarts": {"web-1": 3}, "window_s": 300.0},
     replace(CALM, allocations=(flapping(2),))),
    (rule("node_down"),
     replace(CALM, nodes=(NodeRow("n1", True, False),)),
     {"nodes": ["n1"], "count": 1},
     CALM),
    (rule("quota_above", threshold=0.8, namespace="team-*"),
     replace(CALM, quotas=(QuotaRow("team-a", 0.85, "cpu"),)),
     {"namespaces": {"team-a": {"fraction": 0.85, "limit": "cpu"}}, "count": 1},
     replace(CALM, quotas=(QuotaRow("other", 0.95, "cpu"), QuotaRow("team-a", 0.5, "cpu")))),
    (rule("no_leader", threshold=2, window_s=60),
     replace(CALM, leaderless_s=4.0, leading_s=3.0),
     {"leaderless_s": 4.0},
     replace(CALM, leaderless_s=4.0, leading_s=61.0)),  # resolved once it has led window_s
    (rule("replica_down"),
     replace(CALM, replicas=(UP[0], UP[1], ReplicaRow("c3", False, None))),
     {"replicas": ["c3"], "count": 1},
     CALM),
    (rule("replica_lagging", threshold=100),
     replace(CALM, replicas=(UP[0], UP[1], ReplicaRow("c3", True, 150))),
     {"replicas": {"c3": 150}, "count": 1},
     replace(CALM, replicas=(UP[0], UP[1], ReplicaRow("c3", True, 99)))),
    (rule("deployment_failed", job="web"),
     replace(CALM, jobs=(JobRow("default", "web", True, 2),)),
     {"jobs": ["default/web"], "count": 1},
     replace(CALM, jobs=(JobRow("default", "db", True, 2), JobRow("default", "web", False, 3)))),
    (rule("health_below", threshold=95),
     replace(CALM, nodes=(NodeRow("n1", True, False),)),  # 90: one node down
     {"score": 90.0, "reasons": [{"reason": "node_down", "penalty": 10.0, "count": 1,
                                  "items": ["n1"]}]},
     CALM),
]


def test_every_when_is_covered() -> None:
    assert {r.when for r, *_ in CASES} == set(AlertWhen)


@pytest.mark.parametrize(("r", "holds", "details", "calm"), CASES,
                         ids=[str(c[0].when) for c in CASES])
def test_each_when(r: AlertRule, holds: ClusterView, details: dict[str, object],
                   calm: ClusterView) -> None:
    assert condition(r, holds, score(holds)) == details
    assert condition(r, calm, score(calm)) is None
    # Never fired: it fires, once.
    fired = evaluate([r], holds, {}, score(holds))
    assert fired == [Transition("r", AlertStatus.FIRING, details, 7)]
    firing = {"r": AlertState("r", AlertStatus.FIRING, NOW, details)}
    assert evaluate([r], holds, firing, score(holds)) == []
    # Firing, and the condition is gone: resolved (with what it was).
    assert evaluate([r], calm, firing, score(calm)) == [
        Transition("r", AlertStatus.RESOLVED, {"was": details}, 7)]
    # Resolved (or never fired) and calm: nothing.
    resolved = {"r": AlertState("r", AlertStatus.RESOLVED, NOW)}
    assert evaluate([r], calm, resolved, score(calm)) == []
    assert evaluate([r], calm, {}, score(calm)) == []
    # Resolved, and it holds again: it fires again.
    assert [t.status for t in evaluate([r], holds, resolved, score(holds))] == ["firing"]


def test_a_count_threshold_needs_that_many() -> None:
    two = rule("node_down", threshold=2)
    one_down = replace(CALM, nodes=(NodeRow("n1", True, False), NodeRow("n2", False, False)))
    assert condition(two, one_down, score(one_down)) is None
    both = replace(one_down, nodes=(NodeRow("n1", True, False), NodeRow("n2", True, False)))
    assert condition(two, both, score(both)) == {"nodes": ["n1", "n2"], "count": 2}


def test_scope_by_namespace_glob_and_job() -> None:
    failed = replace(CALM, allocations=(
        AllocRow("web-1", "team-a", "web", AllocState.FAILED, True, 0.0, NOW),
        AllocRow("db-1", "team-b", "db", AllocState.FAILED, True, 0.0, NOW)))
    assert condition(rule("allocation_failed", namespace="team-*", job="db"), failed,
                     score(failed)) == {"allocations": ["db-1"], "count": 1, "window_s": 300.0}
    assert condition(rule("allocation_failed", namespace="prod"), failed, score(failed)) is None


def test_rules_are_judged_independently() -> None:
    down = replace(CALM, nodes=(NodeRow("n1", True, False),))
    rules = [replace(parse_rule("a", {"when": "node_down"}), modify_index=1),
             replace(parse_rule("b", {"when": "replica_down"}), modify_index=2)]
    assert [(t.name, t.status) for t in evaluate(rules, down, {}, score(down))] == [
        ("a", "firing")]


def test_backoff_grows_to_its_cap_and_jitter_only_shortens() -> None:
    assert [base_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert base_delay(100) == MAX_S and base_delay(10**9) == MAX_S
    assert retry_delay(3, 0.0) == 4.0 and retry_delay(3, 1.0) == 2.0
    assert retry_delay(3, 5.0) == 2.0 and retry_delay(3, -1.0) == 4.0
