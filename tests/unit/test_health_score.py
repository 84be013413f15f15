"""The cluster health score as a pure function of a frozen view: every reason, its
penalty, the caps, and weights from the cluster config."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hacontrol.health.score import score
from hacontrol.health.view import (
    AlertRow,
    AllocRow,
    ClusterView,
    JobRow,
    NodeRow,
    QuotaRow,
    ReplicaRow,
    quota_fraction,
)
from hacontrol.model.alerts import AlertWhen
from hacontrol.model.cluster_config import ClusterConfig, HealthWeights, parse_cluster_config
from hacontrol.model.errors import Rejection
from hacontrol.model.resources import Quota, Usage
from hacontrol.model.states import AllocState

NOW = 10_000.0
UP3 = (ReplicaRow("c1", True, 0), ReplicaRow("c2", True, 0), ReplicaRow("c3", True, 3))


def healthy() -> ClusterView:
    return ClusterView(now=NOW, leader="c1", replicas=UP3,
                       nodes=(NodeRow("n1", False, False), NodeRow("n2", False, False)))


def reasons(view: ClusterView) -> dict[str, tuple[float, int]]:
    return {r.reason: (r.penalty, r.count) for r in score(view).reasons}


def test_a_healthy_cluster_scores_100_with_no_reasons() -> None:
    s = score(healthy())
    assert s.score == 100 and s.reasons == ()
    assert s.to_dict() == {"score": 100, "reasons": []}


def test_replicas_down_lagging_and_the_quorum_margin() -> None:
    w = HealthWeights()
    one_down = replace(healthy(), replicas=(UP3[0], UP3[1], ReplicaRow("c3", False, None)))
    assert reasons(one_down) == {"replica_down": (w.replica_down, 1),
                                 "no_quorum_margin": (w.no_quorum_margin, 1)}
    two_down = replace(healthy(), replicas=(UP3[0], ReplicaRow("c2", False, None),
                                            ReplicaRow("c3", False, None)))
    got = reasons(two_down)
    assert got["quorum_lost"] == (w.quorum_lost, 1)
    assert got["replica_down"] == (2 * w.replica_down, 2)
    assert "no_quorum_margin" not in got
    lagging = replace(healthy(), replicas=(UP3[0], UP3[1], ReplicaRow("c3", True, 5000)))
    assert reasons(lagging) == {"replica_lagging": (w.replica_lagging, 1)}


def test_no_leader() -> None:
    assert reasons(replace(healthy(), leader=None)) == {"no_leader": (50.0, 1)}


def test_nodes_down_and_draining() -> None:
    view = replace(healthy(), nodes=(NodeRow("n1", True, False), NodeRow("n2", False, True),
                                     NodeRow("n3", True, True)))
    got = reasons(view)
    assert got["node_down"] == (20.0, 2)
    assert got["node_draining"] == (2.0, 1)  # a down node counts as down only


def test_allocations_failed_pending_and_flapping_with_their_windows() -> None:
    rows = (
        AllocRow("a-1", "default", "a", AllocState.FAILED, True, 0.0, NOW - 60),
        AllocRow("a-2", "default", "a", AllocState.LOST, True, 0.0, NOW - 60),
        AllocRow("a-3", "default", "a", AllocState.FAILED, True, 0.0, NOW - 7200),  # too old
        AllocRow("b-1", "default", "b", AllocState.PENDING, True, NOW - 100, NOW - 100),
        AllocRow("b-2", "default", "b", AllocState.PENDING, True, NOW - 5, NOW - 5),  # young
        AllocRow("c-1", "default", "c", AllocState.RUNNING, True, 0.0, NOW,
                 ((NOW - 400, 1), (NOW - 100, 2), (NOW - 50, 3), (NOW - 10, 4))),
        AllocRow("c-2", "default", "c", AllocState.RUNNING, True, 0.0, NOW,
                 ((NOW - 1000, 1), (NOW - 10, 2))),
    )
    got = {r.reason: r for r in score(replace(healthy(), allocations=rows)).reasons}
    assert got["allocation_failed"].items == ("a-1", "a-2")
    assert got["allocation_pending"].items == ("b-1",)
    assert got["allocation_flapping"].items == ("c-1",)  # 3 restarts in 300 s
    assert got["allocation_flapping"].penalty == 5.0


def test_restarts_within_a_window() -> None:
    a = AllocRow("x-1", "default", "x", AllocState.RUNNING, True, 0.0, NOW,
                 ((NOW - 400, 1), (NOW - 100, 2), (NOW - 50, 5)))
    assert a.restarts_within(NOW, 300) == 4  # 5 now, 1 at the window's start
    assert a.restarts_within(NOW, 60) == 3
    assert a.restarts_within(NOW, 10) == 0
    young = replace(a, created_at=NOW - 200, restarts=((NOW - 50, 2),))
    assert young.restarts_within(NOW, 300) == 2  # made within the window: from 0
    assert replace(a, restarts=()).restarts_within(NOW, 300) == 0


def test_quota_pressure_deployments_and_alerts() -> None:
    view = replace(healthy(),
                   quotas=(QuotaRow("team", 0.95, "cpu"), QuotaRow("other", 0.5, "cpu")),
                   jobs=(JobRow("default", "web", True, 3), JobRow("default", "db", False, 1)),
                   alerts=(AlertRow("pager", AlertWhen.NODE_DOWN, "critical", True),
                           AlertRow("mail", AlertWhen.NODE_DOWN, "warning", True),
                           AlertRow("quiet", AlertWhen.NODE_DOWN, "warning", False),
                           AlertRow("low", AlertWhen.HEALTH_BELOW, "critical", True)))
    got = reasons(view)
    assert got == {"quota_pressure": (5.0, 1), "deployment_failed": (5.0, 1),
                   "alert_critical": (10.0, 1), "alert_warning": (3.0, 1)}
    # An alert on the score does not hold the score down itself.
    assert score(view).score == 100 - 23


def test_each_reason_is_capped_and_the_score_never_goes_below_zero() -> None:
    many = tuple(NodeRow(f"n{i}", True, False) for i in range(30))
    got = reasons(replace(healthy(), nodes=many))
    assert got["node_down"] == (40.0, 30)
    worst = replace(healthy(), nodes=many, leader=None,
                    replicas=(UP3[0], ReplicaRow("c2", False, None),
                              ReplicaRow("c3", False, None)))
    assert score(worst).score == 0


def test_weights_come_from_the_views_config_and_zero_turns_a_reason_off() -> None:
    config = parse_cluster_config({"health": {"node_down": 1, "node_draining": 0}})
    view = replace(healthy(), config=config,
                   nodes=(NodeRow("n1", True, False), NodeRow("n2", False, True)))
    assert reasons(view) == {"node_down": (1.0, 1)}


def test_reasons_are_ordered_by_penalty() -> None:
    view = replace(healthy(), leader=None, nodes=(NodeRow("n1", True, False),))
    assert [r.reason for r in score(view).reasons] == ["no_leader", "node_down"]


@pytest.mark.parametrize(("body", "field"), [
    ({"health": {"node_down": -1}}, "health.node_down"),
    ({"health": {"node_down": "x"}}, "health.node_down"),
    ({"health": {"nope": 1}}, "health.nope"),
    ({"other": {}}, "other"),
    ({"health": {"lag_entries": 1.5}}, "health.lag_entries"),
    ({"health": {"quota_fraction": 0}}, "health.quota_fraction"),
    ({"health": []}, "health"),
])
def test_a_bad_config_is_refused_naming_the_field(body: object, field: str) -> None:
    with pytest.raises(Rejection) as exc:
        parse_cluster_config(body)
    assert exc.value.field == field and exc.value.code == "invalid"


def test_config_round_trips_and_reads_unknown_fields_leniently() -> None:
    config = parse_cluster_config({"health": {"node_down": 7, "lag_entries": 10}})
    assert ClusterConfig.from_dict(config.to_dict()) == config
    assert ClusterConfig.from_dict({"health": {"node_down": 7, "future": 1}}).health.node_down == 7


def test_quota_fraction_picks_the_fullest_limit() -> None:
    assert quota_fraction(Quota(cpu=2.0, memory_mb=1000), Usage(1.0, 900, 3)) == (0.9,
                                                                                  "memory_mb")
    assert quota_fraction(Quota(), Usage(1.0, 900, 3)) == (0.0, "")
    assert quota_fraction(Quota(processes=0), Usage(0, 0, 1)) == (1.0, "processes")
