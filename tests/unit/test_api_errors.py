"""Every failure a user can see is answered in one place, with the same status, body and
headers the API has always given (these bodies are part of the API)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hacontrol.api.app import build_app
from hacontrol.controller.errors import (
    AgentUnreachable,
    CommandFailed,
    NoQuorum,
    NotApplied,
    NotLeader,
    OutcomeUnknown,
    Rejection,
)
from hacontrol.controller.status import ReplicaStatus
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state.machine import StateMachine

TOKEN = "tok"


class FakeReplica:
    """Store and Cluster in memory: reads see a real state machine, writes raise `fail`."""

    def __init__(self, fail: Exception | None = None, leading: bool = True) -> None:
        self.m = StateMachine()
        self.fail = fail
        self.leading = leading
        self.id = "c1"

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None
                    ) -> dict[str, Any]:
        assert self.fail is not None
        raise self.fail

    async def read(self, fn: Callable[[StateMachine], Any], stale: bool = False) -> Any:
        if self.fail is not None and not stale:
            raise self.fail
        return fn(self.m)

    def read_local(self, fn: Callable[[StateMachine], Any]) -> Any:
        return fn(self.m)

    async def wait_changed(self, timeout: float) -> None:
        await asyncio.sleep(0)

    def status(self) -> ReplicaStatus:
        return {"id": "c1", "role": "leader" if self.leading else "follower",
                "leader": "c2" if not self.leading else "c1",
                "leader_api": "http://c2" if not self.leading else "http://c1", "term": 3,
                "commit_index": 5, "applied_index": 5, "healthy": True, "pid": 1,
                "members": []}

    def is_leader(self) -> bool:
        return self.leading

    def term(self) -> int:
        return 3


def call(replica: FakeReplica, method: str, path: str, body: bytes | None = None,
         token: str | None = TOKEN) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        leadership = Leadership(lambda: 3 if replica.leading else None)
        app: web.Application = build_app(replica, replica, leadership, TOKEN)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, data=body, headers=headers)
            return resp.status, dict(resp.headers), await resp.read()
    return asyncio.run(go())


def error(raw: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(raw)["error"]
    return out


JOB = json.dumps({"command": ["true"]}).encode()


@pytest.mark.parametrize(("fail", "status", "body"), [
    (Rejection("quota_exceeded", "over quota", "count"), 409,
     b'{"error": {"code": "quota_exceeded", "message": "over quota", "field": "count"}}'),
    (NotApplied("no leader known", "c2"), 503,
     b'{"error": {"code": "unavailable", "message": "not applied: no leader known", '
     b'"field": null, "outcome": "not_applied", "leader": "c2"}}'),
    (OutcomeUnknown("timeout", "k-1"), 503,
     b'{"error": {"code": "unavailable", "message": "outcome unknown: timeout; retry with '
     b'the same Idempotency-Key", "field": null, "outcome": "unknown", '
     b'"idempotency_key": "k-1"}}'),
    (CommandFailed("apply failed: boom"), 500,
     b'{"error": {"code": "internal", "message": "apply failed: boom", "field": null}}'),
])
def test_write_failures(fail: Exception, status: int, body: bytes) -> None:
    got, headers, raw = call(FakeReplica(fail), "PUT", "/v1/jobs/default/web", JOB)
    assert (got, raw) == (status, body)
    assert (headers.get("Retry-After") == "1") == (status == 503)
    assert headers["Content-Type"].startswith("application/json")


def test_read_without_quorum_and_stale_read() -> None:
    status, _, raw = call(FakeReplica(NoQuorum("barrier timeout")), "GET", "/v1/jobs")
    assert status == 503 and error(raw) == {
        "code": "unavailable", "field": None, "outcome": "not_applied",
        "message": "no quorum for a linearizable read: barrier timeout; use ?stale=true for "
                   "a local read"}
    status, _, raw = call(FakeReplica(NoQuorum("x")), "GET", "/v1/jobs?stale=true")
    assert status == 200 and json.loads(raw) == {"jobs": []}


def test_request_errors() -> None:
    r = FakeReplica()
    status, _, raw = call(r, "GET", "/v1/jobs", token=None)
    assert status == 401 and error(raw)["field"] == "Authorization"
    assert call(r, "GET", "/v1/jobs", token="wrong")[0] == 403
    status, _, raw = call(r, "PUT", "/v1/jobs/default/web", b"{not json")
    assert status == 422 and error(raw)["field"] == "body"
    status, _, raw = call(r, "PUT", "/v1/jobs/default/web", json.dumps({"bogus": 1}).encode())
    assert status == 422 and error(raw)["field"] == "bogus"
    status, _, raw = call(r, "GET", "/v1/jobs/default/missing")
    assert status == 404 and raw == (b'{"error": {"code": "not_found", "message": '
                                     b'"job default/missing not found", "field": "name"}}')
    status, _, raw = call(r, "GET", "/v1/nowhere")
    assert status == 404 and error(raw)["code"] == "not_found"
    status, _, raw = call(r, "DELETE", "/v1/status")
    assert status == 405 and error(raw)["code"] == "method_not_allowed"


def test_agent_sync_on_a_follower_names_the_leader() -> None:
    status, headers, raw = call(FakeReplica(leading=False), "POST", "/v1/agent/sync",
                                json.dumps({"node": {"name": "n1"}}).encode())
    assert status == 503 and headers["Retry-After"] == "1"
    assert raw == (b'{"error": {"code": "not_leader", "message": "this replica is not the '
                   b'leader", "field": null, "leader": "c2", "leader_api": "http://c2"}}')


def test_unreachable_agent() -> None:
    from hacontrol.api.errors import failure_of
    f = failure_of(AgentUnreachable("refused", "http://n1"))
    assert f is not None and (f.code, f.message) == ("unavailable",
                                                     "agent at http://n1 unreachable: refused")
    f = failure_of(AgentUnreachable("refused"))
    assert f is not None and f.message == "agent unreachable: refused"
    assert failure_of(NotLeader("c2", None)) is not None
    assert failure_of(ValueError("a bug")) is None  # left to aiohttp: a plain 500


def test_leader_memory_is_fresh_each_term() -> None:
    term: list[int | None] = [4]
    leadership = Leadership(lambda: term[0], clock=lambda: 10.0)
    first = leadership.current()
    assert first is not None and first.term == 4 and first.since == 10.0
    first.record_heartbeat("n1", 9.0)
    first.unplaced["a"] = "no room"
    assert leadership.current() is first
    term[0] = None
    assert leadership.current() is None
    term[0] = 5
    again = leadership.current()
    assert again is not None and again is not first
    assert again.heartbeats == {} and again.unplaced == {} and again.term == 5
