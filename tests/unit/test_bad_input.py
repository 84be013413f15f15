"""Hostile input: each test names the bug it guards against and fails without the fix."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hacontrol.api.app import build_app
from hacontrol.api.limits import LimitedStore, Limits
from hacontrol.model.checks import check_alloc_id, check_name, str_map
from hacontrol.model.errors import Rejection
from hacontrol.model.messages import Assignment
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.model.text import strip_terminal_controls
from hacontrol.scheduler.constraints import Constraint, constraint_error, satisfies
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.scheduler.placement import NodeRoom
from hacontrol.state import commands as C

from .api_fake import ApplyingReplica, call
from .cli_fake import FakeApi, not_found
from .test_api_errors import TOKEN


def _node(name: str) -> NodeRoom:
    return NodeRoom(name, 4.0, 4096, 4.0, 4096, labels={}, attributes={}, eligible=True,
                    allocations=())


# --- regexp constraints --------------------------------------------------------------


def test_a_backtracking_pattern_against_a_long_name_finishes_at_once() -> None:
    # With a backtracking engine this takes longer than the age of the universe.
    c = Constraint("node.name", "regexp", "^(a+)+$")
    started = time.monotonic()
    assert not satisfies(c, _node("a" * 100_000 + "!"))
    assert satisfies(c, _node("a" * 100_000))
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)x", r"(?<!a)b", "x" * 600])
def test_patterns_a_linear_engine_cannot_run_are_refused(pattern: str) -> None:
    assert constraint_error(Constraint("node.name", "regexp", pattern)) is not None
    with pytest.raises(Rejection) as exc:
        parse_job_spec({"command": ["true"], "constraints": [
            {"attribute": "node.name", "operator": "regexp", "value": pattern}]})
    assert exc.value.field == "constraints[0].value"


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["web\n", "web\r", "w\x1beb", "web\x00", "web\x85"])
def test_a_name_with_a_trailing_newline_or_control_character_is_refused(name: str) -> None:
    with pytest.raises(Rejection):
        check_name(name, "name")


def test_put_job_with_an_encoded_newline_in_its_name_is_a_422() -> None:
    replica = ApplyingReplica()
    status, _, body = call(replica, "PUT", "/v1/jobs/default/web%0A",
                           json.dumps({"command": ["true"]}).encode())
    assert status == 422, body
    assert json.loads(body)["error"]["field"] == "name"
    assert replica.m.jobs == {}


@pytest.mark.parametrize("key", ["A\nB", "A\x1b[2J", "A\x7f"])
def test_control_characters_in_env_names_are_refused(key: str) -> None:
    with pytest.raises(Rejection) as exc:
        parse_job_spec({"command": ["true"], "env": {key: "v"}})
    assert exc.value.field == f"env.{key}"


@pytest.mark.parametrize("field,value", [("user", "root\n"), ("group", "root\n"),
                                         ("sockets", [{"name": "http\n", "port": 80}])])
def test_user_group_and_socket_names_are_anchored_at_the_very_end(field: str,
                                                                  value: object) -> None:
    with pytest.raises(Rejection):
        parse_job_spec({"command": ["true"], field: value})


@pytest.mark.parametrize("labels", [{"zone\n": "a"}, {"zone": "a\x1b]0;pwned\x07"}, {"": "a"}])
def test_control_characters_in_node_labels_are_refused(labels: dict[str, str]) -> None:
    with pytest.raises(Rejection):
        str_map(labels, "labels")


@pytest.mark.parametrize("alloc_id", ["../../etc", "..", ".", "web\n-000001", "a/b", "",
                                      "x" * 201])
def test_an_assignment_id_that_could_leave_the_data_dir_is_refused(alloc_id: str) -> None:
    with pytest.raises(Rejection) as exc:
        check_alloc_id(alloc_id, "allocation.id")
    assert exc.value.field == "allocation.id"
    raw = {"id": alloc_id, "namespace": "default", "job": "web", "version": 1,
           "desired": "run", "state": "pending", "spec": None}
    with pytest.raises(Rejection):
        Assignment.from_dict(raw)


# --- text that reaches a terminal or another format ----------------------------------

HOSTILE = "web\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b\x00"


def test_the_cli_prints_server_text_without_terminal_controls(
        capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(default=not_found)
    api.reply("GET", "/v1/jobs", {"jobs": [{"namespace": "default", "name": HOSTILE,
                                            "version": 1, "count": 1, "status": HOSTILE,
                                            "counts": {}}]})
    assert api.run("job", "status") == 0
    printed = capsys.readouterr().out
    assert "web" in printed and "red" in printed
    assert not any(c in printed for c in "\x1b\x07\x9b\x00")


def test_the_cli_strips_terminal_controls_from_server_error_messages(
        capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(default=lambda _seen: (
        422, {"error": {"code": "invalid", "message": HOSTILE, "field": "name"}}, {}))
    assert api.run("job", "status") != 0
    err = capsys.readouterr().err
    assert "web" in err and "\x1b" not in err and "\x07" not in err


@pytest.mark.parametrize("text,shown", [("plain\tand\nlines", "plain\tand\nlines"),
                                        ("\x1b[1mbold\x1b[0m", "bold"),
                                        ("\x1b]8;;http://x\x1b\\link", "link")])
def test_strip_terminal_controls_keeps_layout(text: str, shown: str) -> None:
    assert strip_terminal_controls(text) == shown


def test_server_metrics_escape_label_values() -> None:
    replica = ApplyingReplica()
    leadership = Leadership(lambda: 3)
    state = leadership.current()
    assert state is not None
    state.alloc_metrics['x"} 1\nevil{a="'] = {"cpu_percent": 1.0}
    status, _, body = call(replica, "GET", "/metrics", leadership=leadership)
    assert status == 200
    lines = body.decode().splitlines()
    assert not any(line.startswith("evil") for line in lines)
    assert ('hacontrol_allocation_cpu_ratio{allocation="x\\"} 1\\nevil{a=\\"",job_name="",'
            'namespace="",node=""} 0.01') in lines


# --- the page, and other origins -----------------------------------------------------


def test_no_route_ever_answers_with_cors_headers() -> None:
    replica = ApplyingReplica()
    app = build_app(replica, replica, Leadership(lambda: 3), "t")
    paths = sorted({r.resource.canonical.replace("{", "").replace("}", "")
                    for r in app.router.routes() if r.resource is not None})
    assert "/v1/health" in paths and "/ui" in paths
    sent = {"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT",
            "Authorization": "Bearer t"}

    async def go() -> list[tuple[str, str, list[str]]]:
        found = []
        async with TestClient(TestServer(app)) as client:
            for path in paths:
                for method in ("GET", "OPTIONS", "PUT"):
                    try:  # streaming routes answer headers at once, then keep going
                        resp = await asyncio.wait_for(
                            client.request(method, path, data=b"{}", headers=sent), 5)
                    except TimeoutError:
                        continue
                    cors = [h for h in resp.headers if h.lower().startswith("access-control")]
                    resp.close()
                    found += [(method, path, cors)] if cors else []
        return found
    assert asyncio.run(go()) == []


# --- caps ----------------------------------------------------------------------------


def _put(replica: ApplyingReplica, path: str, body: object, limits: Limits
         ) -> tuple[int, dict[str, object]]:
    status, _, raw = call(replica, "PUT", path, json.dumps(body).encode(), limits=limits)
    return status, json.loads(raw)


def test_jobs_beyond_the_cap_are_refused_naming_the_field() -> None:
    replica, limits = ApplyingReplica(), Limits(max_jobs=2)
    job = {"command": ["true"], "count": 0}
    assert _put(replica, "/v1/jobs/default/a", job, limits)[0] == 200
    assert _put(replica, "/v1/jobs/default/b", job, limits)[0] == 200
    status, body = _put(replica, "/v1/jobs/default/c", job, limits)
    assert status == 409
    assert body["error"] == {"code": "limit_exceeded", "field": "name",
                             "message": "the cluster already holds the most jobs it "
                                        "accepts (2)"}
    # an existing job can still change
    assert _put(replica, "/v1/jobs/default/a", {**job, "count": 1}, limits)[0] == 200


def test_namespaces_beyond_the_cap_are_refused_naming_the_field() -> None:
    replica = ApplyingReplica()
    limits = Limits(max_namespaces=len(replica.m.namespaces) + 1)
    assert _put(replica, "/v1/namespaces/team", {}, limits)[0] == 200
    status, body = _put(replica, "/v1/namespaces/other", {}, limits)
    assert (status, body["error"]["field"]) == (409, "namespace")


def test_nodes_beyond_the_cap_are_refused_naming_the_field() -> None:
    replica = ApplyingReplica()
    store = LimitedStore(replica, Limits(max_nodes=1))
    node = {"cpu": 1.0, "memory_mb": 100, "address": ""}
    asyncio.run(store.write(C.NODE_REGISTER, {"name": "n1", **node}))
    asyncio.run(store.write(C.NODE_REGISTER, {"name": "n1", **node}))  # again: not new
    with pytest.raises(Rejection) as exc:
        asyncio.run(store.write(C.NODE_REGISTER, {"name": "n2", **node}))
    assert (exc.value.code, exc.value.field) == ("limit_exceeded", "node.name")
    assert sorted(replica.m.nodes) == ["n1"]


def test_a_body_over_the_cap_is_a_413_naming_the_body_even_when_chunked() -> None:
    replica, limits = ApplyingReplica(), Limits(max_body_bytes=1000)
    big = json.dumps({"command": ["true"], "env": {"X": "x" * 2000}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        yield big

    for data in (big, chunks()):
        async def go(data: object = data) -> tuple[int, dict[str, object]]:
            app = build_app(replica, replica, Leadership(lambda: 3), TOKEN, limits)
            async with TestClient(TestServer(app)) as client:
                resp = await client.put("/v1/jobs/default/web", data=data,
                                        headers={"Authorization": f"Bearer {TOKEN}"})
                return resp.status, await resp.json()
        status, body = asyncio.run(go())
        assert status == 413
        assert body["error"]["field"] == "body"
    assert replica.m.jobs == {}
