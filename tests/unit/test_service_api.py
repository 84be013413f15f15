"""`GET /v1/services...` through the real app over a real state machine: answers, blocking
queries woken by applied entries, bad parameters, who may read, and the CLI's rendering."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hacontrol.api.app import build_app
from hacontrol.api.service_routes import MAX_WAIT_S, parse_wait
from hacontrol.cli.commands.service import render_service, render_service_list
from hacontrol.controller.changes import ChangeFeed
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state import commands as C

from .cli_fake import FakeApi, not_found
from .test_acl_api import Call, LocalReplica, bootstrap, client_token, session

WEB = {"command": ["sleep", "100"], "resources": {"cpu": 0.1, "memory_mb": 10},
       "ports": [{"name": "http"}], "services": [{"name": "websvc", "port": "http"}]}


class Cluster:
    """Applies what a leader and an agent would, straight to the state machine."""

    def __init__(self, replica: LocalReplica) -> None:
        self.r = replica
        self.port = 20000

    def apply(self, op: str, **args: Any) -> dict[str, Any]:
        res = self.r.m.apply(C.Command(op, 1000.0, args).encode(), next(self.r.index))
        assert res["ok"], res
        return res

    def node(self, name: str = "n1") -> None:
        self.apply(C.NODE_REGISTER, name=name, cpu=4, memory_mb=1024,
                   address=f"http://127.0.0.{len(self.r.m.nodes) + 1}:4647", labels={},
                   attributes={})

    def run_pending(self, node: str = "n1") -> None:
        pending = [a.id for a in self.r.m.pending_allocs()]
        self.apply(C.PLAN, placements=[[a, node] for a in pending])
        updates = []
        for a in pending:
            self.port += 1
            updates.append({"id": a, "state": "running", "pid": 1, "ports": {"http": self.port}})
        self.apply(C.ALLOC_UPDATE, node=node, updates=updates)

    def job(self, count: int, ns: str = "default") -> None:
        self.apply(C.JOB_PUT, namespace=ns, name="web",
                   spec={**WEB, "count": count})


def test_a_service_lists_its_endpoints_and_bad_parameters_name_the_field() -> None:
    replica = LocalReplica()

    def script(call: Call) -> None:
        root = bootstrap(call)
        c = Cluster(replica)
        c.node()
        c.job(2)
        c.run_pending()
        status, body = call("GET", "/v1/services/default/websvc", token=root)
        assert status == 200, body
        assert body["name"] == "websvc" and body["namespace"] == "default"
        assert [(e["address"], e["node"]) for e in body["endpoints"]] == [("127.0.0.1", "n1")] * 2
        assert {e["port"] for e in body["endpoints"]} == {20001, 20002}
        assert body["index"] == replica.m.store.registry.index[("default", "websvc")]
        listed = call("GET", "/v1/services", token=root)[1]
        assert [s["name"] for s in listed["services"]] == ["websvc"]
        unknown = call("GET", "/v1/services/default/nothing", token=root)[1]
        assert unknown["endpoints"] == [] and unknown["index"] == listed["index"]
        for query, field in (("index=-1", "index"), ("index=x", "index"),
                             ("index=1&wait=soon", "wait")):
            status, err = call("GET", f"/v1/services/default/websvc?{query}", token=root)
            assert status == 422 and err["error"]["field"] == field, err
        assert call("GET", "/v1/services/Bad_NS/websvc", token=root)[0] == 422
        # By name alone, as Nomad's /v1/service/NAME: the namespace is a query parameter.
        assert call("GET", "/v1/services/websvc", token=root)[1] == body
        assert call("GET", "/v1/services/websvc?namespace=default", token=root)[1] == body
        status, err = call("GET", "/v1/services/websvc?namespace=Bad_NS", token=root)
        assert status == 422 and err["error"]["field"] == "namespace", err
        # Rendered by the CLI.
        assert "127.0.0.1" in render_service(body)
        assert "websvc" in render_service_list(listed["services"])
    session(replica, script)


def test_reading_a_service_needs_read_job_or_list_jobs_in_its_namespace() -> None:
    replica = LocalReplica()

    def script(call: Call) -> None:
        root = bootstrap(call)
        c = Cluster(replica)
        c.node()
        for ns in ("a", "b"):
            assert call("PUT", f"/v1/namespaces/{ns}", {}, root)[0] == 200
            c.job(1, ns)
        c.run_pending()
        lister, _ = client_token(call, root, "lister",
                                 {"namespaces": {"a": {"capabilities": ["list-jobs"]}}})
        reader, _ = client_token(call, root, "reader",
                                 {"namespaces": {"b": {"capabilities": ["read-job"]}}})
        logs, _ = client_token(call, root, "logs",
                               {"namespaces": {"a": {"capabilities": ["read-logs"]}}})
        assert call("GET", "/v1/services/a/websvc", token=lister)[0] == 200
        assert call("GET", "/v1/services/b/websvc", token=lister)[0] == 403
        assert call("GET", "/v1/services/b/websvc", token=reader)[0] == 200
        assert call("GET", "/v1/services/a/websvc", token=logs)[0] == 403
        # The by-name route is judged in the namespace of its query parameter.
        assert call("GET", "/v1/services/websvc?namespace=a", token=lister)[0] == 200
        assert call("GET", "/v1/services/websvc?namespace=b", token=lister)[0] == 403
        assert call("GET", "/v1/services/websvc", token=lister)[0] == 403  # default
        assert call("GET", "/v1/services/websvc?namespace=b", token=reader)[0] == 200
        assert call("GET", "/v1/services/a/websvc")[0] == 401
        for token, seen in ((lister, {"a"}), (reader, {"b"}), (logs, set()),
                            (root, {"a", "b"})):
            listed = call("GET", "/v1/services", token=token)[1]["services"]
            assert {s["namespace"] for s in listed} == seen
    session(replica, script)


class FeedReplica(LocalReplica):
    """Wakes waiters when an entry is applied, as the controller's change feed does."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.feed = ChangeFeed(loop)

    async def wait_changed(self, timeout: float) -> None:
        await self.feed.wait(timeout)


def test_blocking_queries_wake_on_each_change_and_see_them_in_order() -> None:
    async def go() -> None:
        replica = FeedReplica(asyncio.get_running_loop())
        app: web.Application = build_app(replica, replica, Leadership(lambda: 3), "")
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/v1/acl/bootstrap")
            root = (await resp.json())["token"]["secret_id"]
            headers = {"Authorization": f"Bearer {root}"}
            c = Cluster(replica)
            c.node()
            c.job(0)

            async def get(index: int | None) -> dict[str, Any]:
                q = "" if index is None else f"?index={index}&wait=30s"
                r = await client.get(f"/v1/services/default/websvc{q}", headers=headers)
                assert r.status == 200
                assert r.headers["X-Hacontrol-Index"] == str((await r.json())["index"])
                body: dict[str, Any] = json.loads(await r.read())
                return body

            seen: list[tuple[int, int]] = []  # (index, endpoints) as the watcher saw them
            first = await get(None)
            seen.append((first["index"], len(first["endpoints"])))

            async def watch(upto: int) -> None:
                index = first["index"]
                while len(seen) <= upto:
                    body = await get(index)
                    if body["index"] > index:
                        seen.append((body["index"], len(body["endpoints"])))
                    index = body["index"]

            watcher = asyncio.create_task(watch(4))
            for count in (1, 2, 3, 1):
                await asyncio.sleep(0.01)  # the watcher is parked on its blocking query
                c.job(count)
                c.run_pending()
                # An entry that changes no endpoint must not wake it with no news.
                c.apply(C.NOOP)
                replica.feed.notify()
                # Each change is seen before the next is made: the watcher was woken, not
                # answered at its 30 s deadline.
                before = len(seen)
                await asyncio.wait_for(_until(lambda n=before: len(seen) > n), 10)
            await asyncio.wait_for(watcher, 10)
            assert [n for _, n in seen] == [0, 1, 2, 3, 1]
            indexes = [i for i, _ in seen]
            assert indexes == sorted(set(indexes))
    asyncio.run(go())


async def _until(cond: Any) -> None:
    while not cond():
        await asyncio.sleep(0.005)


def test_waits_are_capped() -> None:
    assert parse_wait("500ms") == 0.5 and parse_wait("2") == 2.0
    assert parse_wait("1m") == MAX_WAIT_S and parse_wait("10m") == MAX_WAIT_S
    assert parse_wait(None) == 30.0


def test_cli_prints_a_service_without_endpoints() -> None:
    text = render_service({"namespace": "default", "name": "web", "index": 3,
                           "endpoints": []})
    assert "No endpoints." in text
    out = io.StringIO()
    out.write(render_service_list([]))
    assert out.getvalue() == "No services."


def test_cli_service_commands(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(default=not_found)
    service = {"namespace": "team", "name": "websvc", "index": 42, "endpoints": [
        {"allocation": "web-000001", "node": "n1", "address": "10.0.0.1", "port": 21001}]}
    api.reply("GET", "/v1/services/team/websvc", service)
    api.reply("GET", "/v1/services", {"services": [service], "index": 42})
    assert api.run("service", "show", "websvc", "-n", "team", "--index", "41",
                   "--wait", "5s") == 0
    assert api.last.query == {"index": "41", "wait": "5s"}
    out = capsys.readouterr().out
    assert "Service team/websvc (index 42)" in out and "10.0.0.1" in out and "21001" in out
    assert api.run("service", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out)["services"][0]["name"] == "websvc"
    assert api.run("service", "show", "nothing") == 1  # answered 404 by the fake


def test_alloc_status_shows_its_ports() -> None:
    from hacontrol.cli.output import render_alloc
    text = render_alloc({"id": "web-000001", "namespace": "default", "job": "web",
                         "ports": {"http": 21001, "admin": 9000}})
    assert "admin=9000 http=21001" in text
    assert "Ports" not in render_alloc({"id": "web-000002"})
