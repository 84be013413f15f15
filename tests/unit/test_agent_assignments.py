"""The agent's reading of the leader's assignments: checks, defaults, the spec it runs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hacontrol.agent.assignments import AssignmentDecoder, allocation_spec
from hacontrol.model.errors import Rejection
from hacontrol.model.messages import Assignment
from hacontrol.model.spec import HealthCheck, LogPolicy, RestartSpec
from hacontrol.model.states import HealthCheckType


def raw_assignment(alloc_id: str = "a1", **spec: Any) -> dict[str, Any]:
    return {
        "id": alloc_id,
        "namespace": "default",
        "job": "web",
        "version": 3,
        "desired": "run",
        "state": "pending",
        "spec": {"command": ["sleep", "60"], "resources": {"cpu": 0.5, "memory_mb": 128}, **spec},
    }


def test_allocation_spec_from_an_assignment() -> None:
    a = Assignment.from_dict(
        raw_assignment(
            env={"GREETING": "hi"},
            stop={"signal": "SIGINT", "timeout_s": 2},
            health={"type": "tcp", "port": 8080},
            sockets=[{"name": "http", "port": 8080}],
        )
    )
    spec = allocation_spec(a, "node-1")
    assert spec.alloc_id == "a1" and spec.command == ["sleep", "60"]
    # The agent's own variables, names unchanged (processes read them).
    assert spec.env == {
        "GREETING": "hi",
        "HACONTROL_ALLOC_ID": "a1",
        "HACONTROL_JOB": "web",
        "HACONTROL_NAMESPACE": "default",
        "HACONTROL_NODE": "node-1",
    }
    assert spec.stop.signal == "SIGINT" and spec.stop.timeout_s == 2.0
    assert spec.resources is not None and spec.resources.cpu == 0.5
    assert spec.resources.memory_mb == 128
    assert spec.socket_key == "default/web/v3" and [s.name for s in spec.sockets] == ["http"]
    # One set of defaults: the model's.
    assert spec.restart == RestartSpec() and spec.logs == LogPolicy()
    assert spec.health == HealthCheck(HealthCheckType.TCP, port=8080)


def test_an_assignment_without_spec_cannot_run() -> None:
    raw = raw_assignment()
    raw["spec"] = None
    with pytest.raises(ValueError):
        allocation_spec(Assignment.from_dict(raw), "n")


@pytest.mark.parametrize(
    "section",
    [
        {"restart": {"policy": "sometimes"}},
        {"restart": {"max_restarts": -1}},
        {"restart": {"backoff_s": -0.1}},
        {"health": {"type": "udp", "port": 1}},
        {"health": {"type": "http"}},
        {"health": {"type": "exec"}},
        {"health": {"type": "tcp", "port": 1, "failures": 0}},
        {"resources": {"cpu": 0, "memory_mb": 64}},
        {"sockets": [{"name": "a:b", "port": 1}]},
        {"sockets": [{"name": "x", "port": 1}, {"name": "x", "port": 2}]},
        {"stop": {"signal": "SIGNOPE"}},
    ],
)
def test_bad_sections_are_rejected(section: dict[str, Any]) -> None:
    with pytest.raises(Rejection):
        Assignment.from_dict(raw_assignment(**section))


def test_decoder_keeps_the_good_and_names_the_bad() -> None:
    bad = raw_assignment("b1", restart={"policy": "sometimes"})
    decoded, rejected = AssignmentDecoder().decode(
        [raw_assignment("a1"), bad, {"no": "id"}, "junk"]
    )
    assert list(decoded) == ["a1"]
    assert list(rejected) == ["b1"] and "restart.policy" in rejected["b1"]


def test_decoder_checks_only_what_changed() -> None:
    decoder = AssignmentDecoder()
    first, _ = decoder.decode([raw_assignment("a1"), raw_assignment("a2")])
    # A new answer carries equal but fresh dicts: a1 is reused, a2 checked again.
    changed = raw_assignment("a2", env={"X": "1"})
    second, _ = decoder.decode([copy.deepcopy(raw_assignment("a1")), changed])
    assert second["a1"] is first["a1"]
    assert second["a2"] is not first["a2"] and second["a2"].spec is not None
    assert dict(second["a2"].spec.env) == {"X": "1"}
    # Dropped assignments are forgotten, so a later return is checked afresh.
    decoder.decode([])
    third, _ = decoder.decode([raw_assignment("a1")])
    assert third["a1"] is not first["a1"] and third["a1"] == first["a1"]


@pytest.mark.parametrize("field", ["user", "group"])
@pytest.mark.parametrize("spelling", ["0", "00"])
def test_the_agent_refuses_root_under_another_name(field: str, spelling: str) -> None:
    """The controllers ask run-as-root for every spelling of id 0; whatever reaches an agent
    under a name other than root (a passwd alias, a spelling missed upstream) is refused."""
    raw = {"id": "web-000001", "namespace": "default", "job": "web", "version": 1,
           "desired": "run", "state": "pending",
           "spec": {"command": ["sleep", "1"], field: spelling}}
    with pytest.raises(ValueError, match="root on this node"):
        allocation_spec(Assignment.from_dict(raw), "n1")
    ok = dict(raw, spec={"command": ["sleep", "1"], field: "root"})
    assert getattr(allocation_spec(Assignment.from_dict(ok), "n1"), field) == "root"


def test_decoder_checks_a_shared_spec_once_per_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of reports changes every assignment of a job in turn, each carrying the
    job's one spec object: that spec is checked once, not once per assignment, and a bad
    one is still refused for each assignment that carries it, named by its position."""
    import hacontrol.agent.assignments as assignments

    checked: list[object] = []
    real = assignments.parse_job_spec

    def counting(raw: Any) -> Any:
        checked.append(raw)
        return real(raw)

    monkeypatch.setattr(assignments, "parse_job_spec", counting)
    spec = raw_assignment()["spec"]
    items = [{**raw_assignment(f"a{i}"), "spec": spec} for i in range(50)]
    decoder = AssignmentDecoder()
    first, _ = decoder.decode(items)
    assert len(first) == 50 and len(checked) == 1
    # Each answer of the burst changes a few states: still no second check.
    for i in range(0, 50, 5):
        items = [{**item, "state": "running"} if n in (i, i + 1) else item
                 for n, item in enumerate(items)]
        now, _ = decoder.decode(items)
        assert now[f"a{i}"].state == "running" and now[f"a{i + 2}"] is first[f"a{i + 2}"]
        assert now[f"a{i}"].spec is first["a0"].spec
    assert len(checked) == 1
    # A full answer: equal specs in new objects need no check; a changed one, one check.
    decoder.decode([{**item, "spec": copy.deepcopy(spec)} for item in items])
    assert len(checked) == 1
    changed = {**spec, "env": {"X": "1"}}
    now, _ = decoder.decode([{**item, "spec": changed} for item in items])
    assert len(checked) == 2 and dict(now["a7"].spec.env) == {"X": "1"}
    bad = {**spec, "restart": {"policy": "sometimes"}}
    _, rejected = decoder.decode([{**raw_assignment(f"b{i}"), "spec": bad} for i in range(3)])
    assert len(checked) == 3
    assert [f"allocations[{i}].spec.restart.policy" in rejected[f"b{i}"]
            for i in range(3)] == [True, True, True]
