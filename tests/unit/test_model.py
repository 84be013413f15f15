"""The typed model: encodings unchanged, round trips exact, untrusted messages checked."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacontrol.model.errors import Rejection
from hacontrol.model.messages import AllocReport, Assignment, NodeInfo, SyncAnswer, SyncRequest
from hacontrol.model.spec import JobSpec
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.model.states import AllocState, DesiredState, HealthCheckType
from hacontrol.state.dispatch import compact_result
from hacontrol.state.machine import StateMachine

from . import state_scenario

GOLDEN = json.loads((Path(__file__).parent / "data" / "state_golden.json").read_text())


def test_replayed_history_gives_the_recorded_snapshot_and_digest() -> None:
    m = state_scenario.run()
    recorded = bytes.fromhex(GOLDEN["snapshot_hex"])
    assert hashlib.sha256(recorded).hexdigest() == GOLDEN["digest"]
    # The idempotency table now keeps compact results (state/dispatch.py): the recorded
    # entries, compacted, are what it must hold; every other byte is as recorded.
    expected = msgpack.unpackb(recorded, raw=False, strict_map_key=True)
    expected["idempotency"] = [[k, d, compact_result(r)] for k, d, r in expected["idempotency"]]
    expected_bytes = msgpack.packb(expected, use_bin_type=True)
    assert m.snapshot() == expected_bytes
    assert m.digest() == hashlib.sha256(expected_bytes).hexdigest()


def test_replayed_history_gives_the_recorded_api_answers() -> None:
    views = state_scenario.views(state_scenario.run())
    # Compared as JSON text: key order included, as served.
    for name, golden in GOLDEN["views"].items():
        assert json.dumps(views[name]) == json.dumps(golden), name


def test_restore_then_snapshot_is_byte_identical() -> None:
    m = state_scenario.run()
    other = StateMachine()
    other.restore(m.snapshot())
    assert other.snapshot() == m.snapshot()
    assert json.dumps(state_scenario.views(other)["jobs"]) \
        == json.dumps(GOLDEN["views"]["jobs"])


@pytest.mark.parametrize("i", range(len(state_scenario.SPECS)))
def test_spec_encoding_is_unchanged_and_round_trips(i: int) -> None:
    golden = GOLDEN["specs"][i]
    spec = parse_job_spec(state_scenario.SPECS[i])
    assert json.dumps(spec.to_dict()) == json.dumps(golden)  # same keys, same order
    assert JobSpec.from_dict(golden) == spec
    assert parse_job_spec(golden) == spec  # what an agent re-checks is the same spec


def test_defaults_live_in_the_model() -> None:
    spec = parse_job_spec({"command": ["x"], "health": {"type": "tcp", "port": 80}})
    assert spec.health is not None and spec.health.type == HealthCheckType.TCP
    # The controller's defaults, which are what users have always got.
    assert (spec.health.interval_s, spec.health.grace_s) == (5.0, 5.0)
    assert spec.update is None and spec.update_policy.max_parallel == 1
    assert spec.to_dict().get("update") is None and spec.type == "service"


def test_a_left_out_section_is_exactly_an_empty_one() -> None:
    """Left-out sections share one checked default: it must encode byte for byte as a
    spelled-out empty section (and as the section with its defaults written out), or
    replicas of different builds would disagree on the state's digest."""
    bare = parse_job_spec({"command": ["x"]})
    empties: list[dict[str, Any] | None] = [{}, None]
    for empty in empties:
        spelled = parse_job_spec({"command": ["x"], "resources": empty, "restart": empty,
                                  "stop": empty})
        assert spelled == bare
        assert msgpack.packb(spelled.to_dict()) == msgpack.packb(bare.to_dict())
    written = parse_job_spec({"command": ["x"], **{k: bare.to_dict()[k]
                                                   for k in ("resources", "restart", "stop")}})
    assert msgpack.packb(written.to_dict()) == msgpack.packb(bare.to_dict())


@pytest.mark.parametrize("extra,field", [
    ({"type": ["service"]}, "type"), ({"type": {"a": 1}}, "type"),
    ({"scoring": ["spread"]}, "scoring"), ({"restart": {"policy": ["always"]}},
                                           "restart.policy"),
    ({"restart": []}, "restart"), ({"stop": "x"}, "stop"), ({"resources": 0}, "resources"),
])
def test_an_unhashable_or_misshapen_choice_is_refused_naming_its_field(
        extra: dict[str, Any], field: str) -> None:
    with pytest.raises(Rejection) as err:
        parse_job_spec({"command": ["x"], **extra})
    assert err.value.field == field


_section = st.fixed_dictionaries({}, optional={
    "count": st.integers(0, 20),
    "type": st.sampled_from(["service", "batch"]),
    "priority": st.integers(0, 100),
    "scoring": st.sampled_from(["binpack", "spread"]),
    "user": st.sampled_from(["nobody", "1000"]),
    "umask": st.sampled_from(["022", 0o077, 0]),
    "health": st.one_of(
        st.fixed_dictionaries({"type": st.just("tcp"), "port": st.integers(1, 65535)},
                              optional={"grace_s": st.floats(0, 100)}),
        st.fixed_dictionaries({"type": st.just("http"), "port": st.integers(1, 65535)},
                              optional={"path": st.just("/x"),
                                        "expect_status": st.integers(100, 599)}),
        st.fixed_dictionaries({"type": st.just("exec"),
                               "command": st.lists(st.text("ab", min_size=1), min_size=1)})),
    "logs": st.fixed_dictionaries({}, optional={"keep": st.integers(0, 5)}),
    "sockets": st.lists(st.builds(lambda n, p: {"name": n, "port": p},
                                  st.sampled_from(["a", "b.c"]), st.integers(1, 9000)),
                        max_size=1),
    "constraints": st.lists(st.one_of(
        st.just({"operator": "distinct_nodes"}),
        st.builds(lambda v: {"attribute": "label.z", "operator": "in", "value": v},
                  st.lists(st.sampled_from(["a", "b"]), min_size=1)),
        st.builds(lambda v: {"attribute": "attr.os", "value": v}, st.text("xy"))),
        max_size=3),
    "depends_on": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
    "update": st.fixed_dictionaries({}, optional={"max_parallel": st.integers(1, 5),
                                                  "auto_revert": st.booleans()}),
    "scaling": st.fixed_dictionaries({"min": st.integers(0, 3)},
                                     optional={"cooldown_s": st.integers(0, 60)}),
    "disconnect": st.builds(lambda s: {"stop_after_s": s}, st.integers(1, 100)),
    "restart": st.fixed_dictionaries({}, optional={
        "policy": st.sampled_from(["always", "on-failure", "never"]),
        "window_s": st.integers(1, 100)}),
    "env": st.dictionaries(st.sampled_from(["A", "B", "C"]), st.text("xyz")),
})


@settings(max_examples=300, deadline=None)
@given(_section)
def test_every_valid_spec_round_trips(extra: dict[str, Any]) -> None:
    spec = parse_job_spec({"command": ["run"], **extra})
    d = spec.to_dict()
    assert JobSpec.from_dict(d) == spec
    assert parse_job_spec(d) == spec
    assert json.dumps(JobSpec.from_dict(json.loads(json.dumps(d))).to_dict()) == json.dumps(d)


def test_assignments_round_trip_through_their_message() -> None:
    m = state_scenario.run()
    for node in m.nodes:
        wire = json.loads(json.dumps(m.node_assignments(node)))
        parsed = [Assignment.from_dict(a) for a in wire]
        assert [a.to_dict() for a in parsed] == wire


def test_sync_messages_round_trip() -> None:
    req = SyncRequest(NodeInfo("n1", 2.0, 512, "http://n1", {"z": "a"}, {}),
                      [AllocReport("web-000001", AllocState.RUNNING, pid=5, restarts=0,
                                   ts=1.0)], 3, 1.0, "1.3", 2, agent={"pid": 9})
    wire = json.loads(json.dumps(req.to_dict()))
    assert list(wire) == ["node", "reports", "index", "wait_s", "fingerprint", "term", "agent"]
    assert SyncRequest.from_dict(wire) == req
    ans = SyncAnswer(2, "c1", 7, "1.3", 1, [Assignment(
        "web-000001", "default", "web", 1, DesiredState.RUN, AllocState.RUNNING,
        parse_job_spec({"command": ["x"]}))])
    assert SyncAnswer.from_dict(json.loads(json.dumps(ans.to_dict()))) == ans


@pytest.mark.parametrize(("body", "field"), [
    ({"allocations": [{"id": "a-1", "namespace": "default", "job": "web", "version": 1,
                       "desired": "run", "state": "running",
                       "spec": {"command": ["x"], "health": {"type": "tcp"}}}]},
     "allocations[0].spec.health.port"),
    ({"allocations": [{"id": "../x", "namespace": "default", "job": "web", "version": 1,
                       "desired": "run", "state": "running", "spec": None}]},
     "allocations[0].id"),
    ({"allocations": [{"id": "a-1", "namespace": "default", "job": "web", "version": 1,
                       "desired": "maybe", "state": "running", "spec": None}]},
     "allocations[0].desired"),
    ({"allocations": 5}, "allocations"),
    ({"term": "x"}, "term"),
])
def test_a_bad_answer_is_rejected_naming_the_field(body: dict[str, Any], field: str) -> None:
    raw = {"term": 1, "leader": "c1", "index": 1, "fingerprint": "0.0", "acked": 0,
           "allocations": [], **body}
    with pytest.raises(Rejection) as exc:
        SyncAnswer.from_dict(raw)
    assert exc.value.field == field


@pytest.mark.parametrize(("report", "field"), [
    ({"id": "a", "state": "pending"}, "reports[0].state"),
    ({"id": "a", "state": ["running"]}, "reports[0].state"),
    ({"id": "a", "state": "running", "pid": True}, "reports[0].pid"),
    ({"id": "a", "state": "running", "health": "great"}, "reports[0].health"),
    ({"id": 3, "state": "running"}, "reports[0].id"),
])
def test_a_bad_report_is_rejected_naming_the_field(report: dict[str, Any], field: str) -> None:
    raw = {"node": {"name": "n1", "cpu": 1, "memory_mb": 64}, "reports": [report]}
    with pytest.raises(Rejection) as exc:
        SyncRequest.from_dict(raw)
    assert exc.value.field == field


def test_unknown_spec_fields_are_rejected_but_name_may_ride_along() -> None:
    with pytest.raises(Rejection) as exc:
        parse_job_spec({"command": ["x"], "bogus": 1})
    assert exc.value.field == "bogus"
    assert parse_job_spec({"command": ["x"], "name": "web", "namespace": "default"}) \
        == parse_job_spec({"command": ["x"]})


def test_spread_is_a_boolean_and_cannot_contradict_scoring() -> None:
    assert parse_job_spec({"command": ["x"], "spread": False}).to_dict()["spread"] is False
    assert "spread" not in parse_job_spec({"command": ["x"]}).to_dict()
    for bad in ({"spread": "no"}, {"spread": False, "scoring": "spread"}):
        with pytest.raises(Rejection) as exc:
            parse_job_spec({"command": ["x"], **bad})
        assert exc.value.field == "spread"
