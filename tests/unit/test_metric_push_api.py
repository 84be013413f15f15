"""`PUT /v1/jobs/{ns}/{name}/metrics/{metric}` and `GET /v1/jobs/{ns}/{name}/metrics`
over a real state machine: values land in the leader's memory, every bad request is a 4xx
naming its field, the permission is scale-job in the job's namespace, and a replica that
does not lead sends the pusher to the one that does."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from hacontrol.api.app import build_app
from hacontrol.scheduler.leader_state import Leadership

from .test_acl_api import SPEC, Call, LocalReplica, bootstrap, client_token, session
from .test_api_errors import TOKEN, FakeReplica

EXTERNAL = {**SPEC, "scaling": {"min": 1, "max": 5, "target_per_instance": 10,
                                "metric": {"name": "queue_length", "source": "external",
                                           "stale_s": 15}}}
SCRAPED = {**SPEC, "scaling": {"min": 1, "max": 5, "target_per_instance": 10,
                               "metric": {"name": "waiting", "source": "prometheus",
                                          "port": 9100}}}
PUSH = "/v1/jobs/default/q/metrics/queue_length"


def leader_memory(leadership: Leadership) -> Any:
    leader = leadership.current()
    assert leader is not None
    return leader


def test_a_pushed_value_is_kept_by_the_leader_and_shown() -> None:
    leadership = Leadership(lambda: 3)

    def script(call: Call) -> None:
        root = bootstrap(call)
        assert call("PUT", "/v1/jobs/default/q", EXTERNAL, root)[0] == 200
        status, body = call("PUT", PUSH, {"value": 120}, root)
        assert status == 200, body
        assert body == {"namespace": "default", "job": "q", "metric": "queue_length",
                        "value": 120.0, "stale_after_s": 15.0}
        pushed = leader_memory(leadership).pushed[("default", "q")]
        assert (pushed.metric, pushed.value) == ("queue_length", 120.0)
        status, shown = call("GET", "/v1/jobs/default/q/metrics", token=root)
        assert status == 200, shown
        assert shown["total"] == 120.0 and shown["complete"] is True
        assert 0 <= shown["age_s"] < 5 and shown["metric"]["name"] == "queue_length"
        assert call("PUT", PUSH, {"value": 0}, root)[0] == 200
        assert leader_memory(leadership).pushed[("default", "q")].value == 0.0
    session(LocalReplica(), script, leadership)


def test_unknown_jobs_metrics_and_bad_values_are_refused_naming_the_field() -> None:
    def script(call: Call) -> None:
        root = bootstrap(call)
        assert call("PUT", "/v1/jobs/default/q", EXTERNAL, root)[0] == 200
        assert call("PUT", "/v1/jobs/default/p", SCRAPED, root)[0] == 200
        assert call("PUT", "/v1/jobs/default/plain", SPEC, root)[0] == 200
        cases: list[tuple[str, Any, int, str, str]] = [
            ("/v1/jobs/default/nope/metrics/queue_length", {"value": 1}, 404, "not_found",
             "name"),
            ("/v1/jobs/default/q/metrics/other", {"value": 1}, 404, "not_found", "metric"),
            ("/v1/jobs/default/plain/metrics/queue_length", {"value": 1}, 404, "not_found",
             "metric"),
            ("/v1/jobs/default/p/metrics/waiting", {"value": 1}, 409, "conflict", "metric"),
            ("/v1/jobs/Bad!/q/metrics/queue_length", {"value": 1}, 422, "invalid",
             "namespace"),
            (PUSH, {}, 422, "invalid", "value"),
            (PUSH, {"value": "12"}, 422, "invalid", "value"),
            (PUSH, {"value": -1}, 422, "invalid", "value"),
            (PUSH, {"value": True}, 422, "invalid", "value"),
            (PUSH, {"value": 1e300}, 422, "invalid", "value"),
            (PUSH, {"value": float("nan")}, 422, "invalid", "value"),
            (PUSH, {"value": float("inf")}, 422, "invalid", "value"),
            (PUSH, {"value": 1, "unit": "jobs"}, 422, "invalid", "unit"),
            (PUSH, [1], 422, "invalid", "body"),
        ]
        for path, body, code, kind, field in cases:
            status, answer = call("PUT", path, body, root)
            assert (status, answer["error"]["code"], answer["error"]["field"]) == \
                (code, kind, field), (path, body, answer)
        status, answer = call("GET", "/v1/jobs/default/nope/metrics", token=root)
        assert status == 404 and answer["error"]["field"] == "name"
    session(LocalReplica(), script)


def test_pushing_needs_scale_job_in_the_jobs_namespace() -> None:
    leadership = Leadership(lambda: 3)

    def script(call: Call) -> None:
        root = bootstrap(call)
        for ns in ("a", "b"):
            assert call("PUT", f"/v1/namespaces/{ns}", {}, root)[0] == 200
            assert call("PUT", f"/v1/jobs/{ns}/q", EXTERNAL, root)[0] == 200
        reader, _ = client_token(call, root, "ro", {"namespaces": {"*": {"policy": "read"}}})
        scaler, _ = client_token(call, root, "scaler", {
            "namespaces": {"a": {"capabilities": ["scale-job"]}}})
        for token in (reader, scaler):
            status, answer = call("PUT", "/v1/jobs/b/q/metrics/queue_length", {"value": 99},
                                  token)
            assert status == 403 and answer["error"]["code"] == "forbidden"
        assert call("PUT", "/v1/jobs/a/q/metrics/queue_length", {"value": 99}, reader)[0] \
            == 403
        assert ("b", "q") not in leader_memory(leadership).pushed
        assert ("a", "q") not in leader_memory(leadership).pushed
        status, body = call("PUT", "/v1/jobs/a/q/metrics/queue_length", {"value": 7}, scaler)
        assert status == 200, body
        assert leader_memory(leadership).pushed[("a", "q")].value == 7.0
        # Reading the metric's status needs read-job, which the scaler was not given.
        assert call("GET", "/v1/jobs/a/q/metrics", token=scaler)[0] == 403
        assert call("GET", "/v1/jobs/a/q/metrics", token=reader)[0] == 200
        # Without any token at all.
        assert call("PUT", "/v1/jobs/a/q/metrics/queue_length", {"value": 7})[0] == 401
    session(LocalReplica(), script, leadership)


def test_a_replica_that_does_not_lead_redirects_to_the_leader() -> None:
    replica = FakeReplica(leading=False)

    async def go() -> list[tuple[int, str]]:
        app = build_app(replica, replica, Leadership(lambda: None), TOKEN)
        out = []
        async with TestClient(TestServer(app)) as client:
            for method, path, body in (("PUT", PUSH, b'{"value": 3}'),
                                       ("GET", "/v1/jobs/default/q/metrics", None)):
                resp = await client.request(method, path, data=body, allow_redirects=False,
                                            headers={"Authorization": f"Bearer {TOKEN}"})
                out.append((resp.status, resp.headers.get("Location", "")))
        return out
    assert asyncio.run(go()) == [(307, "http://c2" + PUSH),
                                 (307, "http://c2/v1/jobs/default/q/metrics")]
