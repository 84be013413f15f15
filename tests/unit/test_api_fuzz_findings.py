"""Regressions for what fuzzing the API (tests/integration/test_api_fuzz.py) found: each was
a 5xx or a hang for a request that deserved a 4xx."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hacontrol.controller.errors import Rejection

from .test_api_errors import FakeReplica, call

NODE = {"name": "n1", "cpu": 2.0, "memory_mb": 512, "address": "http://127.0.0.1:1"}


@pytest.mark.parametrize(("body", "field"), [
    # A huge integer reached the command encoding (msgpack: "Integer value out of range").
    ({"node": {**NODE, "memory_mb": 10**30}}, "node.memory_mb"),
    ({"node": {**NODE, "labels": {"zone": 10**30}}}, "node.labels.zone"),
    ({"node": NODE, "reports": [{"id": "a-000001", "state": "running", "pid": 10**30}]},
     "reports[0].pid"),
    # float() of a string or a list in the handler.
    ({"node": NODE, "wait_s": "soon"}, "wait_s"),
    ({"node": NODE, "wait_s": [1]}, "wait_s"),
    ({"node": {**NODE, "cpu": "many"}}, "node.cpu"),
])
def test_a_bad_agent_sync_is_refused_naming_the_field_before_anything_is_written(
        body: dict[str, Any], field: str) -> None:
    # The fake's write raises: nothing may reach it.
    replica = FakeReplica(fail=Rejection("internal", "written"))
    status, _, raw = call(replica, "POST", "/v1/agent/sync", json.dumps(body).encode())
    assert status == 422, raw
    assert json.loads(raw)["error"]["field"] == field


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    # Integers past 64 bits reached the command encoding (msgpack: a 500).
    ("POST", "/v1/jobs/default/web/revert", {"version": 10**30}, "version"),
    ("POST", "/v1/nodes/n1/drain", {"enable": True, "deadline_s": 10**30}, "deadline_s"),
])
def test_a_number_too_large_to_encode_is_refused_naming_the_field(
        method: str, path: str, body: dict[str, Any], field: str) -> None:
    replica = FakeReplica(fail=Rejection("internal", "written"))
    status, _, raw = call(replica, method, path, json.dumps(body).encode())
    assert status == 422, raw
    assert json.loads(raw)["error"]["field"] == field
