"""The API's access checks over a real state machine: the middleware on the way in, and
the state's own check when a write is applied (writes here go through `apply`)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hacontrol.api.app import build_app
from hacontrol.api.auth import ROUTES
from hacontrol.controller.errors import Rejection
from hacontrol.controller.status import ReplicaStatus
from hacontrol.model.states import AllocState
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

SPEC = {"command": ["sleep", "100"], "count": 1, "resources": {"cpu": 0.1, "memory_mb": 10}}


class LocalReplica:
    """Store and Cluster over one in-memory state machine: writes are stamped as the
    controller stamps them and applied at the next index."""

    def __init__(self) -> None:
        self.m = StateMachine()
        self.index = itertools.count(1)
        self.id = "c1"

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None,
                    *, actor: str | None = None) -> dict[str, Any]:
        cmd = C.Command(op, time.time(), args, idem, actor)
        res = self.m.apply(cmd.encode(), next(self.index))
        if not res["ok"]:
            e = res["error"]
            raise Rejection(e["code"], e["message"], e["field"])
        return res

    async def read(self, fn: Callable[[StateMachine], Any], stale: bool = False) -> Any:
        return fn(self.m)

    def read_local(self, fn: Callable[[StateMachine], Any]) -> Any:
        return fn(self.m)

    async def wait_changed(self, timeout: float) -> None:
        await asyncio.sleep(0)

    def status(self) -> ReplicaStatus:
        return {"id": "c1", "role": "leader", "leader": "c1", "leader_api": "http://c1",
                "term": 3, "commit_index": 5, "applied_index": 5, "healthy": True, "pid": 1,
                "members": []}

    def is_leader(self) -> bool:
        return True

    def term(self) -> int:
        return 3


Call = Callable[..., tuple[int, Any]]


def session(replica: LocalReplica, script: Callable[[Call], None],
            leadership: Leadership | None = None) -> None:
    """Run `script(call)` against one app; `call(method, path, body, token)`."""
    async def go() -> None:
        app: web.Application = build_app(replica, replica, leadership or Leadership(lambda: 3),
                                         "")
        async with TestClient(TestServer(app)) as client:
            loop = asyncio.get_running_loop()

            async def one(method: str, path: str, body: Any = None,
                          token: str | None = None) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                resp = await client.request(method, path, headers=headers,
                                            data=None if body is None else json.dumps(body))
                raw = await resp.read()
                try:
                    return resp.status, json.loads(raw)
                except ValueError:
                    return resp.status, raw

            def call(method: str, path: str, body: Any = None,
                     token: str | None = None) -> tuple[int, Any]:
                return asyncio.run_coroutine_threadsafe(one(method, path, body, token),
                                                        loop).result()
            await loop.run_in_executor(None, script, call)
    asyncio.run(go())


def bootstrap(call: Call) -> str:
    status, body = call("POST", "/v1/acl/bootstrap")
    assert status == 200, body
    secret: str = body["token"]["secret_id"]
    return secret


def client_token(call: Call, root: str, name: str, rules: dict[str, Any],
                 ttl_s: float | None = None) -> tuple[str, str]:
    assert call("PUT", f"/v1/acl/policies/{name}", {"rules": rules}, root)[0] == 200
    status, body = call("POST", "/v1/acl/tokens",
                        {"name": name, "policies": [name], "ttl_s": ttl_s}, root)
    assert status == 200, body
    return body["token"]["secret_id"], body["token"]["accessor_id"]


def test_every_route_has_a_permission() -> None:
    app = build_app(LocalReplica(), LocalReplica(), Leadership(lambda: None), "")
    registered = {(r.method, r.resource.canonical) for r in app.router.routes()
                  if r.resource is not None and r.method != "HEAD"}
    assert registered - set(ROUTES) == set()
    assert set(ROUTES) - registered == set()


def test_locked_until_bootstrap_then_bootstrap_refused() -> None:
    def script(call: Call) -> None:
        status, body = call("GET", "/v1/jobs", token="anything")
        assert status == 403 and "bootstrap" in body["error"]["message"]
        assert call("GET", "/v1/health")[0] == 200
        root = bootstrap(call)
        assert call("GET", "/v1/jobs", token=root)[0] == 200
        status, body = call("POST", "/v1/acl/bootstrap")
        assert status == 403
        status, body = call("GET", "/v1/acl/tokens/self", token=root)
        assert body["token"]["type"] == "management" and "secret_hash" not in body["token"]
        status, body = call("GET", "/v1/acl/tokens", token=root)
        assert len(body["tokens"]) == 1 and "secret_id" not in body["tokens"][0]
    session(LocalReplica(), script)


def test_read_only_token_reads_but_cannot_write() -> None:
    def script(call: Call) -> None:
        root = bootstrap(call)
        assert call("PUT", "/v1/jobs/default/web", SPEC, root)[0] == 200
        ro, _ = client_token(call, root, "ro", {"namespaces": {"*": {"policy": "read"}}})
        assert call("GET", "/v1/jobs/default/web", token=ro)[0] == 200
        assert len(call("GET", "/v1/jobs", token=ro)[1]["jobs"]) == 1
        for method, path, body in (("PUT", "/v1/jobs/default/web", SPEC),
                                   ("POST", "/v1/jobs/default/web/scale", {"count": 3}),
                                   ("DELETE", "/v1/jobs/default/web", None),
                                   ("PUT", "/v1/namespaces/x", {}),
                                   ("GET", "/v1/nodes", None),
                                   ("GET", "/v1/acl/tokens", None),
                                   ("POST", "/v1/acl/tokens", {"type": "management"}),
                                   ("GET", "/v1/events?follow=false", None)):
            status, answer = call(method, path, body, ro)
            assert status == 403, (method, path, answer)
            assert answer["error"]["code"] == "forbidden"
    session(LocalReplica(), script)


def test_namespace_a_cannot_touch_b_and_lists_are_filtered() -> None:
    def script(call: Call) -> None:
        root = bootstrap(call)
        for ns in ("a", "b"):
            assert call("PUT", f"/v1/namespaces/{ns}", {}, root)[0] == 200
            assert call("PUT", f"/v1/jobs/{ns}/web", SPEC, root)[0] == 200
        tok, _ = client_token(call, root, "a", {"namespaces": {"a": {"policy": "write"}}})
        assert call("PUT", "/v1/jobs/a/api", SPEC, tok)[0] == 200
        assert call("PUT", "/v1/jobs/b/api", SPEC, tok)[0] == 403
        assert call("GET", "/v1/jobs/b/web", token=tok)[0] == 403
        assert call("POST", "/v1/jobs/b/web/scale", {"count": 2}, tok)[0] == 403
        jobs = call("GET", "/v1/jobs", token=tok)[1]["jobs"]
        assert {j["namespace"] for j in jobs} == {"a"}
        names = [n["name"] for n in call("GET", "/v1/namespaces", token=tok)[1]["namespaces"]]
        assert names == ["a"]
        allocs = call("GET", "/v1/allocations", token=tok)[1]["allocations"]
        assert allocs and {x["namespace"] for x in allocs} == {"a"}
        other = call("GET", "/v1/allocations?namespace=b", token=root)[1]["allocations"][0]
        assert call("GET", f"/v1/allocations/{other['id']}", token=tok)[0] == 403
        assert call("GET", f"/v1/allocations/{other['id']}", token=root)[0] == 200
    session(LocalReplica(), script)


def test_revoked_and_expired_tokens_are_refused() -> None:
    replica = LocalReplica()

    def script(call: Call) -> None:
        root = bootstrap(call)
        tok, accessor = client_token(call, root, "w", {"namespaces": {"*": {"policy": "write"}}})
        assert call("PUT", "/v1/jobs/default/a", SPEC, tok)[0] == 200
        assert call("DELETE", f"/v1/acl/tokens/{accessor}", token=root)[0] == 200
        assert call("GET", "/v1/jobs", token=tok)[0] == 403
        assert call("PUT", "/v1/jobs/default/b", SPEC, tok)[0] == 403
        short, _ = client_token(call, root, "s", {"namespaces": {"*": {"policy": "write"}}},
                                ttl_s=0.2)
        assert call("GET", "/v1/jobs", token=short)[0] == 200
        deadline = time.monotonic() + 5
        while call("GET", "/v1/jobs", token=short)[0] == 200:
            assert time.monotonic() < deadline, "the token never expired"
            time.sleep(0.05)
        assert call("GET", "/v1/jobs", token=short)[0] == 403
    session(replica, script)


def test_policy_errors_name_the_field_and_secrets_stay_out_of_the_state() -> None:
    replica = LocalReplica()

    def script(call: Call) -> None:
        root = bootstrap(call)
        status, body = call("PUT", "/v1/acl/policies/p",
                            {"rules": {"namespaces": {"a": {"capabilities": ["fly"]}}}}, root)
        assert status == 422
        assert body["error"]["field"] == "rules.namespaces.a.capabilities[0]"
        status, body = call("POST", "/v1/acl/tokens", {"policies": ["missing"]}, root)
        assert status == 422 and body["error"]["field"] == "policies[0]"
        assert root.encode() not in replica.m.snapshot()
    session(replica, script)


def test_run_as_root_needs_the_capability() -> None:
    def script(call: Call) -> None:
        root = bootstrap(call)
        tok, _ = client_token(call, root, "w", {"namespaces": {"*": {"policy": "write"}}})
        status, body = call("PUT", "/v1/jobs/default/r", {**SPEC, "user": "root"}, tok)
        assert status == 403 and "run-as-root" in body["error"]["message"]
        both, _ = client_token(call, root, "wr", {"namespaces": {
            "*": {"policy": "write", "capabilities": ["run-as-root"]}}})
        assert call("PUT", "/v1/jobs/default/r", {**SPEC, "user": "root"}, both)[0] == 200
    session(LocalReplica(), script)


def test_node_credential_speaks_for_its_node_only() -> None:
    def script(call: Call) -> None:
        root = bootstrap(call)
        ro, _ = client_token(call, root, "ro", {"node": "read"})
        assert call("POST", "/v1/nodes/intro", {"name": "n1"}, ro)[0] == 403
        status, body = call("POST", "/v1/nodes/intro", {"name": "n1", "ttl_s": 60}, root)
        assert status == 200 and body["token"]["type"] == "intro"
        intro = body["token"]["secret_id"]
        assert call("GET", "/v1/jobs", token=intro)[0] == 403
        status, body = call("POST", "/v1/agent/credential", {"node": "n2"}, intro)
        assert status == 403
        status, body = call("POST", "/v1/agent/credential", {"node": "n1"}, intro)
        assert status == 200 and body["token"]["type"] == "node"
        cred = body["token"]["secret_id"]
        node = {"name": "n1", "cpu": 2, "memory_mb": 1024, "address": "http://127.0.0.1:9"}
        status, body = call("POST", "/v1/agent/sync", {"node": node}, cred)
        assert status == 200, body
        # Used up by the credential's first use.
        assert call("POST", "/v1/agent/credential", {"node": "n1"}, intro)[0] in (401, 403)
        status, body = call("POST", "/v1/agent/sync", {"node": {**node, "name": "n2"}}, cred)
        assert status == 403, body
        for method, path, body in (("PUT", "/v1/jobs/default/w", SPEC),
                                   ("GET", "/v1/jobs", None),
                                   ("GET", "/v1/jobs/default/w", None),
                                   ("POST", "/v1/jobs/default/w/scale", {"count": 2}),
                                   ("GET", "/v1/nodes/n1", None)):
            assert call(method, path, body, cred)[0] == 403, (method, path)
    session(LocalReplica(), script)


def test_sync_reports_are_checked() -> None:
    replica = LocalReplica()

    def script(call: Call) -> None:
        root = bootstrap(call)
        node = {"name": "n1", "cpu": 2, "memory_mb": 1024, "address": "http://127.0.0.1:9"}
        assert call("POST", "/v1/agent/sync", {"node": node}, root)[0] == 200
        for bad in ("http://h:1/path", "http://h:1#frag", "ftp://h", "http://u:p@h:1",
                    "http://h:1?x=1", "http://h:99999", "not a url"):
            status, body = call("POST", "/v1/agent/sync",
                                {"node": {**node, "address": bad}}, root)
            assert status == 422 and body["error"]["field"] == "node.address", bad
        assert call("PUT", "/v1/jobs/default/web", SPEC, root)[0] == 200
        alloc = replica.m.store.pending_allocs()[0]
        replica.m.store.place(alloc, "n1")
        status, body = call("POST", "/v1/agent/sync", {"node": node, "metrics": {
            alloc.id: {"cpu_percent": float("nan")}}}, root)
        assert status == 422 and body["error"]["field"] == f"metrics.{alloc.id}.cpu_percent"
        status, body = call("POST", "/v1/agent/sync", {"node": node, "metrics": {
            alloc.id: {"cpu_percent": 12.5}, "someone-else": {"cpu_percent": 1.0}}}, root)
        assert status == 200, body
        memory = leadership.current()
        assert memory is not None and set(memory.alloc_metrics) == {alloc.id}
        # Once the allocation has ended, its metrics are dropped (and never taken again).
        alloc.state = AllocState.STOPPED
        status, body = call("POST", "/v1/agent/sync", {"node": node, "metrics": {
            alloc.id: {"cpu_percent": 1.0}}}, root)
        assert status == 200 and memory.alloc_metrics == {}
    leadership = Leadership(lambda: 3)
    session(replica, script, leadership)
