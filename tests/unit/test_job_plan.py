"""`job plan` (a scheduler dry run) and `job run --check-index`, against an in-memory state
machine: the plan says what submitting would do, and submitting does it; planning changes
nothing."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from hacontrol.api.schemas import PLAN
from hacontrol.model.errors import Rejection
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.scheduler import dryrun
from hacontrol.state import commands as C

from .test_leader_decisions import SLEEP, World


def plan(w: World, name: str, **spec: Any) -> dict[str, Any]:
    """The plan's answer; asserts it changed nothing in the state."""
    before, index = w.m.digest(), w.m.index
    survey = dryrun.survey(w.m, "default", name, parse_job_spec({**SLEEP, **spec}), w.wall)
    out = dryrun.finish(survey)
    assert w.m.digest() == before and w.m.index == index
    return out


def running_job(name: str = "web", count: int = 3, **spec: Any) -> World:
    w = World("n1", "n2", cpu=4.0)
    w.put_job(name, count=count, **spec)
    w.settle()
    assert len(w.live(name)) == count
    return w


def actions(p: dict[str, Any]) -> list[str]:
    return sorted(x["action"] for x in p["placements"])


def test_a_new_job_is_created_where_the_scheduler_would_place_it() -> None:
    w = World("n1", "n2", cpu=4.0)
    p = plan(w, "web", count=3)
    assert p["job_modify_index"] == 0
    assert p["changes"] == {"create": 3, "replace": 0, "stop": 0, "ignore": 0, "pending": 0}
    assert sorted(x["node"] for x in p["placements"]) == ["n1", "n1", "n2"]
    assert all(x["allocation"] is None and x["reason"] == "new job" for x in p["placements"])
    assert {"field": "count", "type": "added", "old": None, "new": 3} in p["diff"]
    assert p["quota"] == {"ok": True, "reason": None}
    # ...and the real submission places them the same way.
    w.put_job("web", count=3)
    w.settle()
    assert sorted(a.node for a in w.live("web")) == ["n1", "n1", "n2"]


def test_a_changed_spec_replaces_each_allocation_with_a_diff() -> None:
    w = running_job(env={"V": "1"}, update={"max_parallel": 2})
    job = w.m.jobs[("default", "web")]
    p = plan(w, "web", count=3, env={"V": "2"}, update={"max_parallel": 2})
    assert p["job_modify_index"] == job.modify_index
    assert p["diff"] == [{"field": "env.V", "type": "edited", "old": "1", "new": "2"}]
    assert p["changes"]["replace"] == 3 and actions(p) == ["replace"] * 3
    assert {x["allocation"] for x in p["placements"]} == {a.id for a in w.live("web")}
    assert all("version 1 -> 2" in x["reason"] and "rolling update, 2 at a time" in x["reason"]
               for x in p["placements"])
    assert p["version"] == 2 and p["changed"] is True


def test_scaling_down_stops_the_newest_and_leaves_the_rest() -> None:
    w = running_job()
    p = plan(w, "web", count=1)
    assert p["changes"] == {"create": 0, "replace": 0, "stop": 2, "ignore": 1, "pending": 0}
    assert p["diff"] == [{"field": "count", "type": "edited", "old": 3, "new": 1}]
    stopped = {x["allocation"] for x in p["placements"] if x["action"] == "stop"}
    assert all(x["reason"] == "scaled down" for x in p["placements"] if x["action"] == "stop")
    w.apply(C.JOB_PUT, {"namespace": "default", "name": "web",
                        "spec": parse_job_spec({**SLEEP, "count": 1}).to_dict()})
    assert {a.id for a in w.m.allocs.values() if a.desired == "stop"} == stopped


def test_the_same_spec_changes_nothing() -> None:
    w = running_job()
    p = plan(w, "web", count=3)
    assert p["diff"] == [] and p["changed"] is False
    assert p["changes"] == {"create": 0, "replace": 0, "stop": 0, "ignore": 3, "pending": 0}


def test_what_cannot_be_placed_is_pending_with_the_schedulers_reason() -> None:
    w = running_job(count=1)
    p = plan(w, "web", count=3, resources={"cpu": 3.0, "memory_mb": 64})
    # two nodes of 4 cpu take one each, once the old allocation has given its room back
    assert p["changes"] == {"create": 1, "replace": 1, "stop": 0, "ignore": 0, "pending": 1}
    pending = [x for x in p["placements"] if x["action"] == "pending"]
    assert all(x["node"] is None and "no node has 3.0 cpu" in x["reason"] for x in pending)


def test_the_quota_verdict_does_not_hide_the_placements() -> None:
    w = running_job(count=1)
    w.apply(C.NS_PUT, {"name": "default", "quota": {"cpu": 1.0}})
    p = plan(w, "web", count=4)
    assert p["quota"]["ok"] is False and "quota" in p["quota"]["reason"]
    assert p["changes"]["create"] == 3


def test_a_missing_namespace_is_refused_like_the_submission() -> None:
    w = World("n1")
    with pytest.raises(Rejection) as exc:
        dryrun.survey(w.m, "nope", "web", parse_job_spec(SLEEP), w.wall)
    assert exc.value.code == "not_found" and exc.value.field == "namespace"


def test_spec_diff_walks_maps_and_compares_lists_whole() -> None:
    old = {"command": ["a"], "env": {"X": "1", "Y": "2"}, "cwd": "/tmp"}
    new = {"command": ["b"], "env": {"X": "1", "Z": "3"}, "health": {"type": "tcp"}}
    assert dryrun.spec_diff(old, new) == [
        {"field": "command", "type": "edited", "old": ["a"], "new": ["b"]},
        {"field": "env.Z", "type": "added", "old": None, "new": "3"},
        {"field": "env.Y", "type": "deleted", "old": "2", "new": None},
        {"field": "health.type", "type": "added", "old": None, "new": "tcp"},
        {"field": "cwd", "type": "deleted", "old": "/tmp", "new": None},
    ]


# --------------------------------------------------------------- check index

def put(w: World, check: int | None, **spec: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"namespace": "default", "name": "web",
                            "spec": parse_job_spec({**SLEEP, **spec}).to_dict()}
    if check is not None:
        args["check_index"] = check
    return w.apply(C.JOB_PUT, args)


def test_check_index_zero_means_the_job_must_not_exist() -> None:
    w = World("n1")
    assert put(w, 0)["ok"]
    res = put(w, 0, count=2)
    assert not res["ok"] and res["error"]["code"] == "conflict"
    assert res["error"]["field"] == "check_index" and "already exists" in res["error"]["message"]


def test_check_index_refuses_a_job_changed_since_the_plan() -> None:
    w = World("n1")
    put(w, None)
    p = plan(w, "web", count=2)
    w.apply(C.JOB_SCALE, {"namespace": "default", "name": "web", "count": 3})  # meanwhile
    res = put(w, p["job_modify_index"], count=2)
    assert not res["ok"] and res["error"]["field"] == "check_index"
    assert "changed since the plan" in res["error"]["message"]
    assert w.m.jobs[("default", "web")].spec.count == 3  # refused as a whole
    fresh = plan(w, "web", count=2)
    assert put(w, fresh["job_modify_index"], count=2)["ok"]
    assert w.m.jobs[("default", "web")].spec.count == 2


def test_check_index_must_be_a_non_negative_integer() -> None:
    w = World("n1")
    for bad in (-1, "3", True, 1.5):
        res = put(w, bad)  # type: ignore[arg-type]
        assert not res["ok"] and res["error"]["code"] == "invalid"
        assert res["error"]["field"] == "check_index"


# --------------------------------------------------------------------- the API

def test_plan_route_needs_submit_job_changes_nothing_and_check_index_is_a_409() -> None:
    from .test_acl_api import SPEC, Call, LocalReplica, bootstrap, client_token, session

    replica = LocalReplica()

    def script(call: Call) -> None:
        root = bootstrap(call)
        status, body = call("POST", "/v1/jobs/default/web/plan", SPEC, root)
        assert status == 200 and body["job_modify_index"] == 0, body
        jsonschema_rs.validate(PLAN, body)  # the answer is what the OpenAPI document says
        assert body["changes"]["pending"] == 1  # no nodes registered
        assert body["placements"][0]["reason"] == "no nodes registered"
        status, put = call("PUT", "/v1/jobs/default/web?check_index=0", SPEC, root)
        assert status == 200, put
        before, index = replica.m.digest(), replica.m.index
        status, body = call("POST", "/v1/jobs/default/web/plan", {**SPEC, "count": 2}, root)
        assert status == 200 and body["job_modify_index"] == put["job"]["modify_index"]
        assert body["diff"] == [{"field": "count", "type": "edited", "old": 1, "new": 2}]
        jsonschema_rs.validate(PLAN, body)
        assert replica.m.digest() == before and replica.m.index == index
        for query, code, field_status in (("0", "conflict", 409), ("abc", "invalid", 422),
                                          ("-1", "invalid", 422)):
            status, err = call("PUT", f"/v1/jobs/default/web?check_index={query}", SPEC, root)
            assert status == field_status and err["error"]["code"] == code, err
            assert err["error"]["field"] == "check_index"
        status, body = call("POST", "/v1/jobs/default/web/plan", {"count": 2}, root)
        assert status == 422 and body["error"]["field"] == "command"
        ro, _ = client_token(call, root, "ro", {"namespaces": {"*": {"policy": "read"}}})
        mine, _ = client_token(call, root, "a", {"namespaces": {"a": {"policy": "write"}}})
        for token in (ro, mine):
            status, body = call("POST", "/v1/jobs/default/web/plan", SPEC, token)
            assert status == 403 and body["error"]["code"] == "forbidden", body
    session(replica, script)


def test_the_fork_leaves_every_index_of_the_real_store_alone() -> None:
    # The indexes are not in the digest: compare them one by one. The plan below makes
    # the fork forget placed allocations (history trimming), which touches the per-node
    # index and the agents' delta-sync history of their nodes.
    w = World("n1", "n2", cpu=4.0)
    w.put_job("web", count=22, resources={"cpu": 0.1, "memory_mb": 16})
    w.settle()
    w.put_job("web", count=0, resources={"cpu": 0.1, "memory_mb": 16})
    w.settle()
    w.put_job("web", count=3, resources={"cpu": 64, "memory_mb": 16})  # cannot be placed
    w.settle()
    s = w.m.store

    def indexes() -> Any:
        return (dict(s.allocs), {k: dict(v) for k, v in s.by_node.items()},
                {k: dict(v) for k, v in s.by_job.items()}, dict(s.pending),
                {k: list(v) for k, v in s.removed.items()}, dict(s.removed_floor),
                dict(s.usage), set(s.touched_nodes), s.alloc_seq,
                {i: (a.state, a.desired, a.node, a.message) for i, a in s.allocs.items()},
                [(j.version, j.modify_index, j.spec, len(j.history)) for j in s.jobs.values()])
    before = indexes()
    p = plan(w, "web", count=0, resources={"cpu": 64, "memory_mb": 16})
    assert p["changes"]["stop"] == 3
    assert indexes() == before
